"""The context every localaws service extension receives: where state lives, how to reach
the server, and a registry of the child processes and shutdown hooks to run on exit."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("localaws")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Runtime:
    """Shared state of one running localaws server."""

    data_dir: Path
    host: str
    port: int
    region: str = "us-east-1"
    account_id: str = "123456789012"
    _children: set[subprocess.Popen] = field(default_factory=set, repr=False)
    _hooks: list[tuple[str, Callable[[], None]]] = field(default_factory=list, repr=False)
    _status: dict[str, Callable[[], object]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, and werkzeug
    # serves each request on a short-lived thread: every child is forked from this one
    # thread, which lives as long as the server.
    _spawner: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="localaws-spawner"),
        repr=False)

    @property
    def endpoint_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def path(self, *parts: str) -> Path:
        """A directory under the data dir, created on first use."""
        p = self.data_dir.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        """Start a child process that localaws owns: it is stopped at shutdown and dies
        with the server even when the server is killed with SIGKILL."""
        kwargs.setdefault("preexec_fn", _die_with_parent)
        proc = self._spawner.submit(subprocess.Popen, args, **kwargs).result()
        with self._lock:
            self._children.add(proc)
        return proc

    def forget(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._children.discard(proc)

    def children(self) -> list[subprocess.Popen]:
        with self._lock:
            return [p for p in self._children if p.poll() is None]

    def on_shutdown(self, name: str, hook: Callable[[], None]) -> None:
        """Hooks run in reverse order of registration, before children are stopped."""
        self._hooks.append((name, hook))

    def add_status(self, name: str, provider: Callable[[], object]) -> None:
        """A section of ``python -m localaws status``: provider returns JSON-able data."""
        self._status[name] = provider

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {
            "endpoint_url": self.endpoint_url,
            "data_dir": str(self.data_dir),
            "pid": os.getpid(),
            "children": len(self.children()),
        }
        for name, provider in self._status.items():
            try:
                out[name] = provider()
            except Exception as exc:  # a status section must never break the others
                out[name] = {"error": repr(exc)}
        return out

    def shutdown(self, timeout: float = 10.0) -> None:
        for name, hook in reversed(self._hooks):
            try:
                hook()
            except Exception:
                log.exception("shutdown hook %s failed", name)
        procs = self.children()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with self._lock:
            self._children.clear()
