"""Fixtures for DAG tests: a bucket with a published generated partition, and a real
endpoint serving a model trained on it (the real image-classification algorithm)."""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest

from ml_workflow import cifar, etl
from ml_workflow import sagemaker_requests as req
from tests.factories import make_cifar_archive

CLASSES = ["bicycle", "motorcycle", "pickup_truck"]
PARTITION = "datasets/cifar100-vehicles/2026-11-27/"


def _wait(describe, key: str, done: set[str], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = describe()
        if state[key] in done:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} still {state[key]} after {timeout}s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def published(localaws, tmp_path_factory):
    """A fresh bucket holding one published 3-class partition."""
    bucket = f"dag-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    work = tmp_path_factory.mktemp("partition")
    archive = make_cifar_archive(work / "a.tar.gz",
                                 train={c: 40 for c in CLASSES}, test={c: 10 for c in CLASSES})
    raw = etl.extract(s3, str(archive), cifar.md5_of(archive), bucket, "raw/a.tar.gz", work)
    etl.transform(s3, bucket, raw["key"], CLASSES, "staging/p.tar", work)
    etl.load(s3, bucket, "staging/p.tar", PARTITION, work)
    return bucket


@pytest.fixture(scope="module")
def endpoint(published):
    """An InService endpoint (with Data Capture) of a model trained on the partition."""
    sm = boto3.client("sagemaker")
    name = f"ep-{uuid.uuid4().hex[:8]}"
    image = req.training_image("us-east-1")
    manifest = etl.read_manifest(boto3.client("s3"), published, PARTITION)
    sm.create_training_job(**req.training_job(
        name=name, image=image, role_arn="arn:aws:iam::123456789012:role/r", bucket=published,
        prefix=PARTITION, output_uri=f"s3://{published}/models/", manifest=manifest,
        instance_type="ml.m5.xlarge", overrides={"epochs": 8, "mini_batch_size": 16}))
    job = _wait(lambda: sm.describe_training_job(TrainingJobName=name), "TrainingJobStatus",
                {"Completed", "Failed", "Stopped"})
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    sm.create_model(**req.model(name=name, image=image,
                                model_data_url=job["ModelArtifacts"]["S3ModelArtifacts"],
                                role_arn="arn:aws:iam::123456789012:role/r"))
    sm.create_endpoint_config(**req.endpoint_config(
        name=name, model_name=name, instance_type="ml.m5.xlarge",
        capture_uri=f"s3://{published}/data_capture"))
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    state = _wait(lambda: sm.describe_endpoint(EndpointName=name), "EndpointStatus",
                  {"InService", "Failed"})
    assert state["EndpointStatus"] == "InService", state.get("FailureReason")
    yield name
    sm.delete_endpoint(EndpointName=name)


def _role(iam, name: str, service: str) -> str:
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}
    try:
        return iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))[
            "Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        return iam.get_role(RoleName=name)["Role"]["Arn"]


@pytest.fixture
def roles(localaws, monkeypatch) -> dict[str, str]:
    """IAM roles the services can assume (infra_setup's stack makes them in production)."""
    iam = boto3.client("iam")
    arns = {"lambda": _role(iam, "test-lambda", "lambda.amazonaws.com"),
            "stepfunctions": _role(iam, "test-states", "states.amazonaws.com"),
            "sagemaker": _role(iam, "test-sagemaker", "sagemaker.amazonaws.com")}
    for kind, arn in arns.items():
        monkeypatch.setenv(f"ML_WORKFLOW_{kind.upper()}_ROLE_ARN", arn)
    return arns
