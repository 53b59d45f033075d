"""``dask-platform host-upgrade --version V``: install runtime version V on this host the
way its user data installed the first one, beside it, and make it current.

1. fetch ``runtime/dask-platform-V.zip`` from the artifacts bucket (``install.json``,
   written by the stub, says which) and unpack it to ``/opt/dask-platform/src/V``;
2. check that its content hash is V (a wrong or damaged archive installs nothing);
3. install it into its own environment, ``/opt/dask-platform/venvs/V`` (``uv sync
   --frozen``, the role's extras); running processes keep the environment they started
   from, so nothing changes under them;
4. point ``/opt/dask-platform/venv`` (what the services start from) at it, atomically,
   and record V in ``/opt/dask-platform/runtime-version``.

It restarts nothing: the caller (the node agent, or the gateway, asked by a roll-out)
exits afterwards and its service manager starts it again from the new environment.
Older environments are removed, keeping the last KEEP_VERSIONS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from daskplatform.aws import aws_client
from daskplatform.host.units import RUNTIME_ROOT, VENV, VENVS
from daskplatform.runtime_version import VERSION_FILE, archive_key, content_version

INSTALL_RECORD = Path(RUNTIME_ROOT) / "install.json"
SOURCES = Path(RUNTIME_ROOT) / "src"
UV = Path(RUNTIME_ROOT) / "uv" / "bin" / "uv"
INSTALL_MODE_ENV = "DASK_PLATFORM_INSTALL"
"""``link``: the new version's environment is this machine's own (the rehearsal, where
installing packages is what is not repeated); otherwise ``uv sync`` as the stub does."""
KEEP_VERSIONS = 3
VERSION_PATTERN = re.compile(r"^[0-9a-f]{12}$")
VERSION_RULE = "12 hex digits (a runtimeVersion the stack publishes)"
UPGRADE_TIMEOUT = 900.0
"""Seconds an install may take (uv from a cold cache, over the NAT)."""


class UpgradeFailed(RuntimeError):
    """What went wrong, and that the host still runs its current version."""


class UpgradeRequest(BaseModel):
    """The body of a node agent's ``POST /v1/upgrade``: the version only, so a request
    with a mistyped field is refused rather than taken for another."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=VERSION_PATTERN.pattern, description=VERSION_RULE)


def check_version(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise UpgradeFailed(f"version {version!r} is not a runtime version (12 hex "
                            "digits, the runtimeVersion the stack publishes)")
    return version


def fetch(record: dict, version: str, dest: Path) -> None:
    """The version's archive from the artifacts bucket, unpacked into ``dest``."""
    key = archive_key(version)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "runtime.zip"
        try:
            aws_client("s3").download_file(record["bucket"], key, str(archive))
        except Exception as exc:  # botocore's errors have no common base worth naming
            raise UpgradeFailed(f"cannot fetch s3://{record['bucket']}/{key} ({exc}); "
                                "has `pulumi up` uploaded that version?") from None
        shutil.rmtree(dest, ignore_errors=True)
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(dest)
    files = {p.relative_to(dest).as_posix(): p for p in dest.rglob("*") if p.is_file()}
    found = content_version(files)
    if found != version:
        raise UpgradeFailed(f"s3://{record['bucket']}/{key} holds version {found}, not "
                            f"{version}; nothing was installed")


def install(record: dict, version: str, source: Path) -> Path:
    """The version's own environment (created once)."""
    target = Path(VENVS) / version
    if os.environ.get(INSTALL_MODE_ENV) == "link":
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_symlink():
            target.symlink_to(Path(sys.prefix).resolve())
        return target
    if not (target / "bin" / "python").exists():
        subprocess.run(["python3.11", "-m", "venv", str(target)], check=True)
    extras = [arg for extra in record.get("extras", []) for arg in ("--extra", extra)]
    done = subprocess.run(
        [str(UV), "sync", "-q", "--frozen", "--no-dev", "--no-editable", *extras,
         "--project", str(source)],
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(target)},
        capture_output=True, text=True, check=False, timeout=UPGRADE_TIMEOUT)
    if done.returncode != 0:
        raise UpgradeFailed(f"uv sync of {version} failed: {done.stderr.strip()[-2000:]}")
    return target


def switch(target: Path, version: str) -> None:
    """``venv`` -> the version's environment (a rename: never a moment without one)."""
    link = Path(VENV)
    if link.exists() and not link.is_symlink():  # installed before versions had their own
        shutil.rmtree(link)
    staged = link.with_name(link.name + ".new")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, link)
    tmp = VERSION_FILE.with_suffix(".new")
    tmp.write_text(version + "\n")
    os.replace(tmp, VERSION_FILE)


def prune(current: str) -> None:
    """Remove all but the newest KEEP_VERSIONS environments (never the current one)."""
    venvs = Path(VENVS)
    found = sorted((p for p in venvs.iterdir() if p.name != current),
                   key=lambda p: p.lstat().st_mtime, reverse=True)
    for old in found[KEEP_VERSIONS - 1:]:
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(SOURCES / old.name, ignore_errors=True)


def upgrade(version: str) -> str:
    check_version(version)
    try:
        record = json.loads(INSTALL_RECORD.read_text())
    except (OSError, ValueError) as exc:
        raise UpgradeFailed(f"cannot read {INSTALL_RECORD} ({exc}); this host was not "
                            "installed by the platform's user data") from None
    source = SOURCES / version
    fetch(record, version, source)
    target = install(record, version, source)
    switch(target, version)
    prune(version)
    return f"runtime {version} installed in {target}; {VENV} points at it"


def upgrade_argv(version: str) -> list[str]:
    return [sys.executable, "-m", "daskplatform.cli", "host-upgrade", "--version", version]


def installed_version() -> str:
    try:
        return VERSION_FILE.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


async def upgrade_in_background(version: str) -> tuple[bool, str]:
    """``host-upgrade`` as a child process (the caller keeps serving meanwhile):
    (succeeded, its last words). Success is what the host records once it ends (the
    version current in VERSION_FILE), not its exit status: the node agent is a child
    subreaper whose reaper may collect the child first, and asyncio then reports 255."""
    process = await asyncio.create_subprocess_exec(
        *upgrade_argv(version), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), UPGRADE_TIMEOUT + 60)
    except TimeoutError:
        process.kill()
        return False, f"host-upgrade {version} took longer than {UPGRADE_TIMEOUT:g}s"
    text = out.decode(errors="replace").strip()
    return installed_version() == version, text[-2000:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dask-platform host-upgrade",
                                description=__doc__.split("\n")[0])
    p.add_argument("--version", required=True, help="the runtime version (12 hex digits)")
    args = p.parse_args(argv)
    try:
        print(f"host-upgrade: {upgrade(args.version)}", flush=True)
    except (UpgradeFailed, OSError, subprocess.SubprocessError) as exc:
        print(f"host-upgrade: failed, still on the current version: {exc}",
              file=sys.stderr, flush=True)
        return 1
    return 0
