"""Start and stop the local stack: localaws + Airflow standalone (scheduler, dag-processor,
API server, triggerer), each in its own process group, bound to 127.0.0.1.

    python scripts/stack.py up      # leaves both running, prints the UI URL and login
    python scripts/stack.py down    # stops both (whole process groups), no orphans

PIDs live in ``<airflow home>/run/*.pid``; nothing is ever stopped by name.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from airflow_home import write_home  # noqa: E402


class Stack:
    def __init__(self, airflow_home: Path = REPO / ".airflow",
                 localaws_dir: Path = REPO / ".localaws",
                 localaws_port: int = 4566, api_port: int = 8080,
                 extra_env: dict[str, str] | None = None) -> None:
        self.home = Path(airflow_home).resolve()
        self.localaws_dir = Path(localaws_dir).resolve()
        self.localaws_port = localaws_port
        self.api_port = api_port
        self.run_dir = self.home / "run"
        self.extra_env = extra_env or {}

    @property
    def aws_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.localaws_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        # Nothing of the caller's Airflow or AWS endpoint set-up leaks in (a connection in
        # AIRFLOW_CONN_AWS_DEFAULT would silently point the stack at another localaws).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AIRFLOW", "AWS_ENDPOINT_URL"))}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        })
        env.update(self.extra_env)
        return env

    # -- process bookkeeping -------------------------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _running(self, name: str) -> int | None:
        f = self._pidfile(name)
        if not f.exists():
            return None
        pid = int(f.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            f.unlink()
            return None
        return pid

    def _spawn(self, name: str, args: list[str]) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                    env=self.env(), start_new_session=True)
        self._pidfile(name).write_text(str(proc.pid))
        return proc.pid

    def _stop(self, name: str, timeout: float = 45.0) -> None:
        pid = self._running(name)
        if pid is None:
            return
        # The group leader is the pid itself (start_new_session); TERM the whole group so
        # airflow standalone's children (scheduler, api-server, ...) are not orphaned.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    break
                try:  # reap if it is our own child
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.2)
            else:
                continue
            break
        self._pidfile(name).unlink(missing_ok=True)

    @staticmethod
    def _wait_http(url: str, timeout: float, what: str, pid: int) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                raise RuntimeError(f"{what} exited during start-up") from None
            try:
                with urllib.request.urlopen(url, timeout=3) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{what} did not answer at {url} within {timeout:.0f}s")

    # -- public --------------------------------------------------------------------------
    def start_localaws(self) -> None:
        if self._running("localaws") is None:
            pid = self._spawn("localaws", [sys.executable, "-m", "localaws", "serve",
                                           "--host", "127.0.0.1",
                                           "--port", str(self.localaws_port),
                                           "--data-dir", str(self.localaws_dir)])
            self._wait_http(f"{self.aws_endpoint}/_localaws/status", 60, "localaws", pid)

    def start_airflow(self) -> None:
        write_home(self.home, self.aws_endpoint, api_port=self.api_port)
        if self._running("airflow") is None:
            for args in (["db", "migrate"], ["connections", "import", "--overwrite",
                                             str(self.home / "connections.json")]):
                subprocess.run([sys.executable, "-m", "airflow", *args], check=True,
                               env=self.env(), cwd=REPO, stdout=subprocess.DEVNULL)
            pid = self._spawn("airflow", [sys.executable, "-m", "airflow", "standalone"])
            self._wait_http(f"{self.api_url}/api/v2/monitor/health", 180, "airflow", pid)

    def up(self) -> None:
        self.start_localaws()
        try:
            self.start_airflow()
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        self._stop("airflow")
        self._stop("localaws")

    def admin_password(self) -> str:
        f = self.home / "simple_auth_manager_passwords.json.generated"
        return json.loads(f.read_text())["admin"]

    def __enter__(self) -> Stack:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args()
    stack = Stack()
    if args.command == "up":
        stack.up()
        print(f"Airflow UI: {stack.api_url}  (user admin, password {stack.admin_password()})")
        print(f"localaws:   {stack.aws_endpoint}  (logs in {stack.run_dir})")
        print("Stop with: make down")
    else:
        stack.down()
        print("stopped")


if __name__ == "__main__":
    main()
