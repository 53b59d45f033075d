"""A host's user data: a small stub that installs the runtime, then hands over to
``dask-platform host-setup`` (mounts, the FreeIPA CA, accounts, the services), which
the rehearsal runs on its hosts exactly as rendered here.

The stub ships its own log to CloudWatch before anything that can fail, retries every
step that touches the network (NAT routes and IAM settle while a host boots), installs
exactly the versions of ``uv.lock`` (the file ./dev and CI install from, inside the
runtime archive), is safe to run again, and carries names and ids only: secrets stay
in Secrets Manager and everything else a host needs follows from the settings parameter.
"""

from __future__ import annotations

import json
import shlex
import string
from dataclasses import dataclass

from daskplatform.host.units import AUDIT_LOG, LOG_FILE, PROGRAM, RUNTIME_ROOT, VENV, VENVS
from daskplatform.runtime_version import VERSION_FILE, archive_key

BOOT_LOG = "/var/log/dask-platform-boot.log"
"""The stub's and host-setup's output (also in cloud-init's own log)."""
ARCHIVE = f"{RUNTIME_ROOT}/runtime.zip"
SOURCE = f"{RUNTIME_ROOT}/src"
"""The archive unpacked (``<SOURCE>/<version>``): the runtime's source, pyproject.toml and
uv.lock."""
INSTALL_RECORD = f"{RUNTIME_ROOT}/install.json"
"""Where this host's runtime comes from (bucket, region, extras): a roll-out installs
another version the same way (``dask-platform host-upgrade``)."""
UV_VERSION = "0.13.9"
"""uv, which installs exactly uv.lock's versions on every host (./dev pins the same)."""
USER_DATA_LIMIT = 16 * 1024
"""EC2's limit on user data."""
BOOT_FAILURES_METRIC = "HostBootFailures"
"""Put (Role dimension) when a host's boot fails; an alarm tells the team."""
EXTRAS = {"gateway": ("hub",), "scheduler": ("runtime",),
          "worker": ("runtime", "pipeline", "notebook")}
"""What each role installs: workers run the AppsFlyer pipeline (pyarrow, s3fs) and users'
JupyterLab servers."""


class _Template(string.Template):
    delimiter = "@"  # bash owns "$"


_STUB = _Template("""#!/bin/bash
# dask-platform @role host: install the runtime, then `dask-platform host-setup`
# (daskplatform/host/setup.py) does every other boot step. Safe to run again.
set -euo pipefail
exec >> @boot_log 2>&1
export AWS_DEFAULT_REGION=@region
retry() {
  local try=1
  until "$@@"; do
    [ "$try" -ge 8 ] && return 1
    echo "$(date -Is) retry $try: $*"; sleep $((try * 10)); try=$((try + 1))
  done
}
failed() {
  echo "$(date -Is) boot failed at line $1"
  aws cloudwatch put-metric-data --namespace '@namespace' --metric-name @metric \\
    --dimensions Role=@role --value 1 || true
}
trap 'failed $LINENO' ERR
retry dnf install -y -q amazon-cloudwatch-agent
mkdir -p /opt/dask-platform
cat > /opt/dask-platform/cloudwatch.json <<'JSON'
@cloudwatch
JSON
retry /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config \\
  -m ec2 -s -c file:/opt/dask-platform/cloudwatch.json
retry dnf install -y -q python3.11 amazon-efs-utils @packages
@setup
retry aws s3 cp "s3://@bucket/@key" @archive
rm -rf @source/@version && python3.11 -m zipfile -e @archive @source/@version
[ -x /opt/dask-platform/uv/bin/uv ] || python3.11 -m venv /opt/dask-platform/uv
retry /opt/dask-platform/uv/bin/pip install -q "uv==@uv_version"
[ -x @venvs/@version/bin/python ] || python3.11 -m venv @venvs/@version
retry env UV_PROJECT_ENVIRONMENT=@venvs/@version /opt/dask-platform/uv/bin/uv sync -q \\
  --frozen --no-dev --no-editable @extras --project @source/@version
# One environment per version; services start from the link (a roll-out moves it).
[ -L @venv ] || rm -rf @venv
ln -sfn @venvs/@version @venv
cat > @install_record <<'JSON'
@install_json
JSON
echo @version > @version_file
@host_setup
""")


