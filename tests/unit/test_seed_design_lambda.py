"""The reference (seed) design's Lambda used by bench/bench_workflow.py: its three steps
chained in-process carry the whole batch, images included, from step to step."""

import base64
import io
import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from PIL import Image

from tests.lambda_loader import load_lambda

seed = load_lambda("seed_design")


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="imgs")
        client.put_object(Bucket="imgs", Key="a.png", Body=_png((200, 0, 0)))
        client.put_object(Bucket="imgs", Key="b.png", Body=_png((0, 0, 200)))
        monkeypatch.setitem(seed._clients, "s3", client)
        yield client


@pytest.fixture
def runtime(monkeypatch):
    monkeypatch.setenv("ENDPOINT_NAME", "ep")
    client = boto3.client("sagemaker-runtime", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setitem(seed._clients, "sagemaker-runtime", client)
    with Stubber(client) as stub:
        yield stub


def test_three_steps_loop_over_every_image_and_keep_the_images_in_the_state(
        s3, runtime, monkeypatch):
    cases = [{"s3_bucket": "imgs", "s3_key": k} for k in ("a.png", "b.png")]
    monkeypatch.setenv("STEP", "serialize")
    serialized = seed.lambda_handler({"cases": cases}, None)
    assert [base64.b64decode(i["image_data"]) for i in serialized["images"]] == [
        _png((200, 0, 0)), _png((0, 0, 200))]

    for probs, key in (([0.9, 0.1], "a.png"), ([0.4, 0.6], "b.png")):
        runtime.add_response(
            "invoke_endpoint", {"Body": io.BytesIO(json.dumps(probs).encode())},
            {"EndpointName": "ep", "ContentType": "image/png",
             "Body": _png((200, 0, 0)) if key == "a.png" else _png((0, 0, 200))})
    monkeypatch.setenv("STEP", "classify")
    classified = seed.lambda_handler(json.loads(json.dumps(serialized)), None)
    runtime.assert_no_pending_responses()

    monkeypatch.setenv("STEP", "filter")
    monkeypatch.setenv("THRESHOLD", "0.7")
    out = seed.lambda_handler(classified, None)["images"]
    assert [(i["s3_key"], i["predicted_label"], i["confident"]) for i in out] == [
        ("a.png", 0, True), ("b.png", 1, False)]
    assert all(i["image_data"] for i in out)  # the seed design never drops the images


@pytest.mark.parametrize("step,event", [("nope", {}), ("serialize", {"images": []}),
                                        ("filter", {"cases": []}),
                                        ("filter", {"images": [{"s3_key": "a.png"}]})])
def test_bad_step_or_event_raises_invalid_event(monkeypatch, step, event):
    monkeypatch.setenv("STEP", step)
    with pytest.raises(seed.InvalidEvent):
        seed.lambda_handler(event, None)
