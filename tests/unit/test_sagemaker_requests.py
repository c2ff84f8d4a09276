"""SageMaker request builders validate against botocore's service model; the gate."""

from datetime import datetime

import botocore.session
import pytest
from botocore.validate import ParamValidator

from ml_workflow import registry
from ml_workflow import sagemaker_requests as req

MANIFEST = {"num_classes": 3, "num_training_samples": 1500, "image_shape": "3,32,32"}
_model = botocore.session.get_session().get_service_model("sagemaker")


def _valid(operation: str, params: dict) -> None:
    report = ParamValidator().validate(params, _model.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()


def test_training_job_request_is_valid_and_has_the_four_channels():
    params = req.training_job(
        name=req.job_name("image-classification", datetime(2026, 11, 27), "manual__x"),
        image="811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1",
        role_arn="arn:aws:iam::123456789012:role/r", bucket="b", prefix="datasets/d/2026-11-27/",
        output_uri="s3://b/models/", manifest=MANIFEST, instance_type="ml.p3.2xlarge",
        overrides={"epochs": 30, "use_pretrained_model": False})
    _valid("CreateTrainingJob", params)
    uris = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
            for c in params["InputDataConfig"]}
    assert uris == {"train": "s3://b/datasets/d/2026-11-27/train/",
                    "validation": "s3://b/datasets/d/2026-11-27/test/",
                    "train_lst": "s3://b/datasets/d/2026-11-27/train.lst",
                    "validation_lst": "s3://b/datasets/d/2026-11-27/test.lst"}
    assert params["HyperParameters"] == {"image_shape": "3,32,32", "num_classes": "3",
                                         "num_training_samples": "1500", "epochs": "30",
                                         "use_pretrained_model": "false"}


def test_job_names_are_valid_and_differ_per_run():
    a = req.job_name("image-classification", datetime(2026, 11, 27, 1, 2, 3), "run-a")
    b = req.job_name("image-classification", datetime(2026, 11, 27, 1, 2, 3), "run-b")
    assert a != b and len(a) <= 63
    _valid("DescribeTrainingJob", {"TrainingJobName": a})


def test_manifest_counts_cannot_be_overridden():
    with pytest.raises(ValueError, match="num_classes"):
        req.hyperparameters(MANIFEST, {"num_classes": 5})


def test_model_and_endpoint_config_are_valid_with_full_data_capture():
    model = req.model(name="m", image="img", model_data_url="s3://b/models/j/output/model.tar.gz",
                      role_arn="arn:aws:iam::123456789012:role/r")
    config = req.endpoint_config(name="c", model_name="m", instance_type="ml.m5.xlarge",
                                 capture_uri="s3://b/data_capture")
    _valid("CreateModel", model)
    _valid("CreateEndpointConfig", config)
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] and capture["InitialSamplingPercentage"] == 100
    assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}
    deployment = req.endpoint_deployment(model_cfg=model, config_cfg=config, endpoint_name="e")
    _valid("CreateEndpoint", deployment["Endpoint"])


def test_training_image_from_the_sdk_for_any_region():
    assert req.training_image("us-east-1").endswith("/image-classification:1")
    assert ".eu-west-1." in req.training_image("eu-west-1")


@pytest.mark.parametrize("acc,serving,force,deploy,needle", [
    (0.95, None, False, True, "no model serves yet"),
    (0.70, None, False, False, "below the minimum"),
    (0.90, {"metrics": {"validation:accuracy": 0.93}, "training_job": "j1"}, False, False,
     "worse than the serving model's 0.9300 (j1)"),
    (0.93, {"metrics": {"validation:accuracy": 0.93}}, False, True, "≥ serving"),
    (0.10, None, True, True, "force_deploy"),
    (None, None, False, False, "no validation:accuracy"),
])
def test_quality_gate(acc, serving, force, deploy, needle):
    decision = registry.gate(acc, serving, min_accuracy=0.8, force=force)
    assert decision.deploy is deploy and needle in decision.reason
