"""Defaults every DAG of the project shares: owner, retries, tags."""

from __future__ import annotations

from datetime import timedelta

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
}

PROJECT_TAG = "ml-workflow-aws"
