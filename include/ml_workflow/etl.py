"""Extract, transform and load one CIFAR-100 partition; Airflow-free (an S3 client in).

* extract: stream the source (path, ``file://``, ``http(s)://``, ``s3://``) to a temporary
  file while hashing it, verify the MD5, and store it in the raw zone — unless the raw
  object with that checksum is already there.
* transform: read the raw archive, keep the chosen classes, write PNGs + ``.lst`` +
  ``labels.json`` and stage them as one tar object.
* load: unpublish the partition (delete ``_MANIFEST.json``), upload the staged files in
  parallel, delete leftovers of an earlier run, then write ``_MANIFEST.json`` last.
  Readers trust only partitions with a manifest, so a failure at any point publishes
  nothing, and a re-run replaces the partition.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ml_workflow import cifar
from ml_workflow.s3_layout import MANIFEST

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class ChecksumMismatch(ValueError):
    """The downloaded archive's MD5 differs from the expected one."""


class SourceError(ValueError):
    """The source cannot be read; the message names it."""


def _copy_hashing(read: Callable[[int], bytes], dst, total: int | None, label: str) -> str:
    h = hashlib.md5(usedforsecurity=False)
    done, last_report, started = 0, 0.0, time.monotonic()
    while block := read(CHUNK):
        h.update(block)
        dst.write(block)
        done += len(block)
        now = time.monotonic()
        if now - last_report >= 5.0:
            last_report = now
            pct = f" ({100 * done / total:.0f}% of {total / 1e6:.1f} MB)" if total else ""
            rate = done / max(now - started, 1e-6) / 1e6
            log.info("downloading %s: %.1f MB%s at %.1f MB/s", label, done / 1e6, pct, rate)
    log.info("read %s: %.1f MB in %.1f s", label, done / 1e6, time.monotonic() - started)
    return h.hexdigest()


def fetch_source(source: str, dst_path: Path, s3_client=None) -> str:
    """Copy ``source`` to dst_path; return its MD5."""
    parsed = urllib.parse.urlparse(source)
    with open(dst_path, "wb") as dst:
        if parsed.scheme in ("", "file"):
            path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else source)
            if not path.is_file():
                raise SourceError(f"source file {path} does not exist")
            with open(path, "rb") as src:
                return _copy_hashing(src.read, dst, path.stat().st_size, str(path))
        if parsed.scheme in ("http", "https"):
            import requests

            try:
                with requests.get(source, stream=True, timeout=(10, 60)) as r:
                    r.raise_for_status()
                    total = int(r.headers.get("Content-Length") or 0) or None
                    return _copy_hashing(r.raw.read, dst, total, source)
            except requests.RequestException as exc:
                raise SourceError(f"cannot download {source}: {exc}") from None
        if parsed.scheme == "s3":
            try:
                obj = s3_client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
            except Exception as exc:
                raise SourceError(f"cannot read {source}: {exc}") from None
            return _copy_hashing(obj["Body"].read, dst, obj.get("ContentLength"), source)
    raise SourceError(f"unsupported source {source!r}: use a path, file://, http(s):// or s3://")


def extract(s3, source: str, expected_md5: str, bucket: str, raw_key: str,
            work_dir: Path) -> dict:
    """Put the archive in the raw zone, verified; skip the download when already there."""
    expected_md5 = expected_md5.strip().lower()
    try:
        head = s3.head_object(Bucket=bucket, Key=raw_key)
        if head.get("Metadata", {}).get("md5") == expected_md5:
            log.info("s3://%s/%s already holds the archive (md5 %s): not downloading again",
                     bucket, raw_key, expected_md5)
            return {"bucket": bucket, "key": raw_key, "md5": expected_md5, "downloaded": False}
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
    tmp = Path(work_dir) / "archive.tar.gz"
    actual = fetch_source(source, tmp, s3)
    if actual != expected_md5:
        raise ChecksumMismatch(
            f"checksum mismatch for {source}: MD5 is {actual}, expected {expected_md5} "
            "(set the md5 param / CIFAR100_MD5 for another archive)")
    s3.upload_file(str(tmp), bucket, raw_key, ExtraArgs={"Metadata": {"md5": actual}})
    log.info("stored s3://%s/%s (md5 %s)", bucket, raw_key, actual)
    return {"bucket": bucket, "key": raw_key, "md5": actual, "downloaded": True}


