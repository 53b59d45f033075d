"""Group resolution, option bounds and per-user totals (no servers needed)."""

from __future__ import annotations

import pytest
from dask_gateway_server.models import User

from daskplatform.gateway.backend import PoolClusterConfig
from daskplatform.gateway.quotas import (
    GIB,
    NoPlatformGroup,
    UserLedger,
    UserQuotaExceeded,
    cluster_options_for,
    group_of,
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
