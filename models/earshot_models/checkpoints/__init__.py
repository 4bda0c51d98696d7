"""Converters from published checkpoint layouts to our modules."""

from earshot_models.checkpoints.io import CheckpointError

__all__ = ["CheckpointError"]
