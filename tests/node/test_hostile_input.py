"""Hostile and malformed input to the node agent's API (issue 14), against a real agent
with a running scheduler: each case found by hand answers a clear 4xx, generated input
never gets a 5xx, a refused request starts, stops and deletes nothing (the process
directory included), and afterwards the agent still serves and spawns."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import strategies as st

from daskplatform.identifiers import UnsafeName
from daskplatform.node import agent as agent_cli
from daskplatform.node.client import NodeAgentClient
from tests.hostile import (
    Answer,
    Call,
    assert_refused,
    bodies,
    calls,
    dump,
    either,
    fuzz,
    path_parts,
    query_values,
    resolve,
    send,
)
from tests.node.harness import Agent, settings_file
from tests.node.test_agent import SCHEDULER_ARGV

SPAWN = "POST /v1/processes"
PROCESS = "GET /v1/processes/{id}"
STOP = "DELETE /v1/processes/{id}"
LOG = "GET /v1/processes/{id}/log"
UPGRADE = "POST /v1/upgrade"
ROUTES = ("GET /v1/health", "GET /v1/capacity", "GET /v1/processes", SPAWN, PROCESS, STOP,
          LOG, UPGRADE)
"""Every route of docs/node-agent-api.md."""

EXAMPLES = 800
"""Generated calls over all routes (about 100 a route): some 10 s on 2 cores."""

AS_GATEWAY = (("Authorization", b"Bearer {token}"), ("Content-Type", b"application/json"))
QUICK_EXIT = {"kind": "scheduler", "argv": ["--no-such-option"], "cores": 0.1,
              "memory_gb": 0.1}
"""A valid spawn whose process exits at once: cheap when generated input is valid."""


def _spawn(body: bytes, head: tuple[tuple[str, bytes], ...] = AS_GATEWAY) -> Call:
    return Call(SPAWN, "/v1/processes", head, body)


def _spawn_with(**fields: Any) -> Call:
    return _spawn(dump({"id": "seed", **QUICK_EXIT, **fields}))


ID_RULE = "id: must be 1 to 128 of A-Z a-z 0-9 _ . -, starting with a letter, digit or _"
WHY = [
    pytest.param(_spawn_with(id="."), 400, f'{ID_RULE}, got "."', id="id-dot"),
    pytest.param(_spawn_with(id=".."), 400, f'{ID_RULE}, got ".."', id="id-dot-dot"),
    pytest.param(Call("GET /v1/processes", "/v1/processes",
                      (("Authorization", b"Bearer \xff\xfe"),)),
                 401, "missing or wrong bearer token", id="authorization-not-utf8"),
    pytest.param(Call("GET /v1/capacity", "/v1/capacity",
                      (*AS_GATEWAY, ("X-Hostile", b"\xc3\x28"))),
                 400, "header X-Hostile: must be UTF-8 text", id="header-not-utf8"),
]
"""Every case of issue 14's "Why" for the agent, with the answer it now gets."""

FOUND_READING = [
    pytest.param(_spawn(b'{"id": "x"}', (*AS_GATEWAY[:1], ("Content-Type",
                                                            b"application/json; charset=nope"))),
                 400, 'Content-Type: charset must be utf-8, got "nope"', id="charset"),
    pytest.param(_spawn(b"[" * 50_000 + b"]" * 50_000), 400,
                 "body: not valid JSON (nested too deeply)", id="deep-nesting"),
    pytest.param(_spawn_with(argv=["a\0b"]), 400,
                 "argv.0: must be text without NUL characters or lone surrogates",
                 id="argv-nul"),
    pytest.param(_spawn(dump({"id": "x", **QUICK_EXIT, "files": {"dask.pem": "\udc80"}})),
                 400, "files.dask.pem: must be text without NUL", id="file-surrogate"),
    pytest.param(_spawn_with(cores=True), 400,
                 "cores: must be a number above 0, at most 1024, got true", id="cores-bool"),
    pytest.param(_spawn_with(argv=["{port" + "9" * 5000 + "}"]), 400,
                 "at most 16 port placeholders", id="placeholder-index-huge"),
]
"""Cases found while reading the agent: a 500 each before."""

UPGRADE_CASES = [
    pytest.param(Call(UPGRADE, "/v1/upgrade", AS_GATEWAY,
                      b'{"version": "0123456789ab", "force": true}'), 400,
                 "force: unknown field; allowed: version", id="upgrade-unknown-field"),
    pytest.param(Call(UPGRADE, "/v1/upgrade", AS_GATEWAY, b'{"version": "latest"}'), 400,
                 'version: must be 12 hex digits (a runtimeVersion the stack publishes), '
                 'got "latest"', id="upgrade-not-a-version"),
]
"""An upgrade took a mistyped field for none and started installing."""


@dataclass
class Node:
    agent: Agent
    resident: str
    """A running scheduler, which every refused request must leave running."""
    version: str
    """The runtime version the agent runs (an upgrade to it changes nothing)."""

    def send(self, call: Call) -> Answer:
        return send(self.agent.url, resolve(call, {"process": self.resident,
                                                   "token": self.agent.token,
                                                   "version": self.version}))

    def processes(self) -> dict[str, str]:
        """Every process the agent knows, and its state."""
        answer = self.send(Call("GET /v1/processes", "/v1/processes", AS_GATEWAY))
        assert answer.status == 200, answer
        return {p["id"]: p["state"] for p in json.loads(answer.text)["processes"]}

    snapshot = processes

    def assert_unchanged(self, before: dict[str, str]) -> None:
        """Nothing started or forgotten, the resident running, its directory there."""
        after = self.processes()
        assert set(after) == set(before), set(after) ^ set(before)
        assert after[self.resident] == "running", after
        assert (self.agent.workdir / "procs" / self.resident).is_dir()

    def accepted(self, call: Call, answer: Answer) -> None:
        """A valid generated spawn starts a process that exits at once: nothing to undo."""


