"""``dask-platform users``: on- and offboarding in minutes, by an admin.

    dask-platform users add NAME --group GROUP [--dry-run]
    dask-platform users remove NAME [--dry-run]
    dask-platform users list

Run where users' homes are mounted (the gateway host, as root: ``sudo -E``; locally,
``--homes <state dir>/homes``), logged in as an admin (``--admin NAME``, password from
``$DASK_PLATFORM_PASSWORD``). The account itself lives in FreeIPA (``ipa user-add``);
this grants or withdraws the platform:

- **add**: the user joins the LDAP group that grants GROUP; their home is created on the
  shared file system (owned by their uid, mode 0700); what they do next is printed.
- **remove**: their notebook server and clusters are stopped (through the hub and the
  gateway), their hub tokens revoked, their platform groups left, their home archived
  to the audit bucket (tar.gz, encrypted with the bucket's KMS key) and removed.

Every step is written to the gateway's audit trail. Both are idempotent: a user already
added, or already gone, is reported as such and nothing changes. ``--dry-run`` prints the
steps without taking them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

from daskplatform.audit_bucket import HOME_ARCHIVE_PREFIX
from daskplatform.aws import aws_client
from daskplatform.identity.ldap import DirectoryUnavailable, DirectoryUser, LdapDirectory
from daskplatform.identity.membership import Membership, MembershipError
from daskplatform.runtime_config import load_runtime_settings
from daskplatform.settings import SERVICE_PREFIX, QuotaSettings, RuntimeSettings
from daskplatform.status_cli import ADDRESS_ENV, PASSWORD_ENV, StatusError, authorization, fetch

DEFAULT_HOMES = "/srv/homes"


class UsersError(RuntimeError):
    """Why the command stopped, and what to do."""


def granting_group(quotas: QuotaSettings, group: str) -> str:
    """The LDAP group that grants platform ``group`` (its first ``ldapGroups``)."""
    if group not in quotas.groups:
        raise UsersError(f"--group: one of {', '.join(sorted(quotas.groups))}, got {group!r}")
    return (quotas.groups[group].ldap_groups or (group,))[0]


def platform_ldap_groups(quotas: QuotaSettings) -> set[str]:
    return {g for name, q in quotas.groups.items() for g in (q.ldap_groups or (name,))}


@dataclass
class Plan:
    """The steps of one command; each runs (or is only printed, with --dry-run)."""

    dry_run: bool
    record: Callable[[str, str, dict[str, Any]], None]
    done: list[str] = field(default_factory=list)

    def step(self, event: str, user: str, what: str, action: Callable[[], Any],
             **fields: Any) -> Any:
        if self.dry_run:
            print(f"would: {what}")
            return None
        result = action()
        print(f"done: {what}")
        self.done.append(event)
        self.record(event, user, fields)
        return result


class Users:
    def __init__(self, args: argparse.Namespace, settings: RuntimeSettings) -> None:
        self.args = args
        self.settings = settings
        self.homes = Path(args.homes)
        password = os.environ.get(PASSWORD_ENV, "")
        if not password:
            raise UsersError(f"set ${PASSWORD_ENV} to the password of --admin {args.admin}")
        self.auth = authorization(args.admin)
        try:
            self.membership = Membership(LdapDirectory.from_settings(settings), args.admin,
                                         password)
        except DirectoryUnavailable as exc:
            raise UsersError(f"the directory is unreachable: {exc}") from None
        if "admins" not in self._platform_groups(self.membership.admin):
            raise UsersError(f"{args.admin} is not in the admins platform group")

    def _platform_groups(self, user: DirectoryUser) -> list[str]:
        quotas = self.settings.quotas
        return sorted(name for name, q in quotas.groups.items()
                      if set(q.ldap_groups or (name,)) & user.groups)

    def _user(self, name: str) -> DirectoryUser:
        user = self.membership.user(name)
        if user is None:
            raise UsersError(f"there is no account {name} in the directory; create it in "
                             f"FreeIPA first (ipa user-add {name} ...)")
        return user

    def _audit(self, event: str, user: str, fields: dict[str, Any]) -> None:
        fetch(self.args.gateway, self.auth, path="/api/v1/admin/audit",
              body={"event": event, "user": user, **fields})

    # ------------------------------------------------------------------ add

    def add(self, name: str, group: str) -> int:
        ldap_group = granting_group(self.settings.quotas, group)
        user = self._user(name)
        if user.uid_number is None or user.gid_number is None:
            raise UsersError(f"{name} has no uidNumber/gidNumber in the directory; every "
                             "process runs under the user's own uid (FreeIPA: ipa user-mod "
                             f"{name} --uid N --gidnumber N)")
        plan = Plan(self.args.dry_run, self._audit)
        if ldap_group in user.groups:
            print(f"{name} is in {ldap_group} already (platform group {group})")
        else:
            plan.step("user.added", name, f"add {name} to {ldap_group} (platform group "
                      f"{group})", lambda: self.membership.add(user, ldap_group),
                      group=group, ldap_group=ldap_group)
        home = self.homes / name
        if home.exists():
            print(f"{home} exists already")
        else:
            plan.step("user.home_created", name, f"create {home} (uid {user.uid_number}, 0700)",
                      lambda: _make_home(home, user), home=str(home))
        if not plan.done and not self.args.dry_run:
            print(f"nothing changed: {name} was onboarded already")
            return 0
        if not self.args.dry_run:  # the gateway admits them now, not after its cache
            fetch(self.args.gateway, self.auth, path=f"/api/v1/admin/users/{name}/refresh",
                  body={})
        hub = _hub_url(self.args.gateway)
        print(f"\nnext, {name}: open {hub}/ and log in with your FreeIPA password; your "
              "JupyterLab starts on the pool, and in a notebook Gateway() needs no "
              "arguments. From scripts: Gateway(address=\"" + self.args.gateway + "\", "
              f"auth=BasicAuth(\"{name}\", password)).")
        return 0

    # ------------------------------------------------------------------ remove

    def remove(self, name: str) -> int:
        user = self.membership.user(name)
        groups = sorted(platform_ldap_groups(self.settings.quotas) & (user.groups if user
                                                                      else frozenset()))
        home = self.homes / name
        hub = _hub_url(self.args.gateway)
        hub_token = self._hub_admin_token(hub)
        tokens = _hub_tokens(hub, hub_token, name)
        if not groups and not home.exists() and not tokens:
            print(f"nothing changed: {name} is gone already (in no platform group, no home, "
                  "no hub tokens)")
            return 0
        plan = Plan(self.args.dry_run, self._audit)
        plan.step("user.server_stopped", name, f"stop {name}'s notebook server",
                  lambda: _hub_call(hub, hub_token, "DELETE", f"/users/{name}/server"))
        plan.step("user.work_stopped", name, f"stop {name}'s clusters",
                  lambda: fetch(self.args.gateway, self.auth,
                                path=f"/api/v1/admin/users/{name}/offboard", body={}))
        for token in tokens:
            plan.step("user.token_revoked", name, f"revoke hub token {token['id']} "
                      f"({token.get('note') or 'no note'})",
                      lambda t=token: _hub_call(hub, hub_token, "DELETE",
                                                f"/users/{name}/tokens/{t['id']}"),
                      token_id=token["id"])
        for group in groups:
            assert user is not None
            plan.step("user.group_left", name, f"remove {name} from {group}",
                      lambda g=group: self.membership.remove(user, g), ldap_group=group)
        if home.exists():
            key = f"{HOME_ARCHIVE_PREFIX}/{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.tar.gz"
            plan.step("user.home_archived", name, f"archive {home} to "
                      f"s3://{self.args.audit_bucket}/{key}",
                      lambda: _archive(home, self.args.audit_bucket, key),
                      bucket=self.args.audit_bucket, key=key)
            plan.step("user.home_removed", name, f"remove {home}",
                      lambda: shutil.rmtree(home), home=str(home))
        return 0

    def _hub_admin_token(self, hub: str) -> str:
        """A short-lived token of the admin's own, from their password (hub admins may
        stop servers and revoke tokens); a first login makes the hub know them."""
        _hub_form_login(hub, self.args.admin, os.environ[PASSWORD_ENV])
        answer = _hub_call(hub, None, "POST", f"/users/{self.args.admin}/tokens", {
            "auth": {"username": self.args.admin, "password": os.environ[PASSWORD_ENV]},
            "note": "dask-platform users", "expires_in": 600})
        return str(answer["token"])

    # ------------------------------------------------------------------ list

    def list(self) -> int:
        quotas = self.settings.quotas
        for name, quota in sorted(quotas.groups.items()):
            for ldap_group in quota.ldap_groups or (name,):
                members = self.membership.members(ldap_group)
                print(f"{name} ({ldap_group}): {', '.join(members) or '-'}")
        return 0


def _make_home(home: Path, user: DirectoryUser) -> None:
    if os.geteuid() != 0:
        raise UsersError(f"creating {home} for uid {user.uid_number} needs root (sudo -E)")
    home.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    home.mkdir(mode=0o700)
    os.chown(home, user.uid_number or 0, user.gid_number or 0)


def _archive(home: Path, bucket: str, key: str) -> None:
    if not bucket:
        raise UsersError("--audit-bucket (or $DASK_PLATFORM_AUDIT_BUCKET) names no bucket "
                         "to archive the home to; nothing was removed")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(home, arcname=home.name)
    aws_client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue(),
                                ServerSideEncryption="aws:kms")


def _hub_url(gateway: str) -> str:
    return gateway.rstrip("/").removesuffix(SERVICE_PREFIX)


def _hub_call(hub: str, token: str | None, method: str, path: str,
              body: dict[str, Any] | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    request = urllib.request.Request(f"{hub}/hub/api{path}", method=method, headers=headers,
                                     data=json.dumps(body).encode() if body else None)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and method in ("GET", "DELETE"):
            return None  # no such user or server in the hub: nothing to do
        if exc.code == 400 and path.endswith("/server"):
            return None  # no server running
        raise UsersError(f"JupyterHub answered {exc.code} to {method} {path}: "
                         f"{exc.read().decode(errors='replace')[:300]}") from None
    except OSError as exc:
        raise UsersError(f"cannot reach JupyterHub at {hub} ({exc})") from None


def _hub_form_login(hub: str, user: str, password: str) -> None:
    """JupyterHub's login form, as a browser fills it (its XSRF token included)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    try:
        with opener.open(f"{hub}/hub/login", timeout=30) as response:
            page = response.read().decode(errors="replace")
        xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page)
        form = urllib.parse.urlencode({"username": user, "password": password,
                                       "_xsrf": xsrf.group(1) if xsrf else ""}).encode()
        with opener.open(f"{hub}/hub/login", data=form, timeout=30):
            pass
    except urllib.error.HTTPError as exc:
        raise UsersError(f"JupyterHub refused the login of {user} ({exc.code}); check the "
                         "password") from None
    except OSError as exc:
        raise UsersError(f"cannot reach JupyterHub at {hub} ({exc})") from None


