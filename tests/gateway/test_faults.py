"""Idle clusters stop; a lost node's workers come back elsewhere; clusters outlive a
gateway restart, and with the proxy apart (as on the gateway host) so do clients'
connections to them."""

from __future__ import annotations

from tests.gateway.conftest import Pool, _answers, wait_for


def _workers(client) -> int:
    return len(client.scheduler_info(n_workers=-1)["workers"])


def _alive(pool: Pool) -> int:
    return sum(len(pool.processes(n)) for n, a in pool.agents.items()
               if a.process.poll() is None)


def test_an_idle_cluster_stops_after_the_timeout(make_pool) -> None:
    pool: Pool = make_pool()
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=1)
    pool.start_gateway(extra_config="c.PoolClusterConfig.idle_timeout = 4\n")
    with pool.client("ann") as gateway:
        cluster = gateway.new_cluster()
        cluster.scale(1)
        wait_for(lambda: _alive(pool) == 2, 30, "cluster did not start")
        wait_for(lambda: not gateway.list_clusters(), 30, "idle cluster still listed")
        wait_for(lambda: _alive(pool) == 0, 30, "idle cluster's processes still running")
        cluster.close()


def test_a_killed_agents_workers_come_back_on_another_node(make_pool) -> None:
    pool: Pool = make_pool()
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=1)
    pool.add_agent("work-2", "worker", cores=1, memory_gb=1)
    pool.start_gateway()
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster, \
            cluster.get_client() as client:
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        doomed = next(n for n in ("work-1", "work-2") if pool.processes(n))
        survivor = "work-2" if doomed == "work-1" else "work-1"
        pool.kill_agent(doomed)
        wait_for(lambda: len(pool.processes(survivor)) == 1, 60,
                 f"worker not replaced on {survivor}")
        client.wait_for_workers(1, timeout=60)
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        wait_for(lambda: any(n["node_id"] == doomed and n["lost"]
                             for n in pool.metrics()["nodes"]), 20, f"{doomed} not marked lost")


def test_running_clusters_stay_reachable_across_a_gateway_restart(make_pool) -> None:
    pool: Pool = make_pool()
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=1)
    pool.start_gateway(db=True)
    with pool.client("ann") as gateway, gateway.new_cluster(shutdown_on_close=False) as cluster:
        name = cluster.name
        cluster.scale(1)
        with cluster.get_client() as client:
            client.wait_for_workers(1, timeout=60)
    before = {p["id"] for p in pool.processes("sched-1") + pool.processes("work-1")}

    pool.gateway.stop()
    assert {p["id"] for p in pool.processes("sched-1") + pool.processes("work-1")} == before
    pool.start_gateway()

    with pool.client("ann") as gateway:
        assert [c.name for c in gateway.list_clusters()] == [name]
        with gateway.connect(name) as cluster, cluster.get_client() as client:
            assert client.submit(lambda: 7 * 6).result(timeout=30) == 42
            assert _workers(client) == 1
            cluster.shutdown()  # stopped through the checkpoints the first gateway wrote
    wait_for(lambda: _alive(pool) == 0, 30, "processes left after shutdown")


def test_a_connected_client_keeps_computing_across_a_gateway_restart(make_pool) -> None:
    """The proxy runs apart from the gateway (``gateway-proxy``, ``--external-proxy``): a
    client computes while the gateway is down, a task submitted before the restart
    finishes after it, and the scheduler never saw the client leave (one connection)."""
    pool: Pool = make_pool()
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=1)
    pool.start_gateway(db=True, external_proxy=True)
    assert pool.proxy is not None
    proxy_pid = pool.proxy.pid

    def slow_square(x: int) -> int:
        import time

        time.sleep(10)
        return x * x

    with pool.client("ann") as gateway, gateway.new_cluster() as cluster:
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
            stream = client.scheduler_comm.comm
            spanning = client.submit(slow_square, 7)
            pool.gateway.stop()
            assert not _answers(pool.api_url + "/api/health")  # the gateway is away
            assert not spanning.done()
            assert client.submit(sum, range(10)).result(timeout=30) == 45
            pool.start_gateway()
            assert spanning.result(timeout=60) == 49
            assert client.submit(lambda: 6 * 7).result(timeout=30) == 42
            assert client.scheduler_comm.comm is stream and not stream.closed()
            assert [e["action"] for _, e in client.get_events(client.id)
                    if e["action"].endswith("-client")] == ["add-client"]
            assert _workers(client) == 1
    assert pool.proxy.pid == proxy_pid and pool.proxy.poll() is None
    wait_for(lambda: _alive(pool) == 0, 30, "processes left after shutdown")


def test_a_placed_worker_that_never_registers_is_replaced(make_pool, tmp_path) -> None:
    """A started worker stuck before registering (here: a preload that hangs) must not
    hold its place for the whole queue wait: after worker_connect_timeout it is stopped
    and another one is started."""
    hang = tmp_path / "hang_before_registering.py"
    hang.write_text("import time\n\n\ndef dask_setup(worker):\n    time.sleep(600)\n")
    pool: Pool = make_pool()
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=1)
    pool.start_gateway(extra_config=(
        "c.PoolBackend.worker_connect_timeout = 4\n"
        f"c.PoolClusterConfig.environment = {{'DASK_DISTRIBUTED__WORKER__PRELOAD': "
        f"'[\"{hang}\"]'}}\n"))
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster:
        cluster.scale(1)
        first = wait_for(lambda: [p["id"] for p in pool.processes("work-1")], 30,
                         "worker not started")
        wait_for(lambda: any(p["id"] not in first for p in pool.processes("work-1")), 40,
                 "the stuck worker was not replaced")
        assert all(p["id"] not in first for p in pool.processes("work-1"))
