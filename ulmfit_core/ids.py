"""fastai's special token ids, which SentencePiece is trained with (stage 02) and every model uses.

The Keras side masks on ``PAD_ID`` (1), not on 0.
"""

UNK_ID, PAD_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_IDS = {"<unk>": UNK_ID, "<pad>": PAD_ID, "<s>": BOS_ID, "</s>": EOS_ID}
