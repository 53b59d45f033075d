"""``dask-platform pipeline watch`` against moto's server (S3 notifying SQS, SNS into SQS
to see alerts), a real gateway with node agents, and the pipeline on a gateway cluster of
the service account: a drop is processed once, a re-delivered notification changes
nothing, a failing run alerts and its retry adds no duplicate."""

from __future__ import annotations

import gzip
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from daskplatform.appsflyer import generate
from daskplatform.appsflyer.watch import GatewayRunner, Places, Watcher, read_drop, scope_of
from daskplatform.aws import aws_client
from daskplatform.aws_standin import create_data_roles, enforce_vended_credentials
from daskplatform.settings import ClusterSettings, GroupQuota, PipelineSettings
from daskplatform.stack_names import StackNames
from tests.gateway.conftest import PASSWORD, Pool, make_pool, small_settings  # noqa: F401  (fixture)
from tests.gateway.test_aws import AWS_KEYS
from tests.pipeline.helpers import read_dataset, tree_digest

REGION = "eu-west-1"
RETRY_SECONDS = 2


@dataclass
class Stand:
    """The AWS side of the stack, in moto: buckets, the drop queue and its notification,
    the alert topic with a queue subscribed to watch it."""

    raw: str
    processed: str
    audit: str
    queue_url: str
    dead_letters_url: str
    topic_arn: str
    alerts_url: str

    def alerts(self) -> list[str]:
        sqs = aws_client("sqs")
        found = []
        for message in sqs.receive_message(QueueUrl=self.alerts_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            found.append(json.loads(message["Body"])["Message"])
            sqs.delete_message(QueueUrl=self.alerts_url, ReceiptHandle=message["ReceiptHandle"])
        return found


def _queue(name: str, **attributes: str) -> tuple[str, str]:
    sqs = aws_client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, arn["Attributes"]["QueueArn"]


@pytest.fixture
def stand(aws_env: str) -> Stand:
    tag = uuid.uuid4().hex[:8]
    s3 = aws_client("s3")
    buckets = [f"{kind}-{tag}" for kind in ("raw", "processed", "audit")]
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket,
                         CreateBucketConfiguration={"LocationConstraint": REGION})
    dead_url, dead_arn = _queue(f"drops-dlq-{tag}")
    queue_url, queue_arn = _queue(
        f"drops-{tag}", VisibilityTimeout=str(RETRY_SECONDS),
        RedrivePolicy=json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": 3}))
    s3.put_bucket_notification_configuration(Bucket=buckets[0], NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
                                 "Filter": {"Key": {"FilterRules": [
                                     {"Name": "prefix", "Value": "appsflyer/"}]}}}]})
    topic = aws_client("sns").create_topic(Name=f"alerts-{tag}")["TopicArn"]
    alerts_url, alerts_arn = _queue(f"alerts-{tag}")
    aws_client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=alerts_arn)
    return Stand(*buckets, queue_url, dead_url, topic, alerts_url)


@pytest.fixture
def pool(make_pool, stand: Stand) -> Iterator[Pool]:  # noqa: F811
    """Data engineers (the service account's group) may run two 0.5-core, 1 GB workers:
    room for the pipeline's imports and a small drop. The pipeline's tasks work with the
    pipeline role's vended credentials, which moto enforces as AWS would."""
    names = StackNames("dask-platform", f"watch-{stand.raw.rsplit('-', 1)[-1]}")
    settings = small_settings().model_copy(update={"data_roles": names.data_roles()})
    create_data_roles(aws_client("iam"), settings,
                      {"raw": stand.raw, "processed": stand.processed, "audit": stand.audit,
                       "artifacts": f"artifacts-{uuid.uuid4().hex[:8]}"},
                      "arn:aws:iam::123456789012:role/gateway")
    enforce_vended_credentials()
    engineers = GroupQuota(priority=2, cluster_max_cores=1, cluster_max_memory_gb=2,
                           user_max_cores=1, user_max_memory_gb=2, notebook_cores=0.25,
                           notebook_memory_gb=0.5)
    settings = settings.model_copy(update={
        "quotas": settings.quotas.model_copy(update={"groups": {
            **settings.quotas.groups, "data_engineers": engineers}}),
        "clusters": ClusterSettings(scheduler_cores=0.25, scheduler_memory_gb=0.5,
                                    worker_cores=0.5, worker_memory_gb=1)})
    pool = make_pool(settings, env={k: os.environ[k] for k in AWS_KEYS})
    pool.add_agent("sched-1", "scheduler", cores=1, memory_gb=1)
    pool.add_agent("work-1", "worker", cores=1, memory_gb=2)
    pool.start_gateway()
    yield pool


def _watcher(stand: Stand, pool: Pool, gateway_url: str | None = None) -> Watcher:
    # Seconds rather than minutes between retries (below the settings' floor of 30).
    pipeline = PipelineSettings(max_receives=3, workers=2).model_copy(
        update={"retry_seconds": RETRY_SECONDS})
    places = Places(stand.raw, f"s3://{stand.processed}", f"s3://{stand.audit}",
                    pipeline.raw_prefix)
    runner = GatewayRunner(gateway_url or pool.api_url, pool.tcp_address,
                           pipeline.service_user, PASSWORD, places, pipeline.workers,
                           start_timeout=90)
    return Watcher(stand.queue_url, places, pipeline, runner, stand.topic_arn)


