"""SageMaker endpoints, InvokeEndpoint and Data Capture on localaws, driven with plain boto3.

The models are served by the stand-in algorithm of ``fake_sagemaker_algorithm`` (its test
image is registered through LOCALAWS_EXTRA_ALGORITHMS on a server of this module's own); the
model archives are built here, so no training is needed.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
import tarfile
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_sagemaker_algorithm as fake  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/sagemaker"
BUCKET = "hosting-tests"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))  # not UTF-8: must travel as bytes
KEY_RE = re.compile(
    r"capture/(?P<endpoint>[^/]+)/AllTraffic/\d{4}/\d{2}/\d{2}/\d{2}/"
    r"\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}\.jsonl")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    aws = fake.start_localaws(tmp_path_factory.mktemp("sm-hosting"),
                              LOCALAWS_CAPTURE_FLUSH_SECONDS="1")
    try:
        yield aws
    finally:
        aws.stop()


@pytest.fixture(scope="module")
def aws(server):
    s3, sm, rt = fake.clients(server, "s3", "sagemaker", "sagemaker-runtime")
    s3.create_bucket(Bucket=BUCKET)
    return s3, sm, rt


def model_archive(**model) -> bytes:
    buf = io.BytesIO()
    data = json.dumps(model).encode()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_model(aws, image: str = fake.FAKE_IMAGE, archive: bytes | None = None, **model) -> str:
    s3, sm, _ = aws
    name = unique("model")
    url = f"s3://{BUCKET}/models/{name}/model.tar.gz"
    if archive is None:
        archive = model_archive(**model)
    if archive:
        s3.put_object(Bucket=BUCKET, Key=f"models/{name}/model.tar.gz", Body=archive)
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": image, "ModelDataUrl": url})
    return name


def make_config(aws, model: str, capture: dict | None = None) -> str:
    _, sm, _ = aws
    name = unique("config")
    extra = {"DataCaptureConfig": capture} if capture else {}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.m5.xlarge",
        "InitialInstanceCount": 1, "InitialVariantWeight": 1.0}], **extra)
    return name


def wait_status(sm, endpoint: str, timeout: float = 60.0) -> dict:
    desc = fake.wait_for(lambda: sm.describe_endpoint(EndpointName=endpoint),
                         lambda d: d["EndpointStatus"] not in ("Creating", "Updating"),
                         timeout=timeout, interval=0.05)
    assert desc["EndpointStatus"] not in ("Creating", "Updating"), desc
    return desc


def deploy(aws, config: str) -> str:
    _, sm, _ = aws
    endpoint = unique("endpoint")
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    desc = wait_status(sm, endpoint)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return endpoint


def invoke(rt, endpoint: str, body: bytes = PNG, content_type: str = "image/png"):
    resp = rt.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType=content_type)
    return json.loads(resp["Body"].read()), resp


def endpoint_status(server, endpoint: str) -> dict:
    return next(e for e in server.status()["sagemaker"]["endpoints"] if e["name"] == endpoint)


def capture_lines(s3, endpoint: str) -> list[tuple[str, dict]]:
    out = []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                         Prefix=f"capture/{endpoint}/")
    for page in pages:
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().decode()
            out.extend((obj["Key"], json.loads(line)) for line in body.splitlines())
    return out


CAPTURE_ALL = {
    "EnableCapture": True, "InitialSamplingPercentage": 100,
    "DestinationS3Uri": f"s3://{BUCKET}/capture",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
}


def test_endpoint_serves_the_model(aws, server):
    _, sm, rt = aws
    config = make_config(aws, make_model(aws, probabilities=[0.25, 0.75]))
    endpoint = unique("endpoint")
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    assert sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "Creating"
    desc = wait_status(sm, endpoint)
    assert desc["EndpointStatus"] == "InService"
    assert desc["EndpointConfigName"] == config
    assert desc["ProductionVariants"][0]["VariantName"] == "AllTraffic"

    body, resp = invoke(rt, endpoint)
    assert body == [0.25, 0.75]
    assert resp["ContentType"] == "application/json"
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    for content_type in ("application/x-image", "image/jpeg"):
        assert invoke(rt, endpoint, content_type=content_type)[0] == [0.25, 0.75]

    variant = endpoint_status(server, endpoint)["variants"][0]
    assert variant["port"] > 0 and variant["pid"]
    with pytest.raises(ClientError) as err:
        sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert err.value.response["Error"]["Message"].startswith(
        "Cannot create already existing endpoint")


def test_model_errors_come_back_as_model_error(aws):
    _, _, rt = aws
    endpoint = deploy(aws, make_config(aws, make_model(aws)))
    with pytest.raises(ClientError) as err:
        invoke(rt, endpoint, body=b"hello", content_type="text/plain")
    response = err.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 415
    assert response["OriginalMessage"] == "content-type text/plain not supported"
    assert response["Error"]["Message"].startswith(
        'Received client error (415) from primary with message '
        '"content-type text/plain not supported"')
    assert response["LogStreamArn"].endswith(f"/aws/sagemaker/Endpoints/{endpoint}")

    with pytest.raises(ClientError) as err:
        invoke(rt, endpoint, body=b"boom")
    assert err.value.response["OriginalStatusCode"] == 500
    assert "Received server error (500)" in err.value.response["Error"]["Message"]


def test_runtime_errors_for_unknown_endpoint_and_oversized_body(aws):
    _, _, rt = aws
    with pytest.raises(ClientError) as err:
        invoke(rt, "no-such-endpoint")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert err.value.response["Error"]["Message"] == (
        "Endpoint no-such-endpoint of account 123456789012 not found.")

    endpoint = deploy(aws, make_config(aws, make_model(aws)))
    with pytest.raises(ClientError) as err:
        invoke(rt, endpoint, body=b"\0" * (6 * 1024 * 1024 + 1))
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "6291456 bytes" in err.value.response["Error"]["Message"]
    assert invoke(rt, endpoint, body=b"\0" * (6 * 1024 * 1024))[0] == [0.1, 0.2, 0.7]


def test_duplicate_model_and_config_names_are_refused(aws):
    _, sm, _ = aws
    model = make_model(aws)
    with pytest.raises(ClientError, match="Cannot create already existing model"):
        sm.create_model(ModelName=model, ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": fake.FAKE_IMAGE})
    config = make_config(aws, model)
    with pytest.raises(ClientError, match="Cannot create already existing endpoint config"):
        sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.m5.xlarge",
            "InitialInstanceCount": 1}])


@pytest.mark.parametrize("case", ["missing-model-data", "unknown-image", "server-fails"])
def test_endpoint_fails_with_a_reason(aws, case):
    _, sm, _ = aws
    if case == "missing-model-data":
        model, expected = make_model(aws, archive=b""), "Could not find model data at s3://"
    elif case == "unknown-image":
        image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-server:1"
        model, expected = make_model(aws, image=image), "is not an algorithm localaws can run"
    else:
        model, expected = make_model(aws, fail_start=True), "cannot load this model"
    endpoint = unique("endpoint")
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=make_config(aws, model))
    desc = wait_status(sm, endpoint)
    assert desc["EndpointStatus"] == "Failed"
    assert expected in desc["FailureReason"]


def test_update_endpoint_switches_models_without_a_failed_request(aws, server):
    _, sm, rt = aws
    old_config = make_config(aws, make_model(aws, probabilities=[1.0, 0.0]))
    endpoint = deploy(aws, old_config)
    old_pid = endpoint_status(server, endpoint)["variants"][0]["pid"]
    new_config = make_config(aws, make_model(aws, probabilities=[0.0, 1.0], start_delay=0.5))

    seen: Counter = Counter()
    errors: list[Exception] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                seen[tuple(invoke(rt, endpoint)[0])] += 1
            except Exception as exc:  # any failure is a bug
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=new_config)
        assert sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "Updating"
        with pytest.raises(ClientError, match="Cannot update in-progress endpoint"):
            sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=new_config)
        desc = wait_status(sm, endpoint)
        fake.wait_for(lambda: seen[(0.0, 1.0)], lambda n: n >= 20)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert desc["EndpointStatus"] == "InService" and desc["EndpointConfigName"] == new_config
    assert "FailureReason" not in desc
    assert seen[(1.0, 0.0)] > 0 and seen[(0.0, 1.0)] >= 20
    assert invoke(rt, endpoint)[0] == [0.0, 1.0]
    # the old model server is stopped once drained
    variants = endpoint_status(server, endpoint)["variants"]
    assert len(variants) == 1 and variants[0]["pid"] != old_pid
    fake.wait_for(lambda: _pid_alive(old_pid), lambda alive: not alive, timeout=30)
    assert not _pid_alive(old_pid)


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(") ")[1][0] != "Z"


def test_failed_update_rolls_back_to_the_serving_model(aws):
    _, sm, rt = aws
    old_config = make_config(aws, make_model(aws, probabilities=[1.0, 0.0]))
    endpoint = deploy(aws, old_config)
    broken = make_config(aws, make_model(aws, archive=b""))
    sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=broken)
    desc = wait_status(sm, endpoint)
    assert desc["EndpointStatus"] == "InService"
    assert desc["EndpointConfigName"] == old_config
    assert "Could not find model data" in desc["FailureReason"]
    assert invoke(rt, endpoint)[0] == [1.0, 0.0]


def test_delete_endpoint_stops_the_server(aws, server):
    _, sm, rt = aws
    endpoint = deploy(aws, make_config(aws, make_model(aws)))
    pid = endpoint_status(server, endpoint)["variants"][0]["pid"]
    sm.delete_endpoint(EndpointName=endpoint)
    with pytest.raises(ClientError, match="Could not find endpoint"):
        sm.describe_endpoint(EndpointName=endpoint)
    with pytest.raises(ClientError) as err:
        invoke(rt, endpoint)
    assert err.value.response["Error"]["Code"] == "ValidationError"
    fake.wait_for(lambda: _pid_alive(pid), lambda alive: not alive, timeout=30)
    assert not _pid_alive(pid)
    with pytest.raises(ClientError, match="Could not find endpoint"):
        sm.delete_endpoint(EndpointName=endpoint)


def test_data_capture_records_every_request(aws):
    s3, sm, rt = aws
    endpoint = deploy(aws, make_config(aws, make_model(aws, probabilities=[0.5, 0.5]),
                                       capture=CAPTURE_ALL))
    desc = sm.describe_endpoint(EndpointName=endpoint)
    assert desc["DataCaptureConfig"]["EnableCapture"] is True
    assert desc["DataCaptureConfig"]["CurrentSamplingPercentage"] == 100
    bodies = [PNG + i.to_bytes(2, "big") for i in range(60)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: invoke(rt, endpoint, body=b)[0], bodies))
    assert results == [[0.5, 0.5]] * 60
    with pytest.raises(ClientError):  # failed requests are not captured
        invoke(rt, endpoint, body=b"boom")

    # flushed by the background flusher within a few seconds, no delete needed
    lines = fake.wait_for(lambda: capture_lines(s3, endpoint), lambda ls: len(ls) >= 60,
                          timeout=15, interval=0.5)
    assert len(lines) == 60
    keys = {key for key, _ in lines}
    assert all(KEY_RE.fullmatch(k) and k.split("/")[1] == endpoint for k in keys), keys
    assert len(keys) < 60  # buffered: several records per file
    captured_inputs = []
    for _, record in lines:
        assert set(record) == {"captureData", "eventMetadata", "eventVersion"}
        assert record["eventVersion"] == "0"
        data_in = record["captureData"]["endpointInput"]
        data_out = record["captureData"]["endpointOutput"]
        assert (data_in["observedContentType"], data_in["mode"], data_in["encoding"]) == (
            "image/png", "INPUT", "BASE64")
        captured_inputs.append(base64.b64decode(data_in["data"]))
        assert (data_out["observedContentType"], data_out["mode"], data_out["encoding"]) == (
            "application/json", "OUTPUT", "JSON")
        assert json.loads(data_out["data"]) == [0.5, 0.5]
        meta = record["eventMetadata"]
        uuid.UUID(meta["eventId"])
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", meta["inferenceTime"])
    assert sorted(captured_inputs) == sorted(bodies)


def test_data_capture_honours_options_and_sampling(aws):
    s3, sm, rt = aws
    model = make_model(aws)
    input_only = {**CAPTURE_ALL, "CaptureOptions": [{"CaptureMode": "Input"}]}
    input_only.pop("CaptureContentTypeHeader")
    endpoint = deploy(aws, make_config(aws, model, capture=input_only))
    never = deploy(aws, make_config(aws, model,
                                    capture={**CAPTURE_ALL, "InitialSamplingPercentage": 0}))
    half = deploy(aws, make_config(aws, model,
                                   capture={**CAPTURE_ALL, "InitialSamplingPercentage": 50}))
    for _ in range(5):
        invoke(rt, endpoint, body=b'{"x": 1}', content_type="application/json")
    for _ in range(10):
        invoke(rt, never)
    for _ in range(200):
        invoke(rt, half)
    for name in (endpoint, never, half):  # deleting flushes what is buffered
        sm.delete_endpoint(EndpointName=name)

    lines = capture_lines(s3, endpoint)
    assert len(lines) == 5
    for _, record in lines:
        assert set(record["captureData"]) == {"endpointInput"}
        # no CaptureContentTypeHeader: everything is base64, SageMaker's default
        assert record["captureData"]["endpointInput"]["encoding"] == "BASE64"
        assert base64.b64decode(record["captureData"]["endpointInput"]["data"]) == b'{"x": 1}'
    assert capture_lines(s3, never) == []
    assert 40 < len(capture_lines(s3, half)) < 160


def test_endpoint_survives_a_restart(tmp_path):
    # S3 is not persisted here: the endpoint comes back from localaws' own copy of the model
    data_dir = tmp_path / "localaws"
    server = fake.start_localaws(data_dir, LOCALAWS_S3_PERSISTENCE="0")
    try:
        aws = fake.clients(server, "s3", "sagemaker", "sagemaker-runtime")
        aws[0].create_bucket(Bucket=BUCKET)
        endpoint = deploy(aws, make_config(aws, make_model(aws, probabilities=[0.3, 0.7])))
        assert invoke(aws[2], endpoint)[0] == [0.3, 0.7]
    finally:
        server.stop()
    server = fake.start_localaws(data_dir, LOCALAWS_S3_PERSISTENCE="0")
    try:
        s3, sm, rt = fake.clients(server, "s3", "sagemaker", "sagemaker-runtime")
        desc = wait_status(sm, endpoint)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        assert invoke(rt, endpoint)[0] == [0.3, 0.7]
        assert sm.describe_model(ModelName=sm.describe_endpoint_config(
            EndpointConfigName=desc["EndpointConfigName"])["ProductionVariants"][0]["ModelName"])
    finally:
        server.stop()
