"""``dask-platform simulate``: a team's workday on the platform, with and without a warm
pool of worker nodes (docs/workday.md). Writes ``workday.png``, ``workday.json`` and
``workday-summary.md`` under ``--out`` and prints the summary."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from daskplatform.settings import PlatformSettings, SettingsError, load_settings, load_stack_file
from daskplatform.simulate.plot import plot
from daskplatform.simulate.report import as_json, markdown, summarise
from daskplatform.simulate.workday import Outcome, Workday
from daskplatform.simulate.workload import team


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dask-platform simulate", description=__doc__)
    parser.add_argument("--users", type=int, default=30, help="team size (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="the team's random draws")
    parser.add_argument("--warm-pool", action=argparse.BooleanOptionalAction, default=None,
                        help="only with (or, --no-warm-pool, without) a warm pool; "
                        "default: both, side by side")
    parser.add_argument("--boot-seconds", type=float, default=300.0,
                        help="cold node: launch, install, mount, agent serving (default 300)")
    parser.add_argument("--warm-boot-seconds", type=float, default=45.0,
                        help="node from the warm pool: a pre-initialised stopped instance "
                        "starts and its agent serves (default 45)")
    parser.add_argument("--stack-file", default="Pulumi.dev.yaml",
                        help="settings (default Pulumi.dev.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one setting of the stack file, a config key as "
                        "`pulumi config set --path` takes it (e.g. workers.max=30); repeatable")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="folder for the plot and summaries (default .)")
    return parser


def with_changes(settings: PlatformSettings, changes: list[str]) -> PlatformSettings:
    """``settings`` with ``key.path=value`` changes (values read as YAML), validated again
    as stack config is, so a bad change is refused with the key named."""
    raw = settings.model_dump(by_alias=True)
    for change in changes:
        key, equals, value = change.partition("=")
        *parents, leaf = key.split(".")
        place = raw
        for part in parents:
            place = place.get(part) if isinstance(place, dict) else None
        if not equals or not isinstance(place, dict):
            raise SettingsError(f"--set {change}: expected KEY=VALUE with KEY a config key "
                                "such as workers.max or quotas.groups.admins.priority")
        place[leaf] = yaml.safe_load(value)
    return load_settings(raw)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error("--users must be at least 1")
    try:
        settings = with_changes(load_stack_file(args.stack_file), args.set)
    except (OSError, SettingsError) as exc:
        sys.stderr.write(f"dask-platform simulate: {exc}\n")
        return 2
    plans = team(args.users, args.seed, settings.quotas, settings.clusters)
    variants = {"no warm pool": args.boot_seconds, "warm pool": args.warm_boot_seconds}
    if args.warm_pool is not None:
        variants = {k: v for k, v in variants.items() if (k == "warm pool") == args.warm_pool}
    outcomes: dict[str, Outcome] = {}
    summaries = []
    for name, boot in variants.items():
        started = time.perf_counter()
        outcome = outcomes[f"{name} (node boot {boot:.0f} s)"] = Workday(
            settings, plans, boot).run()
        summaries.append(summarise(name, boot, outcome, settings))
        print(f"simulated {name}: {time.perf_counter() - started:.2f} s", file=sys.stderr)
    changes = f" with {', '.join(args.set)}" if args.set else ""
    heading = (f"Workday: {args.users} users, seed {args.seed}, settings "
               f"{Path(args.stack_file).name}{changes}\n\n")
    table = heading + markdown(summaries)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workday-summary.md").write_text(table, encoding="utf-8")
    (args.out / "workday.json").write_text(as_json(summaries), encoding="utf-8")
    plot(outcomes, settings.workers.max, args.out / "workday.png")
    sys.stdout.write(table)
    return 0
