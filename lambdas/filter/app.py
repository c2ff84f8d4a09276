"""filter: apply the confidence threshold to one classified image.

``THRESHOLD`` (default 0.8) and ``CLASS_NAMES`` (JSON list in label order) come from the
environment. Returns the image's ``s3_bucket``, ``s3_key``, ``inferences``,
``predicted_label``, ``predicted_class``, ``confidence``, ``threshold`` and ``confident``
(true when confidence ≥ threshold); for ``{"cases": [...]}`` a list of those.
Standard library only.
"""

import json
import math
import os


class InvalidEvent(ValueError):
    """The event has no usable inferences."""


def _threshold() -> float:
    raw = os.environ.get("THRESHOLD", "0.8")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidEvent(f"THRESHOLD must be a number between 0 and 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidEvent(f"THRESHOLD must be between 0 and 1, got {raw!r}")
    return value


def _class_names() -> list:
    raw = os.environ.get("CLASS_NAMES", "")
    if not raw:
        return []
    try:
        names = json.loads(raw)
    except ValueError:
        raise InvalidEvent(f"CLASS_NAMES must be a JSON list, got {raw!r}") from None
    return [str(n) for n in names]


def lambda_handler(event, context):
    threshold, names = _threshold(), _class_names()
    if isinstance(event, dict) and isinstance(event.get("cases"), list):
        return [filter_one(case, threshold, names) for case in event["cases"]]
    return filter_one(event, threshold, names)


def filter_one(event, threshold: float, names: list) -> dict:
    if not isinstance(event, dict):
        raise InvalidEvent(f"event must be an object, got {type(event).__name__}")
    inferences = event.get("inferences")
    if not isinstance(inferences, list) or not inferences:
        raise InvalidEvent(f"event has no 'inferences' list to threshold: got {inferences!r}")
    try:
        scores = [float(x) for x in inferences]
    except (TypeError, ValueError):
        raise InvalidEvent(f"'inferences' must hold numbers, got {inferences!r}") from None
    if not all(math.isfinite(x) for x in scores):
        raise InvalidEvent(f"'inferences' holds a non-finite number: {inferences!r}")
    label = max(range(len(scores)), key=scores.__getitem__)
    confidence = scores[label]
    return {
        "s3_bucket": event.get("s3_bucket"),
        "s3_key": event.get("s3_key"),
        "inferences": scores,
        "predicted_label": label,
        "predicted_class": names[label] if label < len(names) else str(label),
        "confidence": confidence,
        "threshold": threshold,
        "confident": confidence >= threshold,
    }
