"""The cgroup layout the agent writes on a systemd host with cgroup v2 (Amazon Linux 2023,
systemd 252): Dask processes in a delegated scope of their own, the agent's own cgroup a
leaf it never writes to, so systemd can restart the agent while processes run.

This machine has no systemd and no writable cgroup v2, so a directory stands in for
``/sys/fs/cgroup`` (the files the kernel would create are plain files here); what is
checked is which directories and files the agent makes and what it writes into them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from daskplatform.host.units import agent_unit
from daskplatform.node import confine
from daskplatform.settings import PortSettings
from tests.cloud.host_units import directives

AGENT_GROUP = "system.slice/dask-platform-agent.service"
GIB = 1 << 30


@pytest.fixture
def cgroup_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A systemd host's cgroup v2 tree with the agent's unit in it (one process)."""
    root = tmp_path / "cgroup"
    agent = root / AGENT_GROUP
    agent.mkdir(parents=True)
    (agent / "cgroup.procs").write_text(f"{os.getpid()}\n")
    runtime = tmp_path / "run-systemd-system"
    runtime.mkdir()
    monkeypatch.setattr(confine, "SYSTEMD_RUNTIME", runtime)
    monkeypatch.setattr(confine, "CGROUP2_ROOT", root)
    monkeypatch.setattr(confine, "cgroup_mounts",
                        lambda *_: [(str(root), "cgroup2", {"rw"})])
    return root


class FakeSystemdRun:
    """What ``systemd-run --scope`` does: makes the scope and runs the anchor in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **_: object) -> None:
        self.calls.append(argv)
        scope = confine.scope_dir(self.root)
        scope.mkdir(parents=True)
        confine.prepare_scope(scope, 4242)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text().strip() if p.is_file() else "<dir>"
            for p in sorted(root.rglob("*"))}


def test_processes_live_in_a_delegated_scope_and_the_agent_group_stays_a_leaf(
        cgroup_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    systemd_run = FakeSystemdRun(cgroup_root)
    monkeypatch.setattr(subprocess, "Popen", systemd_run)
    found = confine.detect("node-1")
    assert found.mode == "cgroup-v2"
    group = found.create("w-1", 1.5, 2 * GIB)
    scope = "dask-platform.slice/dask-platform-processes.scope"
    assert _tree(cgroup_root) == {
        "dask-platform.slice": "<dir>",
        scope: "<dir>",
        f"{scope}/anchor": "<dir>",
        f"{scope}/anchor/cgroup.procs": "4242",
        f"{scope}/cgroup.subtree_control": "+cpu +memory",
        f"{scope}/p-w-1": "<dir>",
        f"{scope}/p-w-1/cpu.max": "150000 100000",
        f"{scope}/p-w-1/memory.max": str(2 * GIB),
        f"{scope}/p-w-1/memory.swap.max": "0",
        # The agent's own group: untouched, no child, no controller handed down.
        "system.slice": "<dir>",
        AGENT_GROUP: "<dir>",
        f"{AGENT_GROUP}/cgroup.procs": str(os.getpid()),
    }
    assert group.procs_files == (str(cgroup_root / scope / "p-w-1" / "cgroup.procs"),)
    (command,) = systemd_run.calls
    assert command[:8] == ["systemd-run", "--scope", "--quiet", "--collect",
                           "--unit=dask-platform-processes.scope",
                           "--slice=dask-platform.slice", "--property=Delegate=yes", "--"]
    assert command[-3:] == ["-m", "daskplatform.node.confine", "anchor"]


def test_a_restarted_agent_reuses_the_scope_its_processes_live_in(
        cgroup_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    systemd_run = FakeSystemdRun(cgroup_root)
    monkeypatch.setattr(subprocess, "Popen", systemd_run)
    first = confine.detect("node-1")
    first.create("w-1", 1, GIB)
    again = confine.detect("node-1")  # the agent restarted; w-1 still runs
    assert again.mode == "cgroup-v2" and len(systemd_run.calls) == 1
    assert again.group_of("w-1") == first.group_of("w-1")


def test_without_systemd_the_agent_does_not_make_a_scope(
        cgroup_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(confine, "SYSTEMD_RUNTIME", tmp_path / "absent")
    monkeypatch.setattr(subprocess, "Popen", FakeSystemdRun(cgroup_root))
    assert confine._try_v2("node-1") is None
    assert not confine.scope_dir(cgroup_root).exists()


def test_the_agent_unit_delegates_nothing_so_systemd_252_can_restart_it() -> None:
    """DelegateSubgroup= needs systemd >= 254; with Delegate=yes and controllers handed
    down below the agent, systemd 252 cannot put a restarted agent back (EBUSY)."""
    unit = directives(agent_unit("worker", "ssm:///p", "eu-west-1", PortSettings()).render())
    assert "DelegateSubgroup" not in unit and "Delegate" not in unit
    assert unit["KillMode"] == ["process"] and unit["Restart"] == ["always"]
