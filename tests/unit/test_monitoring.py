"""Monitoring analysis, charts and report on generated capture files (pure; the task
bodies' S3 side against moto in-process)."""

from __future__ import annotations

import base64
import io
import json
import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from moto import mock_aws
from PIL import Image

from ml_workflow import monitoring as m
from ml_workflow import monitoring_charts as charts
from ml_workflow import s3_layout
from ml_workflow.cifar import png_bytes
from ml_workflow.settings import Settings, SettingsError, settings_from_env
from tests import capture_factory as cf
from tests.factories import class_image

CLASSES = ["bicycle", "motorcycle", "pickup_truck"]
H7 = datetime(2026, 11, 28, 7, tzinfo=UTC)
H8 = H7 + timedelta(hours=1)
TH = m.Thresholds(confidence=0.8, low_confidence_share=0.2, drift=0.2, drift_min_requests=50)
S = Settings(bucket="mon-test")


def _lst(n: int) -> str:
    return "".join(f"{i}\t{i % 3}\timg_{i:04d}.png\n" for i in range(n))


@pytest.fixture(scope="module")
def baseline() -> dict:
    rng = np.random.default_rng(42)
    images = [png_bytes(class_image(i % 3, rng)) for i in range(90)]
    return m.build_baseline(dataset_uri="s3://b/datasets/d/2026-11-27/", classes=CLASSES,
                            lst_text=_lst(90), images=images, images_total=90,
                            manifest={"published_at": "2026-11-27T00:00:00Z",
                                      "files": {"train.lst": "abc"}})


def _analyse(records, baseline, extra_lines=(), thresholds=TH):
    files = cf.capture_files(S, "ep", records, extra_lines=extra_lines)
    obs = m.analyse_files(files.items(), len(CLASSES))
    metrics = m.compute_metrics(obs, classes=CLASSES, thresholds=thresholds,
                                baseline=baseline, start=H7, end=H8,
                                context={"endpoint": "ep"})
    return files, obs, metrics


# --- interval ----------------------------------------------------------------------------

def test_scheduled_interval_is_read_exactly():
    start, end = m.resolve_interval(H7, H8, run_after=H8 + timedelta(minutes=3))
    assert (start, end) == (H7, H8)
    assert m.hours_in(start, end) == [H7]
    assert m.interval_id(start, end) == "2026-11-28T07"
    assert s3_layout.data_capture_hour_prefix(S, "ep", "AllTraffic", start) == \
        "data_capture/ep/AllTraffic/2026/11/28/07/"


def test_manual_run_without_interval_reads_the_hour_before_run_after():
    assert m.resolve_interval(None, None, H8 + timedelta(minutes=31)) == (H7, H8)
    # an empty interval (trigger-style timetables) means the same
    assert m.resolve_interval(H8, H8, H8 + timedelta(minutes=5)) == (H7, H8)


def test_longer_interval_lists_every_hour_and_converts_to_utc():
    cet = timezone(timedelta(hours=1))
    start, end = m.resolve_interval(datetime(2026, 11, 28, 8, 15, tzinfo=cet),
                                    datetime(2026, 11, 28, 10, 30, tzinfo=cet), H8)
    assert [h.hour for h in m.hours_in(start, end)] == [7, 8, 9]
    assert m.interval_id(start, end) == "2026-11-28T07-3h"


# --- parsing -----------------------------------------------------------------------------

def test_json_base64_and_csv_outputs_parse_alike():
    png = png_bytes(class_image(1, np.random.default_rng(0)))
    probs = [0.1, 0.7, 0.2]
    parsed = []
    for encoding in ("JSON", "BASE64"):
        rec = cf.capture_record(png, probs, H7, output_encoding=encoding)
        parsed.append(m.parse_line(json.dumps(rec), 3))
    csv = cf.capture_record(None, probs, H7)
    csv["captureData"]["endpointOutput"].update(data="0.1,0.7,0.2", encoding="CSV")
    when, csv_probs, image = m.parse_line(json.dumps(csv), 3)
    assert parsed[0] == parsed[1]
    assert parsed[0][1] == probs == csv_probs
    assert parsed[0][2] == png and image is None
    assert parsed[0][0] == when == H7.timestamp()


