"""The node agent for real: HTTP API, Dask processes spawned through it, stop, logs."""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any

import pytest
from distributed import Client

from daskplatform.node.client import NodeAgentClient, NodeAgentError, NodeUnreachable
from tests.conftest import free_port
from tests.node.harness import Agent, cgroup_dirs

SCHEDULER_ARGV = ["--host", "{host}", "--port", "{port0}",
                  "--dashboard-address", "{host}:{port1}"]


def worker_argv(scheduler: str) -> list[str]:
    return [scheduler, "--host", "{host}", "--worker-port", "{port0}",
            "--nanny-port", "{port1}", "--dashboard-address", "{host}:{port2}"]


def spec(kind: str, argv: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": f"{kind}-{secrets.token_hex(4)}", "kind": kind, "argv": argv,
            "cores": 1, "memory_gb": 1, "labels": {"cluster": "c1", "user": "alice"},
            **extra}


def client_for(agent: Agent) -> NodeAgentClient:
    return NodeAgentClient(agent.url, agent.token)


async def wait_state(client: NodeAgentClient, proc_id: str, states: set[str],
                     timeout: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            proc = await client.get(proc_id)
            if proc["state"] in states:
                return proc
            await asyncio.sleep(0.05)


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is not alive
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


async def test_health_is_open_everything_else_needs_the_token(scheduler_agent: Agent) -> None:
    async with NodeAgentClient(scheduler_agent.url, "wrong-token-0000000") as wrong:
        assert await wrong.health() == {"ok": True}
        with pytest.raises(NodeAgentError) as denied:
            await wrong.capacity()
        assert denied.value.status == 401
    async with NodeAgentClient(scheduler_agent.url, "") as anonymous:
        with pytest.raises(NodeAgentError) as denied:
            await anonymous.processes()
        assert denied.value.status == 401
    async with client_for(scheduler_agent) as client:
        assert isinstance(await client.processes(), list)


async def test_capacity_reports_shape_and_confinement(scheduler_agent: Agent) -> None:
    async with client_for(scheduler_agent) as client:
        cap = await client.capacity()
    assert cap["node_id"] == scheduler_agent.node_id
    assert (cap["role"], cap["host"], cap["cores"], cap["memory_gb"]) == (
        "scheduler", "127.0.0.1", 2, 4)
    assert cap["confinement"] in ("cgroup-v2", "cgroup-v1", "nanny")
    assert cap["warm"] is True


async def test_scheduler_and_worker_spawned_warm_compute_and_stop(
        scheduler_agent: Agent, worker_agent: Agent) -> None:
    async with client_for(scheduler_agent) as sched, client_for(worker_agent) as work:
        s = await sched.spawn(spec("scheduler", SCHEDULER_ARGV))
        assert s["state"] in ("starting", "running") and len(s["ports"]) == 2
        address = f"tcp://127.0.0.1:{s['ports'][0]}"
        w = await work.spawn(spec("worker", worker_argv(address)))
        assert (await sched.capacity())["used_cores"] == 1
        await wait_state(sched, s["id"], {"running"})

        async with Client(address, asynchronous=True, timeout=30) as dask_client:
            await dask_client.wait_for_workers(1, timeout=30)
            assert await dask_client.submit(sum, [1, 2, 3]) == 6
            worker_pids = list((await dask_client.run(os.getpid)).values())

        # Warm: no exec happened, so the scheduler, the nanny and the nanny's worker
        # all still carry the fork server's command line.
        assert s["warm"] and w["warm"]
        for pid in (s["pid"], w["pid"], *worker_pids):
            assert "daskplatform.node.warm" in cmdline(pid)

        listed = {p["id"]: p for p in await work.processes()}
        assert listed[w["id"]]["labels"] == {"cluster": "c1", "user": "alice"}
        assert "Scheduler at:" in await sched.log(s["id"], lines=200)
        assert len((await sched.log(s["id"], lines=2)).splitlines()) == 2

        stopped_w = await work.stop(w["id"], grace=5)
        stopped_s = await sched.stop(s["id"], grace=5)
    for proc in (stopped_w, stopped_s):
        assert proc["state"] == "stopped" and proc["ended_at"] is not None
    for pid in (s["pid"], w["pid"], *worker_pids):
        assert not alive(pid)
    for agent, proc in ((scheduler_agent, s), (worker_agent, w)):
        assert not any((d / proc["id"]).exists() for d in cgroup_dirs(agent.node_id, agent.workdir))
        assert not (agent.workdir / "procs" / proc["id"]).exists()


async def test_same_spec_is_idempotent_other_spec_conflicts(scheduler_agent: Agent) -> None:
    async with client_for(scheduler_agent) as client:
        first = spec("scheduler", SCHEDULER_ARGV)
        created = await client.spawn(first)
        again = await client.spawn(first)
        assert again["pid"] == created["pid"]
        with pytest.raises(NodeAgentError) as conflict:
            await client.spawn({**first, "cores": 0.5})
        assert conflict.value.status == 409
        await client.stop(first["id"], grace=5)


async def test_overcommit_is_refused_with_507(scheduler_agent: Agent) -> None:
    async with client_for(scheduler_agent) as client:
        with pytest.raises(NodeAgentError) as too_big:
            await client.spawn(spec("scheduler", SCHEDULER_ARGV, cores=3))
        assert too_big.value.status == 507 and "free 2 cores" in too_big.value.message
        held = await client.spawn(spec("scheduler", SCHEDULER_ARGV, cores=1.5, memory_gb=3.5))
        with pytest.raises(NodeAgentError) as full:
            await client.spawn(spec("scheduler", SCHEDULER_ARGV, cores=0.5, memory_gb=1))
        assert full.value.status == 507 and "0.5 GB" in full.value.message
        fits = await client.spawn(spec("scheduler", SCHEDULER_ARGV, cores=0.5, memory_gb=0.5))
        for proc in (held, fits):
            await client.stop(proc["id"], grace=5)
        assert (await client.capacity())["used_cores"] == 0


@pytest.mark.parametrize(("change", "field"), [
    ({"cores": None}, "cores"),
    ({"memory_gb": -1}, "memory_gb"),
    ({"kind": "gpu"}, "kind"),
    ({"kind": "worker"}, "kind: this is a scheduler node"),
    ({"id": "../etc"}, "id"),
    ({"files": {"../x": "y"}}, "files"),
    ({"env": {"A B": "c"}}, "env"),
    ({"argv": ["{port99}"]}, "argv/env"),
    ({"colour": "red"}, "colour"),
])
async def test_bad_spawn_names_the_field(scheduler_agent: Agent, change: dict[str, Any],
                                         field: str) -> None:
    body = {k: v for k, v in {**spec("scheduler", SCHEDULER_ARGV), **change}.items()
            if v is not None}
    async with client_for(scheduler_agent) as client:
        with pytest.raises(NodeAgentError) as bad:
            await client.spawn(body)
    assert bad.value.status == 400 and field in bad.value.message


async def test_bad_query_and_unknown_id(scheduler_agent: Agent) -> None:
    async with client_for(scheduler_agent) as client:
        with pytest.raises(NodeAgentError) as missing:
            await client.get("no-such-process")
        assert missing.value.status == 404
        with pytest.raises(NodeAgentError) as bad:
            await client.log("no-such-process", lines=0)
        assert bad.value.status == 400 and "lines" in bad.value.message


async def test_exit_is_detected_with_its_code(scheduler_agent: Agent) -> None:
    async with client_for(scheduler_agent) as client:
        proc = await client.spawn(spec("scheduler", ["--no-such-option"]))
        ended = await wait_state(client, proc["id"], {"stopped", "failed"})
        assert (ended["state"], ended["exit_code"]) == ("failed", 2)
        assert "No such option" in await client.log(proc["id"])
        assert (await client.capacity())["used_cores"] == 0


async def test_unreachable_agent_raises_node_unreachable() -> None:
    async with NodeAgentClient(f"http://127.0.0.1:{free_port()}", "x" * 16, timeout=2) as c:
        with pytest.raises(NodeUnreachable):
            await c.health()


async def test_files_are_private_in_the_process_directory(scheduler_agent: Agent) -> None:
    async with client_for(scheduler_agent) as client:
        proc = await client.spawn(spec("scheduler", SCHEDULER_ARGV,
                                       files={"dask.pem": "secret-key-material"}))
        path = scheduler_agent.workdir / "procs" / proc["id"] / "dask.pem"
        assert path.read_text() == "secret-key-material"
        assert path.stat().st_mode & 0o777 == 0o600
        await client.stop(proc["id"], grace=5)
        assert not path.exists()
