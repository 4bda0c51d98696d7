"""CLAP (LAION's joint audio-text model). The audio side (HTS-AT + projection) is written here from the
paper and transformers' ClapModel layout (reading, not wrapping); the text side wraps transformers'
RoBERTa text model and projection (text.py), exported beside the audio graph as `text.onnx`.

config.py            ClapFrontendConfig (what ClapFeatureExtractor computes), HtsatConfig
mel.py               HTK / Slaney mel filter banks
frontend.py          ClapFrontend: deterministic repeat-pad, STFT log-mel in dB, inside the graph
window_attention.py  Swin window attention with the relative position bias table
swin.py              SwinBlock (shifted windows), PatchMerging
htsat.py             HtsatEncoder: mel batch norm, mel -> 256 x 256 image, patch conv, Swin stages, mean
audio.py             ClapAudioTower: HTS-AT -> projection -> L2-normalised embedding [-> zero-shot logits]
text.py              ClapTextTower: token ids -> L2-normalised text embedding (transformers' modules)
"""
