"""`earshot embed`: arguments -> a catalog job on the local engine or on Ray -> exit status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from earshot import bundle as bundle_format
from earshot.catalog import table
from earshot.catalog.inputs import ManifestError
from earshot.catalog.plan import CatalogJob
from earshot.engine.self_test import SelfTestFailed
from earshot.settings import Settings

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_SELF_TEST_FAILED = 0, 1, 2, 3


def run_catalog_job(args: argparse.Namespace) -> int:
    job = CatalogJob(
        inputs=list(args.inputs),
        bundle=args.bundle,
        out=Path(args.out),
        resume=args.resume,
        workers=args.workers,
        with_windows=args.windows,
        with_frames=getattr(args, "frames", False),
        with_segments=getattr(args, "segments", False),
        top_k=args.top_k,
        flush_rows=args.flush_rows,
    )
    settings = Settings()
    try:
        if args.engine == "ray":
            from earshot.catalog.ray_job import run_on_ray

            summary = run_on_ray(job, settings)
        else:
            from earshot.catalog.job import run_local

            summary = run_local(job, settings)
    except (bundle_format.BundleError, table.TableError, ManifestError, FileNotFoundError) as error:
        print(f"earshot embed: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SelfTestFailed as error:  # nothing was embedded: rows from a wrong model are worse than none
        print(f"earshot embed: not embedding: {error}", file=sys.stderr)
        return EXIT_SELF_TEST_FAILED
    if (skipped := summary.not_audio_line()) is not None:
        print(f"earshot embed: {skipped}", file=sys.stderr)
    print(f"earshot embed: {summary.line()}", file=sys.stderr)
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK
