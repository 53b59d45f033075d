"""Run the stack program under strict Pulumi mocks and capture what it registers.

No engine, no provider plugins, no credentials: the program (``__main__.py``) runs in
this process against a mock monitor. The mocks know only the invokes the program uses
and fail on any other, so a new data-source lookup cannot slip in unnoticed.

Used by the offline plan (``python -m tools.plan``), the cloud tests and the policy pack::

    from tools.mockrun import run_stack, stack_config
    for resource in run_stack(stack_config("dev")):
        print(resource.type, resource.name, resource.inputs)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi import Output
from pulumi.runtime import Mocks, rpc, set_all_config, set_mocks
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs
from pulumi.runtime.settings import SETTINGS, get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROGRAM = PROJECT_ROOT / "__main__.py"
PROJECT = "dask-platform"
ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "eu-west-1"


@dataclass(frozen=True)
class RegisteredResource:
    """One resource as the program registered it (what a preview would show)."""

    type: str
    """Type token, e.g. ``aws:ec2/securityGroup:SecurityGroup`` or ``daskplatform:aws:Network``."""
    name: str
    """Logical name."""
    urn: str
    parent_urn: str
    """URN of the parent (a component, or the stack for top-level resources)."""
    custom: bool
    """False for ComponentResources, True for provider-managed resources."""
    inputs: dict[str, Any]
    """Inputs under their engine (camelCase) names, every Output resolved and every
    secret unwrapped (see ``secret_inputs``)."""
    secret_inputs: frozenset[str]
    """Top-level input names whose value is (or contains) a Pulumi secret."""
    id: str
    outputs: dict[str, Any]
    """Inputs plus what the mock provider computed (id-like values, arns, names)."""
    dependencies: frozenset[str] = frozenset()
    """URNs the resource waits for: its inputs' resources and its ``depends_on``."""
    options: dict[str, Any] = field(default_factory=dict)
    """The resource options that decide what an update does to it: ``ignoreChanges``,
    ``deleteBeforeReplace``, ``protect``, ``retainOnDelete``, ``replaceOnChanges``."""


@dataclass
class StackRun:
    resources: list[RegisteredResource]
    outputs: dict[str, Any]
    """Stack exports, resolved."""
    seconds: float
    """Wall time from program start until every registration completed."""
    error: BaseException | None = None
    """What stopped the program, when run with ``check=False``."""

    def of_type(self, type_: str) -> list[RegisteredResource]:
        return [r for r in self.resources if r.type == type_]

    def by_urn(self) -> dict[str, RegisteredResource]:
        return {r.urn: r for r in self.resources}


class UnknownInvokeError(RuntimeError):
    """The program called a data source the strict mocks do not know."""


_ID_PREFIXES = {
    "aws:ec2/vpc:Vpc": "vpc-",
    "aws:ec2/subnet:Subnet": "subnet-",
    "aws:ec2/securityGroup:SecurityGroup": "sg-",
    "aws:ec2/instance:Instance": "i-",
    "aws:ec2/internetGateway:InternetGateway": "igw-",
    "aws:ec2/natGateway:NatGateway": "nat-",
    "aws:ec2/eip:Eip": "eipalloc-",
    "aws:ec2/routeTable:RouteTable": "rtb-",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt-",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce-",
    "aws:efs/fileSystem:FileSystem": "fs-",
    "aws:efs/accessPoint:AccessPoint": "fsap-",
    "aws:efs/mountTarget:MountTarget": "fsmt-",
    "aws:ec2/flowLog:FlowLog": "fl-",
    "aws:ec2/networkInterface:NetworkInterface": "eni-",
    "aws:ebs/volume:Volume": "vol-",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "sgr-",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "sgr-",
}