def transform(s3, bucket: str, raw_key: str, classes: list[str], staging_key: str,
              work_dir: Path, test_split: str = "official",
              holdout_fraction: float = 0.1) -> dict:
    """Raw archive → staged partition tar; returns the manifest-to-be."""
    work_dir = Path(work_dir)
    archive_path = work_dir / "archive.tar.gz"
    s3.download_file(bucket, raw_key, str(archive_path))
    archive = cifar.read_archive(archive_path)
    selection = cifar.select_classes(archive, classes)
    if test_split == "holdout":
        selection = cifar.holdout_split(selection, holdout_fraction)
    elif test_split != "official":
        raise ValueError(f"test_split must be 'official' or 'holdout', got {test_split!r}")
    out = work_dir / "partition"
    manifest = cifar.write_partition(
        selection, out, source={"raw": f"s3://{bucket}/{raw_key}",
                                "md5": cifar.md5_of(archive_path), "test_split": test_split})
    for split, info in manifest["counts"].items():
        log.info("%s: %d images %s", split, info["total"], info["per_class"])
    tar_path = work_dir / "partition.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(out, arcname=".")
    s3.upload_file(str(tar_path), bucket, staging_key)
    s3.put_object(Bucket=bucket, Key=staging_key + ".manifest.json",
                  Body=json.dumps(manifest).encode(), ContentType="application/json")
    return manifest


def load(s3, bucket: str, staging_key: str, prefix: str, work_dir: Path,
         max_workers: int = 8) -> dict:
    """Publish the staged partition under prefix; ``_MANIFEST.json`` is written last."""
    work_dir = Path(work_dir)
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=staging_key + ".manifest.json")["Body"].read())
    tar_path = work_dir / "partition.tar"
    s3.download_file(bucket, staging_key, str(tar_path))
    out = work_dir / "partition"
    with tarfile.open(tar_path) as tar:
        tar.extractall(out, filter="data")
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    if set(files) != set(manifest["files"]):
        raise ValueError("staged partition does not match its manifest: "
                         f"{sorted(set(files) ^ set(manifest['files']))[:5]}")
    manifest_key = prefix + MANIFEST
    s3.delete_object(Bucket=bucket, Key=manifest_key)  # unpublish while we rewrite

    def put(rel: str) -> None:
        content_type = "image/png" if rel.endswith(".png") else (
            "application/json" if rel.endswith(".json") else "text/plain")
        s3.upload_file(str(files[rel]), bucket, prefix + rel,
                       ExtraArgs={"ContentType": content_type})

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        list(pool.map(put, sorted(files)))
    stale = [k for k in _list_keys(s3, bucket, prefix)
             if k != manifest_key and k[len(prefix):] not in files]
    for i in range(0, len(stale), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k}
                                                             for k in stale[i:i + 1000]]})
    elapsed = time.monotonic() - started
    published = {**manifest, "prefix": f"s3://{bucket}/{prefix}",
                 "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    s3.put_object(Bucket=bucket, Key=manifest_key, ContentType="application/json",
                  Body=json.dumps(published, indent=2).encode())
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": staging_key}, {"Key": staging_key + ".manifest.json"}]})
    log.info("published %d files to s3://%s/%s in %.1f s (%d stale removed)",
             len(files), bucket, prefix, elapsed, len(stale))
    return {"manifest_key": manifest_key, "files": len(files), "upload_s": elapsed,
            "stale_removed": len(stale), "counts": manifest["counts"],
            "classes": manifest["classes"]}


def _list_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def read_manifest(s3, bucket: str, prefix: str) -> dict:
    """The published manifest of a partition; a clear error when it is not published."""
    key = prefix.rstrip("/") + "/" + MANIFEST
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise FileNotFoundError(f"partition s3://{bucket}/{prefix} is not published "
                                f"(no {MANIFEST})") from None
    return json.loads(body)