@dataclass(frozen=True)
class HostBootstrap:
    """Everything a host's stub needs; all plain names and ids."""

    role: str
    region: str
    settings_parameter_name: str
    artifacts_bucket: str
    runtime_version: str
    """The runtime archive's content hash (``daskplatform.runtime_version``)."""
    file_system_id: str
    shared_access_point_id: str
    homes_access_point_id: str
    log_group_name: str
    metrics_namespace: str
    audit_bucket: str = ""
    """The gateway's: daily usage reports and archived homes."""
    alert_topic_arn: str = ""
    """The gateway's: budget alerts."""
    drop_queue_url: str = ""
    """The gateway's: the pipeline watcher's queue, with the buckets and secret below."""
    raw_bucket: str = ""
    processed_bucket: str = ""
    pipeline_password_secret: str = ""

    @property
    def settings_source(self) -> str:
        return f"ssm://{self.settings_parameter_name}"

    @property
    def artifact_key(self) -> str:
        return archive_key(self.runtime_version)

    def install_record(self) -> str:
        """What ``dask-platform host-upgrade`` needs to install another version."""
        return json.dumps({"bucket": self.artifacts_bucket, "region": self.region,
                           "extras": list(EXTRAS[self.role])})

    def host_setup_argv(self) -> list[str]:
        """The stub's last command; the rehearsal runs exactly this (plus --foreground)."""
        return [PROGRAM, "host-setup", "--role", self.role, "--settings",
                self.settings_source, "--region", self.region,
                "--file-system", self.file_system_id,
                "--shared-access-point", self.shared_access_point_id,
                "--homes-access-point", self.homes_access_point_id,
                *(["--audit-bucket", self.audit_bucket] if self.audit_bucket else []),
                *(["--alert-topic-arn", self.alert_topic_arn] if self.alert_topic_arn else []),
                *(["--drop-queue-url", self.drop_queue_url, "--raw-bucket", self.raw_bucket,
                   "--processed-bucket", self.processed_bucket, "--pipeline-password-secret",
                   self.pipeline_password_secret] if self.drop_queue_url else [])]

    def cloudwatch_config(self) -> str:
        """The boot log, cloud-init's and the services' log, one stream per file."""
        files = [{"file_path": path, "log_group_name": self.log_group_name,
                  "log_stream_name": f"{{instance_id}}/{path.rsplit('/', 1)[-1]}"}
                 for path in (BOOT_LOG, "/var/log/cloud-init-output.log", LOG_FILE,
                              AUDIT_LOG)]
        return json.dumps({"logs": {"logs_collected": {"files": {"collect_list": files}}}})

    def render(self) -> str:
        gateway = self.role == "gateway"
        return _STUB.substitute(
            role=self.role,
            region=self.region,
            boot_log=BOOT_LOG,
            namespace=self.metrics_namespace,
            metric=BOOT_FAILURES_METRIC,
            cloudwatch=self.cloudwatch_config(),
            packages="nodejs npm" if gateway else "nftables",
            setup="retry npm install -g --silent configurable-http-proxy" if gateway else "",
            bucket=self.artifacts_bucket,
            key=self.artifact_key,
            archive=ARCHIVE,
            source=SOURCE,
            uv_version=UV_VERSION,
            venv=VENV,
            venvs=VENVS,
            version=self.runtime_version,
            version_file=str(VERSION_FILE),
            install_record=INSTALL_RECORD,
            install_json=self.install_record(),
            extras=" ".join(f"--extra {extra}" for extra in EXTRAS[self.role]),
            host_setup=shlex.join(self.host_setup_argv()),
        )
