"""A small model registry: which training job serves an endpoint, its metrics, since when.

One JSON document per endpoint in S3 (``registry/<endpoint>.json``), chosen over a
SageMaker Model Package Group because it behaves the same on AWS and localaws, needs no
extra IAM actions, and a person can read it: ``{"serving": {...} | null, "history": [...]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    deploy: bool
    reason: str


def read(s3, bucket: str, key: str) -> dict:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return {"serving": None, "history": []}


def write(s3, bucket: str, key: str, doc: dict) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, indent=2).encode(),
                  ContentType="application/json")


def record_deployment(doc: dict, entry: dict, keep: int = 50) -> dict:
    history = [entry, *doc.get("history", [])][:keep]
    return {"serving": entry, "history": history}


def gate(candidate_accuracy: float | None, serving: dict | None, min_accuracy: float,
         force: bool = False) -> GateDecision:
    """Deploy only a model that reaches the minimum and is not worse than the one serving."""
    if force:
        return GateDecision(True, "force_deploy is set: quality gate skipped")
    if candidate_accuracy is None:
        return GateDecision(False, "the training job reported no validation:accuracy")
    if candidate_accuracy < min_accuracy:
        return GateDecision(False, f"validation accuracy {candidate_accuracy:.4f} is below "
                                   f"the minimum {min_accuracy:.4f}")
    current = (serving or {}).get("metrics", {}).get("validation:accuracy")
    if current is not None and candidate_accuracy < current:
        return GateDecision(False, f"validation accuracy {candidate_accuracy:.4f} is worse "
                                   f"than the serving model's {current:.4f} "
                                   f"({serving.get('training_job')})")
    if current is None:
        return GateDecision(True, f"validation accuracy {candidate_accuracy:.4f} ≥ minimum "
                                  f"{min_accuracy:.4f}; no model serves yet")
    return GateDecision(True, f"validation accuracy {candidate_accuracy:.4f} ≥ minimum "
                              f"{min_accuracy:.4f} and ≥ serving {current:.4f}")
