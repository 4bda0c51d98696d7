"""The engine: fixed windows, a cross-request batcher per model, ONNX Runtime sessions."""

from earshot.engine.engine import EmbedResult, Engine, TextResult, WindowResult
from earshot.engine.pooling import Tag

__all__ = ["EmbedResult", "Engine", "Tag", "TextResult", "WindowResult"]
