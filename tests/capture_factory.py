"""SageMaker Data Capture files generated for tests and benchmarks.

Records follow the format in FACTS.md (base64 PNG in, JSON probabilities out, or base64 of
the JSON); files follow the key layout ``.../<variant>/YYYY/MM/DD/HH/<mm-ss-mmm>-<id>.jsonl``
with several records each. Images come from ``tests.factories.class_image``, the generator
behind ``make_cifar_archive``, so "normal" traffic looks like a partition published from
such an archive. Everything is deterministic for a given seed.

Kinds of traffic:
* ``normal``: classes in turn (an even mix), confidence 0.82-0.99 except every 20th
  request (0.55-0.75: 5 % below 0.8);
* ``shifted``: every request predicted as class 0, images darkened to a third, confidence
  0.40-0.75 (all below 0.8).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

import numpy as np

from ml_workflow import s3_layout
from ml_workflow.cifar import png_bytes
from ml_workflow.sagemaker_requests import VARIANT
from ml_workflow.settings import Settings
from tests.factories import class_image

# One example per reason the parser knows, as (line, reason).
MALFORMED_LINES = [
    ("{not json", "not_json"),
    (json.dumps({"eventVersion": "0"}), "no_capture_data"),
    (json.dumps({"captureData": {"endpointInput": {"data": "", "encoding": "BASE64"}},
                 "eventMetadata": {"inferenceTime": "2026-11-28T07:00:00Z"}}), "no_output"),
    (json.dumps({"captureData": {"endpointOutput": {
        "data": "[0.5, 0.5]", "encoding": "JSON"}},
        "eventMetadata": {"inferenceTime": "2026-11-28T07:00:00Z"}}), "wrong_class_count"),
    (json.dumps({"captureData": {"endpointOutput": {
        "data": "%%%not-base64", "encoding": "BASE64"}},
        "eventMetadata": {"inferenceTime": "2026-11-28T07:00:00Z"}}), "output_undecodable"),
    (json.dumps({"captureData": {"endpointOutput": {
        "data": '["a", "b", "c"]', "encoding": "JSON"}},
        "eventMetadata": {"inferenceTime": "2026-11-28T07:00:00Z"}}),
     "output_not_probabilities"),
    (json.dumps({"captureData": {"endpointOutput": {
        "data": "[0.2, 0.3, 0.5]", "encoding": "JSON"}},
        "eventMetadata": {"inferenceTime": "yesterday"}}), "bad_inference_time"),
]


def probabilities(predicted: int, confidence: float, n_classes: int) -> list[float]:
    rest = (1.0 - confidence) / (n_classes - 1)
    probs = [rest] * n_classes
    probs[predicted] = confidence
    return probs


def capture_record(image_png: bytes | None, probs: list[float], when: datetime,
                   output_encoding: str = "JSON", event_id: str | None = None) -> dict:
    output = json.dumps(probs)
    if output_encoding == "BASE64":
        output = base64.b64encode(output.encode()).decode()
    capture = {"endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                  "data": output, "encoding": output_encoding}}
    if image_png is not None:
        capture["endpointInput"] = {"observedContentType": "image/png", "mode": "INPUT",
                                    "data": base64.b64encode(image_png).decode(),
                                    "encoding": "BASE64"}
    return {"captureData": capture,
            "eventMetadata": {"eventId": event_id or str(uuid.uuid4()),
                              "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "eventVersion": "0"}


def traffic(n: int, start: datetime, *, kind: str = "normal", n_classes: int = 3,
            seconds: float = 3600.0, seed: int = 0) -> list[tuple[datetime, dict]]:
    """``n`` capture records spread evenly over ``seconds`` from ``start``."""
    if kind not in ("normal", "shifted"):
        raise ValueError(f"kind must be 'normal' or 'shifted', got {kind!r}")
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        when = start + timedelta(seconds=seconds * i / max(n, 1))
        if kind == "normal":
            slot = i % n_classes
            pixels = class_image(slot, rng)
            confidence = (rng.uniform(0.55, 0.75) if i % 20 == 19
                          else rng.uniform(0.82, 0.99))
        else:
            slot = 0
            pixels = (class_image(int(rng.integers(n_classes)), rng) // 3).astype(np.uint8)
            confidence = rng.uniform(0.40, 0.75)
        event_id = str(uuid.UUID(int=int(rng.integers(2**63)) << 64 | i))
        records.append((when, capture_record(
            png_bytes(pixels), probabilities(slot, round(float(confidence), 6), n_classes),
            when, output_encoding="BASE64" if i % 2 else "JSON", event_id=event_id)))
    return records


def capture_files(s: Settings, endpoint: str, records: Iterable[tuple[datetime, dict]], *,
                  per_file: int = 25, extra_lines: Iterable[str] = (),
                  variant: str = VARIANT, seed: int = 0) -> dict[str, bytes]:
    """Records → ``{key: jsonl body}``, one file per ``per_file`` records within an hour;
    ``extra_lines`` (e.g. malformed ones) go into the first file."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    extra = list(extra_lines)
    by_hour: dict[str, list[tuple[datetime, dict]]] = {}
    for when, record in sorted(records, key=lambda r: r[0]):
        by_hour.setdefault(when.strftime("%Y%m%d%H"), []).append((when, record))
    for chunk_records in by_hour.values():
        for i in range(0, len(chunk_records), per_file):
            chunk = chunk_records[i:i + per_file]
            file_id = str(uuid.UUID(int=int(rng.integers(2**63)) << 64 | len(files)))
            key = s3_layout.data_capture_key(s, endpoint, variant, chunk[0][0], file_id)
            lines = [json.dumps(r, separators=(",", ":")) for _, r in chunk]
            if extra:
                lines[1:1] = extra  # in the middle of a file, not only at its edges
                extra = []
            files[key] = ("\n".join(lines) + "\n").encode()
    return files


def put_files(s3, bucket: str, files: dict[str, bytes]) -> None:
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/jsonl")
