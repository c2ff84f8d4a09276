"""Shared fixtures.

* The test process gets its own throw-away AIRFLOW_HOME (set before anything imports
  Airflow), so tests never touch the developer's ``.airflow``.
* ``localaws``: one real localaws server per session; boto3 in this process reaches it.
* ``airflow_db``: the test Airflow home migrated (once), with ``aws_default`` pointing at
  the session's localaws — what ``dag.test()`` needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ml-workflow-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("ML_WORKFLOW_RETRY_DELAY_S", "1")  # failure-path tests retry fast
sys.path.insert(0, str(REPO / "scripts"))
from airflow_home import write_home  # noqa: E402

write_home(_AIRFLOW_HOME)

from localaws.testing import LocalAWSProcess  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def localaws(tmp_path_factory):
    """A running localaws on a free port; boto3 in this process reaches it."""
    data_dir = tmp_path_factory.mktemp("localaws")
    with LocalAWSProcess(data_dir) as server:
        saved = {k: os.environ.get(k) for k in server.client_env()}
        os.environ.update(server.client_env())
        try:
            yield server
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="session")
def airflow_db(localaws):
    """Migrated Airflow metadata DB whose aws_default connection points at localaws."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   capture_output=True, env=os.environ.copy())
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": localaws.endpoint_url}})
    yield _AIRFLOW_HOME
    os.environ.pop("AIRFLOW_CONN_AWS_DEFAULT", None)
