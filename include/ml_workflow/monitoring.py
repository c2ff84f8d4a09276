"""What one data interval of captured endpoint traffic says; pure (numpy + Pillow), no AWS,
no Airflow.

This module owns:

* the run's interval: whole UTC hours ``[start, end)``; a run without an interval (a manual
  run with no logical date) or with an empty one looks at the hour before ``run_after``;
* parsing SageMaker Data Capture lines (input: base64 image; output: JSON probabilities,
  plain or base64 — CSV also accepted). A line that cannot be used is counted under a reason
  and skipped, never raised; a record whose image cannot be decoded still counts as a
  request (it only misses from the image statistics);
* image statistics: 16-bin histograms of brightness (BT.601 luma) and of R, G and B, summed
  over every pixel of every image;
* the training baseline: class mix of the training ``.lst`` and the same histograms over
  (a sample of) the training PNGs;
* drift: the Population Stability Index (PSI) of the predicted class mix and of each
  histogram against the baseline, judged only from ``drift_min_requests`` requests on
  (below that, PSI is mostly sampling noise);
* the metrics document (``metrics.json``) and the alert decision + SNS message.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from PIL import Image

HIST_BINS = 16
HIST_NAMES = ("brightness", "red", "green", "blue")
PERCENTILES = (5, 25, 50, 75, 95)
BASELINE_FORMAT = 1
DRIFT_TEST = "psi"
PSI_EPSILON = 1e-4  # share floor: an empty bin must not make PSI infinite
MAX_IMAGE_PIXELS = 4096 * 4096
PROBABILITY_SUM_TOLERANCE = 0.01
MAX_EXAMPLES = 10

_HOUR = timedelta(hours=1)
_SHIFT = 8 - int(math.log2(HIST_BINS))
_LUMA = np.array([77, 150, 29], dtype=np.uint16)  # BT.601 weights x 256 (sum 256)
_CHANNEL_OFFSETS = np.array([0, HIST_BINS, 2 * HIST_BINS], dtype=np.uint8)


# --- the interval ------------------------------------------------------------------------

def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _floor_hour(value: datetime) -> datetime:
    return _utc(value).replace(minute=0, second=0, microsecond=0)


def resolve_interval(start: datetime | None, end: datetime | None,
                     run_after: datetime) -> tuple[datetime, datetime]:
    """The whole UTC hours a run reads: ``[start, end)`` widened to hour boundaries; the
    hour before ``run_after`` when the run has no interval or an empty one."""
    if start is None or end is None or _utc(end) <= _utc(start):
        anchor = _floor_hour(end if end is not None else run_after)
        return anchor - _HOUR, anchor
    first = _floor_hour(start)
    last = _floor_hour(end)
    if last < _utc(end):
        last += _HOUR
    return first, last


def hours_in(start: datetime, end: datetime) -> list[datetime]:
    """Start of every UTC hour in ``[start, end)``."""
    hours, hour = [], _floor_hour(start)
    while hour < _utc(end):
        hours.append(hour)
        hour += _HOUR
    return hours


def interval_id(start: datetime, end: datetime) -> str:
    """``2026-11-28T07`` for one hour; ``2026-11-28T07-3h`` for three (a key-safe name)."""
    n = len(hours_in(start, end))
    return f"{_utc(start):%Y-%m-%dT%H}" + ("" if n == 1 else f"-{n}h")


def _iso(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- images ------------------------------------------------------------------------------

class UnreadableImage(ValueError):
    """The captured input is not an image Pillow can read (or is too large)."""


def decode_image(data: bytes) -> np.ndarray:
    """An encoded image (PNG, JPEG, ...) → HxWx3 uint8 RGB."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise UnreadableImage(f"image of {im.width}x{im.height} pixels is too large")
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except UnreadableImage:
        raise
    except Exception as exc:  # Pillow raises many kinds for bad bytes
        raise UnreadableImage(str(exc)) from None


def image_histograms(pixels: np.ndarray) -> np.ndarray:
    """Pixel counts per bin, shape ``(4, HIST_BINS)``: brightness, red, green, blue."""
    px = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1, 3)
    counts = np.empty((len(HIST_NAMES), HIST_BINS), dtype=np.int64)
    luma = (px.astype(np.uint16) @ _LUMA) >> 8
    counts[0] = np.bincount(luma >> _SHIFT, minlength=HIST_BINS)
    channels = (px >> _SHIFT) + _CHANNEL_OFFSETS
    counts[1:] = np.bincount(channels.ravel(), minlength=3 * HIST_BINS).reshape(3, HIST_BINS)
    return counts


# --- capture records ---------------------------------------------------------------------