def test_malformed_lines_are_counted_by_reason_and_never_raised(baseline):
    records = cf.traffic(60, H7, seed=1)
    lines = [line for line, _ in cf.MALFORMED_LINES] + ["", "   "]
    files, obs, metrics = _analyse(records, baseline, extra_lines=lines)
    expected = {reason: 1 for _, reason in cf.MALFORMED_LINES}
    assert metrics["malformed"]["reasons"] == dict(sorted(expected.items()))
    assert metrics["malformed"]["count"] == len(cf.MALFORMED_LINES)
    assert metrics["requests"] == 60  # the good lines around them still count
    assert metrics["lines"] == 60 + len(cf.MALFORMED_LINES)  # blank lines are not lines
    first_file = sorted(files)[0]
    assert {x["file"] for x in metrics["malformed"]["examples"]} == {first_file}
    assert all(x["line"] > 1 for x in metrics["malformed"]["examples"])


def test_unreadable_or_missing_image_still_counts_the_request():
    obs = m.Observations(3)
    bad = cf.capture_record(b"not an image", [0.9, 0.05, 0.05], H7)
    missing = cf.capture_record(None, [0.9, 0.05, 0.05], H7)
    not_b64 = cf.capture_record(None, [0.9, 0.05, 0.05], H7)
    not_b64["captureData"]["endpointInput"] = {"data": "@@@", "encoding": "BASE64"}
    for rec in (bad, missing, not_b64):
        obs.add_line(json.dumps(rec), "f.jsonl", 1)
    assert obs.requests == 3
    assert (obs.images, obs.images_unreadable, obs.images_missing) == (0, 2, 1)
    assert obs.histograms.sum() == 0


def test_image_histograms_count_every_pixel_in_the_right_bin():
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)
    pixels[..., 0] = 255  # pure red: luma = 255 * 77 / 256 = 76 → bin 4
    hist = m.image_histograms(pixels)
    assert hist.shape == (4, m.HIST_BINS)
    assert (hist.sum(axis=1) == 32).all()
    assert hist[0, 76 >> 4] == 32
    assert hist[1, -1] == 32 and hist[2, 0] == 32 and hist[3, 0] == 32
    grey = png_bytes(np.full((3, 32, 32), 200, dtype=np.uint8))
    assert m.image_histograms(m.decode_image(grey))[0, 200 >> 4] == 1024


# --- drift -------------------------------------------------------------------------------

def test_psi_values():
    assert m.psi([1, 1, 1], [5, 5, 5]) == pytest.approx(0.0)
    expected = 0.4 * math.log(0.9 / 0.5) - 0.4 * math.log(0.1 / 0.5)
    assert m.psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected)
    assert math.isfinite(m.psi([1, 1], [1, 0]))  # an empty bin is floored, not infinite


def test_baseline_from_the_training_partition(baseline):
    assert baseline["class_counts"] == [30, 30, 30]
    assert baseline["class_shares"] == pytest.approx([1 / 3] * 3)
    assert baseline["images"] == {"sampled": 90, "unreadable": 0, "total": 90}
    for name in m.HIST_NAMES:
        assert sum(baseline["histograms"][name]) == pytest.approx(1.0)
    manifest = {"published_at": "2026-11-27T00:00:00Z", "files": {"train.lst": "abc"}}
    assert m.baseline_is_current(baseline, manifest)
    assert not m.baseline_is_current(baseline, {**manifest, "published_at": "later"})
    assert not m.baseline_is_current(None, manifest)
    assert m.sample_rows(list(range(10)), 4) == [0, 3, 6, 9]


def test_normal_traffic_metrics_and_no_alert(baseline):
    records = cf.traffic(200, H7, seed=2)
    _, obs, metrics = _analyse(records, baseline)
    conf = np.array(obs.confidence)
    assert metrics["requests"] == 200 and metrics["files"] == 8
    assert not metrics["no_traffic"]
    assert metrics["confidence"]["below_threshold"] == 10  # every 20th request
    assert metrics["confidence"]["below_threshold_share"] == 0.05
    p = metrics["confidence"]["percentiles"]
    assert list(p) == ["p5", "p25", "p50", "p75", "p95"]
    assert p["p50"] == pytest.approx(float(np.median(conf)), abs=1e-6)
    assert p["p5"] <= p["p25"] <= p["p50"] <= p["p75"] <= p["p95"]
    assert metrics["class_mix"]["counts"] == {"bicycle": 67, "motorcycle": 67,
                                              "pickup_truck": 66}
    assert metrics["images"]["analysed"] == 200
    drift = metrics["drift"]
    assert drift["evaluated"] and drift["test"] == "psi"
    assert set(drift["statistics"]) == {"class_mix", *m.HIST_NAMES}
    assert max(drift["statistics"].values()) < 0.05
    assert not drift["found"] and not metrics["alert"]["raise"]


