"""``dp-aws``: AWS as the hosts see it. moto in server mode where AWS's endpoints would
be, seeded with what the stack would have created, and the instance metadata service
at 169.254.169.254 answering each host, by its source address, with that host's own
instance id, address, type, tags and instance-role credentials (IMDSv2 only).

Run inside the namespace: ``python -m daskplatform.rehearsal.aws_host PLAN``; prints
``ready`` once both serve, and serves until SIGTERM.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult
from moto.server import ThreadedMotoServer

from daskplatform.aws_standin import create_data_roles, enforce_vended_credentials
from daskplatform.network_plan import subnet_cidrs
from daskplatform.rehearsal.plan import AWS_PORT, SAMPLE_KEY, Plan
from daskplatform.rehearsal.topology import AWS_ADDRESS, IMDS_ADDRESS, Host
from daskplatform.runtime_version import archive_key
from daskplatform.settings import BUCKET_KINDS, DATA_BUCKET_KINDS, RuntimeSettings
from daskplatform.stack_names import host_tags

AMI = "ami-12c6146b"
"""An image id moto knows; the rehearsal runs no image."""
ROLE_NAME = {"gateway": "dask-platform-rehearsal-gateway",
             "scheduler": "dask-platform-rehearsal-scheduler",
             "worker": "dask-platform-rehearsal-worker"}
"""The instance role each host's metadata names (moto serves the platform's own
credentials unchecked; only those its STS vends are checked, aws_standin.py); the
data roles trust the gateway's."""
LIFECYCLE_LINE = "aws: CompleteLifecycleAction"
"""Logged for every completed launch hook (moto lacks the call; see below)."""


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _complete_lifecycle_action(self: AutoScalingResponse) -> EmptyResult:
    """moto has no CompleteLifecycleAction; the worker group's launch hook is completed
    by each worker's host-setup, so record it (the rehearsal checks every worker did)."""
    say(f"{LIFECYCLE_LINE} {self._get_param('LifecycleActionResult')} "
        f"{self._get_param('InstanceId')} {self._get_param('AutoScalingGroupName')} "
        f"{self._get_param('LifecycleHookName')}")
    return EmptyResult()


@dataclass(frozen=True)
class Instance:
    instance_id: str
    host: Host
    instance_type: str
    tags: dict[str, str]
    subnet_id: str


