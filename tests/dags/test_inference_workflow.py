"""inference_workflow with dag.test() against localaws: real Lambdas, a real endpoint,
real Step Functions executions, SNS email into localaws' mail sink."""

from __future__ import annotations

import email
import json
from email import policy

import boto3
import pytest

from tests.dags.conftest import PARTITION

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.slow]


@pytest.fixture
def dag(published, endpoint, roles, monkeypatch):
    monkeypatch.setenv("ML_WORKFLOW_BUCKET", published)
    monkeypatch.setenv("ML_WORKFLOW_ENDPOINT_NAME", endpoint)
    monkeypatch.setenv("ML_WORKFLOW_POLL_INTERVAL_S", "1")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="dags/inference_workflow.py")
    assert not bag.import_errors
    return bag.dags["inference_workflow"]


def _mails(localaws) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in sorted((localaws.data_dir / "mail").glob("*.eml"))]


def _message_json(mail) -> dict:
    body = mail.get_body(preferencelist=("plain",)).get_content()
    return json.loads(body[: body.rindex("}") + 1])


def _execution_errors() -> list:
    sfn = boto3.client("stepfunctions")
    return [sfn.describe_execution(executionArn=e["executionArn"]).get("cause")
            for m in sfn.list_state_machines()["stateMachines"]
            for e in sfn.list_executions(stateMachineArn=m["stateMachineArn"])["executions"]
            if e["status"] != "SUCCEEDED"]


def _confidences(published: str, endpoint: str) -> dict[str, float]:
    s3 = boto3.client("s3")
    runtime = boto3.client("sagemaker-runtime")
    lst = s3.get_object(Bucket=published, Key=PARTITION + "test.lst")["Body"].read().decode()
    out = {}
    for line in lst.splitlines():
        key = PARTITION + "test/" + line.split("\t")[2]
        body = s3.get_object(Bucket=published, Key=key)["Body"].read()
        probs = json.loads(runtime.invoke_endpoint(EndpointName=endpoint, ContentType="image/png",
                                                   Body=body)["Body"].read())
        out[key] = max(probs)
    return out


def test_batch_is_classified_and_one_low_confidence_image_is_emailed(
        dag, published, endpoint, localaws, monkeypatch):
    confidences = _confidences(published, endpoint)
    ranked = sorted(confidences.items(), key=lambda kv: kv[1])
    assert ranked[0][1] < ranked[1][1]
    threshold = (ranked[0][1] + ranked[1][1]) / 2  # exactly one image falls below it
    monkeypatch.setenv("ML_WORKFLOW_CONFIDENCE_THRESHOLD", repr(threshold))
    before = len(_mails(localaws))

    run = dag.test(run_conf={"count": len(confidences), "batch_size": 10})
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert run.state == "success", (states, _execution_errors())
    assert sum(task == "start_execution" for task, _ in states) == 3  # 30 images / 10

    s3 = boto3.client("s3")
    prefix = f"inference/{run.run_id.replace(':', '_').replace('+', '_')}/"
    output = json.loads(s3.get_object(Bucket=published, Key=prefix + "output.json")["Body"]
                        .read())
    summary = output["summary"]
    assert summary["images"] == 30 and summary["low_confidence"] == 1
    assert summary["accuracy"] >= 0.6 and summary["labelled"] == 30
    assert {r["predicted_class"] for r in output["results"]} <= {
        "bicycle", "motorcycle", "pickup_truck"}
    assert all("image_data" not in r for r in output["results"])

    new = _mails(localaws)[before:]
    assert len(new) == 1, [m["Subject"] for m in new]
    assert "low-confidence" in new[0]["Subject"]
    payload = _message_json(new[0])
    assert payload["event"] == "low_confidence"
    assert [img["s3_key"] for img in payload["images"]] == [ranked[0][0]]
    assert payload["threshold"] == pytest.approx(threshold)
    assert payload["images"][0]["confidence"] == pytest.approx(ranked[0][1], rel=1e-4)


def test_a_failing_lambda_fails_the_run_and_notifies_the_owner(dag, published, localaws):
    before = len(_mails(localaws))
    run = dag.test(run_conf={"keys": [f"s3://{published}/{PARTITION}test/missing.png"]})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["wait_for_execution"] == "failed"
    new = _mails(localaws)[before:]
    assert len(new) == 1 and "failed" in new[0]["Subject"]
    payload = _message_json(new[0])
    assert payload["event"] == "failure" and payload["error"] == "ImageNotFound"
    assert "missing.png" in payload["cause"]
