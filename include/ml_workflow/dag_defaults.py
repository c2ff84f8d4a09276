"""Defaults every DAG of the project shares: owner, retries, tags."""

from __future__ import annotations

from datetime import timedelta

from ml_workflow.settings import settings_from_env

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=settings_from_env().retry_delay_s),
    "retry_exponential_backoff": True,
}

PROJECT_TAG = "ml-workflow-aws"