class Seeder:
    """Creates, through moto's API, what ``pulumi up`` would have created."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        session = boto3.session.Session(aws_access_key_id="rehearsal",
                                        aws_secret_access_key="rehearsal",
                                        region_name=plan.region)
        self.client = lambda service: session.client(service, endpoint_url=plan.aws_endpoint)

    def seed(self) -> dict[str, Instance]:
        plan, names = self.plan, self.plan.names
        settings = RuntimeSettings.from_json(plan.runtime_settings)
        ssm, secretsmanager, s3 = (self.client(s) for s in ("ssm", "secretsmanager", "s3"))
        ssm.put_parameter(Name=names.settings_parameter, Type="String",
                          Value=plan.runtime_settings)
        secretsmanager.create_secret(Name=names.ldap_secret, SecretString=plan.ldap_bind_password)
        secretsmanager.create_secret(Name=settings.agent_token_secret_id)  # empty, as created
        for kind in BUCKET_KINDS:
            s3.create_bucket(Bucket=plan.bucket(kind),
                             CreateBucketConfiguration={"LocationConstraint": plan.region})
        topic = self.client("sns").create_topic(Name=names.alert_topic)["TopicArn"]
        assert topic == plan.alert_topic_arn, (topic, plan.alert_topic_arn)
        for kind in DATA_BUCKET_KINDS:  # what the data step reads (scenario.py)
            s3.put_object(Bucket=plan.bucket(kind), Key=SAMPLE_KEY, Body=f"{kind} rows".encode())
        account = self.client("sts").get_caller_identity()["Account"]
        gateway_role = f"arn:aws:iam::{account}:role/{ROLE_NAME['gateway']}"
        create_data_roles(self.client("iam"), settings,
                          {kind: plan.bucket(kind) for kind in BUCKET_KINDS}, gateway_role)
        instances = self._instances()
        self._worker_group(settings, [i for i in instances.values() if i.host.role == "worker"])
        return instances

    def _instances(self) -> dict[str, Instance]:
        ec2 = self.client("ec2")
        vpc = ec2.create_vpc(CidrBlock=self.plan.vpc_cidr)["Vpc"]["VpcId"]
        subnets = {}
        public, private = subnet_cidrs(self.plan.vpc_cidr)
        for index, cidr in enumerate([*public, *private]):
            zone = f"{self.plan.region}{'ab'[index % 2]}"
            subnets[cidr] = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr,
                                              AvailabilityZone=zone)["Subnet"]["SubnetId"]
        found = {}
        for host in self.plan.topology.platform_hosts():
            tags = host_tags(self.plan.tags, host.role)
            kind = self.plan.instance_types[host.role]
            reservation = ec2.run_instances(
                ImageId=AMI, MinCount=1, MaxCount=1, InstanceType=kind,
                SubnetId=subnets[host.subnet], PrivateIpAddress=host.address,
                TagSpecifications=[{"ResourceType": "instance", "Tags": [
                    {"Key": k, "Value": v} for k, v in tags.items()]}])
            instance_id = reservation["Instances"][0]["InstanceId"]
            found[host.address] = Instance(instance_id, host, kind, tags, subnets[host.subnet])
        return found

    def _worker_group(self, settings: RuntimeSettings, workers: list[Instance]) -> None:
        ec2, autoscaling = self.client("ec2"), self.client("autoscaling")
        template = f"{self.plan.names.prefix}-workers-lt"
        ec2.create_launch_template(LaunchTemplateName=template, LaunchTemplateData={
            "ImageId": AMI, "InstanceType": self.plan.instance_types["worker"]})
        low, high = self.plan.worker_limits
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=settings.worker_asg_name, MinSize=0, MaxSize=high,
            DesiredCapacity=0, LaunchTemplate={"LaunchTemplateName": template},
            VPCZoneIdentifier=",".join(sorted({w.subnet_id for w in workers})))
        autoscaling.attach_instances(AutoScalingGroupName=settings.worker_asg_name,
                                     InstanceIds=[w.instance_id for w in workers])
        if settings.worker_boot_hook:
            autoscaling.put_lifecycle_hook(
                AutoScalingGroupName=settings.worker_asg_name,
                LifecycleHookName=settings.worker_boot_hook,
                LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", DefaultResult="ABANDON")
        say(f"aws: worker group {settings.worker_asg_name}: {len(workers)} in service "
            f"(min {low}, max {high} in the stack)")


def publish_runtime(plan: Plan, archive: Path, version: str) -> dict[str, Any]:
    """What ``pulumi up`` does with a new runtime version (components/storage.py,
    components/stack.py): its archive under its own key in the artifacts bucket, and
    its version as the settings parameter's runtimeVersion, the rest unchanged."""
    seeder = Seeder(plan)
    s3, ssm = seeder.client("s3"), seeder.client("ssm")
    key = archive_key(version)
    s3.put_object(Bucket=plan.bucket("artifacts"), Key=key, Body=archive.read_bytes(),
                  ContentType="application/zip", ServerSideEncryption="AES256")
    name = plan.names.settings_parameter
    published = RuntimeSettings.from_json(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    ssm.put_parameter(Name=name, Type="String", Overwrite=True, Value=published.model_copy(
        update={"runtime_version": version}).to_json())
    return {"ok": True, "archive": f"s3://{plan.bucket('artifacts')}/{key}",
            "runtime_version": version, "was": published.runtime_version}


class MetadataService:
    """IMDSv2 for every host, told apart by source address: a token from ``PUT
    /latest/api/token`` (with a TTL header) is good only for the host that asked."""

    def __init__(self, instances: dict[str, Instance]) -> None:
        self.instances = instances
        self.tokens: dict[str, str] = {}
        self.lock = threading.Lock()

    def token_for(self, address: str) -> str:
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = address
        return token

    def metadata(self, address: str, path: str) -> str | None:
        instance = self.instances.get(address)
        if instance is None:
            return None
        role = ROLE_NAME[instance.host.role]
        values: dict[str, str] = {
            "instance-id": instance.instance_id,
            "local-ipv4": address,
            "instance-type": instance.instance_type,
            "iam/security-credentials/": role,
            f"iam/security-credentials/{role}": json.dumps(_credentials()),
            "tags/instance": "\n".join(sorted(instance.tags)),
            **{f"tags/instance/{k}": v for k, v in instance.tags.items()},
        }
        if path == "iam/security-credentials":
            path += "/"
        return values.get(path)

    def serve(self) -> ThreadingHTTPServer:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _reply(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if self.path != "/latest/api/token":
                    self._reply(404)
                elif not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    self._reply(400)
                else:
                    self._reply(200, service.token_for(self.client_address[0]))

            def do_GET(self) -> None:
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                with service.lock:
                    owner = service.tokens.get(token)
                if owner != self.client_address[0]:
                    self._reply(401)  # IMDSv2 only, as the launch templates require
                    return
                prefix = "/latest/meta-data/"
                value = (service.metadata(owner, self.path[len(prefix):])
                         if self.path.startswith(prefix) else None)
                self._reply(200, value) if value is not None else self._reply(404)

        server = ThreadingHTTPServer((IMDS_ADDRESS, 80), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def _credentials() -> dict[str, str]:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 6 * 3600))
    return {"Code": "Success", "LastUpdated": stamp, "Type": "AWS-HMAC",
            "AccessKeyId": "ASIAREHEARSAL0000000", "SecretAccessKey": "rehearsal",
            "Token": "rehearsal-session", "Expiration": expires}


def main(argv: list[str] | None = None) -> int:
    plan = Plan.load((argv or sys.argv[1:])[0])
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    AutoScalingResponse.complete_lifecycle_action = _complete_lifecycle_action  # type: ignore[attr-defined]
    enforce_vended_credentials()
    moto = ThreadedMotoServer(ip_address=AWS_ADDRESS, port=AWS_PORT, verbose=False)
    moto.start()
    instances = Seeder(plan).seed()
    imds = MetadataService(instances).serve()
    for address, instance in sorted(instances.items()):
        say(f"aws: {instance.host.namespace} is {instance.instance_id} "
            f"({instance.instance_type}, {address})")
    say(f"ready: moto at {plan.aws_endpoint}, instance metadata at http://{IMDS_ADDRESS}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    imds.shutdown()
    moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
