"""CLAP (LAION's HTS-AT audio tower with a joint audio-text projection), as transformers' ClapModel holds it.

config.py    ClapFrontendConfig: what ClapFeatureExtractor computes for an unfused model
mel.py       HTK / Slaney mel filter banks
frontend.py  ClapFrontend: deterministic repeat-pad, STFT log-mel in dB, inside the graph
audio.py     ClapAudioTower: transformers' audio model + projection -> L2-normalised embedding,
             and the zero-shot head (scaled cosine to prompts embedded at export)
"""
