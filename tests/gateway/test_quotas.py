"""Group resolution, option bounds and per-user totals (no servers needed)."""

from __future__ import annotations

import pytest
from dask_gateway_server.models import User

from daskplatform.gateway.backend import PoolClusterConfig
from daskplatform.gateway.quotas import (
    GIB,
    NoPlatformGroup,
    Number,
    UserLedger,
    UserQuotaExceeded,
    check_fits_a_node,
    cluster_options_for,
    cluster_overrides,
    group_of,
    posix_identity,
)
from daskplatform.settings import ClusterSettings, QuotaSettings


def test_highest_priority_group_wins_and_strangers_are_refused() -> None:
    quotas = QuotaSettings()
    assert group_of(User("a", ["data_analysts", "admins"]), quotas).name == "admins"
    assert group_of(User("b", ["data_engineers", "x"]), quotas).name == "data_engineers"
    with pytest.raises(NoPlatformGroup) as info:
        group_of(User("c", ["staff"]), quotas)
    assert "admins, data_analysts, data_engineers" in str(info.value)


def test_options_are_bounded_by_group_and_limits_count_workers_only() -> None:
    clusters = ClusterSettings(worker_cores=1, worker_memory_gb=1.5, scheduler_cores=1,
                               scheduler_memory_gb=1)
    options = cluster_options_for(QuotaSettings(), clusters)(User("ann", ["data_analysts"]))
    with pytest.raises(ValueError, match="worker_cores: must be a number from 0.1 to 2, got 3"):
        options.parse_options({"worker_cores": 3})
    with pytest.raises(ValueError, match="worker_memory: must be a number from 0.1 to 4, got 5"):
        options.parse_options({"worker_memory": 5})
    overrides = options.get_configuration(options.parse_options({}), User("ann"))
    config = PoolClusterConfig(**overrides)
    # data_analysts: 2 cores / 4 GB of workers -> two 1-core 1.5 GB workers
    assert config.cluster_max_workers == 2
    assert config.platform_group == "data_analysts" and config.priority == 1
    assert config.user_max_cores == 2 and config.user_max_memory == 4 * GIB


def test_ledger_holds_user_totals_across_clusters() -> None:
    ledger = UserLedger()
    ledger.hold("w1", "ann", 1, GIB, max_cores=2, max_memory_bytes=4 * GIB)
    ledger.hold("w2", "ann", 1, GIB, max_cores=2, max_memory_bytes=4 * GIB)
    with pytest.raises(UserQuotaExceeded, match="total of 2 cores"):
        ledger.hold("w3", "ann", 1, GIB, max_cores=2, max_memory_bytes=4 * GIB)
    ledger.hold("b1", "bob", 1, GIB, max_cores=2, max_memory_bytes=4 * GIB)
    with pytest.raises(UserQuotaExceeded, match="total of 4 GB"):
        ledger.hold("b2", "bob", 0.5, 3.5 * GIB, max_cores=2, max_memory_bytes=4 * GIB)
    ledger.release("w1")
    ledger.hold("w3", "ann", 1, GIB, max_cores=2, max_memory_bytes=4 * GIB)
    assert ledger.usage("ann") == (2, 2 * GIB)


@pytest.mark.parametrize(("options", "message"), [
    ({"worker_cores": float("nan")}, "worker_cores: must be a number from 0.1 to 2, got NaN"),
    ({"worker_cores": float("inf")}, "got Infinity"),
    ({"worker_memory": True}, "worker_memory: must be a number from 0.1 to 4, got true"),
    ({"worker_memory": "2"}, 'worker_memory: must be a number from 0.1 to 4, got "2"'),
    ({"worker_gpus": 1},
     'cluster_options: unknown option "worker_gpus"; allowed: worker_cores, worker_memory'),
])
def test_options_refuse_what_is_not_a_number_in_bounds(options: dict, message: str) -> None:
    """dask-gateway's own Float took true for 1.0 and let NaN past both bounds."""
    clusters = ClusterSettings(worker_cores=1, worker_memory_gb=1.5)
    bounded = cluster_options_for(QuotaSettings(), clusters)(User("ann", ["data_analysts"]))
    with pytest.raises(ValueError) as refused:
        bounded.parse_options(options)
    assert message in str(refused.value)


