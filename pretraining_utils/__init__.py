"""Corpus and language-model pretraining stages (01-04) of the ULMFiT/MultiFiT toolchain.

Stages 01-03 need only nltk, sentencepiece and numpy; nothing here imports TensorFlow. The
contract shared with the TensorFlow side (ids, the LM config, artifacts) is in ``ulmfit_core``.
"""
