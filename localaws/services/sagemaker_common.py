"""Helpers shared by localaws' SageMaker extensions: S3 and CloudWatch Logs access through
moto's backends in-process, starting child processes (``spawn``), the ``sagemaker`` status
section, and small utilities.

S3 is read and written through moto's S3 backend in the server process (not over HTTP): it is
faster, it still works in shutdown hooks after the HTTP server has closed, and it goes through
the same backend methods as every S3 request.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("localaws.sagemaker")

_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<key>.*)$")
_S3_HTTPS = re.compile(
    r"^https://(?P<bucket>[^/.]+)\.s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?/(?P<key>.*)$")


class S3Error(Exception):
    """An S3 read or write failed; ``str()`` says which object and why."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    match = _S3_URI.match(uri or "") or _S3_HTTPS.match(uri or "")
    if not match:
        raise S3Error(f"{uri!r} is not an S3 URI")
    return match["bucket"], match["key"]


def join_s3(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *[p.strip("/") for p in parts]])


def _partition(region: str) -> str:
    from moto.utilities.utils import get_partition

    return get_partition(region)


def s3_backend(account_id: str, region: str = "us-east-1"):
    from moto.s3.models import s3_backends

    return s3_backends[account_id][_partition(region)]


def s3_list(account_id: str, region: str, bucket: str, prefix: str) -> list:
    """All objects (moto FakeKeys, sorted by key) under a prefix; S3Error if no bucket."""
    from moto.s3.exceptions import MissingBucket

    backend = s3_backend(account_id, region)
    try:
        bucket_obj = backend.get_bucket(bucket)
    except MissingBucket as exc:
        raise S3Error(f"bucket {bucket} does not exist") from exc
    keys, _folders, _truncated, _marker = backend.list_objects(bucket_obj, prefix, None, None,
                                                               None)
    return list(keys)


def s3_get(account_id: str, region: str, bucket: str, key: str) -> bytes:
    from moto.s3.exceptions import MissingBucket

    try:
        obj = s3_backend(account_id, region).get_object(bucket, key)
    except MissingBucket as exc:
        raise S3Error(f"bucket {bucket} does not exist") from exc
    if obj is None:
        raise S3Error(f"s3://{bucket}/{key} does not exist")
    return obj.value


def s3_put(account_id: str, region: str, bucket: str, key: str, body: bytes,
           content_type: str | None = None) -> None:
    from moto.s3.exceptions import MissingBucket

    with _s3_batch():  # S3 persistence saves the object once, with its metadata
        try:
            obj = s3_backend(account_id, region).put_object(bucket, key, body)
        except MissingBucket as exc:
            raise S3Error(f"bucket {bucket} does not exist") from exc
        if content_type:
            obj.set_metadata({"Content-Type": content_type})


def _s3_batch():
    try:
        from localaws.services.s3_persistence import batch
    except ImportError:
        return contextlib.nullcontext()
    return batch()


def utcnow():
    from moto.core.utils import utcnow as _utcnow

    return _utcnow()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LogStream:
    """Lines of a child's output written to a CloudWatch Logs stream, as they come; keeps
    the last lines for failure messages."""

    def __init__(self, account_id: str, region: str, group: str, stream: str,
                 tail: int = 20) -> None:
        from moto.logs.models import logs_backends

        self.group, self.stream = group, stream
        self._backend = logs_backends[account_id][region]
        self._lock = threading.Lock()
        self.tail: deque[str] = deque(maxlen=tail)
        with self._lock:
            self._backend.ensure_log_group(group)
            self._backend.ensure_log_stream(group, stream)

    def write(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line:
            return
        self.tail.append(line)
        event = {"timestamp": int(time.time() * 1000), "message": line[:262000]}
        try:
            with self._lock:
                self._backend.put_log_events(self.group, self.stream, [event])
        except Exception:  # the log group was deleted under us: recreate it once
            try:
                with self._lock:
                    self._backend.ensure_log_group(self.group)
                    self._backend.ensure_log_stream(self.group, self.stream)
                    self._backend.put_log_events(self.group, self.stream, [event])
            except Exception:
                log.debug("could not write to %s/%s", self.group, self.stream, exc_info=True)

    def pump(self, pipe) -> threading.Thread:
        """Copy a text pipe into the stream line by line in a daemon thread."""

        def _run() -> None:
            try:
                for line in pipe:
                    self.write(line)
            except (OSError, ValueError):
                pass
            finally:
                try:
                    pipe.close()
                except OSError:
                    pass

        thread = threading.Thread(target=_run, name=f"logs:{self.stream}", daemon=True)
        thread.start()
        return thread


_status_sections: dict[str, Callable[[], object]] = {}


def add_status_section(runtime, name: str, provider: Callable[[], object]) -> None:
    """One ``sagemaker`` status section shared by the training and hosting extensions."""
    first = not _status_sections
    _status_sections[name] = provider
    if first:
        runtime.add_status("sagemaker",
                           lambda: {k: f() for k, f in list(_status_sections.items())})
