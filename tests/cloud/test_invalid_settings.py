"""Bad stack config stops the program before any resource exists, naming the key."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from daskplatform.settings import SettingsError
from tests.cloud.conftest import quiet_run
from tools.mockrun import stack_config

NS = "dask-platform:"


def with_changes(changes: dict[str, Any], remove: tuple[str, ...] = ()) -> dict[str, Any]:
    config = stack_config("dev")
    for key in remove:
        config.pop(NS + key)
    config.update({NS + key: value for key, value in changes.items()})
    return config


def workers(**overrides: Any) -> dict[str, Any]:
    """A ``workers`` change: the dev pool with ``overrides``."""
    return {"workers": {**stack_config("dev")[NS + "workers"], **overrides}}


CASES = {
    "min above max": (
        workers(min=9, max=3),
        (),
        ["dask-platform:workers.min", "dask-platform:workers.max"],
    ),
    "scale-in not below scale-out": (
        workers(scaleInCpu=70, scaleOutCpu=70),
        (),
        ["dask-platform:workers.scaleInCpu", "must be below"],
    ),
    "bad allowed CIDR": (
        {"allowedCidrs": ["10.0.0.300/8"]},
        (),
        ["dask-platform:allowedCidrs", "not a valid CIDR"],
    ),
    "bad VPC CIDR": ({"vpcCidr": "10.0.0.0/33"}, (), ["dask-platform:vpcCidr", "CIDR"]),
    "VPC CIDR too small for four subnets": (
        {"vpcCidr": "10.0.0.0/27"},
        (),
        ["dask-platform:vpcCidr", "/16 to /24"],
    ),
    "quota the pool can never hold": (
        {
            "quotas": {
                "groups": {
                    "admins": {
                        "priority": 3,
                        "clusterMaxCores": 16,
                        "clusterMaxMemoryGb": 32,
                        "userMaxCores": 400,
                        "userMaxMemoryGb": 64,
                    },
                    "data_engineers": {
                        "priority": 2,
                        "clusterMaxCores": 4,
                        "clusterMaxMemoryGb": 8,
                        "userMaxCores": 4,
                        "userMaxMemoryGb": 8,
                    },
                    "data_analysts": {
                        "priority": 1,
                        "clusterMaxCores": 2,
                        "clusterMaxMemoryGb": 4,
                        "userMaxCores": 2,
                        "userMaxMemoryGb": 4,
                    },
                }
            }
        },
        (),
        ["dask-platform:quotas.groups.admins", "exceeds what the pool can ever hold"],
    ),
    "unknown top-level key": (
        {"colour": "blue"},
        (),
        ["dask-platform:colour", "not a known setting"],
    ),
    "unknown nested key": (
        workers(minimum=3),
        (),
        ["dask-platform:workers.minimum", "not a known setting"],
    ),
    "missing required key": (
        {},
        ("certificateArn",),
        ["dask-platform:certificateArn", "is required"],
    ),
    "unknown instance type": (
        workers(instanceType="c5.huge"),
        (),
        ["dask-platform:workers.instanceType", "allowed families"],
    ),
    "webhook over plain http": (
        {"monitoring": {"webhooks": [{"name": "pagerduty",
                                      "url": "http://events.pagerduty.com/x"}]}},
        (),
        ["dask-platform:monitoring.webhooks.0.url", "not an https:// URL"],
    ),
    "two webhooks of one name": (
        {"monitoring": {"webhooks": [{"name": "slack", "url": "https://a.example/x"},
                                     {"name": "slack", "url": "https://b.example/y"}]}},
        (),
        ["dask-platform:monitoring.webhooks", "used more than once"],
    ),
    "memory alarm above 100 %": (
        {"monitoring": {"workerMemoryPercent": 120}},
        (),
        ["dask-platform:monitoring.workerMemoryPercent", "less than or equal to 100"],
    ),
    "raw prefix without a trailing slash": (
        {"pipeline": {"rawPrefix": "appsflyer"}},
        (),
        ["dask-platform:pipeline.rawPrefix", "ending in /"],
    ),
    "adopted VPC without subnets": (
        {"vpcId": "vpc-0123456789abcdef0"},
        ("vpcCidr",),
        ["dask-platform:privateSubnetIds", "at least 2 subnets"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_invalid_settings_fail_before_any_resource_naming_the_key(case: str) -> None:
    changes, remove, expected = CASES[case]
    run = quiet_run(with_changes(changes, remove), check=False)
    assert isinstance(run.error, pulumi.RunError), run.error
    assert isinstance(run.error.__cause__, SettingsError)
    for fragment in expected:
        assert fragment in str(run.error)
    assert run.resources == []


def test_the_unchanged_dev_config_is_valid() -> None:
    """The cases above differ from a config that passes by their change alone."""
    assert quiet_run(with_changes({}), check=False).error is None
