"""The runtime's version: a content hash of the archive hosts install (the package's
source, ``pyproject.toml``, ``uv.lock``), so any change to the code or to a pinned
dependency is a new version, and the same tree is always the same version.

The stack uploads the archive under a key carrying this hash and writes the hash into
the settings parameter (``runtimeVersion``: what hosts should run); a host's user data
records the version it installed in ``VERSION_FILE``; every agent and the gateway report
the version they run, so mixed versions show and the gateway can keep a cluster's
processes on one version.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FILES = ("pyproject.toml", "README.md", "uv.lock")
"""Beside the source tree: what building the package and ``uv sync --frozen`` read."""
PACKAGE_DIR = "daskplatform"
ARCHIVE_PREFIX = "runtime/dask-platform-"
VERSION_CHARS = 12
VERSION_ENV = "DASK_PLATFORM_RUNTIME_VERSION"
"""Overrides what a process reports (tests and local mode pin a version with it)."""
VERSION_FILE = Path("/opt/dask-platform/runtime-version")
"""Written by a host's user data stub (and by a roll-out) once the version is installed."""
UNKNOWN = "unknown"


def archive_files(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Archive name -> file: the package's files (no ``__pycache__``) and PACKAGE_FILES."""
    files = {name: root / name for name in PACKAGE_FILES}
    for path in sorted((root / PACKAGE_DIR).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(root).as_posix()] = path
    return files


def content_version(files: Mapping[str, Path]) -> str:
    """sha256 over each file's name and bytes, in name order; the first VERSION_CHARS."""
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name].read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:VERSION_CHARS]


def source_version(root: Path = PROJECT_ROOT) -> str:
    """The version of the source tree at ``root`` (a checkout: local mode, the stack)."""
    return content_version(archive_files(root))


def write_archive(path: Path, root: Path = PROJECT_ROOT) -> str:
    """The archive the stack uploads (the rehearsal's stand-in for AWS gets the same);
    returns its version."""
    files = archive_files(root)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, source in files.items():
            archive.write(source, name)
    return content_version(files)


def archive_key(version: str) -> str:
    """Where the stack uploads the archive of ``version`` in the artifacts bucket."""
    return f"{ARCHIVE_PREFIX}{version}.zip"


def running_version() -> str:
    """The version this process runs: ``$DASK_PLATFORM_RUNTIME_VERSION``, else the one
    the host installed (``VERSION_FILE``), else that of the checkout it runs from."""
    if os.environ.get(VERSION_ENV):
        return os.environ[VERSION_ENV]
    try:
        installed = VERSION_FILE.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        installed = ""
    if installed:
        return installed
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return source_version()
    return UNKNOWN
