"""What an update does to the two single hosts, shown through the resource options the
program sets (Pulumi mocks record them): a new runtime, a tag, anything in the launch
template leaves the instance as it is (or updates it in place), and a replacement, when
asked for, keeps the gateway's state and both hosts' addresses."""

from __future__ import annotations

from typing import Any

import pytest

import components.stack
from daskplatform.host.setup import STATE_DEVICE
from tests.cloud.conftest import one, quiet_run
from tools.mockrun import StackRun, stack_config

HOSTS = ("gateway", "scheduler")


def _instance_diff(before: StackRun, after: StackRun, host: str) -> set[str]:
    """Inputs of the host's instance an update would change, ignored ones left out."""
    old, new = (one(run, "Instance", f"{host}-instance") for run in (before, after))
    ignored = set(new.options["ignoreChanges"])
    return {key for key in old.inputs.keys() | new.inputs.keys()
            if key not in ignored and old.inputs.get(key) != new.inputs.get(key)}


@pytest.fixture(scope="module")
def new_code(monkeypatch_module: pytest.MonkeyPatch) -> StackRun:
    """The dev stack again after a code change: a new runtime version."""
    monkeypatch_module.setattr(components.stack, "source_version", lambda: "0123456789ab")
    return quiet_run(stack_config("dev"))


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_single_hosts_never_follow_their_launch_template_on_their_own(dev: StackRun) -> None:
    for host in HOSTS:
        instance = one(dev, "Instance", f"{host}-instance")
        assert instance.options["ignoreChanges"] == ["launchTemplate"]
        # A replacement asked for (pulumi up --replace) stops the old one first: its
        # interface and the gateway's volume attach to one instance at a time.
        assert instance.options["deleteBeforeReplace"]
        assert set(instance.inputs) == {"launchTemplate", "tags"}


def test_new_runtime_code_changes_user_data_but_neither_single_host(
        dev: StackRun, new_code: StackRun) -> None:
    for host in HOSTS:
        template = (f"{host}-lt",)
        assert (one(dev, "LaunchTemplate", *template).inputs["userData"]
                != one(new_code, "LaunchTemplate", *template).inputs["userData"])
        assert _instance_diff(dev, new_code, host) == set()
    assert (one(new_code, "BucketObjectv2", "storage-runtime-package").inputs["key"]
            == "runtime/dask-platform-0123456789ab.zip")


def test_a_tag_change_updates_single_hosts_in_place() -> None:
    config = stack_config("dev")
    retagged = quiet_run({**config, "dask-platform:tags": {
        **config.get("dask-platform:tags", {}), "cost-center": "cc-4711"}}, stack="retag")
    plain = quiet_run(config, stack="retag")
    for host in HOSTS:
        assert _instance_diff(plain, retagged, host) == {"tags"}  # tags update in place
        tags = one(retagged, "Instance", f"{host}-instance").inputs["tags"]
        assert tags["cost-center"] == "cc-4711"


def test_the_gateway_state_lives_on_a_protected_encrypted_volume_in_its_zone(
        dev: StackRun, custom: StackRun) -> None:
    volume = one(dev, "Volume", "gateway-state")
    assert volume.inputs["encrypted"] and volume.inputs["type"] == "gp3"
    assert volume.inputs["size"] == 8 and volume.inputs["finalSnapshot"]
    assert volume.options["protect"]
    eni = one(dev, "NetworkInterface", "gateway-eni")
    # In the zone of the gateway's subnet (the strict mocks answer getSubnet).
    assert volume.inputs["availabilityZone"] in ("eu-west-1a", "eu-west-1b")
    attachment = one(dev, "VolumeAttachment", "gateway-state-attachment")
    assert attachment.inputs["volumeId"] == volume.id
    assert attachment.inputs["instanceId"] == one(dev, "Instance", "gateway-instance").id
    assert attachment.inputs["deviceName"] == STATE_DEVICE
    assert attachment.inputs["stopInstanceBeforeDetaching"]
    assert attachment.options["deleteBeforeReplace"]
    private = sorted(s.id for s in dev.resources
                     if s.type.endswith(":Subnet") and s.inputs["tags"]["tier"] == "private")
    assert eni.inputs["subnetId"] == private[0] or eni.inputs["subnetId"] in private
    assert one(custom, "Volume", "gateway-state").inputs["size"] == 8


def test_single_hosts_keep_their_address_across_a_replacement(dev: StackRun) -> None:
    for host in HOSTS:
        eni = one(dev, "NetworkInterface", f"{host}-eni")
        (interface,) = one(dev, "LaunchTemplate", f"{host}-lt").inputs["networkInterfaces"]
        assert interface["networkInterfaceId"] == eni.id
        assert interface["deleteOnTermination"] == "false"