def _hex(text: str, length: int = 17) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class StrictMocks(Mocks):
    """Plausible ids, ARNs and computed attributes; unknown invokes raise."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.unknown_invokes: list[str] = []
        zones = [f"{region}{suffix}" for suffix in "abc"]
        self._invokes: dict[str, Callable[[dict], dict]] = {
            "aws:index/getAvailabilityZones:getAvailabilityZones": lambda _: {
                "names": zones,
                "zoneIds": [f"euw1-az{i}" for i in (1, 2, 3)],
                "id": region,
            },
            "aws:index/getCallerIdentity:getCallerIdentity": lambda _: {
                "accountId": ACCOUNT_ID,
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/plan",
                "userId": "AIDPLAN",
                "id": ACCOUNT_ID,
            },
            "aws:index/getRegion:getRegion": lambda _: {
                "region": region,
                "name": region,
                "id": region,
                "endpoint": f"ec2.{region}.amazonaws.com",
                "description": region,
            },
            "aws:index/getPartition:getPartition": lambda _: {
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "id": "aws",
                "reverseDnsPrefix": "com.amazonaws",
            },
            "aws:ec2/getSubnet:getSubnet": lambda args: {
                "id": args.get("id", ""),
                "availabilityZone": zones[int(_hex(args.get("id", ""), 2), 16) % 2],
                "vpcId": "vpc-mock",
            },
            "aws:elb/getServiceAccount:getServiceAccount": lambda _: {
                "arn": "arn:aws:iam::156460612806:root",
                "id": "156460612806",
            },
        }

    @property
    def known_invokes(self) -> list[str]:
        return sorted(self._invokes)

    def call(self, args: MockCallArgs) -> tuple[dict, list]:
        handler = self._invokes.get(args.token)
        if handler is None:
            self.unknown_invokes.append(args.token)
            raise UnknownInvokeError(f"strict mocks: unknown invoke {args.token}")
        return handler(args.args), []

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict]:
        if not args.custom:
            return "", {}
        digest = _hex(f"{args.typ}/{args.name}")
        resource_id = _ID_PREFIXES.get(args.typ, f"{args.name}-") + digest
        service, kind = args.typ.split(":")[1].split("/")[0], args.typ.split(":")[-1].lower()
        arn = f"arn:aws:{service}:{self.region}:{ACCOUNT_ID}:{kind}/{args.name}"
        state = {**args.inputs, "id": resource_id, "arn": arn}
        state.update(self._computed(args, digest))
        return resource_id, state

    def _computed(self, args: MockResourceArgs, digest: str) -> dict[str, Any]:
        """Attributes the provider computes that the program reads back."""
        inputs, short = args.inputs, args.typ.split(":")[-1]
        if short == "Bucket":
            return {
                "bucket": inputs.get("bucket") or f"{args.name}-{digest[:8]}",
                "arn": f"arn:aws:s3:::{args.name}-{digest[:8]}",
            }
        if short in ("LoadBalancer", "TargetGroup"):
            kind = "app" if short == "LoadBalancer" else "targetgroup"
            suffix = f"{kind}/{args.name}/{digest[:16]}"
            return {
                "arnSuffix": suffix,
                "dnsName": f"{args.name}-{digest[:8]}.{self.region}.elb.amazonaws.com",
                "arn": f"arn:aws:elasticloadbalancing:{self.region}:{ACCOUNT_ID}:"
                f"{'loadbalancer/' if short == 'LoadBalancer' else ''}{suffix}",
            }
        if short == "Instance":
            octets = bytes.fromhex(digest[:4])
            return {
                "privateIp": f"10.0.{octets[0]}.{octets[1]}",
                "privateDns": f"ip-{digest[:8]}.internal",
            }
        if short == "LaunchTemplate":
            return {"latestVersion": 1, "defaultVersion": 1}
        if short == "Topic":  # SNS topic ARNs end in the bare name, as AWS makes them
            name = inputs.get("name") or f"{args.name}-{digest[:7]}"
            return {"name": name, "arn": f"arn:aws:sns:{self.region}:{ACCOUNT_ID}:{name}"}
        if short == "Queue":  # SQS: the URL and ARN end in the queue's name
            name = inputs.get("name") or f"{args.name}-{digest[:7]}"
            return {"name": name, "arn": f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{name}",
                    "url": f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT_ID}/{name}"}
        if short in ("Group", "Role", "InstanceProfile", "Parameter", "LogGroup"):
            return {"name": inputs.get("name") or f"{args.name}-{digest[:7]}"}
        return {}


class _RecordingMonitor(MockMonitor):
    """The mock monitor, also keeping each registration's parent and inputs."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.registered: list[RegisteredResource] = []
        self._lock = threading.Lock()

    def RegisterResource(self, request):  # the monitor's gRPC method name
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs = rpc.deserialize_properties(request.object)
        registration = self.resources[response.urn]
        with self._lock:
            self.registered.append(
                RegisteredResource(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent_urn=request.parent,
                    custom=bool(request.custom),
                    inputs={k: _unwrap(v) for k, v in inputs.items()},
                    secret_inputs=frozenset(k for k, v in inputs.items() if _has_secret(v)),
                    id=registration.id or "",
                    outputs=dict(registration.state or {}),
                    dependencies=frozenset(request.dependencies),
                    options={"ignoreChanges": sorted(request.ignoreChanges),
                             "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                             "protect": bool(request.protect),
                             "retainOnDelete": bool(request.retainOnDelete),
                             "replaceOnChanges": sorted(request.replaceOnChanges)},
                )
            )
        return response


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def _has_secret(value: Any) -> bool:
    if _is_secret(value):
        return True
    if isinstance(value, dict):
        return any(_has_secret(v) for v in value.values())
    return isinstance(value, list) and any(_has_secret(v) for v in value)


