"""S3 (moto server, through s3fs) with the work on a LocalCluster reached by a Client,
the way a gateway cluster is used."""

from __future__ import annotations

import pytest
from distributed import Client, LocalCluster

from daskplatform.appsflyer import generate, run_pipeline
from daskplatform.aws import aws_client
from tests.pipeline.helpers import FAULTS, assert_matches_expected, read_dataset, tree_digest


@pytest.fixture
def buckets(aws_env: str, request: pytest.FixtureRequest) -> tuple[str, str, str]:
    s3 = aws_client("s3")
    names = [f"{request.node.name[:20].replace('_', '-')}-{kind}" for kind in
             ("raw", "processed", "audit")]
    for name in names:
        s3.create_bucket(Bucket=name,
                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return f"s3://{names[0]}/appsflyer", f"s3://{names[1]}", f"s3://{names[2]}"


@pytest.fixture
def client(aws_env: str):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit="1GiB") as cluster, \
            Client(cluster) as dask_client:
        yield dask_client


def test_s3_drop_on_a_cluster_is_conserved_deduplicated_and_idempotent(buckets, client) -> None:
    raw, processed, audit = buckets
    truth = generate(raw, layout="datalocker", rows=1500, days=1, hours=2, seed=11,
                     faults={**FAULTS, "malformed_rows": 1})

    manifest = run_pipeline(raw, processed, audit, client=client)

    assert_matches_expected(manifest, truth["expected"])
    assert all(i["url"].startswith("s3://") and len(i["sha256"]) == 64
               for i in manifest["inputs"])
    events = read_dataset(processed, "events")
    assert len(events) == truth["expected"]["rows_written"] and events["event_id"].is_unique
    quarantine = read_dataset(audit, "quarantine")
    assert quarantine["reason"].value_counts().to_dict() == \
        truth["expected"]["quarantined_by_reason"]
    assert not read_dataset(processed, "aggregates").empty

    before = {**tree_digest(processed), **tree_digest(audit)}
    assert run_pipeline(raw, processed, audit, client=client)["status"] == "up_to_date"
    assert {**tree_digest(processed), **tree_digest(audit)} == before
