"""The engine: fixed windows, a cross-request batcher per model, ONNX Runtime sessions."""

from earshot.service.engine.engine import EmbedResult, Engine, WindowResult
from earshot.service.engine.pooling import Tag

__all__ = ["EmbedResult", "Engine", "Tag", "WindowResult"]
