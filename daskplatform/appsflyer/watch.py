"""``dask-platform pipeline watch``: new AppsFlyer drops processed as they land.

The raw bucket notifies the drop queue of every object created below
``pipeline.rawPrefix`` (``components/drop_queue.py``). The watcher collects what is
waiting, starts a gateway cluster as the pipeline's service account, and runs the
pipeline there on just the folders and files the notifications name (the driver runs
in a task on the cluster too: the workers hold the pipeline's bucket access, the
gateway host does not). Then:

* a drop processed, or already processed before (the manifests record every input's
  checksum, so a re-delivered notification finds nothing new and writes nothing): its
  messages are deleted;
* a run that fails (an input that cannot be read, a cluster that does not start): an
  alert goes to the alert topic and the messages stay, so SQS delivers them again after
  ``pipeline.retrySeconds``; after ``pipeline.maxReceives`` deliveries they move to the
  dead-letter queue. A retry never duplicates output: inputs processed by the failed run
  are recorded, and events already written are dropped as duplicates (docs/pipeline.md).

While a run lasts, the watcher keeps its messages invisible, so a long run is never
handed out twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from daskplatform.aws import aws_client
from daskplatform.settings import PipelineSettings

LOG = logging.getLogger("dask-platform.pipeline-watch")
MAX_BATCH = 100
"""Messages collected into one run (a Data Locker hour is a few part files and a marker)."""
WAIT_SECONDS = 20
"""Long polling: a receive waits this long for the first message."""
DATALOCKER_FOLDER = "t="
"""A path part that makes a key a Data Locker file: its hour folder is processed whole,
once its completion marker is there."""


@dataclass(frozen=True)
class Drop:
    """One notification: its message and the raw objects it names."""

    receipt: str
    receives: int
    keys: tuple[str, ...]
    """Object keys below the raw prefix (none for S3's test event)."""


@dataclass
class Outcome:
    """What one run did with a batch."""

    done: list[Drop] = field(default_factory=list)
    kept: list[Drop] = field(default_factory=list)
    problem: str | None = None


def read_drop(message: dict[str, Any], bucket: str, prefix: str) -> Drop:
    """The keys a message names (S3 URL-encodes them, spaces as +)."""
    body = json.loads(message["Body"])
    keys = tuple(
        key for record in body.get("Records", [])
        if record.get("eventName", "").startswith("ObjectCreated")
        and record["s3"]["bucket"]["name"] == bucket
        and (key := unquote_plus(record["s3"]["object"]["key"])).startswith(prefix))
    return Drop(message["ReceiptHandle"],
                int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)), keys)


def scope_of(key: str) -> str:
    """What a key's run covers: a Data Locker file's hour folder (its parts are complete
    only with the marker, which notifies last), any other file itself."""
    folder, _, _ = key.rpartition("/")
    return folder if any(p.startswith(DATALOCKER_FOLDER) for p in folder.split("/")) else key


def run_on_cluster(input_url: str, processed_url: str, audit_url: str,
                   within: list[str]) -> dict[str, Any]:
    """The pipeline's driver, as a task on the cluster: it seceds from the worker's
    thread pool and submits the pipeline's tasks to the same cluster."""
    from distributed import worker_client

    from daskplatform.appsflyer.pipeline import run_pipeline

    with worker_client() as client:
        return run_pipeline(input_url, processed_url, audit_url, client=client, within=within)


@dataclass
class Places:
    """Buckets the watcher's runs read and write."""

    raw_bucket: str
    processed_url: str
    audit_url: str
    raw_prefix: str

    @property
    def input_url(self) -> str:
        return f"s3://{self.raw_bucket}/{self.raw_prefix.rstrip('/')}"


Runner = Callable[[list[str]], dict[str, Any]]
"""Runs the pipeline on the given raw URLs somewhere; returns the manifest."""