# ------------------------------------------------------------------ boundaries and units


def test_limits_handed_to_dask_gateway_are_in_bytes_and_count_the_scheduler() -> None:
    """GB are GiB (2**30 bytes), written out here rather than taken from the module."""
    clusters = ClusterSettings()  # scheduler 0.25 cores / 0.5 GB, worker 1 core / 1.5 GB
    group = group_of(User("ann", ["data_analysts"]), QuotaSettings())
    assert cluster_overrides(group, clusters, 1.5, 3) == {
        "scheduler_cores": 0.25, "scheduler_memory": 536_870_912,
        "worker_cores": 1.5, "worker_memory": 3_221_225_472,
        "cluster_max_cores": 2.25, "cluster_max_memory": 4_831_838_208,
        "platform_group": "data_analysts", "priority": 1,
        "user_max_cores": 2, "user_max_memory": 4_294_967_296, "max_clusters": 2,
        "notebook_cores": 0.5, "notebook_memory": 1_073_741_824,
    }


def test_where_memory_binds_before_cores_a_cluster_gets_fewer_workers() -> None:
    """data_analysts hold 2 cores / 4 GB: two 1-core workers of 3 GB would need 6 GB."""
    options = cluster_options_for(QuotaSettings(), ClusterSettings())(
        User("ann", ["data_analysts"]))
    overrides = options.get_configuration(
        options.parse_options({"worker_cores": 1, "worker_memory": 3}), User("ann"))
    assert PoolClusterConfig(**overrides).cluster_max_workers == 1


def test_option_bounds_are_inclusive() -> None:
    options = cluster_options_for(QuotaSettings(), ClusterSettings())(
        User("ann", ["data_analysts"]))
    assert options.parse_options({"worker_cores": 0.1, "worker_memory": 4}) == {
        "worker_cores": 0.1, "worker_memory": 4.0}
    assert options.parse_options({"worker_cores": 2, "worker_memory": 0.1}) == {
        "worker_cores": 2.0, "worker_memory": 0.1}
    with pytest.raises(ValueError, match="worker_cores: must be a number from 0.1 to 2, got 0.09"):
        options.parse_options({"worker_cores": 0.09})
    with pytest.raises(ValueError, match="worker_memory: must be a number from 0.1 to 4, got 0.09"):
        options.parse_options({"worker_memory": 0.09})


def test_an_unbounded_number_names_infinite_bounds() -> None:
    unbounded = Number("worker_cores", default=1)
    assert unbounded.validate(-1e300) == -1e300
    with pytest.raises(ValueError, match="from -inf to inf, got NaN"):
        unbounded.validate(float("nan"))


def test_a_worker_exactly_a_nodes_size_fits_and_a_larger_one_is_refused() -> None:
    node = (2.0, 3.5)  # a c5.large after the node reserve
    check_fits_a_node(2, 3.5, node, "c5.large")
    check_fits_a_node(0.1 + 0.2, 3.5, (0.3, 3.5), "c5.large")  # float sums still fit
    check_fits_a_node(2, 0.1 + 0.2, (2, 0.3), "c5.large")
    for cores, memory in ((2.1, 1), (1, 3.6)):
        with pytest.raises(ValueError) as refused:
            check_fits_a_node(cores, memory, node, "c5.large")
        assert str(refused.value) == (
            f"a worker of {cores:g} cores and {memory:g} GB is larger than any worker node: "
            "the largest worker a c5.large node holds has 2 cores and 3.5 GB; ask for at most "
            "that (worker_cores, worker_memory)")


