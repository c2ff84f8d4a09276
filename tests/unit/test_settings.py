"""Settings: defaults, environment names, coercion and clear errors."""

import pytest

from ml_workflow.settings import (
    OFFICIAL_CIFAR100_MD5,
    Settings,
    SettingsError,
    env_name,
    resolve,
    settings_from_env,
)


def test_defaults_match_the_product():
    s = settings_from_env({})
    assert s.classes == ("bicycle", "motorcycle", "pickup_truck")
    assert s.confidence_threshold == 0.8
    assert s.endpoint_instance_type == "ml.m5.xlarge"
    assert s.cifar100_md5 == OFFICIAL_CIFAR100_MD5


def test_environment_names_and_coercion():
    s = settings_from_env({
        "ML_WORKFLOW_CLASSES": "bicycle, motorcycle",
        "ML_WORKFLOW_CONFIDENCE_THRESHOLD": "0.9",
        "CIFAR100_SOURCE": "file:///tmp/a.tar.gz",
        "CIFAR100_MD5": "abc",
        "ML_WORKFLOW_BUCKET": "my-bucket",
    })
    assert s.classes == ("bicycle", "motorcycle")
    assert s.confidence_threshold == 0.9
    assert s.cifar100_source == "file:///tmp/a.tar.gz"
    assert s.cifar100_md5 == "abc"
    assert s.bucket == "my-bucket"
    assert env_name("alert_email") == "ML_WORKFLOW_ALERT_EMAIL"


def test_first_lookup_wins():
    s = resolve([lambda n: "a-bucket" if n == "bucket" else None,
                 lambda n: "b-bucket" if n == "bucket" else None])
    assert s.bucket == "a-bucket"


@pytest.mark.parametrize("name,value,needle", [
    ("ML_WORKFLOW_CONFIDENCE_THRESHOLD", "high", "confidence_threshold"),
    ("ML_WORKFLOW_CONFIDENCE_THRESHOLD", "1.5", "between 0 and 1"),
    ("ML_WORKFLOW_CLASSES", " , ", "classes"),
])
def test_bad_values_name_the_setting(name, value, needle):
    with pytest.raises(SettingsError, match=needle):
        settings_from_env({name: value})


def test_keys_live_under_the_prefix():
    assert Settings(prefix="proj/").key("datasets", "x/") == "proj/datasets/x"
    assert Settings(prefix="").uri("raw", "a.tgz") == "s3://ml-workflow-aws-data/raw/a.tgz"


def test_integer_settings():
    assert settings_from_env({"ML_WORKFLOW_POLL_INTERVAL_S": "2"}).poll_interval_s == 2
    with pytest.raises(SettingsError, match="poll_interval_s.*integer"):
        settings_from_env({"ML_WORKFLOW_POLL_INTERVAL_S": "2.5"})


def test_boolean_settings():
    assert settings_from_env({"ML_WORKFLOW_DEFERRABLE": "true"}).deferrable is True
    assert settings_from_env({}).deferrable is False
    with pytest.raises(SettingsError, match="deferrable.*true or false"):
        settings_from_env({"ML_WORKFLOW_DEFERRABLE": "maybe"})
