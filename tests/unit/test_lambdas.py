"""The three Lambdas: happy path and every bad input, in-process (moto / botocore Stubber)."""

import base64
import io
import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from PIL import Image

from tests.lambda_loader import load_lambda

serialize = load_lambda("serialize")
classify = load_lambda("classify")
filter_ = load_lambda("filter")


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="imgs")
        client.put_object(Bucket="imgs", Key="a.png", Body=_png())
        client.put_object(Bucket="imgs", Key="notes.txt", Body=b"hello, not an image")
        monkeypatch.setattr(serialize, "_s3", client)
        yield client


def test_serialize_returns_base64_string_and_empty_inferences(s3):
    out = serialize.lambda_handler({"s3_bucket": "imgs", "s3_key": "a.png"}, None)
    assert isinstance(out["image_data"], str)
    assert base64.b64decode(out["image_data"]) == _png()
    assert out["inferences"] == [] and out["content_type"] == "image/png"
    assert (out["s3_bucket"], out["s3_key"]) == ("imgs", "a.png")
    json.dumps(out)  # the output must be JSON-serialisable


@pytest.mark.parametrize("event,error,needle", [
    ({"s3_bucket": "imgs"}, "InvalidEvent", "s3_key"),
    ({"s3_key": "a.png"}, "InvalidEvent", "s3_bucket"),
    ("a.png", "InvalidEvent", "must be an object"),
    ({"s3_bucket": "imgs", "s3_key": "missing.png"}, "ImageNotFound", "does not exist"),
    ({"s3_bucket": "nobucket", "s3_key": "a.png"}, "ImageNotFound", "nobucket"),
    ({"s3_bucket": "imgs", "s3_key": "notes.txt"}, "NotAnImage", "not a PNG or JPEG"),
])
def test_serialize_bad_input_raises_a_named_error(s3, event, error, needle):
    with pytest.raises(Exception, match=needle) as info:
        serialize.lambda_handler(event, None)
    assert type(info.value).__name__ == error


@pytest.fixture
def runtime(monkeypatch):
    monkeypatch.setenv("ENDPOINT_NAME", "cifar-classifier")
    client = boto3.client("sagemaker-runtime", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setattr(classify, "_runtime", client)
    with Stubber(client) as stub:
        yield stub


def _serialized():
    return {"s3_bucket": "imgs", "s3_key": "a.png", "content_type": "image/png",
            "image_data": base64.b64encode(_png()).decode(), "inferences": []}


def test_classify_returns_floats_and_drops_image_bytes(runtime):
    runtime.add_response("invoke_endpoint",
                         {"Body": io.BytesIO(b"[0.25, 0.75]"), "ContentType": "application/json"},
                         {"EndpointName": "cifar-classifier", "ContentType": "image/png",
                          "Accept": "application/json", "Body": _png()})
    out = classify.lambda_handler(_serialized(), None)
    assert out["inferences"] == [0.25, 0.75]
    assert "image_data" not in out and out["s3_key"] == "a.png"


def test_classify_needs_the_endpoint_name(monkeypatch):
    monkeypatch.delenv("ENDPOINT_NAME", raising=False)
    with pytest.raises(classify.EndpointError, match="ENDPOINT_NAME"):
        classify.lambda_handler(_serialized(), None)


@pytest.mark.parametrize("event,needle", [
    ({"s3_key": "a.png"}, "missing 'image_data'"),
    ({"image_data": "***not base64***"}, "not valid base64"),
])
def test_classify_bad_event(runtime, event, needle):
    with pytest.raises(classify.InvalidEvent, match=needle):
        classify.lambda_handler(event, None)


def test_classify_model_error_is_an_endpoint_error(runtime):
    runtime.add_client_error("invoke_endpoint", service_error_code="ModelError",
                             service_message="Received client error (415)", http_status_code=424)
    with pytest.raises(classify.EndpointError, match="ModelError.*415"):
        classify.lambda_handler(_serialized(), None)


def test_classify_throttling_is_transient(runtime):
    runtime.add_client_error("invoke_endpoint", service_error_code="ThrottlingException",
                             http_status_code=400)
    with pytest.raises(classify.TransientEndpointError):
        classify.lambda_handler(_serialized(), None)


def test_classify_non_probability_answer(runtime):
    runtime.add_response("invoke_endpoint", {"Body": io.BytesIO(b"<html>oops</html>")})
    with pytest.raises(classify.EndpointError, match="not a JSON list"):
        classify.lambda_handler(_serialized(), None)


def test_filter_marks_confidence_against_threshold(monkeypatch):
    monkeypatch.setenv("THRESHOLD", "0.8")
    monkeypatch.setenv("CLASS_NAMES", json.dumps(["bicycle", "motorcycle"]))
    sure = filter_.lambda_handler({"s3_key": "a", "inferences": [0.1, 0.9]}, None)
    assert sure["confident"] is True and sure["predicted_class"] == "motorcycle"
    assert sure["confidence"] == 0.9 and sure["threshold"] == 0.8
    unsure = filter_.lambda_handler({"s3_key": "b", "inferences": [0.55, 0.45]}, None)
    assert unsure["confident"] is False and unsure["predicted_class"] == "bicycle"


@pytest.mark.parametrize("event,env,needle", [
    ({"inferences": []}, {}, "no 'inferences'"),
    ({}, {}, "no 'inferences'"),
    ({"inferences": ["a", "b"]}, {}, "must hold numbers"),
    ({"inferences": [float("nan"), 0.5]}, {}, "non-finite"),
    ({"inferences": [0.5, 0.5]}, {"THRESHOLD": "high"}, "THRESHOLD must be a number"),
    ({"inferences": [0.5, 0.5]}, {"THRESHOLD": "1.5"}, "between 0 and 1"),
    ({"inferences": [0.5, 0.5]}, {"CLASS_NAMES": "bicycle"}, "CLASS_NAMES"),
])
def test_filter_bad_input(monkeypatch, event, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(filter_.InvalidEvent, match=needle):
        filter_.lambda_handler(event, None)


@pytest.mark.parametrize("name", ["serialize", "classify", "filter"])
def test_lambda_imports_only_stdlib_and_boto3(name):
    import ast
    import sys

    from tests.lambda_loader import LAMBDAS

    tree = ast.parse((LAMBDAS / name / "app.py").read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert modules - set(sys.stdlib_module_names) <= {"boto3", "botocore"}


def test_a_chunk_of_cases_goes_through_all_three(s3, runtime, monkeypatch):
    monkeypatch.setenv("CLASS_NAMES", json.dumps(["bicycle", "motorcycle"]))
    chunk = {"cases": [{"s3_bucket": "imgs", "s3_key": "a.png"}] * 2}
    serialized = serialize.lambda_handler(chunk, None)
    assert [c["s3_key"] for c in serialized["cases"]] == ["a.png", "a.png"]
    for _ in range(2):
        runtime.add_response("invoke_endpoint", {"Body": io.BytesIO(b"[0.3, 0.7]")})
    classified = classify.lambda_handler(serialized, None)
    assert all("image_data" not in c for c in classified["cases"])
    filtered = filter_.lambda_handler(classified, None)
    assert [r["predicted_class"] for r in filtered] == ["motorcycle", "motorcycle"]
    assert [r["confident"] for r in filtered] == [False, False]


def test_a_bad_case_in_a_chunk_names_it(s3):
    with pytest.raises(serialize.ImageNotFound, match="missing.png"):
        serialize.lambda_handler({"cases": [{"s3_bucket": "imgs", "s3_key": "a.png"},
                                            {"s3_bucket": "imgs", "s3_key": "missing.png"}]},
                                 None)