def _hub_tokens(hub: str, token: str, name: str) -> list[dict[str, Any]]:
    answer = _hub_call(hub, token, "GET", f"/users/{name}/tokens")
    return list((answer or {}).get("api_tokens", []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dask-platform users", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("add", "remove", "list"))
    p.add_argument("name", nargs="?")
    p.add_argument("--group", help="platform group (add)")
    p.add_argument("--dry-run", action="store_true", help="print the steps, take none")
    p.add_argument("--admin", required=True, help="your admin login (password from "
                                                  f"${PASSWORD_ENV})")
    p.add_argument("--settings", default=os.environ.get("DASK_PLATFORM_SETTINGS", ""),
                   help="the runtime settings (ssm://...; default $DASK_PLATFORM_SETTINGS)")
    p.add_argument("--gateway", default=os.environ.get(ADDRESS_ENV, "http://127.0.0.1:8000"))
    p.add_argument("--homes", default=DEFAULT_HOMES,
                   help="where homes are (default %(default)s, the shared file system)")
    p.add_argument("--audit-bucket", default=os.environ.get("DASK_PLATFORM_AUDIT_BUCKET", ""))
    args = p.parse_args(argv)
    if args.command != "list" and not args.name:
        p.error(f"{args.command} needs the user's name")
    if args.command == "add" and not args.group:
        p.error("add needs --group")
    if not args.settings:
        p.error("--settings (or $DASK_PLATFORM_SETTINGS): where the runtime settings are")
    try:
        users = Users(args, load_runtime_settings(args.settings))
        if args.command == "add":
            return users.add(args.name, args.group)
        if args.command == "remove":
            return users.remove(args.name)
        return users.list()
    except (UsersError, MembershipError, StatusError) as exc:
        print(f"dask-platform users: {exc}", file=sys.stderr)
        return 1
