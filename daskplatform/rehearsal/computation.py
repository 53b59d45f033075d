"""A user's computation that spans a roll-out, run from ``dp-client``:

    python -m daskplatform.rehearsal.computation PLAN

engineer1's cluster through the ALB and the gateway's scheduler proxy (8786), WORKERS
workers on two worker nodes, then waves of tasks that keep every worker busy, each
result kept in worker memory. It prints one JSON line once it computes (the cluster,
its scheduler's and workers' pids), then computes until a line ``finish`` arrives on
stdin (the roll-out, the gateway's own upgrade included, happens meanwhile), then prints
a JSON line with what the roll-out must not have changed, and stops its cluster.

What "nothing was killed, the connection stayed" means here, read from the scheduler:
the same scheduler and worker pids at the end as at the start, and one ``add-client``
and no ``remove-client`` event for this client (a dropped connection to the scheduler
leaves both); the client's own stream to the scheduler is the one it opened.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from daskplatform.rehearsal.plan import Plan
from daskplatform.rehearsal.scenario import PASSWORDS, WORKERS, urls

TASK_SECONDS = 1.5
CHUNK = 10_000
"""Each task sums the squares of CHUNK consecutive integers."""


def expected_total(tasks: int) -> int:
    """sum(k*k for k < n), in closed form, as the check."""
    n = tasks * CHUNK
    return (n - 1) * n * (2 * n - 1) // 6


def _pids(client: Any) -> dict[str, int]:
    """The scheduler's and every worker's pid, by the scheduler's view of them."""
    return {"scheduler": client.run_on_scheduler(os.getpid),
            **{address: pid for address, pid in client.run(os.getpid).items()}}


def _say(found: dict[str, Any]) -> None:
    print(json.dumps(found), flush=True)


def compute_until(client: Any, finish: threading.Event,
                  label: dict[str, Any]) -> dict[str, Any]:
    """Waves of tasks over every worker until ``finish``; what the run left unchanged.
    ``label`` goes into the line it prints once computing and into what it returns."""
    def chunk_sum(index: int) -> int:  # defined here: it travels to workers by value
        import time

        time.sleep(TASK_SECONDS)  # work that takes a while, so waves span the roll-out
        return sum(k * k for k in range(index * CHUNK, (index + 1) * CHUNK))

    stream = client.scheduler_comm.comm
    before = _pids(client)
    _say({**label, "ok": True, "started": True, "pids": before})
    futures: list[Any] = []
    began = time.monotonic()
    done_at = [began]
    workers = len(before) - 1
    while not finish.is_set():
        wave = client.map(chunk_sum, range(len(futures), len(futures) + 2 * workers))
        client.gather(wave)  # the results stay on the workers too
        futures += wave
        done_at.append(time.monotonic())
    total = client.submit(sum, futures).result(timeout=300)
    after = _pids(client)
    clients = [event["action"] for _, event in client.get_events(client.id)
               if event["action"] in ("add-client", "remove-client")]
    right = total == expected_total(len(futures))
    same_stream = client.scheduler_comm.comm is stream and not stream.closed()
    return {**label, "tasks": len(futures), "seconds": round(done_at[-1] - began, 1),
            "right_result": right,
            "longest_wave_gap_seconds": round(max(
                (b - a for a, b in zip(done_at, done_at[1:])), default=0), 1),
            "same_pids": after == before, "pids_after": after,
            "client_events": clients, "same_stream": same_stream,
            "ok": right and after == before and clients == ["add-client"] and same_stream}


def run(plan: Plan) -> dict[str, Any]:
    from dask_gateway import BasicAuth, Gateway

    finish = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), finish.set()), daemon=True).start()
    _, api, proxy = urls(plan)
    with Gateway(api, proxy_address=proxy,
                 auth=BasicAuth("engineer1", PASSWORDS["engineer1"])) as gateway:
        cluster = gateway.new_cluster(shutdown_on_close=False)
        try:
            cluster.scale(WORKERS)
            with cluster.get_client(set_as_default=False) as client:
                client.wait_for_workers(WORKERS, timeout=240)
                return compute_until(client, finish, {"cluster": cluster.name})
        finally:
            cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    plan = Plan.load((argv if argv is not None else sys.argv[1:])[0])
    try:
        result = run(plan)
    except Exception as exc:  # reported to the orchestrator, which prints it
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    _say(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
