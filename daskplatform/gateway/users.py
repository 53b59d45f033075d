"""dask-gateway's user, as the platform knows it: with the POSIX identity every process of
the user runs under, and admins allowed to see and stop every cluster (dask-gateway's own
check ignores its admin flag: admins got 403 on other users' clusters)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dask_gateway_server.models import User


class PlatformUser(User):
    def __init__(self, name: str, groups: Iterable[str] = (), admin: bool = False,
                 uid: int | None = None, gid: int | None = None) -> None:
        super().__init__(name, groups=groups, admin=admin)
        self.uid = uid
        self.gid = gid

    def has_permissions(self, cluster: Any) -> bool:
        """The owner, and admins: they list, inspect and stop every cluster."""
        return self.admin or self.name == cluster.username
