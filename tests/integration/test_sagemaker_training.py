"""SageMaker training jobs on localaws, driven with plain boto3.

Most tests run the stand-in algorithm of ``fake_sagemaker_algorithm`` (selected by its test
image through LOCALAWS_EXTRA_ALGORITHMS) on a server of their own; the ``slow`` test trains the
real image-classification algorithm, when it is installed, on a tiny generated dataset.
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_sagemaker_algorithm as fake  # noqa: E402

from localaws.algorithms import registry  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/sagemaker"
BUCKET = "training-tests"
TERMINAL = {"Completed", "Failed", "Stopped"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    aws = fake.start_localaws(tmp_path_factory.mktemp("sm-training"),
                              LOCALAWS_TRAINING_STOP_GRACE="5")
    try:
        yield aws
    finally:
        aws.stop()


@pytest.fixture(scope="module")
def aws(server):
    s3, sm, logs = fake.clients(server, "s3", "sagemaker", "logs")
    s3.create_bucket(Bucket=BUCKET)
    for key, body in {
        "data/train/a.png": b"a", "data/train/sub/b.png": b"b",
        "data/validation/c.png": b"c", "data/train.lst": b"0\t0\ta.png\n",
    }.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return s3, sm, logs


def channel(name: str, uri: str) -> dict:
    return {"ChannelName": name, "ContentType": "application/x-image",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                            "S3DataDistributionType": "FullyReplicated"}}}


def create_job(sm, image: str = fake.FAKE_IMAGE, channels=None, max_runtime: int = 600,
               **hyper: str) -> str:
    name = f"job-{uuid.uuid4().hex[:10]}"
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        HyperParameters={"epochs": "2", **hyper},
        InputDataConfig=channels if channels is not None else [
            channel("train", f"s3://{BUCKET}/data/train/"),
            channel("validation", f"s3://{BUCKET}/data/validation/"),
            channel("train_lst", f"s3://{BUCKET}/data/train.lst"),
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/models"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                        "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": max_runtime},
    )
    return name


def wait_done(sm, name: str, timeout: float = 60.0) -> dict:
    desc = fake.wait_for(lambda: sm.describe_training_job(TrainingJobName=name),
                         lambda d: d["TrainingJobStatus"] in TERMINAL, timeout=timeout)
    assert desc["TrainingJobStatus"] in TERMINAL, desc
    return desc


def log_messages(logs, job: str) -> list[str]:
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=f"{job}/", orderBy="LogStreamName")
    names = [s["logStreamName"] for s in streams["logStreams"]]
    assert len(names) == 1 and re.fullmatch(rf"{job}/algo-1-\d{{10}}", names[0]), names
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                 logStreamName=names[0], startFromHead=True)["events"]
    return [e["message"] for e in events]


def test_job_trains_uploads_the_model_and_reports_metrics(aws):
    s3, sm, logs = aws
    name = create_job(sm, fake_delay="0.5", learning_rate="0.1")
    first = sm.describe_training_job(TrainingJobName=name)
    assert first["TrainingJobStatus"] == "InProgress"

    desc = wait_done(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["SecondaryStatus"] == "Completed"
    assert [t["Status"] for t in desc["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all("EndTime" in t for t in desc["SecondaryStatusTransitions"])
    assert desc["TrainingStartTime"] <= desc["TrainingEndTime"]
    assert desc["BillableTimeInSeconds"] >= 1
    assert "FailureReason" not in desc
    metrics = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert metrics == {"validation:accuracy": 0.9, "train:accuracy": 0.95}

    artifact = desc["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == f"s3://{BUCKET}/models/{name}/output/model.tar.gz"
    body = s3.get_object(Bucket=BUCKET, Key=f"models/{name}/output/model.tar.gz")["Body"]
    with tarfile.open(fileobj=io.BytesIO(body.read())) as tar:
        assert tar.getnames() == ["model.json"]
        model = json.load(tar.extractfile("model.json"))
    assert model["hyperparameters"] == {"epochs": "2", "fake_delay": "0.5",
                                        "learning_rate": "0.1"}
    assert model["channels"] == {"train": ["a.png", "sub/b.png"], "train_lst": ["train.lst"],
                                 "validation": ["c.png"]}

    messages = log_messages(logs, name)
    assert messages[0].startswith("fake: starting")
    assert "fake: channel train: 2 files" in messages and messages[-1] == "fake: done"

    listed = sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"]
    assert [(j["TrainingJobName"], j["TrainingJobStatus"]) for j in listed] == [
        (name, "Completed")]


def test_algorithm_failure_file_is_the_failure_reason(aws):
    _, sm, logs = aws
    name = create_job(sm, fake_mode="fail")
    desc = wait_done(sm, name)
    assert desc["TrainingJobStatus"] == "Failed"
    assert desc["SecondaryStatus"] == "Failed"
    assert desc["FailureReason"] == "ClientError: fake failure requested"
    assert "fake: failing on purpose" in log_messages(logs, name)


def test_crash_without_failure_file_names_exit_code_and_last_line(aws):
    _, sm, _ = aws
    desc = wait_done(sm, create_job(sm, fake_mode="crash"))
    assert desc["TrainingJobStatus"] == "Failed"
    assert "exit code 3" in desc["FailureReason"]
    assert "fake: boom" in desc["FailureReason"]


def test_missing_channel_data_fails_the_job(aws):
    _, sm, _ = aws
    uri = f"s3://{BUCKET}/data/nothing-here/"
    desc = wait_done(sm, create_job(sm, channels=[channel("train", uri)]))
    assert desc["TrainingJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith(
        f'ClientError: No S3 objects found under S3 URL "{uri}"')
    no_bucket = [channel("train", "s3://no-such-bucket/x/")]
    missing_bucket = wait_done(sm, create_job(sm, channels=no_bucket))
    assert "No S3 objects found" in missing_bucket["FailureReason"]


def test_unknown_image_fails_with_a_clear_reason(aws):
    _, sm, _ = aws
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-own-trainer:latest"
    desc = wait_done(sm, create_job(sm, image=image))
    assert desc["TrainingJobStatus"] == "Failed"
    assert desc["FailureReason"] == f"ClientError: {image} is not an algorithm localaws can run"


def test_duplicate_name_is_refused(aws):
    _, sm, _ = aws
    name = f"dup-{uuid.uuid4().hex[:8]}"
    sm.create_training_job(**_job_request(name))
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**_job_request(name))
    assert err.value.response["Error"]["Code"] == "ResourceInUse"
    assert "a training job with this name already exists" in str(err.value)
    assert wait_done(sm, name)["TrainingJobStatus"] == "Completed"


def _job_request(name: str) -> dict:
    return dict(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": fake.FAKE_IMAGE, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        InputDataConfig=[channel("train", f"s3://{BUCKET}/data/train/")],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/models"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                        "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )


def test_stop_training_job(aws, server):
    s3, sm, logs = aws
    name = create_job(sm, fake_mode="sleep", fake_seconds="60")
    fake.wait_for(lambda: sm.describe_training_job(TrainingJobName=name),
                  lambda d: d["SecondaryStatus"] == "Training")
    # a line of output has reached CloudWatch Logs while the job still runs
    fake.wait_for(lambda: log_messages(logs, name), lambda m: "fake: epoch 0" in m)

    sm.stop_training_job(TrainingJobName=name)
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in (
        "Stopping", "Stopped")
    desc = wait_done(sm, name, timeout=30)
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "Stopping" in [t["Status"] for t in desc["SecondaryStatusTransitions"]]
    assert "fake: stopped by SIGTERM" in log_messages(logs, name)
    # the model the algorithm saved on SIGTERM is still uploaded, as SageMaker does
    s3.head_object(Bucket=BUCKET, Key=f"models/{name}/output/model.tar.gz")
    jobs = {j["name"]: j for j in server.status()["sagemaker"]["training_jobs"]}
    assert jobs[name]["pid"] is None

    with pytest.raises(ClientError) as err:
        sm.stop_training_job(TrainingJobName=name)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "in status Stopped" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        sm.stop_training_job(TrainingJobName="never-created")


def test_max_runtime_stops_the_job(aws):
    _, sm, _ = aws
    name = create_job(sm, fake_mode="sleep", fake_seconds="60", max_runtime=2)
    desc = wait_done(sm, name, timeout=30)
    assert desc["TrainingJobStatus"] == "Stopped"
    assert desc["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert desc["SecondaryStatusTransitions"][-1]["StatusMessage"] == (
        "Training job runtime exceeded MaxRuntimeInSeconds provided")


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1"])
def test_builtin_image_of_every_region_maps_to_image_classification(region):
    from sagemaker.core import image_uris

    for version in ("1", "latest"):
        image = image_uris.retrieve("image-classification", region, version)
        assert registry.resolve(image).module == "localaws.algorithms.image_classification"
    latest = image_uris.retrieve("image-classification", region, "1").replace(":1", ":latest")
    assert registry.resolve(latest).module == "localaws.algorithms.image_classification"
    with pytest.raises(registry.UnknownAlgorithm, match="is not an algorithm localaws can run"):
        registry.resolve(image_uris.retrieve("xgboost", region, "1.7-1"))


@pytest.mark.slow
@pytest.mark.skipif(not fake.real_algorithm_installed(),
                    reason="image-classification is not installed")
def test_real_image_classification_trains_and_serves(localaws):
    import boto3

    s3, sm, rt = (boto3.client(s) for s in ("s3", "sagemaker", "sagemaker-runtime"))
    bucket = f"real-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    fake.upload_colour_dataset(s3, bucket, "ds")
    name = f"ic-{uuid.uuid4().hex[:8]}"
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": fake.REAL_IMAGE, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        HyperParameters={"num_classes": "3", "num_training_samples": "30", "epochs": "3",
                         "mini_batch_size": "10", "image_shape": "3,32,32"},
        InputDataConfig=[channel("train", f"s3://{bucket}/ds/train/"),
                         channel("validation", f"s3://{bucket}/ds/validation/"),
                         channel("train_lst", f"s3://{bucket}/ds/train.lst"),
                         channel("validation_lst", f"s3://{bucket}/ds/validation.lst")],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/models"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                        "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 900},
    )
    desc = wait_done(sm, name, timeout=600)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    metrics = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert 0.0 <= metrics["validation:accuracy"] <= 1.0

    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": fake.REAL_IMAGE, "ModelDataUrl": desc["ModelArtifacts"]["S3ModelArtifacts"]})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.xlarge",
        "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    endpoint = fake.wait_for(lambda: sm.describe_endpoint(EndpointName=name),
                             lambda d: d["EndpointStatus"] != "Creating", timeout=120)
    assert endpoint["EndpointStatus"] == "InService", endpoint.get("FailureReason")
    try:
        for content_type in ("image/png", "application/x-image"):
            resp = rt.invoke_endpoint(EndpointName=name, Body=fake.colour_png(2, 7),
                                      ContentType=content_type)
            probabilities = json.loads(resp["Body"].read())
            assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 1e-3
        with pytest.raises(ClientError) as err:
            rt.invoke_endpoint(EndpointName=name, Body=b"not an image", ContentType="image/png")
        assert err.value.response["Error"]["Code"] == "ModelError"
        assert err.value.response["OriginalStatusCode"] == 400
    finally:
        sm.delete_endpoint(EndpointName=name)
