"""The admin API: what ``dask-platform admin`` and ``dask-platform users`` call.

Every route answers members of the admins platform group only (403 with who may
otherwise); every change is written to the audit trail with the admin's name.

- ``GET /api/v1/admin/clusters``: every cluster (owner, group, status, workers, cores,
  memory, age, idle time, nodes).
- ``DELETE /api/v1/admin/clusters/{name}``: stop anyone's cluster.
- ``GET /api/v1/admin/queue``: what waits for room, in service order.
- ``GET /api/v1/admin/nodes``: nodes with their load; ``POST .../{node}/drain`` and
  ``.../undrain``: a drained node takes no new processes (its running ones stay).
- ``POST /api/v1/admin/users/{name}/offboard``: forget the user's logins, stop their
  clusters and notebook.
- ``POST /api/v1/admin/users/{name}/refresh``: forget the user's cached logins, so a
  change of their groups applies at once (onboarding).
- ``POST /api/v1/admin/audit``: a step an admin's command took elsewhere (the directory,
  the home) into the gateway's trail.
- ``GET /api/v1/usage?since=7d&by=user|group|cluster``: usage and cost; everyone may
  ask, and sees only their own unless an admin.
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web
from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.routes import api_handler

from daskplatform.audit import trail
from daskplatform.gateway.api_input import AuditStep, checked_body
from daskplatform.gateway.usage import BY
from daskplatform.identifiers import is_safe_name
from daskplatform.shown import shown

GIB = 2**30
SINCE = re.compile(r"(\d{1,4})([hdw])")
SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> float:
    """``7d``, ``24h``, ``2w`` -> seconds, or 422 saying the form."""
    found = SINCE.fullmatch(text)
    if not found:
        raise web.HTTPUnprocessableEntity(
            reason=f"since: a number and h, d or w (24h, 7d, 2w), got {shown(text)}")
    return int(found.group(1)) * SECONDS[found.group(2)]


def _admin(request: web.Request) -> Any:
    user = request["user"]
    if not user.admin:
        trail().record("admin.refused", user.name, method=request.method,
                       path=request.path)
        raise web.HTTPForbidden(reason=f"user {user.name} is not an admin: this is for "
                                       "members of the admins platform group")
    return user


def _username(request: web.Request) -> str:
    username = request.match_info["username"]
    if not is_safe_name(username):
        raise web.HTTPUnprocessableEntity(reason=f"not a user name: {shown(username)}")
    return username


def forget_logins(app: web.Application, username: str) -> None:
    """Drop what the gateway remembers of ``username``'s logins: its cookie (dask-gateway's
    cache) and the directory's cached answer; their next request logs in afresh."""
    auth = app["authenticator"]
    cache = getattr(auth, "cache", None)
    if cache is not None:
        cookie = cache.name_to_cookie.pop(username, None)
        if cookie is not None:
            cache.cookie_to_user.pop(cookie, None)
    forget = getattr(auth, "forget", None)
    if forget is not None:
        forget(username)