def _wait_running(agent: Agent, proc_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = requests.get(f"{agent.url}/v1/processes/{proc_id}", headers=agent.headers,
                             timeout=10).json()["state"]
        if state == "running":
            return
        assert state == "starting", state
        time.sleep(0.1)
    raise AssertionError(f"{proc_id} did not start")


def _spawn_scheduler(agent: Agent, proc_id: str) -> None:
    created = requests.post(f"{agent.url}/v1/processes", headers=agent.headers, timeout=30,
                            json={"id": proc_id, "kind": "scheduler", "argv": SCHEDULER_ARGV,
                                  "cores": 0.5, "memory_gb": 0.5})
    assert created.status_code == 201, created.text
    _wait_running(agent, proc_id)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    agent = Agent(tmp_path_factory.mktemp("hostile-agent"), "scheduler").start()
    try:
        _spawn_scheduler(agent, "resident")
        version = requests.get(f"{agent.url}/v1/capacity", headers=agent.headers,
                               timeout=10).json()["runtime_version"]
        yield Node(agent, "resident", version)
    finally:
        agent.close()


@pytest.mark.parametrize(("call", "status", "message"), WHY + FOUND_READING + UPGRADE_CASES)
def test_each_case_found_by_hand_gets_a_clear_4xx_and_changes_nothing(
        node: Node, call: Call, status: int, message: str) -> None:
    assert_refused(node, call, status, message)


@pytest.mark.parametrize("proc_id", [".", "..", "a/b", "-rf"])
async def test_the_client_builds_no_url_from_an_id_that_is_not_a_plain_name(
        node: Node, proc_id: str) -> None:
    """``..`` in a URL would name another resource (``DELETE /v1/``)."""
    async with NodeAgentClient(node.agent.url, node.agent.token) as client:
        for call in (client.get, client.stop, client.log):
            with pytest.raises(UnsafeName, match="process id: must be 1 to 128"):
                await call(proc_id)
    assert node.processes()[node.resident] == "running"


def test_an_agent_refuses_a_node_id_that_is_not_a_plain_name(tmp_path: Path) -> None:
    """The node id names the agent's state directory and its cgroups."""
    args = agent_cli.parse_args(["--role", "worker", "--settings", str(settings_file(tmp_path)),
                       "--node-id", "..", "--cores", "1", "--memory-gb", "1"])
    with pytest.raises(SystemExit, match="--node-id: must be 1 to 128 .*, got \"..\""):
        agent_cli.resolve(args)


# ---------------------------------------------------------------- generated input

_id = either(st.just("{process}"), path_parts)
_spawn_fields = {
    "id": st.from_regex(r"fuzz-[a-z0-9]{1,8}", fullmatch=True),
    "kind": st.just("scheduler"), "argv": st.just(QUICK_EXIT["argv"]),
    "env": st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True),
                           st.text(max_size=8), max_size=2),
    "files": st.just({"dask.crt": "certificate"}),
    "cores": st.sampled_from([0.1, 0.2]), "memory_gb": st.just(0.1),
    "labels": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
}
NO_SUCH_VERSION = "0123456789ab"
"""A well-formed version no artifacts bucket holds: its install fails (this machine was
not installed by user data) and the agent keeps serving; one install at a time."""
_upgrade_fields = {"version": either(st.just("{version}"), st.just(NO_SUCH_VERSION))}


def _calls(route: str, paths: st.SearchStrategy[str],
           body: st.SearchStrategy[bytes | None] | None = None) -> st.SearchStrategy[Call]:
    return calls(route, paths, [b"Bearer {token}"], body)


AGENT_CALLS = st.one_of(
    *[_calls(route, st.just(route.split(" ", 1)[1])) for route in ROUTES[:3]],
    _calls(SPAWN, st.just("/v1/processes"), bodies(_spawn_fields)),
    _calls(PROCESS, _id.map(lambda i: f"/v1/processes/{i}")),
    _calls(STOP, st.tuples(path_parts, query_values(["0", "2.5"])).map(  # not the resident
        lambda pair: f"/v1/processes/{pair[0]}?grace={pair[1]}")),
    _calls(LOG, st.tuples(_id, query_values(["1", "200"])).map(
        lambda pair: f"/v1/processes/{pair[0]}/log?lines={pair[1]}")),
    _calls(UPGRADE, st.just("/v1/upgrade"), bodies(_upgrade_fields)),
)


def test_generated_hostile_input_never_gets_a_5xx_and_the_agent_still_spawns(
        node: Node) -> None:
    fuzz(node, AGENT_CALLS, EXAMPLES, [case.values[0] for case in WHY], ROUTES)

    assert node.send(Call("GET /v1/health", "/v1/health")).status == 200
    _spawn_scheduler(node.agent, "after-fuzzing")
    stopped = node.send(Call(STOP, "/v1/processes/after-fuzzing?grace=5", AS_GATEWAY))
    assert stopped.status == 200 and json.loads(stopped.text)["state"] == "stopped", stopped
    assert node.processes()[node.resident] == "running"
