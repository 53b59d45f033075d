"""Host user data: a small stub that installs the runtime and runs the host's role.

Behaviour lives in ``daskplatform`` (tested for real); this only mounts EFS, installs
the runtime package the stack uploaded to the artifacts bucket, ships the service log
to CloudWatch, and starts the role under systemd: the gateway with a unit of its own,
node agents with the unit packaged beside the agent. It carries names and
ids only, never a secret: the LDAP password and the agents' token stay in Secrets
Manager, and everything else a host needs follows from the settings parameter.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import pulumi

from daskplatform.settings import PortSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FILES = ("pyproject.toml", "README.md")
PACKAGE_DIR = "daskplatform"
ARTIFACT_KEY = "runtime/dask-platform.zip"
AGENT_UNIT = "dask-platform-agent.service"
"""The node agent's systemd unit, package data of ``daskplatform.node``."""
AGENT_ENV_FILE = "/etc/dask-platform/agent.env"
"""Read by the packaged unit (``EnvironmentFile=``)."""
USER_DATA_LIMIT = 16 * 1024
"""EC2's limit on user data."""


def runtime_package() -> pulumi.AssetArchive:
    """The runtime's source tree as an archive; pip builds and installs it on the host.

    Only the files (no ``__pycache__``), so the archive changes when the code does."""
    assets: dict[str, pulumi.Asset | pulumi.Archive] = {
        name: pulumi.FileAsset(str(PROJECT_ROOT / name)) for name in PACKAGE_FILES
    }
    for path in sorted((PROJECT_ROOT / PACKAGE_DIR).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            assets[path.relative_to(PROJECT_ROOT).as_posix()] = pulumi.FileAsset(str(path))
    return pulumi.AssetArchive(assets)


class _Template(string.Template):
    delimiter = "@"  # bash owns "$"


_GATEWAY_SERVICE = _Template("""cat > /etc/systemd/system/dask-platform.service <<'UNIT'
[Unit]
Description=dask-platform gateway
Wants=network-online.target
After=network-online.target remote-fs.target
[Service]
Environment=AWS_DEFAULT_REGION=@region
StateDirectory=dask-platform
ExecStart=/opt/dask-platform/venv/bin/dask-platform @command
Delegate=yes
Restart=always
TimeoutStopSec=120
StandardOutput=append:/var/log/dask-platform.log
StandardError=inherit
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now dask-platform.service""")
"""The gateway keeps an inline unit with systemd's default KillMode: JupyterHub, its proxy
and the gateway are children that must stop with it (which takes up to ~90 s, hence the
stop timeout)."""

_AGENT_SERVICE = _Template("""useradd --system --user-group --shell /sbin/nologin dask-platform
mkdir -p /etc/dask-platform
cat > @env_file <<'ENV'
@environment
ENV
chmod 0644 @env_file
install -m 0644 "$(/opt/dask-platform/venv/bin/python -c '@locate_unit')" \\
  /etc/systemd/system/@unit
mkdir -p /etc/systemd/system/@unit.d
cat > /etc/systemd/system/@unit.d/log.conf <<'UNIT'
[Service]
StandardOutput=append:/var/log/dask-platform.log
StandardError=inherit
UNIT
systemctl daemon-reload
systemctl enable --now @unit""")
"""Agent hosts run the packaged unit (its own user, a delegated cgroup, KillMode=process
so Dask processes outlive an agent restart); the stub only adds the user, the unit's
environment file and a drop-in that sends its log where the CloudWatch agent reads."""

_USER_DATA = _Template("""#!/bin/bash
# dask-platform @role host: install the runtime from the artifacts bucket and run it.
set -euo pipefail
export AWS_DEFAULT_REGION=@region
dnf install -y -q python3.11 amazon-efs-utils amazon-cloudwatch-agent @packages
@setup
mkdir -p /srv/shared /srv/homes
echo "@file_system:/ /srv/shared efs _netdev,tls,iam,accesspoint=@shared_ap 0 0" >> /etc/fstab
echo "@file_system:/ /srv/homes efs _netdev,tls,iam,accesspoint=@homes_ap 0 0" >> /etc/fstab
mount -a -t efs
mkdir -p /opt/dask-platform
aws s3 cp "s3://@bucket/@key" /opt/dask-platform/dask-platform.zip
python3.11 -m venv /opt/dask-platform/venv
/opt/dask-platform/venv/bin/pip install -q \\
  "dask-platform[@extra] @@ file:///opt/dask-platform/dask-platform.zip"
cat > /opt/dask-platform/cloudwatch.json <<'JSON'
{"logs": {"logs_collected": {"files": {"collect_list": [{"file_path": "/var/log/dask-platform.log",
 "log_group_name": "@log_group", "log_stream_name": "{instance_id}"}]}}}}
JSON
/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \\
  -c file:/opt/dask-platform/cloudwatch.json
@service
""")


@dataclass(frozen=True)
class HostBootstrap:
    """Everything a host's stub needs; all plain names and ids."""

    role: str
    region: str
    settings_parameter_name: str
    artifacts_bucket: str
    file_system_id: str
    shared_access_point_id: str
    homes_access_point_id: str
    log_group_name: str
    ports: PortSettings

    @property
    def settings_source(self) -> str:
        return f"ssm://{self.settings_parameter_name}"

    @property
    def command(self) -> str:
        """JupyterHub in front (``--hub``: login, hub tokens, ``/services/dask-gateway``)
        on the ALB's port, the gateway's scheduler TLS proxy on its own; both on the
        host's interfaces (security groups decide who reaches them)."""
        source = f"--settings {self.settings_source}"
        return (f"gateway --hub {source} --proxy-address 0.0.0.0:{self.ports.gateway_http} "
                f"--proxy-tcp-address 0.0.0.0:{self.ports.gateway_tls}")

    @property
    def agent_environment(self) -> dict[str, str]:
        """What the packaged agent unit reads: names only, the token stays in its secret."""
        return {"ROLE": self.role, "SETTINGS": self.settings_source,
                "AWS_DEFAULT_REGION": self.region}

    def service(self) -> str:
        if self.role == "gateway":
            return _GATEWAY_SERVICE.substitute(region=self.region, command=self.command)
        return _AGENT_SERVICE.substitute(
            env_file=AGENT_ENV_FILE,
            environment="\n".join(f"{k}={v}" for k, v in self.agent_environment.items()),
            unit=AGENT_UNIT,
            locate_unit=("import importlib.resources as r; "
                         f'print(r.files("daskplatform.node") / "{AGENT_UNIT}")'),
        )

    def render(self) -> str:
        gateway = self.role == "gateway"
        return _USER_DATA.substitute(
            role=self.role,
            region=self.region,
            packages="nodejs npm" if gateway else "",
            setup="npm install -g --silent configurable-http-proxy" if gateway else "",
            extra="hub" if gateway else "runtime",
            bucket=self.artifacts_bucket,
            key=ARTIFACT_KEY,
            file_system=self.file_system_id,
            shared_ap=self.shared_access_point_id,
            homes_ap=self.homes_access_point_id,
            log_group=self.log_group_name,
            service=self.service(),
        )


def user_data(
    role: str,
    *,
    region: pulumi.Input[str],
    settings_parameter_name: str,
    artifacts_bucket: pulumi.Input[str],
    file_system_id: pulumi.Input[str],
    shared_access_point_id: pulumi.Input[str],
    homes_access_point_id: pulumi.Input[str],
    log_group_name: pulumi.Input[str],
    ports: PortSettings,
) -> pulumi.Output[str]:
    """The rendered stub for ``role`` once the ids it names are known."""
    return pulumi.Output.all(
        region,
        artifacts_bucket,
        file_system_id,
        shared_access_point_id,
        homes_access_point_id,
        log_group_name,
    ).apply(
        lambda v: HostBootstrap(role, v[0], settings_parameter_name, *v[1:], ports).render()
    )
