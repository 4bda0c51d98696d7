"""Converters from published checkpoint layouts to our modules."""

from earshot.models.checkpoints.io import CheckpointError

__all__ = ["CheckpointError"]
