"""Quota rules on the runtime settings the stack publishes as an SSM parameter."""

from __future__ import annotations

import json
from typing import Any

from daskplatform.settings import RuntimeSettings
from policies.quotas import SSM_PARAMETER
from tests.policies.support import run


def parameter(**changes: Any) -> dict:
    """The published parameter's props, with dotted-path changes to the default settings."""
    document = json.loads(RuntimeSettings().to_json())
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = document
        for part in parents:
            node = node[part]
        node[leaf] = value
    return {"name": "/dask-platform/dev/runtime-settings", "type": "String",
            "value": json.dumps(document)}


def group(name: str) -> str:
    return f"quotas__groups__{name}"


def test_default_settings_pass_every_quota_rule() -> None:
    for rule in ("runtime-settings-valid", "quota-cluster-within-user", "quota-user-within-pool",
                 "quota-worker-fits-node", "quota-distinct-priorities", "quota-idle-timeout",
                 "quota-pending-per-user", "worker-terminate-headroom"):
        assert run(rule, SSM_PARAMETER, parameter()) == [], rule


def test_other_parameters_are_ignored() -> None:
    assert run("quota-idle-timeout", SSM_PARAMETER, {"value": "plain text"}) == []
    assert run("runtime-settings-valid", SSM_PARAMETER, {"value": '{"quotas": 1}'}) == []


def test_unparseable_settings_report_each_key() -> None:
    props = parameter(workers__instanceType="z9.huge", clusters__workerCores=-1)
    messages = run("runtime-settings-valid", SSM_PARAMETER, props)
    assert len(messages) == 2
    assert messages[0].startswith("dask-platform:clusters.workerCores: Input should be greater "
                                  "than 0")
    assert messages[1].startswith("dask-platform:workers.instanceType: unknown instance type "
                                  "'z9.huge'")


def test_cluster_above_user_fails_for_each_key() -> None:
    props = parameter(**{f"{group('data_analysts')}__clusterMaxCores": 3,
                         f"{group('data_engineers')}__clusterMaxMemoryGb": 9})
    assert run("quota-cluster-within-user", SSM_PARAMETER, props) == [
        ("dask-platform:quotas.groups.data_engineers.clusterMaxMemoryGb (9) must be <= "
        "dask-platform:quotas.groups.data_engineers.userMaxMemoryGb (8); lower it to at most "
        "that"),
        ("dask-platform:quotas.groups.data_analysts.clusterMaxCores (3) must be <= "
        "dask-platform:quotas.groups.data_analysts.userMaxCores (2); lower it to at most that")]


def test_user_above_pool_fails() -> None:
    props = parameter(workers__max=3, **{f"{group('admins')}__userMaxCores": 32})
    assert run("quota-user-within-pool", SSM_PARAMETER, props) == [
        ("dask-platform:quotas.groups.admins.userMaxCores (32) exceeds what the pool can ever "
        "hold at dask-platform:workers.max=3 x c5.large (6 cores, 10.5 GB); lower it or raise "
        "dask-platform:workers.max"),
        ("dask-platform:quotas.groups.admins.userMaxMemoryGb (64) exceeds what the pool can "
        "ever hold at dask-platform:workers.max=3 x c5.large (6 cores, 10.5 GB); lower it or "
        "raise dask-platform:workers.max")]


def test_worker_larger_than_node_fails() -> None:
    props = parameter(clusters__workerMemoryGb=4)
    assert run("quota-worker-fits-node", SSM_PARAMETER, props) == [
        ("dask-platform:clusters.workerCores/workerMemoryGb: a worker (1 cores, 4 GB) does not "
        "fit a c5.large node (2 cores, 3.5 GB after dask-platform:clusters.nodeReservedMemoryGb); "
        "shrink it or pick a larger instance type")]
    assert run("quota-worker-fits-node", SSM_PARAMETER,
               parameter(clusters__schedulerCores=9)) != []


def test_equal_priorities_fail() -> None:
    props = parameter(**{f"{group('data_analysts')}__priority": 2})
    assert run("quota-distinct-priorities", SSM_PARAMETER, props) == [
        ("dask-platform:quotas.groups.data_engineers.priority, "
        "dask-platform:quotas.groups.data_analysts.priority are all 2; give each group a "
        "distinct priority")]


def test_idle_timeout_above_maximum_fails() -> None:
    assert run("quota-idle-timeout", SSM_PARAMETER, parameter(quotas__idleTimeoutMinutes=121)) == [
        ("dask-platform:quotas.idleTimeoutMinutes (121) is above the maximum 120 minutes; lower "
        "it so idle clusters give back the pool")]
    assert run("quota-idle-timeout", SSM_PARAMETER, parameter(quotas__idleTimeoutMinutes=90),
               config={"maxIdleTimeoutMinutes": 60}) != []


def test_pending_per_user_above_limit_fails() -> None:
    """Read before pydantic, so a value past the schema's own bound still names the key."""
    assert run("quota-pending-per-user", SSM_PARAMETER, parameter(quotas__maxPendingPerUser=80)) == [
        ("dask-platform:quotas.maxPendingPerUser (80) is above 50; lower it so one user cannot "
        "flood the queue")]
    assert run("quota-pending-per-user", SSM_PARAMETER, parameter(quotas__maxPendingPerUser=30),
               config={"maxPendingPerUser": 20}) != []