class AdminRoutes:
    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def routes(self) -> list[web.RouteDef]:
        def guarded(handler: Any) -> Any:
            return api_handler(handler, user_authenticated=True)

        base = "/api/v1/admin"
        return [
            web.get(f"{base}/clusters", guarded(self.clusters)),
            web.delete(f"{base}/clusters/{{cluster_name}}", guarded(self.stop_cluster)),
            web.get(f"{base}/queue", guarded(self.queue)),
            web.get(f"{base}/nodes", guarded(self.nodes)),
            web.post(f"{base}/nodes/{{node_id}}/drain", guarded(self.drain)),
            web.post(f"{base}/nodes/{{node_id}}/undrain", guarded(self.undrain)),
            web.post(f"{base}/users/{{username}}/offboard", guarded(self.offboard)),
            web.post(f"{base}/users/{{username}}/refresh", guarded(self.refresh)),
            web.post(f"{base}/audit", guarded(self.audit)),
            web.get("/api/v1/usage", guarded(self.usage)),
        ]

    async def clusters(self, request: web.Request) -> web.Response:
        _admin(request)
        backend, now = self.backend, time.time()
        idle = await backend.idle_seconds()
        listing = []
        for cluster in backend.db.active_clusters():
            cfg = cluster.config
            workers = [w for w in cluster.workers.values() if w.status < JobStatus.STOPPED]
            placed = [cluster.state or {}, *(w.state or {} for w in workers)]
            listing.append({
                "name": cluster.name, "user": cluster.username, "group": cfg.platform_group,
                "status": cluster.status.name, "workers": len(workers),
                "cores": cfg.scheduler_cores + len(workers) * cfg.worker_cores,
                "memory_gb": round((cfg.scheduler_memory + len(workers) * cfg.worker_memory)
                                   / GIB, 3),
                "age_seconds": round(now - cluster.start_time / 1000, 1),
                "idle_seconds": idle.get(cluster.name),
                "nodes": sorted({s["node_id"] for s in placed if "node_id" in s}),
            })
        return web.json_response({"clusters": listing})

    async def stop_cluster(self, request: web.Request) -> web.Response:
        admin = _admin(request)
        name = request.match_info["cluster_name"]
        cluster = self.backend.db.get_cluster(name)
        if cluster is None or cluster.status >= JobStatus.STOPPED:
            raise web.HTTPNotFound(reason=f"no running cluster {shown(name)}; "
                                          "dask-platform admin clusters lists them")
        trail().record("admin.stop_cluster", cluster.username, by=admin.name, cluster=name)
        await self.backend.stop_cluster(name)
        return web.json_response({"stopped": name, "user": cluster.username})

    async def queue(self, request: web.Request) -> web.Response:
        _admin(request)
        return web.json_response({"waiting": self.backend.waiting()})

    async def nodes(self, request: web.Request) -> web.Response:
        _admin(request)
        return web.json_response({"nodes": self.backend.node_loads()})

    async def drain(self, request: web.Request) -> web.Response:
        return await self._set_drained(request, True)

    async def undrain(self, request: web.Request) -> web.Response:
        return await self._set_drained(request, False)

    async def _set_drained(self, request: web.Request, drained: bool) -> web.Response:
        admin = _admin(request)
        node_id = request.match_info["node_id"]
        if not self.backend.set_drained(node_id, drained):
            raise web.HTTPNotFound(reason=f"no node {shown(node_id)}; dask-platform admin "
                                          "nodes lists them")
        trail().record("admin.drain" if drained else "admin.undrain", admin.name,
                       node=node_id)
        return web.json_response({"node": node_id, "drained": drained})

    async def refresh(self, request: web.Request) -> web.Response:
        _admin(request)
        username = _username(request)
        forget_logins(request.app, username)
        return web.json_response({"forgotten": username})

    async def offboard(self, request: web.Request) -> web.Response:
        admin = _admin(request)
        username = _username(request)
        forget_logins(request.app, username)
        stopped = await self.backend.stop_everything_of(username,
                                                        f"offboarded by {admin.name}")
        trail().record("user.work_stopped", username, by=admin.name, **stopped)
        return web.json_response(stopped)

    async def audit(self, request: web.Request) -> web.Response:
        admin = _admin(request)
        step = await checked_body(request, AuditStep)
        fields = {k: v for k, v in (step.model_extra or {}).items() if k not in ("by", "at")}
        line = trail().record(step.event, step.user, by=admin.name, **fields)
        return web.json_response(line, status=201)

    async def usage(self, request: web.Request) -> web.Response:
        user = request["user"]
        since = parse_since(request.query.get("since", "7d"))
        by = request.query.get("by", "user")
        if by not in BY:
            raise web.HTTPUnprocessableEntity(
                reason=f"by: one of {', '.join(BY)}, got {shown(by)}")
        now = time.time()
        where = None if user.admin else {"user": user.name}
        rows = self.backend.accounting.ledger.usage(now - since, now, by, where)
        return web.json_response({"since": now - since, "until": now, "by": by,
                                  "rows": [row.to_dict() for row in rows],
                                  "all_users": user.admin})
