"""Waveform speech encoders: wav2vec 2.0, HuBERT, data2vec-audio, UniSpeech-SAT and WavLM.

All five are one design (a strided conv stack over the raw waveform, a convolutional position
embedding, a transformer), and differ in switches of `SpeechEncoderConfig`:

config.py           SpeechEncoderConfig, the families and their constants
normalize.py        the feature extractor's zero-mean, unit-variance normalisation of each window
feature_encoder.py  the conv feature encoder (group- or layer-norm variant) and the feature projection
positional.py       the convolutional position embeddings (wav2vec 2.0's, data2vec-audio's stacked one)
rel_pos.py          WavLM's bucketed relative position bias
attention.py        self-attention, with WavLM's gated relative position bias where configured
layer.py            one transformer layer, post-LN or pre-LN ("stable layer norm")
encoder.py          SpeechTransformer: projected features -> the hidden states of every layer
model.py            SpeechEncoder (waveform -> hidden states), SpeechEmbeddingHead, SpeechEmbeddingModel

Windows are unpadded and of a fixed size: there is no attention mask (see model.py).
"""

from earshot_models.speech.config import FAMILIES, SpeechEncoderConfig
from earshot_models.speech.model import SpeechEmbeddingHead, SpeechEmbeddingModel, SpeechEncoder

__all__ = ["FAMILIES", "SpeechEmbeddingHead", "SpeechEmbeddingModel", "SpeechEncoder", "SpeechEncoderConfig"]
