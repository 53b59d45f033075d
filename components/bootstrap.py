"""Host user data as a Pulumi output, and the runtime archive hosts install from.

The stub itself is ``daskplatform.host.userdata`` (plain Python, so the rehearsal
renders and runs the same text); this module only fills in the ids Pulumi knows once
the resources exist, and packs the runtime's source tree for the artifacts bucket.
"""

from __future__ import annotations

from pathlib import Path

import pulumi

from daskplatform.host.userdata import ARTIFACT_KEY, HostBootstrap

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FILES = ("pyproject.toml", "README.md", "uv.lock")
"""Beside the source tree: what building the package and ``uv sync --frozen`` read."""
PACKAGE_DIR = "daskplatform"


def runtime_package() -> pulumi.AssetArchive:
    """The runtime's source tree and its lock file as an archive; the host installs both
    with ``uv sync --frozen``.

    Only the files (no ``__pycache__``), so the archive changes when the code does."""
    assets: dict[str, pulumi.Asset | pulumi.Archive] = {
        name: pulumi.FileAsset(str(PROJECT_ROOT / name)) for name in PACKAGE_FILES
    }
    for path in sorted((PROJECT_ROOT / PACKAGE_DIR).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            assets[path.relative_to(PROJECT_ROOT).as_posix()] = pulumi.FileAsset(str(path))
    return pulumi.AssetArchive(assets)


def user_data(
    role: str,
    *,
    region: pulumi.Input[str],
    settings_parameter_name: str,
    artifacts_bucket: pulumi.Input[str],
    file_system_id: pulumi.Input[str],
    shared_access_point_id: pulumi.Input[str],
    homes_access_point_id: pulumi.Input[str],
    log_group_name: str,
    metrics_namespace: str,
) -> pulumi.Output[str]:
    """The rendered stub for ``role`` once the ids it names are known."""
    return pulumi.Output.all(
        region, artifacts_bucket, file_system_id, shared_access_point_id, homes_access_point_id
    ).apply(
        lambda v: HostBootstrap(
            role=role,
            region=v[0],
            settings_parameter_name=settings_parameter_name,
            artifacts_bucket=v[1],
            artifact_key=ARTIFACT_KEY,
            file_system_id=v[2],
            shared_access_point_id=v[3],
            homes_access_point_id=v[4],
            log_group_name=log_group_name,
            metrics_namespace=metrics_namespace,
        ).render()
    )
