"""SageMaker Data Capture for localaws endpoints: sampled request/response records, buffered,
written to S3 in SageMaker's format and layout.

One JSON line per captured invocation::

    {"captureData": {"endpointInput": {"observedContentType": "image/png", "mode": "INPUT",
                                       "data": "<base64>", "encoding": "BASE64"},
                     "endpointOutput": {"observedContentType": "application/json",
                                        "mode": "OUTPUT", "data": "[0.1, 0.9]",
                                        "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceTime": "2026-11-02T10:11:12Z"},
     "eventVersion": "0"}

Encoding follows ``CaptureContentTypeHeader``: content types listed in ``CsvContentTypes`` are
stored as ``CSV`` text, in ``JsonContentTypes`` as ``JSON`` text, everything else ``BASE64``
(SageMaker's documented default when no header is configured). Files land at
``<DestinationS3Uri>/<endpoint>/<variant>/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl`` (UTC, the
time of the file's first record), several records per file: a background flusher writes each
buffer once it is ``LOCALAWS_CAPTURE_FLUSH_SECONDS`` old (default 2), and the endpoint's
update, deletion and the server's shutdown flush what is left. Only successful invocations are
captured; at 100 % sampling every one is.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import threading
import time
import uuid
import weakref
from datetime import UTC, datetime
from typing import Any

from localaws.services.sagemaker_common import S3Error, join_s3, parse_s3_uri, s3_put

log = logging.getLogger("localaws.sagemaker")

FLUSH_SECONDS = float(os.environ.get("LOCALAWS_CAPTURE_FLUSH_SECONDS", "2"))
MAX_BUFFER_RECORDS = 1000


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


class _Buffer:
    __slots__ = ("first", "lines")

    def __init__(self, first: datetime) -> None:
        self.first = first
        self.lines: list[str] = []


class CaptureWriter:
    """Captures one endpoint's traffic under one endpoint config's DataCaptureConfig."""

    def __init__(self, account_id: str, region: str, endpoint: str,
                 config: dict[str, Any] | None) -> None:
        config = config or {}
        self.account_id, self.region, self.endpoint = account_id, region, endpoint
        self.enabled = bool(config.get("EnableCapture", False)) and bool(
            config.get("DestinationS3Uri"))
        self.percentage = float(config.get("InitialSamplingPercentage", 0))
        self.destination = config.get("DestinationS3Uri", "")
        modes = {o.get("CaptureMode") for o in config.get("CaptureOptions") or []}
        self.capture_input = "Input" in modes
        self.capture_output = "Output" in modes
        header = config.get("CaptureContentTypeHeader") or {}
        self.csv_types = {_media_type(t) for t in header.get("CsvContentTypes") or []}
        self.json_types = {_media_type(t) for t in header.get("JsonContentTypes") or []}
        self._buffers: dict[str, _Buffer] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.records_written = 0
        if self.enabled:
            _writers.add(self)

    def describe(self) -> dict[str, Any] | None:
        """The ``DataCaptureConfig`` block of DescribeEndpoint."""
        if not self.destination:
            return None
        return {"EnableCapture": self.enabled,
                "CaptureStatus": "Started" if self.enabled else "Stopped",
                "CurrentSamplingPercentage": int(self.percentage),
                "DestinationS3Uri": self.destination}

    def _encode(self, content_type: str | None, data: bytes) -> tuple[str, str]:
        media = _media_type(content_type)
        if media in self.csv_types or media in self.json_types:
            try:
                return data.decode("utf-8"), "CSV" if media in self.csv_types else "JSON"
            except UnicodeDecodeError:
                pass
        return base64.b64encode(data).decode("ascii"), "BASE64"

    def record(self, variant: str, input_type: str | None, input_body: bytes,
               output_type: str | None, output_body: bytes,
               inference_id: str | None = None) -> None:
        """Capture one successful invocation (or not, by the sampling percentage)."""
        if not self.enabled or not (self.capture_input or self.capture_output):
            return
        if self.percentage < 100 and random.random() * 100 >= self.percentage:
            return
        now = datetime.now(UTC)
        capture: dict[str, Any] = {}
        if self.capture_input:
            data, encoding = self._encode(input_type, input_body)
            capture["endpointInput"] = {"observedContentType": input_type or "",
                                        "mode": "INPUT", "data": data, "encoding": encoding}
        if self.capture_output:
            data, encoding = self._encode(output_type, output_body)
            capture["endpointOutput"] = {"observedContentType": output_type or "",
                                         "mode": "OUTPUT", "data": data, "encoding": encoding}
        metadata = {"eventId": str(uuid.uuid4())}
        if inference_id:
            metadata["inferenceId"] = inference_id
        metadata["inferenceTime"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        line = json.dumps({"captureData": capture, "eventMetadata": metadata,
                           "eventVersion": "0"}, separators=(",", ":"))
        ready: list[tuple[str, _Buffer]] = []
        with self._lock:
            buf = self._buffers.get(variant)
            if buf is not None and (buf.first.strftime("%Y%m%d%H") != now.strftime("%Y%m%d%H")
                                    or len(buf.lines) >= MAX_BUFFER_RECORDS):
                ready.append((variant, self._buffers.pop(variant)))  # a new hour, a new file
                buf = None
            if buf is None:
                buf = self._buffers[variant] = _Buffer(now)
            buf.lines.append(line)
            if self._closed:  # the endpoint went away while this request ran: write now
                ready.append((variant, self._buffers.pop(variant)))
        for variant_name, full in ready:
            self._write(variant_name, full)

    def flush(self, older_than: float = 0.0) -> None:
        """Write every buffer whose first record is at least ``older_than`` seconds old."""
        cutoff = datetime.now(UTC).timestamp() - older_than
        with self._lock:
            ready = [(v, b) for v, b in self._buffers.items() if b.first.timestamp() <= cutoff]
            for variant, _ in ready:
                del self._buffers[variant]
        for variant, buf in ready:
            self._write(variant, buf)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.flush()
        _writers.discard(self)

    def _write(self, variant: str, buf: _Buffer) -> None:
        first = buf.first
        name = (f"{first:%M-%S}-{first.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl")
        uri = join_s3(self.destination, self.endpoint, variant, f"{first:%Y/%m/%d/%H}", name)
        body = ("\n".join(buf.lines) + "\n").encode("utf-8")
        try:
            bucket, key = parse_s3_uri(uri)
            s3_put(self.account_id, self.region, bucket, key, body,
                   content_type="application/jsonlines")
            self.records_written += len(buf.lines)
        except S3Error as exc:  # SageMaker drops captures it cannot deliver, too
            log.warning("data capture for endpoint %s: %d records lost: %s", self.endpoint,
                        len(buf.lines), exc)
        except Exception:
            log.exception("data capture for endpoint %s: %d records lost", self.endpoint,
                          len(buf.lines))


_writers: weakref.WeakSet[CaptureWriter] = weakref.WeakSet()
_flusher_started = threading.Lock()
_flusher: threading.Thread | None = None


def _flush_loop() -> None:
    tick = max(0.1, min(1.0, FLUSH_SECONDS / 4))
    while True:
        time.sleep(tick)
        for writer in list(_writers):
            try:
                writer.flush(older_than=FLUSH_SECONDS)
            except Exception:
                log.exception("data capture flush failed")


def start_flusher() -> None:
    global _flusher
    with _flusher_started:
        if _flusher is None:
            _flusher = threading.Thread(target=_flush_loop, name="data-capture-flusher",
                                        daemon=True)
            _flusher.start()


def flush_all() -> None:
    for writer in list(_writers):
        writer.flush()