class Watcher:
    """Receives, runs, deletes or keeps, alerts."""

    def __init__(self, queue_url: str, places: Places, pipeline: PipelineSettings,
                 runner: Runner, alert_topic_arn: str = "") -> None:
        self.queue_url = queue_url
        self.places = places
        self.pipeline = pipeline
        self.runner = runner
        self.alert_topic_arn = alert_topic_arn
        self._sqs = aws_client("sqs")

    def receive(self, wait: float = WAIT_SECONDS) -> list[Drop]:
        """What is waiting now: the first receive long-polls, later ones take the rest."""
        drops: list[Drop] = []
        while len(drops) < MAX_BATCH:
            messages = self._sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                WaitTimeSeconds=int(wait) if not drops else 0,
                AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
            if not messages:
                break
            drops += [read_drop(m, self.places.raw_bucket, self.places.raw_prefix)
                      for m in messages]
        return drops

    def handle(self, drops: list[Drop]) -> Outcome:
        """One run over the drops' scopes; deletes what is done, keeps and alerts on the
        rest."""
        # S3's test event, or keys outside the prefix: nothing to run for them.
        outcome = Outcome(done=[d for d in drops if not d.keys])
        drops = [d for d in drops if d.keys]
        scopes = sorted({scope_of(k) for d in drops for k in d.keys})
        if not scopes:
            self._delete(outcome.done)
            return outcome
        urls = [f"s3://{self.places.raw_bucket}/{s}" for s in scopes]
        try:
            with self._kept_invisible(drops):
                manifest = self.runner(urls)
        except Exception as exc:  # whatever failed, the drop waits for its retry
            outcome.kept, outcome.problem = list(drops), f"{type(exc).__name__}: {exc}"
        else:
            failed = [i["url"] for i in manifest.get("inputs", []) if i["status"] == "failed"]
            for drop in drops:
                mine = [f"s3://{self.places.raw_bucket}/{scope_of(k)}" for k in drop.keys]
                stuck = any(u == m or u.startswith(m + "/") for u in failed for m in mine)
                (outcome.kept if stuck else outcome.done).append(drop)
            if failed:
                errors = {i["url"]: i.get("error", "") for i in manifest["inputs"]
                          if i["status"] == "failed"}
                outcome.problem = (f"{len(failed)} input(s) could not be read (manifest "
                                   f"{manifest.get('manifest')}): " + "; ".join(
                                       f"{u}: {e}" for u, e in errors.items()))
            LOG.info("Run %s: %s, totals %s", manifest.get("run_id"), manifest.get("status"),
                     json.dumps(manifest.get("totals")))
        self._delete(outcome.done)
        if outcome.kept:
            self._retry_later(outcome.kept)
            self._alert(outcome, scopes)
        return outcome

    def serve(self, stop: threading.Event) -> None:
        """Until ``stop``: receive, run, repeat."""
        while not stop.is_set():
            drops = self.receive()
            if drops:
                self.handle(drops)

    # ------------------------------------------------------------------ queue

    def _delete(self, drops: list[Drop]) -> None:
        for index in range(0, len(drops), 10):
            batch = drops[index:index + 10]
            self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": d.receipt} for i, d in enumerate(batch)])

    def _set_visibility(self, drops: list[Drop], seconds: int) -> None:
        for index in range(0, len(drops), 10):
            batch = drops[index:index + 10]
            self._sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": d.receipt, "VisibilityTimeout": seconds}
                for i, d in enumerate(batch)])

    def _retry_later(self, drops: list[Drop]) -> None:
        """Visible again ``retrySeconds`` after the failure (not after the receive)."""
        self._set_visibility(drops, self.pipeline.retry_seconds)

    @contextmanager
    def _kept_invisible(self, drops: list[Drop]) -> Iterator[None]:
        """Extends the messages' invisibility every third of ``retrySeconds`` while the
        run lasts, so a long run is not handed out again meanwhile."""
        done = threading.Event()

        def extend() -> None:
            while not done.wait(self.pipeline.retry_seconds / 3):
                try:
                    self._set_visibility(drops, self.pipeline.retry_seconds)
                except Exception:  # the next round tries again; the run goes on
                    LOG.warning("Could not extend the drops' visibility", exc_info=True)

        thread = threading.Thread(target=extend, name="drop-visibility", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    # ------------------------------------------------------------------ alerts

    def _alert(self, outcome: Outcome, scopes: list[str]) -> None:
        attempt = max(d.receives for d in outcome.kept)
        last = attempt >= self.pipeline.max_receives
        what = ("This was the last attempt: the notifications move to the dead-letter "
                "queue; fix the input, then run `dask-platform pipeline run` or redrive "
                "the dead-letter queue" if last else
                f"It is retried in {self.pipeline.retry_seconds} s (attempt {attempt} of "
                f"{self.pipeline.max_receives})")
        message = (f"The AppsFlyer pipeline failed on {len(scopes)} new drop(s) in "
                   f"{self.places.input_url} ({', '.join(scopes[:5])}"
                   f"{', ...' if len(scopes) > 5 else ''}): {outcome.problem}. {what}. "
                   "Output is never duplicated by a retry (docs/monitoring.md).")
        LOG.warning("%s", message)
        if not self.alert_topic_arn:
            return
        try:
            aws_client("sns").publish(TopicArn=self.alert_topic_arn, Message=message,
                                      Subject="dask-platform: AppsFlyer pipeline run failed")
        except Exception:  # the log line above still says it
            LOG.warning("Could not publish the pipeline alert", exc_info=True)


# ---------------------------------------------------------------------- on a gateway cluster


@dataclass
class GatewayRunner:
    """Runs each batch on a new cluster of the platform's gateway, as the service
    account; the cluster stops when the run ends."""

    address: str
    proxy_address: str
    username: str
    password: str
    places: Places
    workers: int
    start_timeout: float = 300

    def __call__(self, urls: list[str]) -> dict[str, Any]:
        from dask_gateway import BasicAuth, Gateway

        auth = BasicAuth(self.username, self.password)
        with Gateway(self.address, proxy_address=self.proxy_address, auth=auth) as gateway, \
                gateway.new_cluster() as cluster:
            cluster.scale(self.workers)
            with cluster.get_client(set_as_default=False) as client:
                client.wait_for_workers(1, timeout=self.start_timeout)
                LOG.info("Running the pipeline on %d scope(s) on cluster %s", len(urls),
                         cluster.name)
                return client.submit(run_on_cluster, self.places.input_url,
                                     self.places.processed_url, self.places.audit_url, urls,
                                     pure=False).result()


# ---------------------------------------------------------------------- command line


def password_from(secret_id: str, file: str) -> str:
    """The service account's password: a Secrets Manager secret (AWS) or a file (local)."""
    if file:
        return Path(file).read_text(encoding="utf-8").strip()
    value = aws_client("secretsmanager").get_secret_value(SecretId=secret_id).get(
        "SecretString", "")
    if not value:
        raise ValueError(f"the secret {secret_id} is empty: store the pipeline service "
                         "account's directory password in it (docs/monitoring.md)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", required=True,
                        help="runtime settings: ssm://<parameter> or a JSON file")
    parser.add_argument("--queue-url", required=True, help="the drop queue")
    parser.add_argument("--raw-bucket", required=True)
    parser.add_argument("--processed-bucket", required=True)
    parser.add_argument("--audit-bucket", required=True)
    parser.add_argument("--gateway-url", required=True, help="the gateway's API address")
    parser.add_argument("--proxy-address", required=True,
                        help="the gateway's scheduler proxy, gateway://host:port")
    login = parser.add_mutually_exclusive_group(required=True)
    login.add_argument("--password-secret", default="",
                       help="Secrets Manager id of the service account's password")
    login.add_argument("--password-file", default="", help="a file holding it (local mode)")
    parser.add_argument("--alert-topic-arn", default="", help="SNS topic for failed runs")
    parser.add_argument("--once", action="store_true",
                        help="handle what is waiting (one long poll), then exit")


def main(args: argparse.Namespace) -> int:
    from daskplatform.runtime_config import load_runtime_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        pipeline = load_runtime_settings(args.settings).pipeline
        password = password_from(args.password_secret, args.password_file)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"dask-platform pipeline watch: {exc}\n")
        return 1
    places = Places(args.raw_bucket, f"s3://{args.processed_bucket}",
                    f"s3://{args.audit_bucket}", pipeline.raw_prefix)
    runner = GatewayRunner(args.gateway_url, args.proxy_address, pipeline.service_user,
                           password, places, pipeline.workers)
    watcher = Watcher(args.queue_url, places, pipeline, runner, args.alert_topic_arn)
    LOG.info("Watching %s for drops below %s as %s", args.queue_url, places.input_url,
             pipeline.service_user)
    if args.once:
        drops = watcher.receive()
        outcome = watcher.handle(drops) if drops else Outcome()
        return 1 if outcome.kept else 0
    stop = threading.Event()
    try:
        watcher.serve(stop)
    except KeyboardInterrupt:
        stop.set()
    return 0
