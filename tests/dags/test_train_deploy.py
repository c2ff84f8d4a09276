"""train_deploy with dag.test() against localaws on a small generated dataset: the first
run creates the endpoint, a second (as good) model updates it in place, a worse one is
gated out, and Data Capture files appear after the smoke test's invocations."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import boto3
import pytest

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.slow]
ENDPOINT = "test-classifier"


@pytest.fixture
def dag(published, monkeypatch):
    monkeypatch.setenv("ML_WORKFLOW_BUCKET", published)
    monkeypatch.setenv("ML_WORKFLOW_POLL_INTERVAL_S", "1")
    monkeypatch.setenv("ML_WORKFLOW_ENDPOINT_NAME", ENDPOINT)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="dags/train_deploy.py")
    assert not bag.import_errors
    return bag.dags["train_deploy"]


def _run(dag, conf: dict, minute: int):
    run = dag.test(logical_date=datetime(2026, 11, 28, 1, minute, tzinfo=UTC), run_conf=conf)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run, states


def test_create_update_in_place_gate_and_capture(dag, published):
    sm = boto3.client("sagemaker")
    s3 = boto3.client("s3")
    good = {"hyperparameters": {"epochs": 8, "mini_batch_size": 16}, "min_accuracy": 0.6}

    run, states = _run(dag, good, 1)
    assert run.state == "success", states
    assert states["deploy"] == "success" and states["reject"] == "skipped"
    first = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert first["EndpointStatus"] == "InService"
    registry = json.loads(s3.get_object(Bucket=published, Key=f"registry/{ENDPOINT}.json")
                          ["Body"].read())
    first_job = registry["serving"]["training_job"]
    assert registry["serving"]["metrics"]["validation:accuracy"] >= 0.6
    config = sm.describe_endpoint_config(EndpointConfigName=first["EndpointConfigName"])
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] and capture["InitialSamplingPercentage"] == 100

    # A second model at least as good replaces the first in place; the old one is removed.
    run, states = _run(dag, {**good, "force_deploy": False}, 2)
    assert run.state == "success", states
    second = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert second["EndpointConfigName"] != first["EndpointConfigName"]
    assert second["EndpointArn"] == first["EndpointArn"]
    with pytest.raises(sm.exceptions.ClientError):
        sm.describe_model(ModelName=first_job)

    # A worse model is gated out: the endpoint keeps its config, the run says why.
    worse = {"hyperparameters": {"epochs": 1, "learning_rate": 1e-7, "mini_batch_size": 16},
             "min_accuracy": 0.0}
    run, states = _run(dag, worse, 3)
    assert run.state == "success", states
    assert states["reject"] == "success" and states["deploy"] == "skipped"
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] \
        == second["EndpointConfigName"]

    # The smoke tests' invocations were captured (flushed within seconds).
    deadline = time.monotonic() + 30
    keys: list[str] = []
    while time.monotonic() < deadline and not keys:
        keys = [o["Key"] for o in s3.list_objects_v2(
            Bucket=published, Prefix=f"data_capture/{ENDPOINT}/AllTraffic/").get("Contents", [])]
        time.sleep(0.5)
    assert keys and all(k.endswith(".jsonl") for k in keys)
    line = s3.get_object(Bucket=published, Key=keys[0])["Body"].read().splitlines()[0]
    record = json.loads(line)
    assert record["captureData"]["endpointInput"]["encoding"] == "BASE64"


def test_deferrable_mode_waits_in_the_trigger(published, monkeypatch):
    """With ML_WORKFLOW_DEFERRABLE the SageMaker operators defer to the provider's triggers
    (aiobotocore against the same endpoint_url); dag.test() runs them inline."""
    monkeypatch.setenv("ML_WORKFLOW_BUCKET", published)
    monkeypatch.setenv("ML_WORKFLOW_POLL_INTERVAL_S", "1")
    monkeypatch.setenv("ML_WORKFLOW_ENDPOINT_NAME", "deferred-classifier")
    monkeypatch.setenv("ML_WORKFLOW_DEFERRABLE", "true")
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder="dags/train_deploy.py").dags["train_deploy"]
    assert dag.get_task("train").deferrable and dag.get_task("deploy").deferrable
    run, states = _run(dag, {"hyperparameters": {"epochs": 2, "mini_batch_size": 16},
                             "force_deploy": True}, 4)
    assert run.state == "success", states
    endpoint = boto3.client("sagemaker").describe_endpoint(EndpointName="deferred-classifier")
    assert endpoint["EndpointStatus"] == "InService"
