"""Corpus and language-model pretraining stages (01-04) of the ULMFiT/MultiFiT toolchain.

Stages 01-03 need only nltk, sentencepiece and numpy; nothing here imports TensorFlow.
"""

SPECIAL_IDS = {"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3}
UNK_ID, PAD_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
