"""Host user data as a Pulumi output, and the runtime archive hosts install from.

The stub itself is ``daskplatform.host.userdata`` (plain Python, so the rehearsal
renders and runs the same text); this module only fills in the ids Pulumi knows once
the resources exist, and packs the runtime's source tree for the artifacts bucket.
"""

from __future__ import annotations

import pulumi

from daskplatform.host.userdata import HostBootstrap
from daskplatform.runtime_version import archive_files


def runtime_package() -> pulumi.AssetArchive:
    """The runtime's source tree and its lock file as an archive; the host installs both
    with ``uv sync --frozen``. Exactly the files its version is the hash of
    (``daskplatform.runtime_version``), so the key changes whenever the code does."""
    return pulumi.AssetArchive({name: pulumi.FileAsset(str(path))
                                for name, path in archive_files().items()})


def user_data(
    role: str,
    *,
    region: pulumi.Input[str],
    settings_parameter_name: str,
    artifacts_bucket: pulumi.Input[str],
    runtime_version: str,
    file_system_id: pulumi.Input[str],
    shared_access_point_id: pulumi.Input[str],
    homes_access_point_id: pulumi.Input[str],
    log_group_name: str,
    metrics_namespace: str,
    audit_bucket: pulumi.Input[str] = "",
    alert_topic_arn: pulumi.Input[str] = "",
    drop_queue_url: pulumi.Input[str] = "",
    raw_bucket: pulumi.Input[str] = "",
    processed_bucket: pulumi.Input[str] = "",
    pipeline_password_secret: str = "",
) -> pulumi.Output[str]:
    """The rendered stub for ``role`` once the ids it names are known (the gateway's also
    names the audit bucket, the alert topic and what its pipeline watcher uses)."""
    return pulumi.Output.all(
        region, artifacts_bucket, file_system_id, shared_access_point_id, homes_access_point_id,
        audit_bucket, alert_topic_arn, drop_queue_url, raw_bucket, processed_bucket,
    ).apply(
        lambda v: HostBootstrap(
            role=role,
            region=v[0],
            settings_parameter_name=settings_parameter_name,
            artifacts_bucket=v[1],
            runtime_version=runtime_version,
            file_system_id=v[2],
            shared_access_point_id=v[3],
            homes_access_point_id=v[4],
            log_group_name=log_group_name,
            metrics_namespace=metrics_namespace,
            audit_bucket=v[5],
            alert_topic_arn=v[6],
            drop_queue_url=v[7],
            raw_bucket=v[8],
            processed_bucket=v[9],
            pipeline_password_secret=pipeline_password_secret,
        ).render()
    )
