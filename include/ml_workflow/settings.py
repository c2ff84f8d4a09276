"""One place for every setting of the workflow, with documented defaults.

Each setting is looked up, first match wins, in:

1. the Airflow Variable ``ml_workflow_<name>`` (``cifar100_source`` / ``cifar100_md5`` for
   the archive) — only inside a running task (``load_settings()``), never while a DAG file
   is parsed;
2. the environment: ``ML_WORKFLOW_<NAME>`` (``CIFAR100_SOURCE`` / ``CIFAR100_MD5``);
3. the default below.

| name                       | default                                             |
|----------------------------|-----------------------------------------------------|
| bucket                     | ml-workflow-aws-data                                |
| prefix                     | (empty: keys start at the bucket root)              |
| classes                    | bicycle,motorcycle,pickup_truck                     |
| dataset_name               | cifar100-vehicles                                   |
| confidence_threshold       | 0.8                                                 |
| low_confidence_alert_share | 0.2 (monitor alerts when more requests fall below)  |
| drift_threshold            | 0.2 (monitor: PSI above which drift is found)       |
| drift_min_requests         | 50 (monitor: fewer requests, drift is not judged)   |
| alert_email                | owner@example.com                                   |
| training_instance_type     | ml.p3.2xlarge                                       |
| endpoint_instance_type     | ml.m5.xlarge                                        |
| endpoint_name              | cifar-classifier                                    |
| sagemaker_role_arn         | arn:aws:iam::123456789012:role/ml-workflow-sagemaker|
| lambda_role_arn            | arn:aws:iam::123456789012:role/ml-workflow-lambda   |
| stepfunctions_role_arn     | arn:aws:iam::123456789012:role/ml-workflow-states   |
| sns_topic_name             | ml-workflow-alerts                                  |
| sns_topic_arn              | (empty: derive it from sns_topic_name and account)  |
| stack_name                 | ml-workflow-aws (the CloudFormation stack)          |
| aws_conn_id                | aws_default                                         |
| region                     | us-east-1                                           |
| min_accuracy               | 0.8                                                 |
| poll_interval_s            | 30 (how often operators poll AWS; 2 on localaws)    |
| max_training_runtime_s     | 3600                                                |
| retry_delay_s              | 20 (first retry of a failed task; doubles after)    |
| deferrable                 | false (SageMaker waits in the triggerer when true)  |
| cifar100_source            | the official CIFAR-100 python archive URL           |
| cifar100_md5               | eb9058c3a382ffc7106e4002c42a8d85 (official archive) |
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

OFFICIAL_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
OFFICIAL_CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"

# Settings whose environment/Variable names do not follow the ML_WORKFLOW_ pattern.
_SPECIAL_NAMES = {"cifar100_source": "CIFAR100_SOURCE", "cifar100_md5": "CIFAR100_MD5"}


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    bucket: str = "ml-workflow-aws-data"
    prefix: str = ""
    classes: tuple[str, ...] = ("bicycle", "motorcycle", "pickup_truck")
    dataset_name: str = "cifar100-vehicles"
    confidence_threshold: float = 0.8
    low_confidence_alert_share: float = 0.2
    drift_threshold: float = 0.2
    drift_min_requests: int = 50
    alert_email: str = "owner@example.com"
    training_instance_type: str = "ml.p3.2xlarge"
    endpoint_instance_type: str = "ml.m5.xlarge"
    endpoint_name: str = "cifar-classifier"
    sagemaker_role_arn: str = "arn:aws:iam::123456789012:role/ml-workflow-sagemaker"
    lambda_role_arn: str = "arn:aws:iam::123456789012:role/ml-workflow-lambda"
    stepfunctions_role_arn: str = "arn:aws:iam::123456789012:role/ml-workflow-states"
    sns_topic_name: str = "ml-workflow-alerts"
    sns_topic_arn: str = ""
    stack_name: str = "ml-workflow-aws"
    aws_conn_id: str = "aws_default"
    region: str = "us-east-1"
    min_accuracy: float = 0.8
    poll_interval_s: int = 30
    max_training_runtime_s: int = 3600
    retry_delay_s: int = 20
    deferrable: bool = False
    cifar100_source: str = OFFICIAL_CIFAR100_URL
    cifar100_md5: str = OFFICIAL_CIFAR100_MD5

    def key(self, *parts: str) -> str:
        """An S3 key under the configured prefix."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


def env_name(name: str) -> str:
    return _SPECIAL_NAMES.get(name, f"ML_WORKFLOW_{name.upper()}")


def variable_name(name: str) -> str:
    return name if name in _SPECIAL_NAMES else f"ml_workflow_{name}"


def _coerce(name: str, raw: str, default: object) -> object:
    raw = raw.strip()
    if isinstance(default, tuple):
        items = tuple(x.strip() for x in raw.split(",") if x.strip())
        if not items:
            raise SettingsError(f"setting {name!r} must list at least one value, got {raw!r}")
        return items
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"setting {name!r} must be true or false, got {raw!r}")
    if isinstance(default, int):
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"setting {name!r} must be an integer, got {raw!r}") from None
        if value <= 0:
            raise SettingsError(f"setting {name!r} must be positive, got {raw!r}")
        return value
    if isinstance(default, float):
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"setting {name!r} must be a number, got {raw!r}") from None
        if (name in ("confidence_threshold", "min_accuracy", "low_confidence_alert_share")
                and not 0.0 <= value <= 1.0):
            raise SettingsError(f"setting {name!r} must be between 0 and 1, got {raw!r}")
        return value
    return raw


def resolve(lookups: list[Callable[[str], str | None]]) -> Settings:
    """Build Settings from lookup functions tried in order for every setting."""
    defaults = Settings()
    values: dict[str, object] = {}
    for f in fields(Settings):
        for lookup in lookups:
            raw = lookup(f.name)
            if raw is not None and str(raw).strip() != "":
                values[f.name] = _coerce(f.name, str(raw), getattr(defaults, f.name))
                break
    return replace(defaults, **values)


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment and defaults only: safe while a DAG file is parsed."""
    env = os.environ if environ is None else environ
    return resolve([lambda n: env.get(env_name(n))])


def _airflow_variable(name: str) -> str | None:
    try:
        from airflow.sdk import Variable

        return Variable.get(variable_name(name), default=None)
    except Exception:  # outside a task (no API server to ask) there are no Variables
        return None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings inside a running task: Airflow Variables, then environment, then defaults."""
    env = os.environ if environ is None else environ
    return resolve([_airflow_variable, lambda n: env.get(env_name(n))])
