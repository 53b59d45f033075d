"""What one Dask scheduler really uses, idle and busy: the figures the scheduler host's
sizing rests on (``clusters.schedulerCores``/``schedulerMemoryGb``, docs/capacity.md).

Starts a real ``dask scheduler`` with the gateway's preload options off (the preload
adds a heartbeat every few seconds and nothing measurable), then two workers, samples
the scheduler's resident memory and CPU time idle for ``--idle`` seconds, then while a
graph of ``--tasks`` tasks runs (``client.map`` of ``--tasks`` small functions and a
tree reduction), and prints: idle RSS and CPU share, busy peak RSS, CPU seconds spent
and the busy wall time.

    python -m bench.scheduler_footprint [--tasks 100000] [--idle 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time

import psutil
from distributed import Client

from tests.conftest import free_port

GIB = 1 << 30


def _inc(x: int) -> int:
    return x + 1


def _add(*xs: int) -> int:
    return sum(xs)


class Sampler:
    """Peak RSS and CPU seconds of one process, sampled every ``period`` seconds."""

    def __init__(self, pid: int, period: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.period = period
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            time.sleep(self.period)

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def __enter__(self) -> Sampler:
        self.peak_rss = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scheduler_footprint")
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--idle", type=float, default=10)
    args = p.parse_args(argv)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                        str(port), "--dashboard-address", f"127.0.0.1:{free_port()}"])
    workers = [_start(["distributed.cli.dask_worker", address, "--nthreads", "1",
                       "--memory-limit", "1GiB", "--no-dashboard"]) for _ in range(2)]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            with Sampler(scheduler.pid) as idle:
                before = idle.cpu_seconds()
                time.sleep(args.idle)
                idle_cpu = (idle.cpu_seconds() - before) / args.idle
            with Sampler(scheduler.pid) as busy:
                before, started = busy.cpu_seconds(), time.monotonic()
                futures = client.map(_inc, range(args.tasks))
                while len(futures) > 1:
                    futures = [client.submit(_add, *futures[i:i + 32])
                               for i in range(0, len(futures), 32)]
                total = futures[0].result()
                wall = time.monotonic() - started
                busy_cpu = busy.cpu_seconds() - before
            assert total == sum(range(1, args.tasks + 1))
            tasks = args.tasks + sum(-(-args.tasks // 32 ** k) for k in range(1, 5)
                                     if args.tasks > 32 ** (k - 1))
            print(f"idle scheduler: RSS {idle.peak_rss / GIB:.3f} GiB, CPU "
                  f"{idle_cpu * 100:.1f} % of a core over {args.idle:g} s")
            print(f"busy scheduler ({tasks:,} tasks): peak RSS {busy.peak_rss / GIB:.3f} GiB, "
                  f"{busy_cpu:.1f} CPU s in {wall:.1f} s wall "
                  f"({busy_cpu / wall * 100:.0f} % of a core)")
    finally:
        for process in (*workers, scheduler):
            process.terminate()
        for process in (*workers, scheduler):
            process.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
