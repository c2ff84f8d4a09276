"""Start a real localaws server in a child process, for tests, benchmarks and the demo.

    with LocalAWSProcess(data_dir) as aws:
        boto3.client("s3", endpoint_url=aws.endpoint_url, ...)

The server runs in its own process group; leaving the ``with`` block sends SIGTERM (the
server stops its own children) and, if it does not exit in time, SIGKILL to the group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from localaws.server import STATUS_PATH

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalAWSProcess:
    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1",
                 log_file: Path | None = None, startup_timeout: float = 60.0) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.log_file = Path(log_file) if log_file else self.data_dir / "localaws.log"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment for a boto3 process that should reach this server."""
        return {**TEST_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint_url}

    def status(self) -> dict:
        with urllib.request.urlopen(self.endpoint_url + STATUS_PATH, timeout=5) as r:
            return json.load(r)

    def start(self) -> LocalAWSProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **TEST_CREDENTIALS}
        env.pop("AWS_ENDPOINT_URL", None)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "localaws", "serve", "--host", self.host,
                 "--port", str(self.port), "--data-dir", str(self.data_dir)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"localaws exited with {self.proc.returncode} during start-up; "
                    f"see {self.log_file}:\n{self.log_file.read_text()[-3000:]}")
            try:
                self.status()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"localaws did not answer within {self.startup_timeout}s")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # anything left in the group (a child that ignored SIGTERM) goes too
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def __enter__(self) -> LocalAWSProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
