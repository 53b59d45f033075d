"""A roll-out of a runtime version to every host, as the gateway drives it (pure: the
backend does the calls), and kept in the gateway's state directory so a restarted
gateway (its own upgrade is the last step) carries on where it stopped.

Per node, each round:

- on the new version already: ``done`` (a worker node takes placements again);
- a worker node: ``draining`` (no new placements) until it holds no Dask process, then
  asked to upgrade in place; still busy after ``drain_seconds``: ``stuck``, naming the
  users whose clusters hold it (the roll-out never stops user work);
- the scheduler host: asked to upgrade in place at once (its agent restarts; every
  scheduler keeps running and is re-adopted, still on its own version);
- ``upgrading`` until the node reports the version; ``failed`` if its install failed.

Once no node is left to wait for, the gateway upgrades itself (``gateway`` entry).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

UPGRADE_RETRY_SECONDS = 180.0
"""An upgrade asked of a node that still reports its old version after this is asked
again (the agent may have restarted before it started installing)."""
SETTLED = ("done", "stuck", "failed")


@dataclass
class NodeView:
    """What the roll-out needs to know of one node this round."""

    node_id: str
    role: str
    version: str
    busy: bool
    holders: list[str]
    """Users whose clusters have processes on it."""
    upgrade: dict[str, Any] | None
    """The agent's report of the last upgrade asked of it."""


@dataclass
class Rollout:
    version: str
    started_at: float
    drain_seconds: float
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    gateway: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None

    @property
    def deadline(self) -> float:
        return self.started_at + self.drain_seconds

    def step(self, nodes: list[NodeView], now: float | None = None) -> list[str]:
        """Update every node's entry; the ids of the nodes to ask to upgrade now."""
        now = time.time() if now is None else now
        ask = []
        for node in nodes:
            entry = self.nodes.setdefault(node.node_id, {
                "role": node.role, "from": node.version, "state": "pending", "since": now})
            entry["version"] = node.version
            if node.version == self.version:
                _move(entry, "done", now)
                continue
            if node.role == "worker" and node.busy:
                entry["holding"] = node.holders
                _move(entry, "stuck" if now > self.deadline else "draining", now)
                continue
            report = node.upgrade or {}
            if report.get("version") == self.version and report.get("state") == "failed":
                entry["message"] = report.get("message", "")
                _move(entry, "failed", now)
                continue
            if entry["state"] != "upgrading" or now - entry["since"] > UPGRADE_RETRY_SECONDS:
                ask.append(node.node_id)
                _move(entry, "upgrading", now, force=True)
        return ask

    def draining(self, node_id: str) -> bool:
        """A worker node on another version takes no new placements."""
        entry = self.nodes.get(node_id)
        return bool(entry and entry["role"] == "worker" and entry["state"] != "done"
                    and not self.finished_at)

    def nodes_settled(self) -> bool:
        return all(e["state"] in SETTLED for e in self.nodes.values())

    def finish(self, gateway_version: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.gateway.setdefault("from", gateway_version)
        self.gateway["version"] = gateway_version
        if gateway_version == self.version:
            self.gateway["state"] = "done"
            if all(e["state"] == "done" for e in self.nodes.values()):
                self.finished_at = self.finished_at or now

    def report(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        states = [e["state"] for e in self.nodes.values()]
        return {**asdict(self), "elapsed_seconds": round(now - self.started_at, 1),
                "done": self.finished_at is not None,
                "counts": {s: states.count(s) for s in sorted(set(states))}}

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Rollout | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None


def _move(entry: dict[str, Any], state: str, now: float, force: bool = False) -> None:
    if force or entry["state"] != state:
        entry["state"], entry["since"] = state, now
