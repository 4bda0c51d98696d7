"""BEATs (Chen et al., 2022, microsoft/unilm `beats/`): a post-LN transformer over fbank patches,
with a convolutional position embedding and a gated relative position bias.

config.py     BeatsConfig and the BEATs fbank preset
rel_pos.py    the bucketed relative position table (a constant for a fixed window)
attention.py  attention with the gated relative position bias as an additive term
layer.py      one post-LN, deep-norm encoder layer
encoder.py    BeatsEncoder: fbank -> tokens -> (embedding, logits)
model.py      BeatsWaveformModel: waveform -> fbank -> encoder, with the padding mask
"""

from earshot_models.beats.config import BEATS_FBANK, BeatsConfig, beats_fbank
from earshot_models.beats.encoder import BeatsEncoder
from earshot_models.beats.model import BeatsWaveformModel

__all__ = ["BEATS_FBANK", "BeatsConfig", "BeatsEncoder", "BeatsWaveformModel", "beats_fbank"]
