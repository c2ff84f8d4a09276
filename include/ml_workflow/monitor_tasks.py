"""The model_monitor DAG's task bodies: plan the interval from the registry, keep the
training partition's baseline, analyse the interval's capture files into metrics, charts and
a report in S3, prepare the one SNS alert of the interval, describe the drift event.

The analysis itself is ``ml_workflow.monitoring`` (pure) and ``ml_workflow.monitoring_charts``;
this module only moves bytes with the provider's hooks and decides what a run does.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.hooks.sns import SnsHook
from airflow.sdk.exceptions import AirflowFailException

from ml_workflow import etl, monitoring, registry, s3_layout
from ml_workflow.sagemaker_requests import VARIANT
from ml_workflow.settings import Settings, load_settings

log = logging.getLogger(__name__)
BASELINE_MAX_IMAGES = 2000
S3_THREADS = 8


def _s3(s: Settings):
    return S3Hook(aws_conn_id=s.aws_conn_id).get_conn()


def _split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _threshold(params: dict, name: str, default: float) -> float:
    value = params.get(name)
    return float(default if value is None or value == "" else value)


def plan_monitoring(params: dict, data_interval_start: datetime | None,
                    data_interval_end: datetime | None, run_after: datetime) -> dict:
    """Which endpoint, hours, model, partition and thresholds the run uses."""
    s = load_settings()
    endpoint = params.get("endpoint_name") or s.endpoint_name
    if params.get("hour"):
        start = datetime.strptime(params["hour"], "%Y-%m-%dT%H").replace(tzinfo=UTC)
        end = start + timedelta(hours=1)
    else:
        start, end = monitoring.resolve_interval(data_interval_start, data_interval_end,
                                                 run_after)
    try:
        thresholds = monitoring.Thresholds(
            confidence=_threshold(params, "confidence_threshold", s.confidence_threshold),
            low_confidence_share=_threshold(params, "low_confidence_alert_share",
                                            s.low_confidence_alert_share),
            drift=_threshold(params, "drift_threshold", s.drift_threshold),
            drift_min_requests=int(_threshold(params, "drift_min_requests",
                                              s.drift_min_requests)))
        for name in ("confidence", "low_confidence_share"):
            if not 0.0 <= getattr(thresholds, name) <= 1.0:
                raise ValueError(f"threshold {name} must be between 0 and 1")
        if thresholds.drift <= 0 or thresholds.drift_min_requests < 1:
            raise ValueError("drift threshold and drift_min_requests must be positive")
    except (TypeError, ValueError) as exc:
        raise AirflowFailException(f"bad threshold: {exc}") from None
    ds = monitoring.interval_id(start, end)
    report_ds = ds if endpoint == s.endpoint_name else f"{endpoint}/{ds}"
    report_prefix = s3_layout.report_prefix(s, report_ds)
    registry_key = s3_layout.registry_key(s, endpoint)
    serving = registry.read(_s3(s), s.bucket, registry_key).get("serving")
    plan = {
        "endpoint": endpoint, "variant": VARIANT, "ds": ds,
        "interval": {"start": start.isoformat(), "end": end.isoformat()},
        "hour_prefixes": [s3_layout.data_capture_hour_prefix(s, endpoint, VARIANT, h)
                          for h in monitoring.hours_in(start, end)],
        "bucket": s.bucket, "report_prefix": report_prefix,
        "thresholds": thresholds.as_dict(),
        "send_alerts": bool(params.get("send_alerts", True)),
        "registered": bool(serving), "registry": f"s3://{s.bucket}/{registry_key}",
    }
    if not serving:
        log.warning("no model is registered for endpoint %s (s3://%s/%s): nothing to "
                    "monitor; run train_deploy first. The run ends here.", endpoint,
                    s.bucket, registry_key)
        return plan
    classes = list(serving.get("classes") or [])
    if len(classes) < 2 or not str(serving.get("dataset", "")).startswith("s3://"):
        raise AirflowFailException(f"registry s3://{s.bucket}/{registry_key} has no usable "
                                   f"'classes' / 'dataset' for the serving model: {serving}")
    plan["model"] = {"training_job": serving.get("training_job"),
                     "dataset": serving["dataset"], "classes": classes,
                     "deployed_at": serving.get("deployed_at")}
    log.info("monitoring %s, interval %s → %s (%s), capture prefixes %s; model %s trained on "
             "%s; thresholds %s; reports to s3://%s/%s", endpoint, start, end, ds,
             plan["hour_prefixes"], plan["model"]["training_job"], serving["dataset"],
             plan["thresholds"], s.bucket, report_prefix)
    return plan


def _get(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def ensure_baseline(plan: dict) -> dict | None:
    """The training partition's baseline: read from ``_BASELINE.json`` when it matches the
    published manifest, else computed from ``train.lst`` and the training PNGs and stored.
    None (drift not judged, the run goes on) when the partition is not published."""
    s = load_settings()
    s3 = _s3(s)
    dataset = plan["model"]["dataset"]
    bucket, prefix = _split_uri(dataset)
    prefix = prefix.rstrip("/") + "/"
    try:
        manifest = etl.read_manifest(s3, bucket, prefix)
    except FileNotFoundError as exc:
        log.warning("no baseline, drift will not be judged: %s", exc)
        return None
    key = s3_layout.baseline_key(prefix)
    try:
        stored = json.loads(_get(s3, bucket, key))
    except s3.exceptions.NoSuchKey:
        stored = None
    if monitoring.baseline_is_current(stored, manifest):
        log.info("baseline s3://%s/%s is current (computed %s)", bucket, key,
                 stored.get("computed_at"))
        return stored
    lst_text = _get(s3, bucket, prefix + "train.lst").decode()
    rows = monitoring.lst_rows(lst_text)
    sample = monitoring.sample_rows(rows, BASELINE_MAX_IMAGES)
    with ThreadPoolExecutor(S3_THREADS) as pool:
        images = list(pool.map(lambda row: _get(s3, bucket, prefix + "train/" + row[1]),
                               sample))
    try:
        baseline = monitoring.build_baseline(
            dataset_uri=f"s3://{bucket}/{prefix}", classes=list(manifest["classes"]),
            lst_text=lst_text, images=images, manifest=manifest, images_total=len(rows))
    except ValueError as exc:
        raise AirflowFailException(f"cannot compute the baseline of {dataset}: {exc}") from None
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(baseline, indent=2).encode(),
                  ContentType="application/json")
    log.info("computed baseline s3://%s/%s from %d of %d training images; class shares %s",
             bucket, key, baseline["images"]["sampled"], len(rows), baseline["class_shares"])
    return baseline


def _list_keys(s3, bucket: str, prefix: str, delimiter: str | None = None) -> list[str]:
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(**kwargs)
            for o in page.get("Contents", [])]


def _browser_link(s3, bucket: str, key: str, region: str) -> str:
    endpoint = s3.meta.endpoint_url or ""
    if "amazonaws.com" in endpoint or not endpoint:
        return (f"https://s3.console.aws.amazon.com/s3/object/{bucket}?region={region}"
                f"&prefix={urllib.parse.quote(key)}")
    return f"{endpoint.rstrip('/')}/{bucket}/{urllib.parse.quote(key)}"


def read_capture(s3, bucket: str, hour_prefixes: list[str],
                 n_classes: int) -> monitoring.Observations:
    """Every ``.jsonl`` file under exactly these hour prefixes, parsed in key order."""
    keys = sorted(k for prefix in hour_prefixes
                  for k in _list_keys(s3, bucket, prefix) if k.endswith(".jsonl"))
    log.info("%d capture files in %d hour prefixes", len(keys), len(hour_prefixes))
    obs = monitoring.Observations(n_classes)
    with ThreadPoolExecutor(S3_THREADS) as pool:
        for key, body in zip(keys, pool.map(lambda k: _get(s3, bucket, k), keys),
                             strict=True):
            obs.add_file(key, body)
    return obs


def analyse_interval(plan: dict, baseline: dict | None) -> dict:
    """Read exactly the interval's capture files; write charts, report.html and
    metrics.json under the report prefix (replacing an earlier run's); return a summary."""
    from ml_workflow import monitoring_charts  # matplotlib: only in the task that draws

    s = load_settings()
    s3 = _s3(s)
    bucket, model = plan["bucket"], plan["model"]
    obs = read_capture(s3, bucket, plan["hour_prefixes"], len(model["classes"]))
    start = datetime.fromisoformat(plan["interval"]["start"])
    end = datetime.fromisoformat(plan["interval"]["end"])
    thresholds = monitoring.Thresholds(**plan["thresholds"])
    data_bucket, data_prefix = _split_uri(model["dataset"])
    prefix = plan["report_prefix"]
    report_key, metrics_key = prefix + "report.html", prefix + "metrics.json"
    report_uri, metrics_uri = f"s3://{bucket}/{report_key}", f"s3://{bucket}/{metrics_key}"
    metrics = monitoring.compute_metrics(
        obs, classes=model["classes"], thresholds=thresholds, baseline=baseline,
        start=start, end=end, context={
            "endpoint": plan["endpoint"], "variant": plan["variant"], "model": model,
            "baseline": (f"s3://{data_bucket}/{s3_layout.baseline_key(data_prefix)}"
                         if baseline else None),
            "report_uri": report_uri, "metrics_uri": metrics_uri,
            "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    if obs.malformed:
        log.warning("skipped %d malformed lines: %s; first: %s", sum(obs.malformed.values()),
                    dict(obs.malformed), obs.examples[:3])
    charts = monitoring_charts.render_charts(obs, metrics)
    metrics["charts"] = [f"s3://{bucket}/{prefix}{name}" for name in charts]
    html = monitoring_charts.report_html(metrics, charts)

    written = set()
    for name, png in charts.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=png, ContentType="image/png")
        written.add(prefix + name)
    s3.put_object(Bucket=bucket, Key=report_key, Body=html.encode(),
                  ContentType="text/html; charset=utf-8")
    s3.put_object(Bucket=bucket, Key=metrics_key, ContentType="application/json",
                  Body=json.dumps(metrics, indent=2).encode())
    written |= {report_key, metrics_key}
    stale = [k for k in _list_keys(s3, bucket, prefix, delimiter="/") if k not in written]
    if stale:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale]})

    conf, drift = metrics["confidence"], metrics["drift"]
    if metrics["no_traffic"]:
        log.info("no traffic in %s: %d capture files, no request", plan["ds"], obs.files)
    else:
        log.info("%d requests, %d malformed lines; confidence p50 %s, %.1f%% below %s; "
                 "class mix %s; drift (%s) %s", metrics["requests"],
                 metrics["malformed"]["count"], conf["percentiles"].get("p50"),
                 100 * conf["below_threshold_share"], conf["threshold"],
                 metrics["class_mix"]["shares"], drift["test"],
                 drift["statistics"] or drift.get("reason"))
    log.info("report: %s (open: %s)", report_uri,
             _browser_link(s3, bucket, report_key, s.region))
    log.info("metrics: %s", metrics_uri)
    summary = {"ds": plan["ds"], "endpoint": plan["endpoint"], "interval": metrics["interval"],
               "requests": metrics["requests"], "malformed": metrics["malformed"]["count"],
               "below_threshold_share": conf["below_threshold_share"],
               "drift": {k: drift[k] for k in ("test", "threshold", "evaluated", "statistics",
                                               "drifted", "found")},
               "alert": metrics["alert"], "report_uri": report_uri,
               "metrics_uri": metrics_uri, "dataset": model["dataset"], "message": None}
    if metrics["alert"]["raise"]:
        subject, body = monitoring.alert_message(metrics, report_uri, metrics_uri)
        summary["message"] = {"subject": subject, "body": body}
        log.warning("threshold crossed: %s", "; ".join(metrics["alert"]["reasons"]))
    return summary


