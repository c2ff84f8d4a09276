"""model_monitor: what the endpoint's captured traffic says, hour by hour.

Every hour (and on demand from the UI, and backfillable) the run reads exactly the Data
Capture files of its data interval (``data_capture/<endpoint>/AllTraffic/YYYY/MM/DD/HH/``;
a manual run without a logical date reads the hour before it was triggered) and computes:
request count, confidence percentiles, the share below the confidence threshold, the
predicted class mix, and **drift** (PSI) of the class mix and of image brightness/colour
histograms against the baseline of the serving model's training partition (computed once
per partition, stored next to it as ``_BASELINE.json``). Malformed capture lines are
counted and skipped.

Output: ``reports/monitoring/<YYYY-MM-DDTHH>/`` with ``metrics.json``, the PNG charts and a
self-contained ``report.html`` (its address is in the ``analyse`` task's log).

Alerts: **one** SNS message per interval (topic ``sns_topic_name``, e-mailed to
``alert_email``) when the low-confidence share exceeds ``low_confidence_alert_share`` or a
PSI exceeds ``drift_threshold``. An interval without traffic ends in success with a
"no traffic" report; without a registered model the run ends at ``model_registered``.

**Retrain on drift:** drift updates the Asset ``ml_workflow.assets.DRIFT``
(``model_drift``). Nothing listens to it by default; to retrain when drift is found, add it
to ``train_deploy``'s schedule, e.g.
``AssetOrTimeSchedule(timetable=..., assets=(DATASET | DRIFT))`` — the retrain then trains on
the newest published partition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.amazon.aws.operators.sns import SnsPublishOperator
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, chain, task

from ml_workflow.assets import DRIFT
from ml_workflow.dag_defaults import DEFAULT_ARGS, PROJECT_TAG
from ml_workflow.settings import settings_from_env

_s = settings_from_env()

with DAG(
    dag_id="model_monitor",
    description="Captured endpoint traffic → metrics, charts, report, alerts, drift",
    # Interval timetable: the run at 08:00 covers [07:00, 08:00).
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=3,
    dagrun_timeout=timedelta(minutes=50),
    default_args=DEFAULT_ARGS,
    tags=[PROJECT_TAG, "monitoring"],
    doc_md=__doc__,
    params={
        "endpoint_name": Param(_s.endpoint_name, type="string", title="Endpoint",
                               pattern="^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"),
        "confidence_threshold": Param(
            None, type=["null", "number"], minimum=0, maximum=1,
            title="Confidence threshold",
            description=f"Empty: the setting ({_s.confidence_threshold})"),
        "low_confidence_alert_share": Param(
            None, type=["null", "number"], minimum=0, maximum=1,
            title="Alert above this low-confidence share",
            description=f"Empty: the setting ({_s.low_confidence_alert_share})"),
        "drift_threshold": Param(
            None, type=["null", "number"], exclusiveMinimum=0, title="Drift threshold (PSI)",
            description=f"Empty: the setting ({_s.drift_threshold})"),
        "drift_min_requests": Param(
            None, type=["null", "integer"], minimum=1, title="Fewest requests to judge drift",
            description=f"Empty: the setting ({_s.drift_min_requests})"),
        "send_alerts": Param(True, type="boolean", title="Send the SNS alert"),
        "hour": Param(None, type=["null", "string"],
                      pattern="^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}$", title="Hour (UTC)",
                      description="YYYY-MM-DDTHH to analyse that hour (e.g. the current "
                                  "one); empty: the run's data interval"),
    },
) as dag:

    @task
    def plan(params=None, data_interval_start=None, data_interval_end=None,
             dag_run=None) -> dict:
        from ml_workflow.monitor_tasks import plan_monitoring

        return plan_monitoring(params, data_interval_start, data_interval_end,
                               dag_run.run_after)

    @task.short_circuit
    def model_registered(planned: dict) -> bool:
        return planned["registered"]

    @task
    def baseline(planned: dict) -> dict | None:
        from ml_workflow.monitor_tasks import ensure_baseline

        return ensure_baseline(planned)

    @task
    def analyse(planned: dict, base: dict | None) -> dict:
        from ml_workflow.monitor_tasks import analyse_interval

        return analyse_interval(planned, base)

    @task.short_circuit
    def needs_alert(planned: dict, summary: dict) -> bool:
        from ml_workflow.monitor_tasks import should_alert

        return should_alert(planned, summary)

    @task(multiple_outputs=True)
    def alert_topic(summary: dict) -> dict:
        from ml_workflow.monitor_tasks import prepare_alert

        return prepare_alert(summary)

    @task.short_circuit
    def drift_found(summary: dict) -> bool:
        from ml_workflow.monitor_tasks import should_mark_drift

        return should_mark_drift(summary)

    @task(outlets=[DRIFT])
    def mark_drift(summary: dict, outlet_events=None) -> dict:
        from ml_workflow.monitor_tasks import drift_event_extra

        extra = drift_event_extra(summary)
        outlet_events[DRIFT].extra = extra
        return extra

    planned = plan()
    base = baseline(planned)
    summary = analyse(planned, base)
    alert = alert_topic(summary)
    publish = SnsPublishOperator(
        task_id="publish_alert",
        target_arn=alert["topic_arn"],
        subject=alert["subject"],
        message=alert["message"],
        message_attributes=alert["attributes"],
        aws_conn_id=_s.aws_conn_id,
    )
    chain(planned, model_registered(planned), base, summary)
    chain(summary, needs_alert(planned, summary), alert, publish)
    chain(summary, drift_found(summary), mark_drift(summary))