class MalformedRecord(ValueError):
    """A capture line that cannot be used; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _output_probabilities(output: object, n_classes: int) -> list[float]:
    if not isinstance(output, dict):
        raise MalformedRecord("no_output", "captureData.endpointOutput is missing")
    data, encoding = output.get("data"), str(output.get("encoding") or "").upper()
    if not isinstance(data, str):
        raise MalformedRecord("no_output", "endpointOutput.data is not a string")
    if encoding == "BASE64":
        try:
            data = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise MalformedRecord("output_undecodable", "bad base64 / not UTF-8") from None
    try:
        values = json.loads(data)
    except ValueError:
        try:  # a CSV-encoded answer: "0.1,0.9"
            values = [float(v) for v in data.strip().split(",")]
        except ValueError:
            raise MalformedRecord("output_undecodable", "neither JSON nor CSV") from None
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)):
        raise MalformedRecord("output_not_probabilities", "not a list of numbers")
    if len(values) != n_classes:
        raise MalformedRecord("wrong_class_count",
                              f"{len(values)} probabilities for {n_classes} classes")
    if (not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
            or abs(sum(values) - 1.0) > PROBABILITY_SUM_TOLERANCE):
        raise MalformedRecord("output_not_probabilities", "values do not sum to 1")
    return [float(v) for v in values]


def _inference_time(metadata: object) -> float:
    raw = metadata.get("inferenceTime") if isinstance(metadata, dict) else None
    if not isinstance(raw, str):
        raise MalformedRecord("bad_inference_time", "eventMetadata.inferenceTime is missing")
    try:
        return _utc(datetime.fromisoformat(raw)).timestamp()
    except ValueError:
        raise MalformedRecord("bad_inference_time", repr(raw[:40])) from None


def _input_image(capture: dict) -> bytes | None:
    inp = capture.get("endpointInput")
    if not isinstance(inp, dict) or not isinstance(inp.get("data"), str):
        return None
    if str(inp.get("encoding") or "").upper() != "BASE64":
        return None
    try:
        return base64.b64decode(inp["data"], validate=True)
    except binascii.Error:
        return b""


def parse_line(line: str | bytes, n_classes: int) -> tuple[float, list[float], bytes | None]:
    """One capture line → (inference time as epoch seconds, probabilities, image bytes or
    None when the input was not captured). Raises MalformedRecord."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRecord("not_json") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("captureData"), dict):
        raise MalformedRecord("no_capture_data", "no captureData object")
    capture = doc["captureData"]
    probabilities = _output_probabilities(capture.get("endpointOutput"), n_classes)
    return _inference_time(doc.get("eventMetadata")), probabilities, _input_image(capture)


@dataclass
class Observations:
    """Everything read from one interval's capture files, accumulated file by file."""

    n_classes: int
    files: int = 0
    lines: int = 0
    times: list[float] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    histograms: np.ndarray = field(
        default_factory=lambda: np.zeros((len(HIST_NAMES), HIST_BINS), dtype=np.int64))
    images: int = 0
    images_missing: int = 0
    images_unreadable: int = 0
    malformed: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.confidence)

    def _note(self, source: str, lineno: int, reason: str, detail: str = "") -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"file": source, "line": lineno, "reason": reason,
                                  "detail": detail[:200]})

    def add_line(self, line: str | bytes, source: str = "", lineno: int = 0) -> None:
        if not line.strip():
            return
        self.lines += 1
        try:
            when, probabilities, image = parse_line(line, self.n_classes)
        except MalformedRecord as exc:
            self.malformed[exc.reason] += 1
            self._note(source, lineno, exc.reason, str(exc))
            return
        best = max(range(self.n_classes), key=probabilities.__getitem__)
        self.times.append(when)
        self.confidence.append(probabilities[best])
        self.predicted.append(best)
        if image is None:
            self.images_missing += 1
            return
        try:
            self.histograms += image_histograms(decode_image(image))
            self.images += 1
        except UnreadableImage as exc:
            self.images_unreadable += 1
            self._note(source, lineno, "image_unreadable", str(exc))

    def add_file(self, source: str, body: bytes) -> None:
        self.files += 1
        for lineno, line in enumerate(body.splitlines(), start=1):
            self.add_line(line, source, lineno)


def analyse_files(files: Iterable[tuple[str, bytes]], n_classes: int) -> Observations:
    obs = Observations(n_classes)
    for source, body in files:
        obs.add_file(source, body)
    return obs


# --- baseline ----------------------------------------------------------------------------

def lst_rows(lst_text: str) -> list[tuple[int, str]]:
    """``index<TAB>label<TAB>relative/path`` lines → [(label, path)]."""
    rows = []
    for line in lst_text.splitlines():
        if line.strip():
            _, label, rel = line.split("\t")
            rows.append((int(float(label)), rel.strip()))
    return rows


def sample_rows(rows: list, max_rows: int) -> list:
    """Every k-th row, at most ``max_rows`` (deterministic)."""
    step = max(1, math.ceil(len(rows) / max_rows))
    return rows[::step][:max_rows]


