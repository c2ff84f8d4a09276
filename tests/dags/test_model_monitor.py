"""model_monitor end to end with dag.test() against a real localaws: a registered model, a
small published training partition, one hour of normal traffic (with malformed lines), one
hour of shifted traffic, one empty hour; alerts counted through an SQS queue subscribed to
the alert topic."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import boto3
import pytest

from ml_workflow import cifar, etl, registry, s3_layout
from ml_workflow.settings import settings_from_env
from tests import capture_factory as cf
from tests.factories import make_cifar_archive

pytestmark = pytest.mark.usefixtures("airflow_db")

CLASSES = ["bicycle", "motorcycle", "pickup_truck"]
ENDPOINT = "monitored-ep"
NORMAL_HOUR = datetime(2026, 11, 28, 5, tzinfo=UTC)
SHIFTED_HOUR = datetime(2026, 11, 28, 6, tzinfo=UTC)
# dag.test(logical_date=X) takes the interval a manual run at X gets: the hour before X.
RUN_NORMAL, RUN_SHIFTED, RUN_EMPTY = (datetime(2026, 11, 28, h, tzinfo=UTC) for h in (6, 7, 8))
CHART_NAMES = ("confidence_over_time.png", "class_mix.png", "confidence_histogram.png",
               "image_statistics.png")


@pytest.fixture
def seeded(monkeypatch, localaws, tmp_path):
    tag = uuid.uuid4().hex[:10]
    bucket = f"mon-{tag}"
    monkeypatch.setenv("ML_WORKFLOW_BUCKET", bucket)
    monkeypatch.setenv("ML_WORKFLOW_ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("ML_WORKFLOW_SNS_TOPIC_NAME", f"mon-alerts-{tag}")
    monkeypatch.setenv("ML_WORKFLOW_ALERT_EMAIL", f"owner-{tag}@example.com")
    s = settings_from_env()
    s3, sns, sqs = boto3.client("s3"), boto3.client("sns"), boto3.client("sqs")
    s3.create_bucket(Bucket=bucket)

    # A published training partition, through the ETL's own functions.
    archive = make_cifar_archive(tmp_path / "a.tar.gz", train=dict.fromkeys(CLASSES, 20),
                                 test=dict.fromkeys(CLASSES, 2))
    ds = "2026-11-27"
    raw_key = s3_layout.raw_archive_key(s, ds)
    staging_key = s3_layout.staging_key(s, "d", ds, "seed")
    prefix = s3_layout.dataset_prefix(s, "d", ds)
    etl.extract(s3, str(archive), cifar.md5_of(archive), bucket, raw_key, tmp_path)
    etl.transform(s3, bucket, raw_key, CLASSES, staging_key, tmp_path)
    etl.load(s3, bucket, staging_key, prefix, tmp_path)
    registry.write(s3, bucket, s3_layout.registry_key(s, ENDPOINT), registry.record_deployment(
        {"serving": None, "history": []},
        {"training_job": "job-1", "dataset": f"s3://{bucket}/{prefix}", "classes": CLASSES,
         "deployed_at": "2026-11-27T12:00:00Z"}))

    malformed = [line for line, _ in cf.MALFORMED_LINES]
    cf.put_files(s3, bucket, cf.capture_files(
        s, ENDPOINT, cf.traffic(80, NORMAL_HOUR, seed=1), extra_lines=malformed))
    cf.put_files(s3, bucket, cf.capture_files(
        s, ENDPOINT, cf.traffic(60, SHIFTED_HOUR, kind="shifted", seed=2), seed=2))

    topic_arn = sns.create_topic(Name=s.sns_topic_name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"mon-alerts-{tag}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return {"s": s, "bucket": bucket, "prefix": prefix, "topic_arn": topic_arn,
            "queue_url": queue_url, "malformed": len(malformed)}


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="dags/model_monitor.py")
    assert not bag.import_errors
    return bag.dags["model_monitor"]


def _states(run) -> dict:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _json(bucket: str, key: str) -> dict:
    return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def _report_keys(bucket: str, report_prefix: str) -> set[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=report_prefix)
    return {o["Key"][len(report_prefix):] for o in listing.get("Contents", [])}


def _drain(queue_url: str, at_least: int, timeout: float = 20.0) -> list[dict]:
    """Every message in the queue: waits (with a deadline) for ``at_least``, then takes
    whatever else is there."""
    sqs, messages = boto3.client("sqs"), []
    deadline = time.monotonic() + timeout
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                    WaitTimeSeconds=1).get("Messages", [])
        for msg in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
        messages += [json.loads(msg["Body"]) for msg in batch]
        if (len(messages) >= at_least and not batch) or time.monotonic() > deadline:
            return messages


def _drift_events(run) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.name == "model_drift",
                        AssetEvent.source_run_id == run.run_id).all())
        return [dict(row.extra or {}) for row in rows]


def test_normal_shifted_and_empty_hours(seeded):
    bucket, s = seeded["bucket"], seeded["s"]
    dag = _dag()

    # Normal traffic, malformed lines among it: metrics, charts, report; no alert, no drift.
    run = dag.test(logical_date=RUN_NORMAL)
    states = _states(run)
    assert run.state == "success", states
    assert states["analyse"] == "success"
    assert states["publish_alert"] == "skipped" and states["mark_drift"] == "skipped"
    normal_prefix = s3_layout.report_prefix(s, "2026-11-28T05")
    assert _report_keys(bucket, normal_prefix) == {"metrics.json", "report.html", *CHART_NAMES}
    metrics = _json(bucket, normal_prefix + "metrics.json")
    assert metrics["interval"]["hours"] == ["2026/11/28/05"]
    assert metrics["requests"] == 80 and metrics["malformed"]["count"] == seeded["malformed"]
    assert metrics["confidence"]["below_threshold"] == 4
    assert metrics["class_mix"]["counts"] == {"bicycle": 27, "motorcycle": 27,
                                              "pickup_truck": 26}
    assert metrics["drift"]["evaluated"] and not metrics["drift"]["found"]
    assert not metrics["alert"]["raise"]
    # the baseline was computed from the partition and stored next to it
    baseline = _json(bucket, seeded["prefix"] + "_BASELINE.json")
    assert baseline["class_counts"] == [20, 20, 20] and baseline["images"]["sampled"] == 60
    report = boto3.client("s3").get_object(Bucket=bucket, Key=normal_prefix + "report.html")
    assert report["ContentType"].startswith("text/html")
    html = report["Body"].read().decode()
    assert html.count("data:image/png;base64,") == 4
    png = boto3.client("s3").get_object(Bucket=bucket, Key=normal_prefix + "class_mix.png")
    assert png["Body"].read()[:8] == b"\x89PNG\r\n\x1a\n"

    # Shifted traffic: exactly one alert for the interval, and the drift Asset is marked.
    run = dag.test(logical_date=RUN_SHIFTED)
    states = _states(run)
    assert run.state == "success", states
    assert states["publish_alert"] == "success" and states["mark_drift"] == "success"
    shifted_prefix = s3_layout.report_prefix(s, "2026-11-28T06")
    metrics = _json(bucket, shifted_prefix + "metrics.json")
    assert metrics["requests"] == 60 and metrics["malformed"]["count"] == 0
    assert metrics["confidence"]["below_threshold_share"] == 1.0
    assert "class_mix" in metrics["drift"]["drifted"]
    assert "brightness" in metrics["drift"]["drifted"]
    (event,) = _drift_events(run)
    assert event["interval"] == "2026-11-28T06" and "class_mix" in event["drifted"]
    assert "bucket" not in event and "prefix" not in event

    # Empty hour: "no traffic" report, no alert, success.
    run = dag.test(logical_date=RUN_EMPTY)
    states = _states(run)
    assert run.state == "success", states
    assert states["publish_alert"] == "skipped" and states["mark_drift"] == "skipped"
    empty_prefix = s3_layout.report_prefix(s, "2026-11-28T07")
    assert _report_keys(bucket, empty_prefix) == {"metrics.json", "report.html"}
    assert _json(bucket, empty_prefix + "metrics.json")["no_traffic"] is True
    html = boto3.client("s3").get_object(Bucket=bucket, Key=empty_prefix + "report.html")
    assert "No traffic" in html["Body"].read().decode()

    messages = _drain(seeded["queue_url"], at_least=1)
    assert len(messages) == 1, [m.get("Subject") for m in messages]
    assert messages[0]["Subject"] == (
        f"[model_monitor] {ENDPOINT} 2026-11-28T06: drift and low confidence")
    body = json.loads(messages[0]["Message"])
    assert body["interval"]["id"] == "2026-11-28T06" and body["requests"] == 60
    assert body["report_uri"] == f"s3://{bucket}/{shifted_prefix}report.html"
    assert body["drift"]["statistics"] == metrics["drift"]["statistics"]
    subs = boto3.client("sns").list_subscriptions_by_topic(TopicArn=seeded["topic_arn"])
    assert {(x["Protocol"], x["Endpoint"]) for x in subs["Subscriptions"]} >= {
        ("email", s.alert_email)}


def test_no_registered_model_ends_cleanly(seeded):
    run = _dag().test(logical_date=RUN_SHIFTED, run_conf={"endpoint_name": "not-deployed"})
    states = _states(run)
    assert run.state == "success", states
    assert states["plan"] == "success" and states["model_registered"] == "success"
    assert {states[t] for t in ("baseline", "analyse", "publish_alert", "mark_drift")} == {
        "skipped"}
    assert _drain(seeded["queue_url"], at_least=0, timeout=2) == []


def test_send_alerts_off_and_threshold_override(seeded):
    run = _dag().test(logical_date=RUN_NORMAL, run_conf={
        "send_alerts": False, "confidence_threshold": 0.97})
    states = _states(run)
    assert run.state == "success", states
    assert states["needs_alert"] == "success" and states["publish_alert"] == "skipped"
    metrics = _json(seeded["bucket"], s3_layout.report_prefix(seeded["s"], "2026-11-28T05")
                    + "metrics.json")
    assert metrics["thresholds"]["confidence"] == 0.97
    assert metrics["alert"]["low_confidence"]  # crossed, but the form said not to send
    assert _drain(seeded["queue_url"], at_least=0, timeout=2) == []
