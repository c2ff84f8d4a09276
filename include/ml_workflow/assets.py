"""The Airflow Assets that chain the DAGs: a published dataset partition schedules
``train_deploy``; detected drift can schedule a retrain (see README)."""

from __future__ import annotations

from airflow.sdk import Asset

from ml_workflow.settings import settings_from_env

_s = settings_from_env()

# Updated by cifar_etl's load task once a partition is published; the event's extra holds
# {"bucket", "prefix", "manifest_key", "dataset", "partition"}.
DATASET = Asset(name="cifar_dataset", uri=_s.uri("datasets", _s.dataset_name))

# Updated by model_monitor when drift crosses its threshold; the event's extra holds
# {"endpoint", "interval", "dataset", "drifted", "statistics", "report_uri"} (deliberately no
# "bucket"/"prefix": a retrain it triggers trains on the newest published partition).
# Nothing listens to it by default. To retrain on drift, add it to train_deploy's schedule,
# e.g. ``AssetOrTimeSchedule(timetable=..., assets=(DATASET | DRIFT))``.
DRIFT = Asset(name="model_drift", uri=_s.uri("reports", "monitoring", "drift"))