def should_alert(plan: dict, summary: dict) -> bool:
    if not summary["alert"]["raise"]:
        log.info("no threshold crossed in %s: no alert", summary["ds"])
        return False
    if not plan["send_alerts"]:
        log.info("thresholds crossed in %s but send_alerts is off: no alert (%s)",
                 summary["ds"], summary["alert"]["reasons"])
        return False
    return True


def prepare_alert(summary: dict) -> dict:
    """The topic (created if missing; ``create_topic`` is idempotent) with the alert e-mail
    subscribed once, and the message the publish step sends."""
    s = load_settings()
    sns = SnsHook(aws_conn_id=s.aws_conn_id).get_conn()
    topic_arn = sns.create_topic(Name=s.sns_topic_name)["TopicArn"]
    if s.alert_email:
        # infra_setup's stack normally owns this subscription; this only fills the gap when
        # the topic was made without it, and must never cost the alert itself.
        try:
            pages = sns.get_paginator("list_subscriptions_by_topic").paginate(
                TopicArn=topic_arn)
            endpoints = {sub.get("Endpoint") for page in pages
                         for sub in page.get("Subscriptions", [])}
            if s.alert_email not in endpoints:
                sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=s.alert_email)
                log.info("subscribed the alert e-mail address to %s (AWS asks it to "
                         "confirm)", topic_arn)
        except sns.exceptions.ClientError as exc:
            log.warning("could not check/subscribe the alert e-mail on %s: %s", topic_arn,
                        exc.response.get("Error", {}).get("Code") or exc)
    return {"topic_arn": topic_arn, "subject": summary["message"]["subject"],
            "message": summary["message"]["body"],
            "attributes": {"endpoint": summary["endpoint"], "interval": summary["ds"],
                           "source": "model_monitor"}}


def should_mark_drift(summary: dict) -> bool:
    if summary["drift"]["found"]:
        log.warning("drift in %s: %s", summary["ds"], {k: summary["drift"]["statistics"][k]
                                                         for k in summary["drift"]["drifted"]})
        return True
    log.info("no drift in %s (%s)", summary["ds"], summary["drift"]["statistics"]
             or "not evaluated")
    return False


def drift_event_extra(summary: dict) -> dict:
    """The DRIFT Asset event's extra (no bucket/prefix keys: see ml_workflow.assets)."""
    return {"endpoint": summary["endpoint"], "interval": summary["interval"]["id"],
            "dataset": summary["dataset"], "test": summary["drift"]["test"],
            "drifted": summary["drift"]["drifted"], "statistics": summary["drift"]["statistics"],
            "report_uri": summary["report_uri"]}
