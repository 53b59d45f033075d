"""Usage, cost and budgets against a real gateway, real Dask processes and moto's SNS:
intervals match the processes that ran, a group's budget alerts at 80 % and refuses its
new clusters at 100 % (admins exempt), and ``dask-platform usage`` shows it."""

from __future__ import annotations

import json
import os
import time

from daskplatform import usage_cli
from daskplatform.audit import read
from daskplatform.aws import aws_client
from daskplatform.settings import GroupQuota
from tests.gateway.conftest import Pool, small_settings, wait_for
from tests.gateway.test_aws import AWS_KEYS

FAST_USAGE = "c.PoolBackend.usage_period = 0.5\n"


def _alerts(queue_url: str) -> list[str]:
    sqs = aws_client("sqs")
    found = []
    for _ in range(3):
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            found.append(json.loads(message["Body"])["Message"])
    return found


def test_a_budget_alerts_at_80_percent_refuses_at_100_and_usage_shows_it(
        aws_env: str, make_pool) -> None:
    settings = small_settings()
    analysts = settings.quotas.groups["data_analysts"]
    # A c5.large costs about $0.09 an hour; a quarter of it (a 0.5-core worker on a
    # 2-core node) spends this budget in a few seconds.
    budget = 0.0002
    groups = {**settings.quotas.groups, "data_analysts": GroupQuota(
        **{**analysts.model_dump(), "monthly_budget_usd": budget})}
    settings = settings.model_copy(update={"quotas": settings.quotas.model_copy(
        update={"groups": groups})})
    topic = aws_client("sns").create_topic(Name=f"alerts-{time.time_ns()}")["TopicArn"]
    queue = aws_client("sqs").create_queue(QueueName=f"alerts-{time.time_ns()}")["QueueUrl"]
    queue_arn = aws_client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws_client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    pool: Pool = make_pool(settings, env={k: os.environ[k] for k in AWS_KEYS})
    pool.add_agent("sched-1", "scheduler", cores=2, memory_gb=2)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=1)
    pool.start_gateway(extra_config=FAST_USAGE, extra_args=["--alert-topic-arn", topic])
    started = time.time()
    with pool.client("ann") as gateway, gateway.new_cluster() as cluster:
        cluster.scale(1)
        wait_for(lambda: pool.processes("work-1"), 60, "the worker did not start")
        seen: list[str] = []
        wait_for(lambda: seen.extend(_alerts(queue)) or any(
            "new clusters are refused" in a for a in seen), 120,
            "no alert at 100 % of the budget")
        status, refused = pool.api("POST", "/api/v1/clusters/", "ann", {"cluster_options": {}})
        assert status == 422
        assert "data_analysts group has used $" in refused["error"]
        assert "quotas.groups.data_analysts.monthlyBudgetUsd" in refused["error"]
        with pool.client("ada") as admin:  # admins are never refused
            admin.new_cluster().shutdown()
    ran = time.time() - started
    assert len(seen) == 2 and all("data_analysts group has used" in a for a in seen)

    status, usage = pool.api("GET", "/api/v1/usage?since=1h&by=group", "ada")
    rows = {r["key"]: r for r in usage["rows"]}
    assert rows["data_analysts"]["cost_usd"] >= budget
    # Core-hours bounded by what ran: a 0.25-core scheduler and a 0.5-core worker.
    assert 0 < rows["data_analysts"]["core_hours"] <= 0.75 * ran / 3600
    status, own = pool.api("GET", "/api/v1/usage?since=1h", "ann")
    assert [r["key"] for r in own["rows"]] == ["ann"] and not own["all_users"]
    assert "total (you): $" in usage_cli.render(own)
    assert pool.api("GET", "/api/v1/usage?since=forever", "ann")[0] == 422
    levels = sorted(e["level"] for e in read(pool.tmp / "gateway" / "audit.log")
                    if e["event"] == "budget.alert")
    assert levels == [80, 100]  # each once, however many rounds ran


def test_the_daily_report_holds_yesterdays_intervals_once(aws_env: str) -> None:
    import io
    import logging
    from datetime import UTC, datetime

    import pyarrow.parquet as pq

    from daskplatform.gateway.accounting import Accounting, report_key
    from daskplatform.gateway.usage import NodePrice, UsageLedger

    bucket = f"audit-{time.time_ns()}"
    aws_client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={
        "LocationConstraint": "eu-west-1"})
    today = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
    ledger = UsageLedger(None, {"worker": NodePrice(2, 4, 0.2)})
    ledger.start("w1", "n1", "ann", "data_analysts", "c1", "worker", 1, 2, at=today - 7200)
    ledger.stop("w1", at=today + 3600)  # two hours of it fall on the 1st
    ledger.start("w0", "n1", "eve", "data_engineers", "c0", "worker", 1, 1, at=today - 200000)
    ledger.stop("w0", at=today - 190000)  # the day before: not in the report
    accounting = Accounting(ledger, {}, audit_bucket=bucket, log=logging.getLogger("test"))
    key = accounting.daily_report(now=today + 60)
    assert key == report_key(datetime(2026, 12, 1, tzinfo=UTC)) == \
        "usage/daily/2026-12-01.parquet"
    body = aws_client("s3").get_object(Bucket=bucket, Key=key)
    assert body["ServerSideEncryption"] == "aws:kms"
    table = pq.read_table(io.BytesIO(body["Body"].read())).to_pylist()
    assert [(r["user"], r["core_seconds"], r["end"] - r["start"]) for r in table] == [
        ("ann", 7200.0, 7200.0)]
    assert accounting.daily_report(now=today + 120) is None  # written once
