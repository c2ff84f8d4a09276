"""The cifar_etl DAG's task bodies: settings and params in, ``ml_workflow.etl`` called
with the provider's S3 hook, bad input turned into a failure that is not retried."""

from __future__ import annotations

import logging
import re
import tempfile
from datetime import datetime
from pathlib import Path

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk.exceptions import AirflowFailException

from ml_workflow import etl, s3_layout
from ml_workflow.cifar import CifarFormatError, ClassSelectionError
from ml_workflow.settings import load_settings

log = logging.getLogger(__name__)
BAD_INPUT = (CifarFormatError, ClassSelectionError, etl.ChecksumMismatch, etl.SourceError,
             ValueError)


def _s3(partition: dict):
    return S3Hook(aws_conn_id=partition["aws_conn_id"]).get_conn()


def partition_name(when: datetime, manual: bool) -> str:
    """Scheduled and backfill runs own their day (``2026-11-27``); a manual run gets its own
    partition (``2026-11-28T081502``) so it never overwrites, or is overwritten by, the
    day's scheduled run."""
    return when.strftime("%Y-%m-%dT%H%M%S" if manual else "%Y-%m-%d")


def plan_partition(params: dict, when: datetime, run_id: str, manual: bool = False) -> dict:
    """Everything the run will do, decided once (and shown in the log and XCom)."""
    s = load_settings()
    ds = partition_name(when, manual)
    try:
        dataset = s3_layout.check_name("dataset", params.get("dataset_name") or s.dataset_name)
        classes = [c.strip() for c in params.get("classes") or s.classes]
        md5 = (params.get("md5") or s.cifar100_md5).strip().lower()
        if not re.fullmatch(r"[0-9a-f]{32}", md5):
            raise ValueError(f"md5 {md5!r} is not 32 hex digits")
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from None
    plan = {
        "ds": ds, "dataset": dataset, "classes": classes,
        "source": params.get("source") or s.cifar100_source, "md5": md5,
        "bucket": s.bucket, "raw_key": s3_layout.raw_archive_key(s, ds),
        "prefix": s3_layout.dataset_prefix(s, dataset, ds),
        "staging_key": s3_layout.staging_key(s, dataset, ds, run_id),
        "test_split": params.get("test_split", "official"),
        "holdout_fraction": float(params.get("holdout_fraction", 0.1)),
        "aws_conn_id": s.aws_conn_id,
    }
    log.info("partition plan: %s", plan)
    return plan


def run_extract(p: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="cifar-extract-") as work:
        try:
            return etl.extract(_s3(p), p["source"], p["md5"], p["bucket"], p["raw_key"],
                               Path(work))
        except BAD_INPUT as exc:
            raise AirflowFailException(str(exc)) from None


def run_transform(p: dict, raw: dict) -> dict:
    staging_key = p["staging_key"]
    with tempfile.TemporaryDirectory(prefix="cifar-transform-") as work:
        try:
            manifest = etl.transform(_s3(p), p["bucket"], raw["key"], p["classes"],
                                     staging_key, Path(work), p["test_split"],
                                     p["holdout_fraction"])
        except BAD_INPUT as exc:
            raise AirflowFailException(str(exc)) from None
    return {"staging_key": staging_key, "counts": manifest["counts"]}


def run_load(p: dict, staged: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="cifar-load-") as work:
        result = etl.load(_s3(p), p["bucket"], staged["staging_key"], p["prefix"], Path(work))
    return {"bucket": p["bucket"], "prefix": p["prefix"], "dataset": p["dataset"],
            "partition": p["ds"], "manifest_key": result["manifest_key"],
            "classes": result["classes"], "counts": result["counts"]}
