"""Where everything lives in the bucket (see ARCHITECTURE.md's data flow). One function
per kind of object, so no other module spells a key by hand."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ml_workflow.settings import Settings

MANIFEST = "_MANIFEST.json"
BASELINE = "_BASELINE.json"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _safe(run_id: str) -> str:
    """Airflow run ids hold ':' and '+'; keys get a plain spelling."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def check_name(kind: str, value: str) -> str:
    if not _SAFE.match(value or ""):
        raise ValueError(f"{kind} {value!r} must be 1-63 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return value


def raw_archive_key(s: Settings, ds: str) -> str:
    return s.key("raw", "cifar-100", check_name("partition", ds), "cifar-100-python.tar.gz")


def dataset_prefix(s: Settings, dataset: str, ds: str) -> str:
    return s.key("datasets", check_name("dataset", dataset), check_name("partition", ds)) + "/"


def staging_key(s: Settings, dataset: str, ds: str, run_id: str) -> str:
    """Where a run stages its partition before publishing it (one object per run)."""
    return s.key("staging", dataset, ds, f"{_safe(run_id)}.tar")


def model_output_uri(s: Settings) -> str:
    return s.uri("models") + "/"


def data_capture_uri(s: Settings) -> str:
    return s.uri("data_capture")


def data_capture_prefix(s: Settings, endpoint: str, variant: str) -> str:
    return s.key("data_capture", endpoint, variant) + "/"


def data_capture_hour_prefix(s: Settings, endpoint: str, variant: str, hour: datetime) -> str:
    """The capture files of one UTC hour: ``.../<variant>/YYYY/MM/DD/HH/``."""
    hour = hour.astimezone(UTC) if hour.tzinfo else hour
    return data_capture_prefix(s, endpoint, variant) + hour.strftime("%Y/%m/%d/%H/")


def data_capture_key(s: Settings, endpoint: str, variant: str, first_record: datetime,
                     file_id: str) -> str:
    """One capture file, named after its first record: ``.../HH/<mm-ss-mmm>-<id>.jsonl``."""
    first_record = first_record.astimezone(UTC) if first_record.tzinfo else first_record
    return (data_capture_hour_prefix(s, endpoint, variant, first_record)
            + f"{first_record:%M-%S}-{first_record.microsecond // 1000:03d}-{file_id}.jsonl")


def baseline_key(partition_prefix: str) -> str:
    """The monitoring baseline of a dataset partition, stored next to its manifest."""
    return partition_prefix.rstrip("/") + "/" + BASELINE


def inference_prefix(s: Settings, run_id: str) -> str:
    return s.key("inference", _safe(run_id)) + "/"


def report_prefix(s: Settings, ds: str) -> str:
    return s.key("reports", "monitoring", ds) + "/"


def lambda_package_key(s: Settings, function: str, sha256: str) -> str:
    return s.key("lambdas", function, f"{sha256}.zip")


def registry_key(s: Settings, endpoint: str) -> str:
    return s.key("registry", f"{endpoint}.json")