def test_shifted_traffic_raises_one_alert_naming_both_reasons(baseline):
    _, _, metrics = _analyse(cf.traffic(120, H7, kind="shifted", seed=3), baseline)
    assert metrics["confidence"]["below_threshold_share"] == 1.0
    assert metrics["class_mix"]["shares"]["bicycle"] == 1.0
    drift = metrics["drift"]
    assert set(drift["drifted"]) == {"class_mix", *m.HIST_NAMES}
    assert all(v > 1.0 for v in drift["statistics"].values())
    alert = metrics["alert"]
    assert alert["raise"] and alert["low_confidence"] and alert["drift"]
    assert len(alert["reasons"]) == 2
    subject, body = m.alert_message(metrics, "s3://b/r/report.html", "s3://b/r/metrics.json")
    assert subject == "[model_monitor] ep 2026-11-28T07: drift and low confidence"
    assert len(subject) <= 100 and subject.isascii()
    doc = json.loads(body)
    assert doc["interval"] == {"id": "2026-11-28T07", "start": "2026-11-28T07:00:00Z",
                               "end": "2026-11-28T08:00:00Z"}
    assert doc["requests"] == 120 and doc["low_confidence"]["count"] == 120
    assert doc["drift"]["statistics"] == drift["statistics"]
    assert doc["report_uri"] == "s3://b/r/report.html"


def test_thresholds_from_the_settings_change_the_verdict(baseline):
    records = cf.traffic(100, H7, seed=4)
    strict = m.Thresholds(confidence=0.95, low_confidence_share=0.2, drift=0.2,
                          drift_min_requests=50)
    _, _, metrics = _analyse(records, baseline, thresholds=strict)
    assert metrics["confidence"]["below_threshold_share"] > 0.2
    assert metrics["alert"]["low_confidence"] and not metrics["alert"]["drift"]


def test_too_few_requests_do_not_judge_drift(baseline):
    _, _, metrics = _analyse(cf.traffic(10, H7, kind="shifted", seed=5), baseline)
    assert not metrics["drift"]["evaluated"] and not metrics["drift"]["found"]
    assert "too few" in metrics["drift"]["reason"]
    assert metrics["alert"]["reasons"] == [metrics["alert"]["reasons"][0]]
    assert metrics["alert"]["low_confidence"]


def test_no_baseline_means_no_drift_verdict():
    _, _, metrics = _analyse(cf.traffic(60, H7, seed=6), None)
    assert not metrics["drift"]["evaluated"]
    assert metrics["class_mix"]["baseline_shares"] is None
    html = charts.report_html(metrics, {})
    assert "Drift not evaluated: no baseline" in html and "nan" not in html


# --- charts and report -------------------------------------------------------------------

def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return im.size


def test_charts_and_self_contained_report(baseline):
    _, obs, metrics = _analyse(cf.traffic(90, H7, kind="shifted", seed=7), baseline,
                               extra_lines=["{bad"])
    metrics["endpoint"] = "ep<script>"
    pngs = charts.render_charts(obs, metrics)
    assert list(pngs) == list(charts.CHARTS)
    for data in pngs.values():
        width, height = _png_size(data)
        assert width >= 600 and height >= 400
    html = charts.report_html(metrics, pngs)
    uris = html.count("src='data:image/png;base64,")
    assert uris == 4
    first = html.split("src='data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(first) == pngs["confidence_over_time.png"]
    assert "<script>" not in html and "ep&lt;script&gt;" in html
    assert "Alert:" in html and "not_json" in html
    assert "http://" not in html and "https://" not in html  # nothing to fetch


def test_empty_interval_report_says_no_traffic(baseline):
    obs = m.analyse_files([], len(CLASSES))
    metrics = m.compute_metrics(obs, classes=CLASSES, thresholds=TH, baseline=baseline,
                                start=H7, end=H8, context={"endpoint": "ep"})
    assert metrics["no_traffic"] and metrics["requests"] == 0
    assert not metrics["alert"]["raise"]
    assert metrics["confidence"]["percentiles"] == {}
    assert charts.render_charts(obs, metrics) == {}
    html = charts.report_html(metrics, {})
    assert "No traffic" in html and "data:image/png" not in html


def test_monitor_settings_defaults_and_validation():
    s = settings_from_env({})
    assert (s.drift_threshold, s.low_confidence_alert_share, s.drift_min_requests) == \
        (0.2, 0.2, 50)
    s = settings_from_env({"ML_WORKFLOW_DRIFT_THRESHOLD": "0.3",
                           "ML_WORKFLOW_DRIFT_MIN_REQUESTS": "100"})
    assert (s.drift_threshold, s.drift_min_requests) == (0.3, 100)
    with pytest.raises(SettingsError, match="low_confidence_alert_share"):
        settings_from_env({"ML_WORKFLOW_LOW_CONFIDENCE_ALERT_SHARE": "2"})


# --- task bodies, S3 side (moto in-process) ----------------------------------------------

@pytest.fixture
def s3_tasks(monkeypatch):
    from ml_workflow import monitor_tasks

    with mock_aws():
        import boto3

        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=S.bucket)
        monkeypatch.setattr(monitor_tasks, "load_settings", lambda: S)
        monkeypatch.setattr(monitor_tasks, "_s3", lambda s: s3)
        yield monitor_tasks, s3


