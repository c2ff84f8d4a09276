"""Shared fixtures: one localaws server per test session (integration tests use it)."""

from __future__ import annotations

import os

import pytest

from localaws.testing import LocalAWSProcess


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
