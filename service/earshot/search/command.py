"""`earshot index CATALOG.parquet --out INDEX`: build or grow a vector index from a catalog."""

from __future__ import annotations

import argparse
import json
import sys
import time

from earshot.search.backend import SCALARS

EXIT_OK, EXIT_USAGE = 0, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("catalog", help="a catalog Parquet file written by `earshot embed`")
    parser.add_argument("--out", required=True, help="index directory to create or grow")
    parser.add_argument("--name", help="the index's name at /v1/search (default: the directory's name)")
    parser.add_argument("--scalar", choices=SCALARS, default="f16",
                        help="how vectors are stored (f16: half the memory of f32 at the same recall; BENCHMARKS.md)")
    parser.add_argument("--rebuild", action="store_true", help="start from nothing instead of adding new rows")


def run_index(args: argparse.Namespace) -> int:
    from earshot.search.build import build_index  # pyarrow and usearch load only when the command runs
    from earshot.search.directory import IndexDirectoryError

    began = time.perf_counter()
    try:
        report = build_index(args.catalog, args.out, name=args.name, scalar=args.scalar, rebuild=args.rebuild)
    except IndexDirectoryError as error:
        print(f"earshot index: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({
        "index": str(report.index),
        "model": report.model,
        "added": report.added,
        "already_indexed": report.already_indexed,
        "skipped_errors": report.skipped_errors,
        "count": report.count,
        "seconds": round(time.perf_counter() - began, 3),
    }))
    return EXIT_OK