def _events(stand: Stand) -> list[str]:
    frame = read_dataset(f"s3://{stand.processed}", "events")
    return list(frame["event_id"]) if len(frame) else []


def _manifests(stand: Stand) -> list[str]:
    return sorted(k["Key"] for k in aws_client("s3").list_objects_v2(
        Bucket=stand.audit, Prefix="manifests/").get("Contents", []))


def _waiting(queue_url: str) -> int:
    attributes = aws_client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attributes.values())


def test_scopes_and_notifications_are_read_as_s3_writes_them() -> None:
    key = "appsflyer/t=installs/dt=2024-03-01/h=3/part-00000.gz"
    assert scope_of(key) == "appsflyer/t=installs/dt=2024-03-01/h=3"
    assert scope_of(key.rsplit("/", 1)[0] + "/_SUCCESS") == scope_of(key)
    assert scope_of("appsflyer/id1_installs_2024-03-01.csv") == \
        "appsflyer/id1_installs_2024-03-01.csv"
    body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "raw"}, "object": {"key": "appsflyer/a+b%3D1.csv"}}}]}
    drop = read_drop({"Body": json.dumps(body), "ReceiptHandle": "r",
                      "Attributes": {"ApproximateReceiveCount": "2"}}, "raw", "appsflyer/")
    assert (drop.keys, drop.receives) == (("appsflyer/a b=1.csv",), 2)
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "raw"}
    assert read_drop({"Body": json.dumps(test_event), "ReceiptHandle": "r"}, "raw",
                     "appsflyer/").keys == ()


def test_a_drop_is_processed_once_and_a_failed_run_alerts_and_retries_without_duplicates(
        stand: Stand, pool: Pool) -> None:
    watcher = _watcher(stand, pool)
    expected = generate(f"s3://{stand.raw}/appsflyer", layout="datalocker", rows=400,
                        days=1, hours=2, seed=3)["expected"]
    drops = watcher.receive(wait=2)
    assert drops and all(d.keys or d.receives for d in drops)
    outcome = watcher.handle(drops)
    assert outcome.problem is None and not outcome.kept
    events = _events(stand)
    assert len(events) == expected["rows_written"] == len(set(events))
    (manifest,) = _manifests(stand)
    assert _waiting(stand.queue_url) == 0  # every notification deleted

    # A notification delivered again (S3 delivers at least once) changes nothing.
    before = {**tree_digest(f"s3://{stand.processed}"), **tree_digest(f"s3://{stand.audit}")}
    first = next(d for d in drops if d.keys)
    record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": stand.raw},
                                                       "object": {"key": first.keys[0]}}}
    aws_client("sqs").send_message(QueueUrl=stand.queue_url,
                                   MessageBody=json.dumps({"Records": [record]}))
    assert not watcher.handle(watcher.receive(wait=2)).kept
    after = {**tree_digest(f"s3://{stand.processed}"), **tree_digest(f"s3://{stand.audit}")}
    assert after == before and _waiting(stand.queue_url) == 0

    # A Pull API export that arrives broken: the run fails, alerts, the message stays.
    key = "appsflyer/id7_installs_2024-03-05_2024-03-05_UTC.csv.gz"
    aws_client("s3").put_object(Bucket=stand.raw, Key=key, Body=b"not gzip at all")
    failed = watcher.handle(watcher.receive(wait=2))
    assert failed.kept and "could not be read" in failed.problem
    alerts = stand.alerts()
    assert len(alerts) == 1 and key in alerts[0] and "attempt 1 of 3" in alerts[0]
    assert len(_events(stand)) == expected["rows_written"]

    # AppsFlyer re-sends it whole; the retry (the old notification, visible again after
    # retrySeconds, and the new one) processes it once.
    fixed = generate(f"s3://{stand.raw}/export", layout="pullapi", rows=60, days=1,
                     seed=11)["expected"]
    source = next(k["Key"] for k in aws_client("s3").list_objects_v2(
        Bucket=stand.raw, Prefix="export/")["Contents"] if "installs" in k["Key"])
    body = aws_client("s3").get_object(Bucket=stand.raw, Key=source)["Body"].read()
    text = gzip.decompress(body) if source.endswith(".gz") else body
    aws_client("s3").put_object(Bucket=stand.raw, Key=key, Body=gzip.compress(text))
    time.sleep(RETRY_SECONDS + 0.5)
    retry = watcher.receive(wait=2)
    assert max(d.receives for d in retry) == 2  # the failed drop's own notification
    outcome = watcher.handle(retry)
    assert outcome.problem is None and not outcome.kept and _waiting(stand.queue_url) == 0
    events = _events(stand)
    assert len(events) == len(set(events)) > expected["rows_written"]
    assert fixed  # generated counts exist for the export (not all of its reports moved)
    assert not stand.alerts()


def test_a_run_that_cannot_start_alerts_and_keeps_the_drop(stand: Stand, pool: Pool) -> None:
    watcher = _watcher(stand, pool, gateway_url="http://127.0.0.1:9")  # nothing listens
    aws_client("s3").put_object(Bucket=stand.raw, Key="appsflyer/id1_installs_x.csv",
                                Body=b"AppsFlyer ID\n")
    outcome = watcher.handle(watcher.receive(wait=2))
    assert outcome.kept and outcome.problem
    (alert,) = stand.alerts()
    assert "appsflyer/id1_installs_x.csv" in alert and "It is retried in 2 s" in alert
    assert _waiting(stand.queue_url) == 1
