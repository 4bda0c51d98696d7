"""Serving: audio intake, the batching engine on ONNX Runtime, the HTTP API. No PyTorch here."""
