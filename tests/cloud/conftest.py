"""The stack run once per config under strict mocks; tests assert on what it registered.

``dev``: Pulumi.dev.yaml as committed (defaults, created VPC).
``custom``: an adopted VPC, non-default pool settings, an LDAP password, plain LDAP
with StartTLS and two allowed CIDRs, so tests see settings flow through rather than
defaults that happen to match.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from tools.mockrun import RegisteredResource, StackRun, run_program, stack_config

LDAP_PASSWORD = "s3cret-Bind-Pw-7f2a"
ADOPTED_VPC = "vpc-0a1b2c3d4e5f60718"
ADOPTED_PRIVATE = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"]
ADOPTED_PUBLIC = ["subnet-0bbbbbbbbbbbbbbb1", "subnet-0bbbbbbbbbbbbbbb2"]
CUSTOM_WORKERS = {
    "instanceType": "c5.2xlarge",
    "min": 2,
    "max": 7,
    "scaleOutCpu": 80,
    "scaleInCpu": 20,
    "cooldownSeconds": 600,
    "warmPoolMin": 0,
}


def custom_config() -> dict[str, Any]:
    config = stack_config("dev")
    config.pop("dask-platform:vpcCidr")
    config.update(
        {
            "dask-platform:vpcId": ADOPTED_VPC,
            "dask-platform:privateSubnetIds": ADOPTED_PRIVATE,
            "dask-platform:publicSubnetIds": ADOPTED_PUBLIC,
            "dask-platform:workers": CUSTOM_WORKERS,
            "dask-platform:ldapBindPassword": LDAP_PASSWORD,
            "dask-platform:ldapUrl": "ldap://ipa.example.internal",
            "dask-platform:allowedCidrs": ["81.2.69.0/24", "130.149.0.0/16"],
            "dask-platform:alertEmails": ["a@example.internal", "b@example.internal"],
        }
    )
    return config


def quiet_run(config: dict[str, Any], **options: Any) -> StackRun:
    """``run_program`` without pulumi_aws's import-time notices about its own
    deprecated alias classes (which this program does not use)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pulumi_aws")
        return run_program(config, **options)


@pytest.fixture(scope="session")
def dev() -> StackRun:
    return quiet_run(stack_config("dev"))


@pytest.fixture(scope="session")
def custom() -> StackRun:
    return quiet_run(
        custom_config(), stack="custom", secret_keys=("dask-platform:ldapBindPassword",)
    )


def short_type(resource: RegisteredResource) -> str:
    """``aws:ec2/securityGroup:SecurityGroup`` -> ``SecurityGroup``."""
    return resource.type.rsplit(":", 1)[-1]


def one(run: StackRun, type_: str, name: str) -> RegisteredResource:
    """The resource of ``type_`` (short or full token) named ``name``."""
    found = [r for r in run.resources if r.name == name and type_ in (r.type, short_type(r))]
    assert len(found) == 1, f"expected one {type_} {name!r}, found {len(found)}"
    return found[0]


def of_short_type(run: StackRun, type_: str) -> list[RegisteredResource]:
    """Provider resources (not components) whose type ends in ``type_``."""
    return [r for r in run.resources if r.custom and short_type(r) == type_]


def host_interface(run: StackRun, template: str) -> dict[str, Any]:
    """The interface a host of ``template`` boots with: a single host's own interface
    (``<host>-eni``, named in its template), else the template's."""
    (interface,) = one(run, "LaunchTemplate", template).inputs["networkInterfaces"]
    if "networkInterfaceId" not in interface:
        return interface
    (eni,) = [r for r in run.resources if r.id == interface["networkInterfaceId"]]
    assert eni.name == template.replace("-lt", "-eni")
    return {**eni.inputs, **interface}