def _unwrap(value: Any) -> Any:
    """The value inside Pulumi's secret envelopes, at any depth."""
    if _is_secret(value):
        return _unwrap(value["value"])
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _encode(value: Any) -> str:
    """Pulumi hands config to programs as text; structured values as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def run_program(
    config: Mapping[str, Any],
    *,
    stack: str = "dev",
    project: str = PROJECT,
    program: Path = PROGRAM,
    secret_keys: tuple[str, ...] = (),
    check: bool = True,
) -> StackRun:
    """Run ``program`` with ``config`` (full keys, e.g. ``dask-platform:vpcCidr``).

    Each call runs in a fresh thread, so Pulumi's context-local state (root stack,
    config, settings) starts empty and runs do not leak into each other. With
    ``check`` (the default) an exception from the program (e.g. a SettingsError) or an
    unknown invoke is raised; without it, it is returned in ``StackRun.error`` beside
    whatever was registered before it, so tests can assert that nothing was.
    """
    mocks = StrictMocks(str(config.get("aws:region") or DEFAULT_REGION))
    monitor = _RecordingMonitor(mocks)
    exports: dict[str, Any] = {}
    errors: list[BaseException] = []
    started = time.perf_counter()

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        SETTINGS.outputs = set()  # its context default is one set shared by every thread
        try:
            set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
            set_all_config({k: _encode(v) for k, v in config.items()}, list(secret_keys))

            async def main() -> None:
                runpy.run_path(str(program), run_name="__main__")
                outputs = getattr(get_root_resource(), "outputs", {})
                exports.update(await Output.from_input(outputs).future() or {})

            _sync_await(run_pulumi_func(main))
        except BaseException as exc:  # noqa: BLE001 handed to the caller's thread
            errors.append(exc)
        finally:
            leftovers = asyncio.all_tasks(loop)  # a failed program leaves registrations pending
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.close()

    worker = threading.Thread(target=run, name=f"pulumi-mock-{stack}")
    worker.start()
    worker.join()
    if mocks.unknown_invokes:
        errors.insert(
            0,
            UnknownInvokeError(
                f"strict mocks: unknown invoke(s) {sorted(set(mocks.unknown_invokes))}; "
                f"known: {mocks.known_invokes}"
            ),
        )
    result = StackRun(
        list(monitor.registered),
        exports,
        time.perf_counter() - started,
        errors[0] if errors else None,
    )
    if check and result.error is not None:
        raise result.error
    return result


def run_stack(config: Mapping[str, Any], **options: Any) -> list[RegisteredResource]:
    """Every resource the stack registers for ``config`` (see :func:`run_program`)."""
    return run_program(config, **options).resources


def stack_config(stack: str = "dev", root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The config of ``Pulumi.<stack>.yaml``; ``secure:`` values are left out (no key here)."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no stack file {path.name}; stacks here: "
            f"{', '.join(p.name for p in sorted(root.glob('Pulumi.*.yaml')))}"
        )
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {
        key: value
        for key, value in (document.get("config") or {}).items()
        if not (isinstance(value, dict) and "secure" in value)
    }