def build_baseline(*, dataset_uri: str, classes: list[str], lst_text: str,
                   images: Iterable[bytes], manifest: dict, images_total: int) -> dict:
    """The baseline document of a training partition (see module docstring)."""
    counts = [0] * len(classes)
    for label, _ in lst_rows(lst_text):
        if not 0 <= label < len(classes):
            raise ValueError(f"train.lst has label {label} for {len(classes)} classes")
        counts[label] += 1
    histograms = np.zeros((len(HIST_NAMES), HIST_BINS), dtype=np.int64)
    sampled = unreadable = 0
    for data in images:
        try:
            histograms += image_histograms(decode_image(data))
            sampled += 1
        except UnreadableImage:
            unreadable += 1
    return {
        "format_version": BASELINE_FORMAT,
        "dataset": dataset_uri,
        "manifest": _manifest_identity(manifest),
        "classes": list(classes),
        "class_counts": counts,
        "class_shares": _shares(counts).tolist(),
        "images": {"sampled": sampled, "unreadable": unreadable, "total": images_total},
        "histogram_bins": HIST_BINS,
        "histograms": {name: _shares(histograms[i]).round(8).tolist()
                       for i, name in enumerate(HIST_NAMES)},
        "computed_at": _iso(datetime.now(UTC)),
    }


def _manifest_identity(manifest: dict) -> dict:
    return {"published_at": manifest.get("published_at"),
            "train_lst_md5": (manifest.get("files") or {}).get("train.lst")}


def baseline_is_current(baseline: dict | None, manifest: dict) -> bool:
    """True when the stored baseline was computed, by this code, from this publication."""
    return bool(baseline) and (
        baseline.get("format_version") == BASELINE_FORMAT
        and baseline.get("histogram_bins") == HIST_BINS
        and baseline.get("manifest") == _manifest_identity(manifest))


# --- drift -------------------------------------------------------------------------------