def test_a_worker_too_large_for_any_node_is_refused_when_the_cluster_is_configured() -> None:
    options = cluster_options_for(QuotaSettings(), ClusterSettings(), node=(2.0, 3.5),
                                  instance_type="c5.large")(User("eve", ["data_engineers"]))
    with pytest.raises(ValueError, match="the largest worker a c5.large node holds has 2 cores"):
        options.get_configuration(options.parse_options({"worker_cores": 3}), User("eve"))


def test_user_ids_are_required_only_where_processes_run_as_their_users() -> None:
    assert posix_identity(User("ann"), required=False) == {"platform_uid": None,
                                                           "platform_gid": None}
    with pytest.raises(ValueError, match="user ann has no uidNumber and gidNumber"):
        posix_identity(User("ann"), required=True)
    with_uid = User("bob")
    with_uid.uid, with_uid.gid = 1001, 1002  # type: ignore[attr-defined]
    assert posix_identity(with_uid, required=True) == {"platform_uid": 1001,
                                                       "platform_gid": 1002}
    only_uid = User("cyd")
    only_uid.uid = 1003  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="user cyd has no uidNumber"):
        posix_identity(only_uid, required=True)


def test_a_user_may_reach_exactly_the_group_totals() -> None:
    ledger = UserLedger()
    ledger.hold("w1", "ann", 0.1, GIB, max_cores=0.3, max_memory_bytes=4 * GIB)
    ledger.hold("w2", "ann", 0.2, 3 * GIB, max_cores=0.3, max_memory_bytes=4 * GIB)
    assert ledger.usage("ann") == (pytest.approx(0.3), 4 * GIB)
    with pytest.raises(UserQuotaExceeded):
        ledger.hold("w3", "ann", 0.1, 0, max_cores=0.3, max_memory_bytes=4 * GIB)
    with pytest.raises(UserQuotaExceeded):
        ledger.hold("w4", "ann", 0, 1, max_cores=0.3, max_memory_bytes=4 * GIB)


def test_memory_refusal_names_the_memory_total_when_cores_are_left() -> None:
    ledger, limit = UserLedger(), int(4.5 * GIB)
    ledger.hold("w1", "ann", 1, int(3.25 * GIB), max_cores=4, max_memory_bytes=limit)
    with pytest.raises(UserQuotaExceeded) as refused:
        ledger.hold("w2", "ann", 1, int(1.5 * GIB), max_cores=4, max_memory_bytes=limit)
    assert str(refused.value) == (
        "user ann holds 3.25 GB of worker memory across their clusters; one more worker "
        "(1.5 GB) would exceed the group total of 4.5 GB (quotas.groups.<group>.userMaxMemoryGb)")
    assert not ledger.holding("w2") and ledger.holding("w1")


def test_cores_refusal_names_the_cores_total() -> None:
    ledger = UserLedger()
    ledger.hold("w1", "ann", 1.5, GIB, max_cores=2, max_memory_bytes=None)
    with pytest.raises(UserQuotaExceeded) as refused:
        ledger.hold("w2", "ann", 1, GIB, max_cores=2, max_memory_bytes=None)
    assert str(refused.value) == (
        "user ann holds 1.5 worker cores across their clusters; one more worker (1 cores) "
        "would exceed the group total of 2 cores (quotas.groups.<group>.userMaxCores)")


def test_unlimited_totals_and_repeated_holds() -> None:
    ledger = UserLedger()
    for n in range(3):
        ledger.hold(f"w{n}", "ann", 8, 64 * GIB, max_cores=None, max_memory_bytes=None)
    ledger.hold("w0", "ann", 8, 64 * GIB, max_cores=8, max_memory_bytes=GIB)  # held already
    assert ledger.usage("ann") == (24, 192 * GIB) and ledger.usage("bob") == (0, 0)
    ledger.release("w0")
    ledger.release("never-held")
    assert ledger.usage("ann") == (16, 128 * GIB)
    logged_in = "".join(["an", "n"])  # a name from a login, not the same string object
    assert ledger.usage(logged_in) == (16, 128 * GIB)
