"""`earshot export SOURCE` for PyTorch checkpoints: the export part's side of the console script.

The serving part's CLI (earshot.cli) finds `run_export` through the `earshot.commands` entry
point, so a serving install without PyTorch still has the command and says what to install.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from earshot.engine.audio import AudioLimits, decode
from earshot_export.onnx_export import export_bundle
from earshot_export.parity import ParityError
from earshot_export.sources import ExportOptions, SourceError, load_torch_model, parse_source
from earshot_models.checkpoints import CheckpointError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # as earshot.cli's


def run_export(args: argparse.Namespace) -> int:
    try:
        scheme, reference = parse_source(args.source)
    except SourceError as error:
        print(f"earshot export: {error}", file=sys.stderr)
        return EXIT_USAGE
    if scheme == "yamnet":  # earshot.cli builds these itself
        raise ValueError("yamnet: sources are built by earshot.cli")

    options = ExportOptions(
        name=args.name,
        labels_file=args.labels_file,
        window_seconds=args.window_seconds,
        num_heads=args.num_heads,
        fstride=args.fstride,
        tstride=args.tstride,
        input_tdim=args.input_tdim,
        prompt=args.prompt,
        tokenizer=getattr(args, "tokenizer", None),
        layer=getattr(args, "layer", None),
    )
    try:
        model = load_torch_model(scheme, reference, options)
        clips = [read_parity_clip(path, model.sample_rate) for path in args.parity_audio]
        built = export_bundle(
            model, args.out, args.precision or "fp32", parity_audio=clips, overwrite=args.force, fuse=args.fuse
        )
    except ParityError as error:
        print(f"earshot export: {error}", file=sys.stderr)
        return EXIT_FAILED
    except (CheckpointError, SourceError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"earshot export: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({**built.manifest.summary(), "path": str(built.path), "parity": built.manifest.parity}))
    return EXIT_OK




def read_parity_clip(path: Path, sample_rate: int):
    limits = AudioLimits(max_bytes=1 << 31, max_seconds=24 * 3600)
    return decode(path.read_bytes(), sample_rate, limits).waveform