def _publish_partition(s3, prefix: str, published_at: str, n: int = 30) -> None:
    rng = np.random.default_rng(0)
    lst = _lst(n)
    for _, rel in m.lst_rows(lst):
        s3.put_object(Bucket=S.bucket, Key=prefix + "train/" + rel,
                      Body=png_bytes(class_image(int(rel[4:8]) % 3, rng)))
    s3.put_object(Bucket=S.bucket, Key=prefix + "train.lst", Body=lst.encode())
    s3.put_object(Bucket=S.bucket, Key=prefix + s3_layout.MANIFEST, Body=json.dumps(
        {"classes": CLASSES, "published_at": published_at,
         "files": {"train.lst": published_at}}).encode())


def _plan(prefix: str, hours: list[datetime]) -> dict:
    return {"endpoint": "ep", "variant": "AllTraffic", "ds": m.interval_id(H7, H8),
            "interval": {"start": H7.isoformat(), "end": H8.isoformat()},
            "hour_prefixes": [s3_layout.data_capture_hour_prefix(S, "ep", "AllTraffic", h)
                              for h in hours],
            "bucket": S.bucket, "report_prefix": s3_layout.report_prefix(S, "2026-11-28T07"),
            "thresholds": TH.as_dict(), "send_alerts": True, "registered": True,
            "model": {"training_job": "job-1", "dataset": f"s3://{S.bucket}/{prefix}",
                      "classes": CLASSES}}


def test_baseline_is_computed_once_per_publication(s3_tasks):
    tasks, s3 = s3_tasks
    prefix = "datasets/d/2026-11-27/"
    _publish_partition(s3, prefix, "t1")
    plan = _plan(prefix, [H7])
    first = tasks.ensure_baseline(plan)
    assert first["class_counts"] == [10, 10, 10] and first["images"]["sampled"] == 30
    stored = s3.get_object(Bucket=S.bucket, Key=prefix + "_BASELINE.json")
    assert json.loads(stored["Body"].read()) == first
    assert tasks.ensure_baseline(plan)["computed_at"] == first["computed_at"]  # reused
    _publish_partition(s3, prefix, "t2", n=12)  # republished: recomputed
    assert tasks.ensure_baseline(plan)["class_counts"] == [4, 4, 4]
    s3.delete_object(Bucket=S.bucket, Key=prefix + s3_layout.MANIFEST)
    assert tasks.ensure_baseline(plan) is None  # unpublished: no drift verdict, no failure


def test_analyse_reads_only_the_interval_and_replaces_an_earlier_report(s3_tasks):
    tasks, s3 = s3_tasks
    prefix = "datasets/d/2026-11-27/"
    _publish_partition(s3, prefix, "t1")
    plan = _plan(prefix, [H7])
    base = tasks.ensure_baseline(plan)
    before, inside, after = (cf.traffic(n, H7 + timedelta(hours=dh), seed=dh + 10)
                             for n, dh in ((7, -1), (60, 0), (9, 1)))
    cf.put_files(s3, S.bucket, cf.capture_files(S, "ep", before + inside + after,
                                                extra_lines=["{bad"]))
    s3.put_object(Bucket=S.bucket, Key=plan["report_prefix"] + "old_chart.png", Body=b"x")
    summary = tasks.analyse_interval(plan, base)
    assert summary["requests"] == 60 and summary["malformed"] == 0  # "{bad" went to 06:00
    assert summary["message"] is None and not summary["drift"]["found"]
    keys = {o["Key"] for o in s3.list_objects_v2(
        Bucket=S.bucket, Prefix=plan["report_prefix"])["Contents"]}
    assert keys == {plan["report_prefix"] + n for n in
                    ("report.html", "metrics.json", *charts.CHARTS)}
    metrics = json.loads(s3.get_object(Bucket=S.bucket, Key=plan["report_prefix"]
                                       + "metrics.json")["Body"].read())
    assert metrics["requests"] == 60 and metrics["interval"]["hours"] == ["2026/11/28/07"]
    assert metrics["baseline"] == f"s3://{S.bucket}/{prefix}_BASELINE.json"
    assert summary["report_uri"] == metrics["report_uri"]
