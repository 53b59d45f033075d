"""What every process of the rehearsal needs to know, decided once by the orchestrator
and handed to each namespace as a file: the topology, the stack's names and what the
stack would have published (the runtime settings, the secrets' values), and the ids the
hosts' user data names.

The stack's own code decides all of it: ``PlatformSettings.runtime`` renders the
settings parameter, ``StackNames`` names things, ``HostBootstrap`` renders each host's
user data (whose ``host-setup`` command the rehearsal runs), ``host_tags`` tags them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from daskplatform.host.userdata import HostBootstrap
from daskplatform.rehearsal.topology import AWS_ADDRESS, Host, Topology
from daskplatform.settings import BUCKET_KINDS
from daskplatform.stack_names import StackNames

PROJECT = "dask-platform"
STACK = "rehearsal"
FILE_SYSTEM_ID = "fs-0123456789abcdef0"
"""EFS is not rehearsed (a shared directory stands in); its ids appear in user data."""
ACCESS_POINTS = {"shared": "fsap-0aaaaaaaaaaaaaaa1", "homes": "fsap-0bbbbbbbbbbbbbbb2"}
SAMPLE_KEY = "events/day=1/part-0.txt"
"""An object ``dp-aws`` seeds in the raw and processed buckets, for the data step."""
AWS_PORT = 443
MOTO_ACCOUNT = "123456789012"
"""moto's default account: the ARNs it makes."""
"""moto listens where AWS's endpoints would, on 443 (plain HTTP: the rehearsal does not
prove AWS's own TLS)."""


@dataclass(frozen=True)
class Plan:
    topology: Topology
    region: str
    runtime_settings: str
    """The settings parameter's value, as the stack renders it."""
    ldap_bind_password: str
    instance_types: dict[str, str]
    """Instance type by platform role."""
    tags: dict[str, str]
    """The stack's common tags."""
    worker_limits: tuple[int, int]
    """(min, max) of the worker group."""
    workdir: str
    ca_file: str
    """The rehearsal CA (FreeIPA's and the ALB's certificates), for its clients."""
    vpc_cidr: str
    runtime_version: str
    """The version every host boots with (the checkout's: ``source_version``)."""

    @property
    def names(self) -> StackNames:
        return StackNames(PROJECT, STACK)

    @property
    def aws_endpoint(self) -> str:
        return f"http://{AWS_ADDRESS}:{AWS_PORT}"

    def bucket(self, kind: str) -> str:
        assert kind in BUCKET_KINDS
        return f"{self.names.prefix}-{kind}"

    @property
    def alert_topic_arn(self) -> str:
        """As moto names it (its one account), like the stack names it up front."""
        return f"arn:aws:sns:{self.region}:{MOTO_ACCOUNT}:{self.names.alert_topic}"

    def bootstrap(self, host: Host) -> HostBootstrap:
        """The user data of ``host``, as the stack renders it with these ids."""
        return HostBootstrap(
            role=host.role, region=self.region,
            settings_parameter_name=self.names.settings_parameter,
            artifacts_bucket=self.bucket("artifacts"), runtime_version=self.runtime_version,
            file_system_id=FILE_SYSTEM_ID, shared_access_point_id=ACCESS_POINTS["shared"],
            homes_access_point_id=ACCESS_POINTS["homes"],
            log_group_name=self.names.log_group(host.role),
            metrics_namespace=self.names.metrics_namespace,
            **({"audit_bucket": self.bucket("audit"), "alert_topic_arn": self.alert_topic_arn}
               if host.role == "gateway" else {}))

    def save(self, path: Path) -> Path:
        data = {**asdict(self), "topology": self.topology.to_dict()}
        path.touch(mode=0o600)  # it carries the LDAP bind password
        path.write_text(json.dumps(data, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        data = json.loads(Path(path).read_text())
        return cls(**{**data, "topology": Topology.from_dict(data["topology"]),
                      "worker_limits": tuple(data["worker_limits"])})
