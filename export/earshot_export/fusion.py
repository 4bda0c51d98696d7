"""Fusing a traced transformer graph with ONNX Runtime's transformer optimiser.

ONNX Runtime's own graph optimiser (run when a session loads) fuses LayerNorm, GELU and MatMul+Add,
but not attention. Its offline transformer optimiser does: each layer's Q/K/V MatMuls, scaling,
Softmax and output MatMul become one `com.microsoft.Attention` node (one fused kernel on CPU and
CUDA, and `QAttention` once quantised), and residual + LayerNorm become `SkipLayerNormalization`.
Those are ONNX Runtime contrib operators: TensorRT runs them through its CUDA fallback, so a bundle
meant for TensorRT is exported with `--no-fuse`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

log = logging.getLogger(__name__)


def fuse_attention(in_path: Path, out_path: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Write the fused graph to out_path; returns the count of each fused operator (all zero: unchanged)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(in_path), model_type="vit", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    statistics = {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}
    optimized.topological_sort()
    model = optimized.model
    if any(node.domain == "com.microsoft" for node in model.graph.node) and not any(
        opset.domain == "com.microsoft" for opset in model.opset_import
    ):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(out_path))
    log.info("fused operators: %s", statistics or "none")
    return statistics

