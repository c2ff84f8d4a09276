"""The whole chain through the real scheduler (Airflow standalone + localaws), driven over
the REST API exactly as ``make demo`` does, on a small generated archive; then a 3-day
backfill of cifar_etl. Every process it starts is stopped at the end."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import boto3
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from airflow_api import AirflowAPI  # noqa: E402
from demo import run_pipeline  # noqa: E402
from stack import Stack  # noqa: E402

pytestmark = pytest.mark.slow


def _s3(stack: Stack):
    return boto3.client("s3", endpoint_url=stack.aws_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_whole_chain_through_the_scheduler(stack):
    api = AirflowAPI(stack.api_url, "admin", stack.admin_password())
    result = run_pipeline(api, stack, timeout_s=1200)
    published, decision, inference = (result["published"], result["decision"],
                                      result["inference"])
    assert published["counts"]["train"]["total"] == 120
    assert decision["deploy"] is True
    assert inference["images"] == 24 and inference["accuracy"] >= 0.5
    # The monitor analysed the hour the inference traffic was captured in.
    monitor = result["monitor"]
    assert monitor["requests"] >= 24  # the smoke test's requests may fall in it too
    bucket, _, key = monitor["report_uri"].removeprefix("s3://").partition("/")
    assert b"<html" in _s3(stack).get_object(Bucket=bucket, Key=key)["Body"].read()[:200]


def test_backfill_of_three_days_makes_three_partitions(stack):
    api = AirflowAPI(stack.api_url, "admin", stack.admin_password())
    api.set_paused("train_deploy", True)  # the new partitions need no retraining here
    api.set_paused("cifar_etl", False)
    before = {r["dag_run_id"] for r in api.runs("cifar_etl")}
    api.backfill("cifar_etl", "2026-11-01T00:00:00Z", "2026-11-03T00:00:00Z")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        new = [r for r in api.runs("cifar_etl") if r["dag_run_id"] not in before]
        if len(new) == 3 and all(r["state"] in ("success", "failed") for r in new):
            break
        time.sleep(2)
    assert sorted(r["state"] for r in new) == ["success"] * 3, new
    s3 = _s3(stack)
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        s3.head_object(Bucket="ml-workflow-aws-data",
                       Key=f"datasets/cifar100-vehicles/{day}/_MANIFEST.json")