def test_memory_thresholds_out_of_order_fail_to_parse() -> None:
    messages = run("runtime-settings-valid", SSM_PARAMETER,
                   parameter(clusters__workerMemoryPause=0.65))
    assert messages == [
        ("dask-platform:clusters.workerMemory*: workerMemoryTarget (0.6), workerMemorySpill "
         "(0.7), workerMemoryPause (0.65), workerMemoryTerminate (0.9) must increase in that "
         "order, each below 1: as a worker fills, Dask spills, then pauses, then restarts it; "
         "fix it in the stack config")]


def test_terminate_without_headroom_fails() -> None:
    props = parameter(clusters__workerMemoryTerminate=0.95)
    assert run("worker-terminate-headroom", SSM_PARAMETER, props) == [
        ("dask-platform:clusters.workerMemoryTerminate (0.95) leaves 0.075 GB of a 1.5 GB "
         "worker (dask-platform:clusters.workerMemoryGb) below its cgroup limit; at most 0.933 "
         "keeps the 0.1 GB the nanny needs to restart the worker before the kernel's OOM "
         "killer kills it")]
    # A larger default worker has the room at the same fraction.
    assert run("worker-terminate-headroom", SSM_PARAMETER,
               parameter(clusters__workerMemoryTerminate=0.95, clusters__workerMemoryGb=3)) == []


# ------------------------------------------------------------------ which parameter, and edges


def test_only_the_runtime_settings_parameter_is_read() -> None:
    good = parameter(quotas__idleTimeoutMinutes=500)
    for other in ("aws:s3/bucketV2:BucketV2", "aws:ssm/document:Document",
                  "aws:ssm/patchBaseline:PatchBaseline"):  # sorting before and after it
        assert run("quota-idle-timeout", other, good) == [], other
    from_engine = "".join(SSM_PARAMETER.partition("/"))  # not the constant's own object
    assert run("quota-idle-timeout", from_engine, good) != []
    assert run("quota-idle-timeout", SSM_PARAMETER, {"value": 5}) == []
    assert run("quota-idle-timeout", SSM_PARAMETER, {"value": "[1, 2]"}) == []
    document = json.loads(good["value"])
    for missing in ("quotas", "workers"):
        partial = {k: v for k, v in document.items() if k != missing}
        assert run("quota-idle-timeout", SSM_PARAMETER, {"value": json.dumps(partial)}) == []
    # The insecure spelling of the value is read too.
    assert run("quota-idle-timeout", SSM_PARAMETER, {"insecureValue": good["value"]}) != []


def test_limits_are_inclusive() -> None:
    assert run("quota-idle-timeout", SSM_PARAMETER, parameter(quotas__idleTimeoutMinutes=90)) == []
    assert run("quota-pending-per-user", SSM_PARAMETER,
               parameter(quotas__maxPendingPerUser=30)) == []
    assert run("quota-idle-timeout", SSM_PARAMETER, parameter(quotas__idleTimeoutMinutes=120)) == []
    assert run("quota-idle-timeout", SSM_PARAMETER, parameter(quotas__idleTimeoutMinutes=60),
               config={"maxIdleTimeoutMinutes": 60}) == []
    assert run("quota-pending-per-user", SSM_PARAMETER,
               parameter(quotas__maxPendingPerUser=50)) == []
    assert run("quota-pending-per-user", SSM_PARAMETER, parameter(quotas__maxPendingPerUser=20),
               config={"maxPendingPerUser": 20}) == []


def test_unset_values_are_judged_at_their_defaults() -> None:
    document = json.loads(parameter()["value"])
    del document["quotas"]["idleTimeoutMinutes"], document["quotas"]["maxPendingPerUser"]
    props = {"value": json.dumps(document)}
    assert run("quota-idle-timeout", SSM_PARAMETER, props) == []
    assert run("quota-idle-timeout", SSM_PARAMETER, props,
               config={"maxIdleTimeoutMinutes": 119}) == [
        ("dask-platform:quotas.idleTimeoutMinutes (120) is above the maximum 119 minutes; "
         "lower it so idle clusters give back the pool")]
    assert run("quota-pending-per-user", SSM_PARAMETER, props,
               config={"maxPendingPerUser": 49}) == [
        ("dask-platform:quotas.maxPendingPerUser (50) is above 49; lower it so one user "
         "cannot flood the queue")]


def test_a_value_that_is_not_a_number_is_left_to_the_schema_rule() -> None:
    props = parameter(quotas__idleTimeoutMinutes="forever")
    assert run("quota-idle-timeout", SSM_PARAMETER, props) == []
    assert run("runtime-settings-valid", SSM_PARAMETER, props) != []
    assert run("quota-idle-timeout", SSM_PARAMETER, parameter(quotas="none")) == []


def test_rules_on_parsed_settings_stay_quiet_when_the_settings_do_not_parse() -> None:
    broken = parameter(clusters__workerCores=-1, quotas__groups__admins__priority=1,
                       workers__max=1, clusters__workerMemoryTerminate=0.95)
    for rule in ("quota-cluster-within-user", "quota-user-within-pool", "quota-worker-fits-node",
                 "quota-distinct-priorities", "worker-terminate-headroom"):
        assert run(rule, SSM_PARAMETER, broken) == [], rule
        assert run(rule, SSM_PARAMETER, {"value": "plain"}) == [], rule
