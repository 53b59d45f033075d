"""The capacity model ``./dev plan`` prints: the figures for the defaults, by hand."""

from __future__ import annotations

from daskplatform.capacity import capacity_model, render
from daskplatform.settings import load_settings
from tests.test_settings import REQUIRED


def test_the_defaults_hold_the_team() -> None:
    model = capacity_model(load_settings(REQUIRED))
    # m5.2xlarge: 8 cores / 0.25 = 32, (32 - 0.5) GB / 0.5 = 63: cores bind.
    assert (model.scheduler_host, model.concurrent_clusters, model.expected_users) == (
        "m5.2xlarge", 32, 30)
    assert model.scheduler_cpu_overcommit == 32 * 2 / 8
    assert model.scheduler_memory_overcommit == 32 * 2 / 31.5
    # c5.large: 2 cores, 3.5 GB after the reserve: two 1-core/1.5 GB workers.
    assert model.workers_per_node == 2
    assert (model.pool_nodes, model.pool_cores, model.pool_memory_gb, model.pool_workers) == (
        (5, 20), (10, 40), (17.5, 70), (10, 40))
    groups = {g.name: g for g in model.groups}
    assert (groups["data_engineers"].workers_at_full_quota,
            groups["data_engineers"].users_at_full_quota) == (4, 10)
    assert (groups["data_analysts"].workers_at_full_quota,
            groups["data_analysts"].users_at_full_quota) == (2, 20)
    assert groups["data_analysts"].notebook_slots == (15, 60)  # 3 x 1 GB per node
    assert groups["admins"].notebook_slots == (5, 20)  # 1 x 2 GB per node


def test_the_model_follows_the_settings() -> None:
    settings = load_settings({**REQUIRED, "workers": {"instanceType": "m5.large", "max": 16},
                              "clusters": {"workerMemoryGb": 3}})
    model = capacity_model(settings)
    # m5.large: 2 cores, 7.5 GB after the reserve: 2 workers of 3 GB (cores bind).
    assert (model.workers_per_node, model.pool_workers, model.pool_memory_gb) == (
        2, (10, 32), (37.5, 120))
    text = render(model)
    assert "concurrent clusters: 32 on a m5.2xlarge scheduler host, for 30 expected" in text
    assert "worker pool: 5..16 x m5.large, 10..32 cores, 37.5..120 GB" in text
