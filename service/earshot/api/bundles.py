"""Which bundles a server loads: the one place that turns settings into bundle references."""

from __future__ import annotations

from pathlib import Path

from earshot.settings import Settings


def resolve_bundles(settings: Settings) -> list[str | Path]:
    """The bundles named in the settings; none named means the default model, built on first use."""
    if settings.bundles:
        return list(settings.bundles)
    from earshot.default_model import ensure_default_bundle  # imported lazily: only the default needs it

    return [ensure_default_bundle(settings.cache_dir)]
