"""``make bench``: run every benchmark in turn and print every figure of bench/results.json.

    .venv/bin/python -m bench [--only NAME[,NAME...]] [--timeout-scale X] [--verbose] [--list]

Each ``bench/bench_*.py`` runs in its own process (its own environment, AIRFLOW_HOME and
localaws), in a fixed order (the known ones first, any new one after them), with a time
limit; each merges its flat keys into bench/results.json. ``bench_algorithm`` is a script
and gets ``--out bench/results.json --seeds 0,1,2``.

A benchmark over its limit gets SIGINT (its ``with`` blocks stop its localaws), then
SIGKILL; anything still running that it started (found by a token in the environment of
its processes) is then stopped by PID. The full output of each benchmark goes to
``bench/.work/logs/<name>.log``; the console shows it without Airflow's task log lines
(``--verbose``: everything). Exits non-zero if any benchmark failed or timed out.

After a full run, ``bench.wall_s`` (the whole run) and ``bench.load_avg_1m`` (mean 1-minute
load average while it ran; the machine may be shared) are merged too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from bench.results import RESULTS, merge_results

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LOG_DIR = BENCH_DIR / ".work" / "logs"
ORDER = ("bench_lambda_sfn", "bench_s3_persistence", "bench_sagemaker", "bench_monitor",
         "bench_etl", "bench_workflow", "bench_train_deploy", "bench_algorithm")
# Seconds; generous for a loaded 2-core machine (an idle one needs about a third).
TIMEOUTS = {"bench_lambda_sfn": 300, "bench_s3_persistence": 300, "bench_sagemaker": 600,
            "bench_monitor": 300, "bench_etl": 600, "bench_workflow": 1200,
            "bench_train_deploy": 1200, "bench_algorithm": 1800}
DEFAULT_TIMEOUT = 900
TOKEN_VAR = "ML_WORKFLOW_BENCH_TOKEN"
_AIRFLOW_LOG_LINE = re.compile(r"^\s*\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
# What ends a (possibly multi-line) Airflow log record on the console: our own lines.
_OWN_LINE = re.compile(r"^(\[bench |Traceback |[\w.]+: \S)")


def discover() -> list[str]:
    found = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    return [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]


def command(name: str) -> list[str]:
    if name == "bench_algorithm":
        return [sys.executable, str(BENCH_DIR / "bench_algorithm.py"), "--out", str(RESULTS),
                "--seeds", "0,1,2"]
    return [sys.executable, "-m", f"bench.{name}"]


def _pids_with_token(token: str) -> list[int]:
    needle = f"{TOKEN_VAR}={token}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def stop_leftovers(token: str) -> list[int]:
    """Stop, by PID, every process that carries this run's token (localaws servers and
    model servers run in sessions of their own, out of reach of the benchmark's group)."""
    pids = _pids_with_token(token)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _pids_with_token(token):
            time.sleep(0.2)
        pids = _pids_with_token(token)
        if not pids:
            break
    return pids


def run_one(name: str, verbose: bool, timeout_scale: float = 1.0) -> tuple[str, float]:
    """Run one benchmark; ("ok" | "failed (rc N)" | "timed out", seconds)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    env = {**os.environ, TOKEN_VAR: token, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    limit = round(TIMEOUTS.get(name, DEFAULT_TIMEOUT) * timeout_scale)
    log_path = LOG_DIR / f"{name}.log"
    print(f"\n=== {name} (limit {limit} s, log {log_path.relative_to(REPO)})", flush=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command(name), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=True)

        def pump() -> None:
            in_record = False
            for line in proc.stdout:
                log.write(line)
                if _AIRFLOW_LOG_LINE.match(line):
                    in_record = True
                elif in_record and _OWN_LINE.match(line):
                    in_record = False
                if verbose or not in_record:
                    sys.stdout.write(f"  {line}")
                    sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=limit)
            outcome = "ok" if proc.returncode == 0 else f"failed (rc {proc.returncode})"
        except subprocess.TimeoutExpired:
            outcome = "timed out"
            for sig, grace in ((signal.SIGINT, 90), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=90)
            raise
        finally:
            left = stop_leftovers(token)
            reader.join(timeout=10)
            if left:
                print(f"  could not stop processes {left} of {name}", flush=True)
    seconds = time.monotonic() - started
    if outcome != "ok" and not verbose:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        print("  --- end of its log:\n" + "\n".join(f"  | {line}" for line in tail))
    print(f"=== {name}: {outcome} in {seconds:.0f} s", flush=True)
    return outcome, seconds


class LoadSampler(threading.Thread):
    def __init__(self, every_s: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.every_s = every_s
        self.samples: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self.stopping.wait(self.every_s):
                return

    def mean(self) -> float:
        return round(sum(self.samples) / len(self.samples), 2) if self.samples else 0.0


def print_table(before: dict, outcomes: dict[str, tuple[str, float]]) -> None:
    after = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    print("\nbenchmark               outcome           seconds")
    for name, (outcome, seconds) in outcomes.items():
        print(f"{name:<23} {outcome:<17} {seconds:7.0f}")
    width = max((len(k) for k in after), default=10)
    print(f"\n{'figure':<{width}}  value        ({RESULTS.relative_to(REPO)}; * = same value "
          "as before this run: not re-measured, or measured the same)")
    for key, value in sorted(after.items()):
        same = key in before and before[key] == value
        print(f"{key:<{width}}  {json.dumps(value):<12}{' *' if same else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only these (e.g. etl or bench_etl; repeat or comma-separate)")
    parser.add_argument("--verbose", action="store_true", help="echo Airflow's log lines too")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--timeout-scale", type=float, default=1.0,
                        help="multiply every benchmark's time limit (slow machine: > 1)")
    args = parser.parse_args(argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    wanted = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    wanted = [n if n.startswith("bench_") else f"bench_{n}" for n in wanted]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {names}")
    selected = [n for n in names if not wanted or n in wanted]

    before = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    sampler = LoadSampler()
    sampler.start()
    started = time.monotonic()
    print(f"benchmarks: {', '.join(selected)}; load average now "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    outcomes = {}
    for name in selected:
        outcomes[name] = run_one(name, args.verbose, max(0.01, args.timeout_scale))
    sampler.stopping.set()
    sampler.join()
    wall = time.monotonic() - started
    if not wanted:
        merge_results({"bench.wall_s": round(wall), "bench.load_avg_1m": sampler.mean()})
    print_table(before, outcomes)
    failed = [n for n, (outcome, _) in outcomes.items() if outcome != "ok"]
    print(f"\n{len(selected) - len(failed)}/{len(selected)} benchmarks ok in {wall / 60:.1f} min "
          f"(mean load average {sampler.mean()})"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
