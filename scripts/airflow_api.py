"""A small client of Airflow 3's REST API (``/api/v2``): what a user does in the UI —
unpause, trigger with a form's values, watch runs — for the demo and the e2e tests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

FINISHED = {"success", "failed"}


class AirflowAPIError(RuntimeError):
    pass


class AirflowAPI:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def _request(self, method: str, path: str, body: dict | None = None,
                 auth: bool = True) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise AirflowAPIError(f"{method} {path}: HTTP {exc.code}: {detail}") from None

    def token(self) -> str:
        if self._token is None:
            self._token = self._request("POST", "/auth/token", self._credentials,
                                        auth=False)["access_token"]
        return self._token

    def dag(self, dag_id: str) -> dict:
        return self._request("GET", f"/api/v2/dags/{dag_id}")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        """Until the dag-processor has parsed the DAG (it is unknown before)."""
        return _poll(lambda: self._maybe(lambda: self.dag(dag_id)), timeout,
                     f"DAG {dag_id} to be parsed")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict | None = None,
                logical_date: str | None = None) -> str:
        run = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                            {"logical_date": logical_date, "conf": conf or {}})
        return run["dag_run_id"]

    def backfill(self, dag_id: str, from_date: str, to_date: str,
                 conf: dict | None = None) -> dict:
        """What ``airflow backfill create`` does: one run per interval in the range."""
        return self._request("POST", "/api/v2/backfills", {
            "dag_id": dag_id, "from_date": from_date, "to_date": to_date,
            "dag_run_conf": conf or {}, "max_active_runs": 2})

    def runs(self, dag_id: str) -> list[dict]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after"
                                    "&limit=100")["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}"
                                    "/taskInstances?limit=500")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value",
             map_index: int = -1):
        entry = self._request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}"
                   f"/xcomEntries/{key}?map_index={map_index}&deserialize=true")
        value = entry["value"]
        try:
            return json.loads(value) if isinstance(value, str) else value
        except ValueError:
            return value

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float,
                     progress: Callable[[str], None] | None = None) -> dict:
        last = {"line": ""}

        def check():
            run = self.run(dag_id, run_id)
            if progress:
                tis = self.task_instances(dag_id, run_id)
                done = sum(t["state"] in ("success", "skipped") for t in tis)
                line = f"{dag_id}: {run['state']} ({done}/{len(tis)} tasks done)"
                if line != last["line"]:
                    progress(line)
                    last["line"] = line
            return run if run["state"] in FINISHED else None

        return _poll(check, timeout, f"{dag_id} run {run_id} to finish", interval=2.0)

    def wait_for_new_run(self, dag_id: str, known: set[str], timeout: float,
                         run_type: str | None = None) -> dict:
        """Until a run not in ``known`` (of ``run_type``, e.g. "asset_triggered") appears."""
        return _poll(lambda: next((r for r in self.runs(dag_id)
                                   if r["dag_run_id"] not in known
                                   and run_type in (None, r["run_type"])), None),
                     timeout, f"a new {run_type or ''} run of {dag_id}")

    @staticmethod
    def _maybe(call):
        try:
            return call()
        except AirflowAPIError:
            return None


def _quote(run_id: str) -> str:
    return urllib.request.quote(run_id, safe="")


def _poll(check, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
