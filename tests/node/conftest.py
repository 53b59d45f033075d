"""Agents shared by a test module: one scheduler-role and one worker-role node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node.harness import Agent


@pytest.fixture(scope="module")
def scheduler_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    agent = Agent(tmp_path_factory.mktemp("sched"), "scheduler").start()
    yield agent
    agent.close()


@pytest.fixture(scope="module")
def worker_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    agent = Agent(tmp_path_factory.mktemp("work"), "worker").start()
    yield agent
    agent.close()


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    return tmp_path
