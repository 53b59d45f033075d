"""``dask-platform pipeline run|generate|watch``: the AppsFlyer pipeline from a shell
(``watch``: new drops from the drop queue, ``daskplatform.appsflyer.watch``)."""

from __future__ import annotations

import argparse
import json
import sys

from daskplatform.appsflyer.generator import FAULTS, FORMATS, LAYOUTS, generate, parse_faults
from daskplatform.appsflyer.manifest import ConservationError
from daskplatform.appsflyer.pipeline import DEFAULT_CHUNK_ROWS, run_pipeline
from daskplatform.appsflyer.watch import add_arguments as add_watch_arguments


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dask-platform pipeline",
                                     description="AppsFlyer raw drops -> validated Parquet")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="process new raw files")
    run.add_argument("--input", required=True, help="raw drop: a path or s3://bucket/prefix")
    run.add_argument("--processed", required=True, help="where events/ and aggregates/ go")
    run.add_argument("--audit", required=True, help="where quarantine/ and manifests/ go")
    run.add_argument("--scheduler", default="sync",
                     help="sync (in-process), local (a LocalCluster) or a scheduler address")
    run.add_argument("--gateway", help="name of a running dask-gateway cluster to use")
    run.add_argument("--workers", type=_positive, default=2, help="LocalCluster workers")
    run.add_argument("--memory-per-worker", default="2GiB", help="LocalCluster memory cap")
    run.add_argument("--chunk-rows", type=_positive, default=DEFAULT_CHUNK_ROWS,
                     help="rows validated at a time per task")
    gen = commands.add_parser("generate", help="write realistic AppsFlyer raw data")
    gen.add_argument("--layout", required=True, choices=LAYOUTS)
    gen.add_argument("--rows", required=True, type=_positive, help="distinct events")
    gen.add_argument("--out", required=True, help="a path or s3://bucket/prefix")
    gen.add_argument("--format", default="csv", choices=FORMATS,
                     help="datalocker files: gzip CSV or Parquet")
    gen.add_argument("--faults", default="",
                     help=f"comma list of NAME=COUNT; names: {', '.join(FAULTS)}")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--start", default="2024-03-01", help="first event date (UTC)")
    gen.add_argument("--days", type=_positive, default=2)
    gen.add_argument("--hours", type=_positive, default=24,
                     help="events fall in the first HOURS hours of each day")
    watch = commands.add_parser("watch", help="process new drops as the raw bucket "
                                "notifies them, on a gateway cluster (docs/monitoring.md)")
    add_watch_arguments(watch)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "watch":
        from daskplatform.appsflyer.watch import main as watch

        return watch(args)
    if args.command == "generate":
        try:
            summary = generate(args.out, layout=args.layout, rows=args.rows,
                               faults=parse_faults(args.faults), seed=args.seed,
                               start=args.start, days=args.days, hours=args.hours,
                               fmt=args.format)
        except ValueError as exc:
            sys.stderr.write(f"dask-platform pipeline generate: {exc}\n")
            return 2
        print(json.dumps(summary, indent=2))
        return 0
    from daskplatform.appsflyer.cluster import dask_client

    try:
        with dask_client(args.scheduler, workers=args.workers,
                         memory_per_worker=args.memory_per_worker,
                         gateway=args.gateway) as client:
            manifest = run_pipeline(args.input, args.processed, args.audit, client=client,
                                    chunk_rows=args.chunk_rows)
    except (FileNotFoundError, ConservationError) as exc:
        sys.stderr.write(f"dask-platform pipeline run: {exc}\n")
        return 1
    summary = {k: manifest.get(k) for k in ("status", "run_id", "manifest", "totals",
                                            "files_already_processed")}
    summary["waiting_for_completion_marker"] = len(manifest["waiting_for_completion_marker"])
    print(json.dumps(summary, indent=2))
    return 1 if manifest["status"] == "failed" else 0
