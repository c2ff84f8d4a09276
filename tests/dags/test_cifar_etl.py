"""cifar_etl end to end with dag.test() against a real localaws."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import boto3
import pytest

from ml_workflow import cifar
from tests.factories import SHARED_ARCHIVE, make_cifar_archive

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def bucket(monkeypatch, localaws):
    name = f"etl-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    monkeypatch.setenv("ML_WORKFLOW_BUCKET", name)
    return name


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder="dags/cifar_etl.py")
    assert not bag.import_errors
    return bag.dags["cifar_etl"]


def _run(conf: dict, day: int = 27):
    dag = _dag()
    return dag.test(logical_date=datetime(2026, 11, day, tzinfo=UTC), run_conf=conf)


def _keys(bucket: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3")
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _task_states(dag_run) -> dict:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


@pytest.mark.skipif(not SHARED_ARCHIVE.exists(), reason="shared CIFAR archive not present")
def test_shared_archive_publishes_1000_train_200_test(bucket):
    conf = {"classes": ["bicycle", "motorcycle"], "source": str(SHARED_ARCHIVE),
            "md5": cifar.md5_of(SHARED_ARCHIVE), "dataset_name": "vehicles"}
    run = _run(conf)
    assert run.state == "success", _task_states(run)
    prefix = "datasets/vehicles/2026-11-27T000000/"
    keys = _keys(bucket, prefix)
    assert sum(k.startswith(prefix + "train/") for k in keys) == 1000
    assert sum(k.startswith(prefix + "test/") for k in keys) == 200
    s3 = boto3.client("s3")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "_MANIFEST.json")["Body"]
                          .read())
    assert manifest["counts"]["train"]["per_class"] == {"bicycle": 500, "motorcycle": 500}
    assert manifest["num_training_samples"] == 1000 and manifest["num_classes"] == 2
    lst = s3.get_object(Bucket=bucket, Key=prefix + "train.lst")["Body"].read().decode()
    rows = [line.split("\t") for line in lst.splitlines()]
    assert len(rows) == 1000 and {r[1] for r in rows} == {"0", "1"}
    assert all(prefix + "train/" + r[2] in keys for r in rows)

    # The second run finds the raw archive in S3 and does not download it again.
    run2 = _run(conf)
    assert run2.state == "success"
    assert len(_keys(bucket, prefix)) == len(keys)


def test_rerun_replaces_partition_and_bad_class_publishes_nothing(bucket, tmp_path):
    small = make_cifar_archive(tmp_path / "a.tar.gz",
                               train={"bicycle": 4, "motorcycle": 4, "pickup_truck": 4},
                               test={"bicycle": 2, "motorcycle": 2, "pickup_truck": 2})
    base = {"source": f"file://{small}", "md5": cifar.md5_of(small), "dataset_name": "d"}
    prefix = "datasets/d/2026-11-20T000000/"
    run = _run({**base, "classes": ["bicycle", "motorcycle", "pickup_truck"]}, day=20)
    assert run.state == "success", _task_states(run)
    assert len([k for k in _keys(bucket, prefix) if k.endswith(".png")]) == 18

    # Same interval, fewer classes: the partition is replaced, nothing stale remains.
    run = _run({**base, "classes": ["bicycle", "motorcycle"]}, day=20)
    assert run.state == "success", _task_states(run)
    pngs = [k for k in _keys(bucket, prefix) if k.endswith(".png")]
    assert len(pngs) == 12 and not any("pickup_truck" in k for k in pngs)

    # A class the archive does not hold fails the run, and publishes nothing.
    run = _run({**base, "classes": ["bicycle", "bus"]}, day=21)
    assert run.state == "failed"
    assert _task_states(run)["transform"] == "failed"
    assert _keys(bucket, "datasets/d/2026-11-21T000000/") == []


def test_checksum_mismatch_fails_before_anything_is_stored(bucket, tmp_path):
    small = make_cifar_archive(tmp_path / "a.tar.gz", train={"bicycle": 2, "motorcycle": 2},
                               test={"bicycle": 1, "motorcycle": 1})
    run = _run({"source": str(small), "md5": "0" * 32, "classes": ["bicycle", "motorcycle"],
                "dataset_name": "d"}, day=22)
    assert run.state == "failed"
    assert _task_states(run)["extract"] == "failed"
    assert _keys(bucket, "") == []


def test_manual_runs_get_their_own_partition_scheduled_runs_own_the_day():
    from ml_workflow.etl_tasks import partition_name

    when = datetime(2026, 11, 28, 8, 15, 2, tzinfo=UTC)
    assert partition_name(when, manual=False) == "2026-11-28"
    assert partition_name(when, manual=True) == "2026-11-28T081502"