def _shares(counts) -> np.ndarray:
    values = np.asarray(counts, dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else np.zeros_like(values)


def psi(expected, actual) -> float:
    """Population Stability Index of ``actual`` against ``expected`` (counts or shares):
    sum((a - e) * ln(a / e)) over bins, shares floored at PSI_EPSILON. 0 = identical;
    the usual reading: < 0.1 stable, 0.1-0.2 some change, > 0.2 a shift."""
    e = np.clip(_shares(expected), PSI_EPSILON, None)
    a = np.clip(_shares(actual), PSI_EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class Thresholds:
    confidence: float
    low_confidence_share: float
    drift: float
    drift_min_requests: int

    def as_dict(self) -> dict:
        return {"confidence": self.confidence, "low_confidence_share":
                self.low_confidence_share, "drift": self.drift,
                "drift_min_requests": self.drift_min_requests}


def drift(obs: Observations, baseline: dict | None, classes: list[str],
          thresholds: Thresholds) -> dict:
    """PSI of the class mix and image histograms against the baseline, and the verdict."""
    out = {"test": DRIFT_TEST, "threshold": thresholds.drift,
           "min_requests": thresholds.drift_min_requests, "evaluated": False,
           "statistics": {}, "drifted": [], "found": False}
    if not baseline:
        out["reason"] = "no baseline for the training partition"
        return out
    if list(baseline.get("classes") or []) != list(classes):
        out["reason"] = (f"the baseline's classes {baseline.get('classes')} differ from the "
                         f"serving model's {classes}")
        return out
    if obs.requests < thresholds.drift_min_requests:
        out["reason"] = (f"{obs.requests} requests: fewer than {thresholds.drift_min_requests}"
                         ", too few to judge drift")
        return out
    mix = np.bincount(np.asarray(obs.predicted, dtype=np.int64), minlength=len(classes))
    stats = {"class_mix": psi(baseline["class_shares"], mix)}
    if obs.images >= thresholds.drift_min_requests:
        for i, name in enumerate(HIST_NAMES):
            stats[name] = psi(baseline["histograms"][name], obs.histograms[i])
    else:
        out["images_reason"] = (f"{obs.images} readable images: too few to judge image "
                                "drift")
    out["evaluated"] = True
    out["statistics"] = {k: round(v, 6) for k, v in stats.items()}
    out["drifted"] = [k for k, v in stats.items() if v > thresholds.drift]
    out["found"] = bool(out["drifted"])
    return out


# --- metrics and alert -------------------------------------------------------------------

def compute_metrics(obs: Observations, *, classes: list[str], thresholds: Thresholds,
                    baseline: dict | None, start: datetime, end: datetime,
                    context: dict | None = None) -> dict:
    """The ``metrics.json`` document of one interval."""
    conf = np.asarray(obs.confidence, dtype=np.float64)
    n = int(conf.size)
    below = int(np.count_nonzero(conf < thresholds.confidence)) if n else 0
    mix = np.bincount(np.asarray(obs.predicted, dtype=np.int64), minlength=len(classes))
    metrics = {
        **(context or {}),
        "interval": {"id": interval_id(start, end), "start": _iso(start), "end": _iso(end),
                     "hours": [f"{h:%Y/%m/%d/%H}" for h in hours_in(start, end)]},
        "thresholds": thresholds.as_dict(),
        "no_traffic": n == 0,
        "files": obs.files,
        "lines": obs.lines,
        "requests": n,
        "malformed": {"count": sum(obs.malformed.values()),
                      "reasons": dict(sorted(obs.malformed.items())),
                      "examples": obs.examples},
        "images": {"analysed": obs.images, "unreadable": obs.images_unreadable,
                   "not_captured": obs.images_missing},
        "confidence": {
            "threshold": thresholds.confidence,
            "mean": round(float(conf.mean()), 6) if n else None,
            "min": round(float(conf.min()), 6) if n else None,
            "max": round(float(conf.max()), 6) if n else None,
            "percentiles": ({f"p{p}": round(float(v), 6) for p, v in
                             zip(PERCENTILES, np.percentile(conf, PERCENTILES), strict=True)}
                            if n else {}),
            "below_threshold": below,
            "below_threshold_share": round(below / n, 6) if n else 0.0,
        },
        "class_mix": {
            "classes": list(classes),
            "counts": {c: int(mix[i]) for i, c in enumerate(classes)},
            "shares": {c: round(float(s), 6) for c, s in zip(classes, _shares(mix),
                                                             strict=True)},
            "baseline_shares": ({c: round(float(s), 6) for c, s in
                                 zip(classes, baseline["class_shares"], strict=True)}
                                if baseline and len(baseline.get("class_shares", []))
                                == len(classes) else None),
        },
        "image_histograms": {
            "bins": HIST_BINS,
            "traffic": {name: _shares(obs.histograms[i]).round(6).tolist()
                        for i, name in enumerate(HIST_NAMES)} if obs.images else None,
            "baseline": (baseline or {}).get("histograms"),
        },
        "drift": drift(obs, baseline, classes, thresholds),
    }
    metrics["alert"] = alert_reasons(metrics)
    return metrics


def alert_reasons(metrics: dict) -> dict:
    """Whether the interval crosses a threshold, and why (one alert per interval)."""
    reasons = []
    conf, th = metrics["confidence"], metrics["thresholds"]
    if metrics["requests"] and conf["below_threshold_share"] > th["low_confidence_share"]:
        reasons.append(f"low confidence: {conf['below_threshold_share']:.1%} of "
                       f"{metrics['requests']} requests below {conf['threshold']} (alert above "
                       f"{th['low_confidence_share']:.0%})")
    d = metrics["drift"]
    if d["found"]:
        stats = ", ".join(f"{k} {d['statistics'][k]:.3f}" for k in d["drifted"])
        reasons.append(f"drift: PSI {stats} (threshold {d['threshold']})")
    return {"raise": bool(reasons), "low_confidence": metrics["requests"] > 0 and
            conf["below_threshold_share"] > th["low_confidence_share"],
            "drift": d["found"], "reasons": reasons}


def alert_message(metrics: dict, report_uri: str, metrics_uri: str) -> tuple[str, str]:
    """(subject, JSON body) of the interval's single SNS alert."""
    what = [w for w, on in (("drift", metrics["alert"]["drift"]),
                            ("low confidence", metrics["alert"]["low_confidence"])) if on]
    interval = metrics["interval"]
    subject = (f"[model_monitor] {metrics.get('endpoint', 'endpoint')} "
               f"{interval['id']}: {' and '.join(what) or 'no alert'}")
    subject = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in subject)[:100]
    d = metrics["drift"]
    body = {
        "endpoint": metrics.get("endpoint"),
        "interval": {k: interval[k] for k in ("id", "start", "end")},
        "reasons": metrics["alert"]["reasons"],
        "requests": metrics["requests"],
        "malformed_lines": metrics["malformed"]["count"],
        "low_confidence": {"threshold": metrics["confidence"]["threshold"],
                           "count": metrics["confidence"]["below_threshold"],
                           "share": metrics["confidence"]["below_threshold_share"],
                           "alert_share": metrics["thresholds"]["low_confidence_share"]},
        "class_mix": {"shares": metrics["class_mix"]["shares"],
                      "baseline_shares": metrics["class_mix"]["baseline_shares"]},
        "drift": {"test": d["test"], "threshold": d["threshold"],
                  "statistics": d["statistics"], "drifted": d["drifted"]},
        "report_uri": report_uri,
        "metrics_uri": metrics_uri,
    }
    return subject, json.dumps(body, indent=2)
