"""``dask-platform usage``: core-hours, GB-hours and estimated cost, per user, group or
cluster, from the gateway's exact accounting (gateway/usage.py).

    dask-platform usage [--since 7d] [--by user|group|cluster] [--user NAME] [--json]

Everyone sees their own usage; admins see everyone's. Costs are estimates from
``costs.instancePricesUsdPerHour``: each process pays its share of its node (the larger of
its share of the cores and of the memory) while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import urlencode

from daskplatform.admin_cli import table
from daskplatform.status_cli import ADDRESS_ENV, StatusError, authorization, fetch


def usd(amount: float) -> str:
    """Cents, or four places under a dollar so a short trial does not read as free."""
    return f"${amount:,.2f}" if amount >= 1 or amount == 0 else f"${amount:.4f}"


def render(answer: dict) -> str:
    rows = [[r["key"] or "(notebooks)", f"{r['core_hours']:.3f}", f"{r['gb_hours']:.3f}",
             usd(r["cost_usd"]), str(r["processes"])] for r in answer["rows"]]
    total = sum(r["cost_usd"] for r in answer["rows"])
    who = "everyone" if answer["all_users"] else "you"
    if not rows:
        return f"no usage by {who} in that time\n"
    return (table(rows, [answer["by"].upper(), "CORE-HOURS", "GB-HOURS", "COST (EST.)",
                         "PROCESSES"]) + f"total ({who}): {usd(total)}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dask-platform usage", description=__doc__.split("\n\n")[0])
    p.add_argument("--since", default="7d", help="how far back: 24h, 7d, 2w (default 7d)")
    p.add_argument("--by", default="user", choices=("user", "group", "cluster"))
    p.add_argument("--gateway", default=os.environ.get(ADDRESS_ENV, "http://127.0.0.1:8000"))
    p.add_argument("--user", help="log in as this user (password from "
                                  "$DASK_PLATFORM_PASSWORD)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        answer = fetch(args.gateway, authorization(args.user),
                       path="/api/v1/usage?" + urlencode({"since": args.since, "by": args.by}))
    except StatusError as exc:
        print(f"dask-platform usage: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(answer, indent=1) + "\n" if args.json else render(answer))
    return 0
