"""Request builders for SageMaker: the training job (built-in image-classification
algorithm, four channels), the model, and the endpoint config with Data Capture.

Pure functions returning the exact dicts boto3 / the provider operators take; the unit
tests validate them against botocore's SageMaker service model.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

ALGORITHM = "image-classification"
VARIANT = "AllTraffic"
CONTENT_TYPE = "application/x-image"
# What the reference notebook sets; everything else is the algorithm's default unless the
# user passes it (the trigger form's "hyperparameters" object).
NOTEBOOK_HYPERPARAMETERS = ("image_shape", "num_classes", "num_training_samples")


def training_image(region: str) -> str:
    """The built-in algorithm's image URI for the region, from the SageMaker SDK."""
    from sagemaker.core import image_uris

    return image_uris.retrieve(ALGORITHM, region, "latest")


def job_name(prefix: str, when: datetime, run_id: str) -> str:
    """≤ 63 chars, [a-zA-Z0-9-], unique per DAG run (the provider's operator adds a
    timestamp when a retry finds the name taken)."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:6]
    base = re.sub(r"[^a-zA-Z0-9-]", "-", prefix)[:30].strip("-")
    return f"{base}-{when:%Y%m%d-%H%M%S}-{digest}"


def hyperparameters(manifest: dict, overrides: dict | None = None) -> dict[str, str]:
    hp = {
        "image_shape": manifest.get("image_shape", "3,32,32"),
        "num_classes": str(manifest["num_classes"]),
        "num_training_samples": str(manifest["num_training_samples"]),
    }
    for key, value in (overrides or {}).items():
        if key in ("num_classes", "num_training_samples"):
            raise ValueError(f"hyperparameter {key!r} comes from the dataset manifest; "
                             "do not set it by hand")
        hp[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return hp


def channels(bucket: str, prefix: str) -> list[dict]:
    """The four channels of a published partition (prefix ends with '/')."""
    def channel(name: str, key: str) -> dict:
        return {
            "ChannelName": name,
            "ContentType": CONTENT_TYPE,
            "CompressionType": "None",
            "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": f"s3://{bucket}/{prefix}{key}",
                "S3DataDistributionType": "FullyReplicated",
            }},
        }
    return [channel("train", "train/"), channel("validation", "test/"),
            channel("train_lst", "train.lst"), channel("validation_lst", "test.lst")]


def training_job(*, name: str, image: str, role_arn: str, bucket: str, prefix: str,
                 output_uri: str, manifest: dict, instance_type: str,
                 overrides: dict | None = None, max_runtime_s: int = 3600,
                 tags: dict[str, str] | None = None) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "RoleArn": role_arn,
        "InputDataConfig": channels(bucket, prefix),
        "OutputDataConfig": {"S3OutputPath": output_uri},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": instance_type,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(max_runtime_s)},
        "HyperParameters": hyperparameters(manifest, overrides),
        "EnableNetworkIsolation": True,
        "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    }


def model(*, name: str, image: str, model_data_url: str, role_arn: str) -> dict:
    return {
        "ModelName": name,
        "PrimaryContainer": {"Image": image, "ModelDataUrl": model_data_url},
        "ExecutionRoleArn": role_arn,
        "EnableNetworkIsolation": True,
    }


def endpoint_config(*, name: str, model_name: str, instance_type: str,
                    capture_uri: str, sampling_percent: int = 100) -> dict:
    return {
        "EndpointConfigName": name,
        "ProductionVariants": [{
            "VariantName": VARIANT,
            "ModelName": model_name,
            "InitialInstanceCount": 1,
            "InstanceType": instance_type,
            "InitialVariantWeight": 1.0,
        }],
        "DataCaptureConfig": {
            "EnableCapture": True,
            "InitialSamplingPercentage": int(sampling_percent),
            "DestinationS3Uri": capture_uri,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
        },
    }


def endpoint_deployment(*, model_cfg: dict, config_cfg: dict, endpoint_name: str) -> dict:
    """The config SageMakerEndpointOperator takes: model + endpoint config + endpoint."""
    return {
        "Model": model_cfg,
        "EndpointConfig": config_cfg,
        "Endpoint": {"EndpointName": endpoint_name,
                     "EndpointConfigName": config_cfg["EndpointConfigName"]},
    }


def final_metrics(describe: dict) -> dict[str, float]:
    """FinalMetricDataList of a DescribeTrainingJob response as {name: value}."""
    return {m["MetricName"]: float(m["Value"]) for m in describe.get("FinalMetricDataList", [])}
