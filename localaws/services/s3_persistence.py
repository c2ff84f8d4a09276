"""S3 survives a restart: write-through persistence of buckets and objects in the data dir.

What survives a restart (same ``--data-dir``, including ``kill -9``):

* buckets: name, account, region, creation date, versioning, default encryption, public
  access block, policy, tags, ACL, object-lock settings, and the last Put of lifecycle,
  CORS, website, logging, notification, accelerate, ownership and replication settings
  (replayed at start-up; one whose target is gone, e.g. a notification to a queue, is
  dropped with a warning);
* objects, every version and delete marker: data, ETag, size, last-modified, user and
  system metadata (Content-Type ...), storage class, encryption fields, checksums, ACL,
  tags, lock fields.

What does not: multipart uploads still in progress, the part layout of a completed
multipart object (``PartNumber`` reads), bucket inventory configurations,
``/moto-api/reset`` (it clears memory, not the disk), and every other service's state
here: SQS, SNS, IAM, Step Functions, CloudFormation ... start empty (whether SageMaker
endpoints come back is up to the SageMaker hosting extension).

How: moto keeps S3 in memory. After every S3 request that may change something (any
PUT/POST/DELETE) and before its response is returned, the buckets and keys it touched are
compared with the disk and brought in line (one lock per key, so the disk always ends at
what memory holds). Backend calls made outside an S3 request (CloudFormation, other
extensions writing through ``S3Backend``) are persisted at once; server-side code that then
changes the object itself (``key.set_metadata``) wraps both in ``batch()`` or calls
``persist(bucket, key)``. Layout::

    <data-dir>/s3/buckets/<bucket>/bucket.json
    <data-dir>/s3/buckets/<bucket>/objects/<sha256(key)>.<version>.rec
    <data-dir>/s3/buckets/<bucket>/objects/<sha256(key)>.<version>.<token>.data

A ``.rec`` file is one line of JSON (name, version, ETag, metadata, tags ...) followed by
the object's bytes when they are at most 1 MiB; bigger objects keep their bytes in a
``.data`` file named by the record. Every file is written to a temp name, fsynced, renamed
into place and its directory fsynced; a data file is in place before the record that names
it, so a crash leaves either the old or the new version, never a torn one. Leftovers (temp
files, unreferenced data) are swept at start-up. When moto has spilled a large object to a
temp file, that buffer is swapped for the persisted file, and restored large objects are
served from the data dir directly: big objects are neither kept twice nor read into memory
to restore.
A write that cannot be persisted answers 500 InternalError instead of being acknowledged.

``LOCALAWS_S3_PERSISTENCE=0`` in the server's environment turns all of this off (S3 then
lives in memory only, as in plain moto), e.g. for throw-away servers and benchmarks.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import inspect
import itertools
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

log = logging.getLogger("localaws.s3_persistence")

DISABLE_ENV = "LOCALAWS_S3_PERSISTENCE"
FORMAT = 1
CHUNK = 1 << 20
INLINE_MAX = 1 << 20  # objects up to this size live in their record file: one fsync less
_LOCK_STRIPES = 64

_ctx = threading.local()
_store: S3Store | None = None


# --------------------------------------------------------------------------- file helpers

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    _write_atomic(path, json.dumps(data, separators=(",", ":")).encode())


def _header(header: dict) -> bytes:
    """An object record starts with one line of JSON; inline data follows it."""
    return json.dumps(header, separators=(",", ":")).encode() + b"\n"


def _key_hash(key_name: str) -> str:
    return hashlib.sha256(key_name.encode("utf-8", "surrogatepass")).hexdigest()


def _dt(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value) if value else None


# --------------------------------------------------------------------------- moto <-> JSON

def _acl_to_json(acl) -> list | None:
    if acl is None:
        return None
    return [{"grantees": [{"id": g.id, "uri": g.uri, "display_name": g.display_name}
                          for g in grant.grantees],
             "permissions": list(grant.permissions)} for grant in acl.grants]


def _acl_from_json(data: list | None):
    from moto.s3.models import FakeAcl, FakeGrant, FakeGrantee

    if data is None:
        return None
    return FakeAcl(grants=[
        FakeGrant([FakeGrantee(grantee_id=g["id"], uri=g["uri"], display_name=g["display_name"])
                   for g in grant["grantees"]], list(grant["permissions"]))
        for grant in data])


def _backend_of(bucket):
    from moto.s3.models import s3_backends

    return s3_backends[bucket.account_id][bucket.partition]


def _bucket_meta(bucket) -> dict[str, Any]:
    """A deep copy (JSON round trip), so later in-place changes still compare unequal."""
    pab = bucket.public_access_block
    backend = _backend_of(bucket)
    return _to_json({
        "format": FORMAT,
        "name": bucket.name,
        "account_id": bucket.account_id,
        "region_name": bucket.region_name,
        "partition": bucket.partition,
        "creation_date": _dt(bucket.creation_date),
        "versioning_status": bucket.versioning_status,
        "encryption": bucket.encryption,
        "public_access_block": None if pab is None else {
            "BlockPublicAcls": pab.block_public_acls,
            "IgnorePublicAcls": pab.ignore_public_acls,
            "BlockPublicPolicy": pab.block_public_policy,
            "RestrictPublicBuckets": pab.restrict_public_buckets,
        },
        "policy": bucket.policy.decode("utf-8") if bucket.policy else None,
        "tags": backend.tagger.get_tag_dict_for_resource(bucket.arn),
        "acl": _acl_to_json(bucket.acl),
        "object_lock_enabled": bucket.object_lock_enabled,
        "default_lock_mode": bucket.default_lock_mode,
        "default_lock_days": bucket.default_lock_days,
        "default_lock_years": bucket.default_lock_years,
        "settings": getattr(bucket, "_localaws_settings", {}),
    })


def _key_meta(key, backend) -> dict[str, Any]:
    """What identifies one object version on disk, minus its data file and sequence."""
    from moto.s3.models import FakeDeleteMarker

    if isinstance(key, FakeDeleteMarker):
        return {"name": key.name, "version_id": key.version_id, "delete_marker": True,
                "last_modified": _dt(key.last_modified)}
    return {
        "name": key.name,
        "version_id": key._version_id,
        "is_versioned": key._is_versioned,
        "size": key.contentsize,
        "etag": key.etag.strip('"'),
        "last_modified": _dt(key.last_modified),
        "metadata": dict(key.metadata),
        "storage_class": key._storage_class,
        "encryption": key.encryption,
        "kms_key_id": key.kms_key_id,
        "bucket_key_enabled": key.bucket_key_enabled,
        "website_redirect_location": key.website_redirect_location,
        "checksum_algorithm": key.checksum_algorithm,
        "checksum_value": key.checksum_value,
        "checksum_type": key.checksum_type,
        "checksum_parts": key.checksum_parts,
        "lock_mode": key.lock_mode,
        "lock_legal_status": key.lock_legal_status,
        "lock_until": key.lock_until,
        "expiry": _dt(key._expiry),
        "acl": _acl_to_json(key.acl),
        "tags": backend.tagger.get_tag_dict_for_resource(key.arn),
    }


# --------------------------------------------------------------------------- the store

class S3Store:
    """Brings ``<root>/buckets`` in line with moto's in-memory S3 and restores from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.buckets_dir = root / "buckets"
        self.buckets_dir.mkdir(parents=True, exist_ok=True)
        # key locks may take a bucket lock (never the reverse): two sets, no lock cycle
        self._key_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._bucket_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._seq = itertools.count(time.time_ns())
        # what is on disk: bucket -> key -> version id -> data ("inline", a file name, None)
        self._index: dict[str, dict[str, dict[str, str | None]]] = {}
        self.stats = {"writes": 0, "deletes": 0, "errors": 0, "restored_buckets": 0,
                      "restored_objects": 0, "restored_bytes": 0, "restore_seconds": 0.0}
        self.suspended = False

    def _lock(self, bucket_name: str, key_name: str | None) -> threading.Lock:
        if key_name is None:
            return self._bucket_locks[hash(bucket_name) % _LOCK_STRIPES]
        return self._key_locks[hash((bucket_name, key_name)) % _LOCK_STRIPES]

    def bucket_dir(self, bucket_name: str) -> Path:
        return self.buckets_dir / bucket_name

    @staticmethod
    def _bucket(bucket_name: str):
        from moto.s3.models import s3_backends

        owner = s3_backends.bucket_accounts.get(bucket_name)
        if owner is None:
            return None
        partition, account_id = owner
        return s3_backends[account_id][partition].buckets.get(bucket_name)

    # ---- write path

    def sync(self, bucket_name: str, key_name: str | None) -> None:
        if self.suspended or not bucket_name:
            return
        if key_name is None:
            self.sync_bucket(bucket_name)
        else:
            self.sync_key(bucket_name, key_name)

    def sync_bucket(self, bucket_name: str) -> None:
        with self._lock(bucket_name, None):
            bucket = self._bucket(bucket_name)
            bdir = self.bucket_dir(bucket_name)
            if bucket is None:
                if bdir.exists():
                    trash = self.buckets_dir / f".trash-{bucket_name}-{uuid.uuid4().hex[:8]}"
                    os.replace(bdir, trash)
                    _fsync_dir(self.buckets_dir)
                    shutil.rmtree(trash, ignore_errors=True)
                    self.stats["deletes"] += 1
                self._index.pop(bucket_name, None)
                return
            meta = _bucket_meta(bucket)
            if getattr(bucket, "_localaws_persisted", None) == meta and bdir.exists():
                return
            created = not bdir.exists()
            (bdir / "objects").mkdir(parents=True, exist_ok=True)
            _write_json(bdir / "bucket.json", meta)
            _fsync_dir(bdir)
            if created:
                _fsync_dir(self.buckets_dir)
            bucket._localaws_persisted = meta
            self.stats["writes"] += 1

    def sync_key(self, bucket_name: str, key_name: str) -> None:
        from moto.s3.models import FakeDeleteMarker

        with self._lock(bucket_name, key_name):
            bucket = self._bucket(bucket_name)
            if bucket is None:
                return
            if not (self.bucket_dir(bucket_name) / "bucket.json").exists():
                self.sync_bucket(bucket_name)
            versions = list(bucket.keys.getlist(key_name, []) or [])
            on_disk = self._index.setdefault(bucket_name, {}).get(key_name, {})
            if not versions and not on_disk:
                return
            objects = self.bucket_dir(bucket_name) / "objects"
            prefix = _key_hash(key_name)
            backend = _backend_of(bucket)
            keep: set[str] = set()
            changed = False
            for version in versions:
                vid = str(version.version_id)
                keep.add(vid)
                persisted = getattr(version, "_localaws_persisted", None)
                try:
                    meta = _key_meta(version, backend)
                except ValueError:  # disposed: superseded by a concurrent request
                    continue
                if persisted and persisted["meta"] == meta and vid in on_disk:
                    continue
                seq = persisted["seq"] if persisted else next(self._seq)
                header = {**meta, "seq": seq, "data": None}
                if isinstance(version, FakeDeleteMarker):
                    _write_atomic(objects / f"{prefix}.{vid}.rec", _header(header))
                elif meta["size"] <= INLINE_MAX:
                    header["data"] = "inline"
                    if not self._write_record_inline(objects / f"{prefix}.{vid}.rec", header,
                                                     version):
                        continue
                else:
                    same_data = (persisted and persisted["data"] not in (None, "inline")
                                 and (persisted["meta"]["size"], persisted["meta"]["etag"])
                                 == (meta["size"], meta["etag"])
                                 and (objects / persisted["data"]).exists())
                    if same_data:
                        header["data"] = persisted["data"]
                    else:
                        header["data"] = self._write_data(objects, f"{prefix}.{vid}", version)
                        if header["data"] is None:
                            continue
                    _write_atomic(objects / f"{prefix}.{vid}.rec", _header(header))
                old_data = on_disk.get(vid)
                if old_data not in (None, "inline", header["data"]):
                    (objects / old_data).unlink(missing_ok=True)
                on_disk[vid] = header["data"]
                version._localaws_persisted = {"meta": meta, "seq": seq, "data": header["data"]}
                if header["data"] not in (None, "inline"):
                    self._serve_from_disk(version, objects / header["data"])
                changed = True
                self.stats["writes"] += 1
            for vid in set(on_disk) - keep:
                (objects / f"{prefix}.{vid}.rec").unlink(missing_ok=True)
                old_data = on_disk.pop(vid)
                if old_data not in (None, "inline"):
                    (objects / old_data).unlink(missing_ok=True)
                changed = True
                self.stats["deletes"] += 1
            if on_disk:
                self._index.setdefault(bucket_name, {})[key_name] = on_disk
            else:
                self._index.get(bucket_name, {}).pop(key_name, None)
            if changed:
                _fsync_dir(objects)

    @staticmethod
    def _copy_value(key, f) -> bool:
        """Stream a key's bytes into an open file; False when the key was replaced (and
        its buffer closed) while we were at it."""
        try:
            with key.lock:
                buf = key._value_buffer
                buf.seek(0)
                while chunk := buf.read(CHUNK):
                    f.write(chunk)
        except ValueError:
            return False
        return True

    def _write_record_inline(self, path: Path, header: dict, key) -> bool:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            f.write(_header(header))
            ok = self._copy_value(key, f)
            if ok:
                f.flush()
                os.fsync(f.fileno())
        if not ok:
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, path)
        return True

    def _write_data(self, objects: Path, stem: str, key) -> str | None:
        name = f"{stem}.{uuid.uuid4().hex[:12]}.data"
        tmp = objects / f".{name}.tmp"
        with open(tmp, "wb") as f:
            ok = self._copy_value(key, f)
            if ok:
                f.flush()
                os.fsync(f.fileno())
        if not ok:
            tmp.unlink(missing_ok=True)
            return None
        os.replace(tmp, objects / name)
        return name

    @staticmethod
    def _serve_from_disk(key, path: Path) -> None:
        """Swap moto's spilled temp file for the persisted copy (same bytes, one copy)."""
        buf = key._value_buffer
        if not getattr(buf, "_rolled", False):
            return
        with key.lock:
            if key._value_buffer is buf and not key.disposed:
                key._value_buffer = open(path, "rb")  # the key owns it now (dispose closes it)
                buf.close()

    # ---- restore

    def restore(self) -> None:
        from moto.s3.models import s3_backends

        started = time.perf_counter()
        self.suspended = True
        restored = []
        try:
            for entry in sorted(self.buckets_dir.iterdir()):
                if entry.name.startswith(".trash-"):
                    shutil.rmtree(entry, ignore_errors=True)
                    continue
                if not entry.is_dir():
                    continue
                meta_path = entry / "bucket.json"
                if not meta_path.exists():  # created but never acknowledged
                    shutil.rmtree(entry, ignore_errors=True)
                    continue
                meta = json.loads(meta_path.read_text())
                backend = s3_backends[meta["account_id"]][meta["partition"]]
                bucket = self._restore_bucket(backend, meta)
                objects = entry / "objects"
                objects.mkdir(exist_ok=True)
                self._restore_objects(backend, bucket, objects)
                restored.append((backend, bucket, meta))
                self.stats["restored_buckets"] += 1
            for backend, bucket, meta in restored:
                self._restore_settings(backend, bucket, meta)
        finally:
            self.suspended = False
            self.stats["restore_seconds"] = round(time.perf_counter() - started, 3)

    @staticmethod
    def _restore_bucket(backend, meta: dict):
        from moto.s3.models import PublicAccessBlock

        bucket = backend.create_bucket(meta["name"], meta["region_name"])
        bucket.creation_date = _parse_dt(meta["creation_date"]) or bucket.creation_date
        bucket.versioning_status = meta["versioning_status"]
        bucket.encryption = meta["encryption"]
        pab = meta["public_access_block"]
        if pab:
            bucket.public_access_block = PublicAccessBlock(
                pab["BlockPublicAcls"], pab["IgnorePublicAcls"], pab["BlockPublicPolicy"],
                pab["RestrictPublicBuckets"])
        bucket.policy = meta["policy"].encode("utf-8") if meta["policy"] else None
        if meta["tags"]:
            backend.put_bucket_tagging(bucket.name, meta["tags"])
        bucket.acl = _acl_from_json(meta["acl"])
        bucket.object_lock_enabled = meta["object_lock_enabled"]
        bucket.default_lock_mode = meta["default_lock_mode"]
        bucket.default_lock_days = meta["default_lock_days"]
        bucket.default_lock_years = meta["default_lock_years"]
        return bucket

    @staticmethod
    def _restore_settings(backend, bucket, meta: dict) -> None:
        """After every bucket is back: logging and replication name other buckets."""
        kept = {}
        for setting, call in (meta.get("settings") or {}).items():
            try:
                getattr(backend, call["method"])(bucket.name, **_from_json(call["args"]))
            except Exception as exc:  # e.g. a notification target that is gone
                log.warning("bucket %s: setting %s not restored: %r", bucket.name, setting, exc)
            else:
                kept[setting] = call
        bucket._localaws_settings = kept
        bucket._localaws_persisted = _bucket_meta(bucket)

    def _restore_objects(self, backend, bucket, objects: Path) -> None:
        records: dict[str, list[tuple[dict, Path, int]]] = {}
        data_files: set[str] = set()
        for path in objects.iterdir():
            name = path.name
            if name.startswith("."):  # a temp file from an interrupted write
                path.unlink(missing_ok=True)
            elif name.endswith(".data"):
                data_files.add(name)
            elif name.endswith(".rec"):
                try:
                    with open(path, "rb") as f:
                        line = f.readline()
                    header = json.loads(line)
                except ValueError:
                    log.error("unreadable object record %s: skipped", path)
                    continue
                records.setdefault(name.split(".", 1)[0], []).append((header, path, len(line)))
        referenced: set[str] = set()
        index = self._index.setdefault(bucket.name, {})
        for group in records.values():
            group.sort(key=lambda record: record[0]["seq"])
            versions: list = []
            for header, path, header_size in group:
                version = self._restore_version(backend, bucket, header, path, header_size,
                                                versions)
                if version is None:
                    continue
                versions.append(version)
                index.setdefault(header["name"], {})[str(version.version_id)] = header["data"]
                if header["data"] not in (None, "inline"):
                    referenced.add(header["data"])
            if versions:
                bucket.keys.setlist(versions[0].name, versions)
        for name in data_files - referenced:  # written, but its record never committed
            (objects / name).unlink(missing_ok=True)

    def _restore_version(self, backend, bucket, header: dict, path: Path, header_size: int,
                         previous: list):
        from moto.s3.models import FakeDeleteMarker, FakeKey
        from moto.utilities.utils import LowercaseDict

        meta = {k: v for k, v in header.items() if k not in ("seq", "data")}
        persisted = {"meta": meta, "seq": header["seq"], "data": header["data"]}
        if header.get("delete_marker"):
            anchor = previous[-1] if previous else SimpleNamespace(name=header["name"])
            marker = FakeDeleteMarker(anchor)
            marker._version_id = header["version_id"]
            marker.last_modified = _parse_dt(header["last_modified"])
            marker._localaws_persisted = persisted
            return marker
        size = header["size"]
        if header["data"] == "inline":
            data_path, offset = path, header_size
        else:
            data_path, offset = path.parent / header["data"], 0
        if not data_path.exists() or data_path.stat().st_size != offset + size:
            log.error("object %s/%s (%s): data missing or of the wrong size, skipped",
                      bucket.name, header["name"], header["version_id"])
            return None
        key = FakeKey(
            name=header["name"], value=b"", account_id=bucket.account_id,
            region_name=bucket.region_name, storage=header["storage_class"],
            etag=header["etag"], is_versioned=header["is_versioned"],
            version_id=header["version_id"], bucket_name=bucket.name,
            encryption=header["encryption"], kms_key_id=header["kms_key_id"],
            bucket_key_enabled=header["bucket_key_enabled"], lock_mode=header["lock_mode"],
            lock_legal_status=header["lock_legal_status"], lock_until=header["lock_until"],
            checksum_value=header["checksum_value"], checksum_type=header["checksum_type"],
            checksum_parts=header["checksum_parts"],
        )
        if offset == 0 and size > key._max_buffer_size:
            key._value_buffer.close()
            key._value_buffer = open(data_path, "rb")  # the key owns it now (dispose closes it)
        else:
            with open(data_path, "rb") as f:
                f.seek(offset)
                while chunk := f.read(CHUNK):
                    key._value_buffer.write(chunk)
        key.contentsize = size
        key.last_modified = _parse_dt(header["last_modified"])
        key._metadata = LowercaseDict()
        key._metadata.update(header["metadata"])
        key.website_redirect_location = header["website_redirect_location"]
        key.checksum_algorithm = header["checksum_algorithm"]
        key._expiry = _parse_dt(header["expiry"])
        key.acl = _acl_from_json(header["acl"])
        if header["tags"]:
            backend.tagger.tag_resource(
                key.arn, [{"Key": k, "Value": v} for k, v in header["tags"].items()])
        key._localaws_persisted = persisted
        self.stats["restored_objects"] += 1
        self.stats["restored_bytes"] += size
        return key


# --------------------------------------------------------------------------- hooks

def _mark(bucket_name: str | None, key_name: str | None) -> None:
    """Record a change: flushed at the end of the S3 request, or now outside of one."""
    if _store is None or _store.suspended or not bucket_name:
        return
    dirty = getattr(_ctx, "dirty", None)
    if dirty is not None:
        dirty.add((bucket_name, key_name))
    else:
        _store.sync(bucket_name, key_name)


def _flush(dirty: set) -> None:
    if _store is None:
        return
    # buckets first: a new bucket's directory must exist before its keys
    for bucket_name, key_name in sorted(dirty, key=lambda bk: (bk[1] is not None, bk)):
        _store.sync(bucket_name, key_name)


def persist(bucket_name: str, key_name: str | None = None) -> None:
    """For server-side code that changes a moto S3 object or bucket directly (e.g.
    ``key.set_metadata``): bring the disk in line now (or at the end of ``batch()``)."""
    _mark(bucket_name, key_name)


@contextlib.contextmanager
def batch():
    """Group server-side S3 changes (``put_object`` then ``set_metadata`` ...) so they are
    persisted once, complete, when the block exits."""
    if getattr(_ctx, "dirty", None) is not None:
        yield
        return
    _ctx.dirty = dirty = set()
    try:
        yield
    finally:
        _ctx.dirty = None
        _flush(dirty)


_KEY_METHODS = ("put_object", "delete_object", "put_object_acl", "put_object_legal_hold",
                "put_object_retention", "delete_object_tagging", "put_object_tagging",
                "restore_object")
_BUCKET_PREFIXES = ("create_bucket", "delete_bucket", "put_bucket_", "delete_bucket_",
                    "put_public_access_block", "delete_public_access_block",
                    "put_object_lock_configuration")


# Bucket settings kept as the last call that set them, replayed at restore (the ones moto
# holds as plain values are saved as such in bucket.json instead).
_EXPLICIT_SETTINGS = {"versioning", "policy", "encryption", "tagging", "acl", "inventory"}


def _setting_of(method_name: str) -> str | None:
    for prefix in ("put_bucket_", "delete_bucket_"):
        if method_name.startswith(prefix):
            setting = method_name[len(prefix):].removesuffix("_configuration")
            return None if setting in _EXPLICIT_SETTINGS else setting
    return None


def _to_json(value: Any) -> Any:
    def default(obj):
        if isinstance(obj, bytes):
            return {"__bytes__": base64.b64encode(obj).decode()}
        raise TypeError(type(obj).__name__)

    return json.loads(json.dumps(value, default=default))


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return base64.b64decode(value["__bytes__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _record_setting(method_name: str, setting: str, bound: dict) -> None:
    bucket = S3Store._bucket(bound.get("bucket_name"))
    if bucket is None:
        return
    settings = bucket.__dict__.setdefault("_localaws_settings", {})
    if method_name.startswith("delete_"):
        settings.pop(setting, None)
        return
    try:
        args = _to_json({k: v for k, v in bound.items() if k not in ("self", "bucket_name")})
    except (TypeError, ValueError):
        log.warning("bucket setting %s of %s cannot be saved", setting, bucket.name)
        return
    settings[setting] = {"method": method_name, "args": args}


def _wrap_backend_method(cls, name: str) -> None:
    original = getattr(cls, name)
    signature = inspect.signature(original)
    is_key = name in _KEY_METHODS

    setting = _setting_of(name)

    def method(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        try:
            bound = signature.bind(self, *args, **kwargs).arguments
        except TypeError:
            return result
        if setting:
            _record_setting(name, setting, bound)
        key = bound.get("key")
        if key is not None and hasattr(key, "bucket_name"):
            _mark(key.bucket_name, key.name)
        else:
            _mark(bound.get("bucket_name"), bound.get("key_name") if is_key else None)
        return result

    method.__name__ = name
    method.__wrapped__ = original
    setattr(cls, name, method)


def _error_response(message: str):
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
            f"<Message>{message}</Message></Error>").encode()
    return 500, {"content-type": "application/xml", "content-length": str(len(body))}, body


def _wrap_response_method(cls, name: str, key_level: bool) -> None:
    original = getattr(cls, name)

    def method(self, request, full_url, headers):
        if request.method in ("GET", "HEAD", "OPTIONS") or getattr(_ctx, "dirty", None) is not None:
            return original(self, request, full_url, headers)
        _ctx.dirty = dirty = set()
        try:
            response = original(self, request, full_url, headers)
        except BaseException:
            _ctx.dirty = None
            _flush(dirty)  # whatever moto changed before failing must still reach the disk
            raise
        _ctx.dirty = None
        bucket_name = getattr(self, "bucket_name", None)
        if bucket_name:
            try:
                dirty.add((bucket_name, self.parse_key_name() if key_level else None))
            except Exception:  # a URL moto itself could not parse: nothing of ours changed
                pass
        try:
            _flush(dirty)
        except Exception:
            _store.stats["errors"] += 1
            log.exception("could not persist S3 change %s %s", request.method, full_url)
            return _error_response("localaws could not persist this change to its data dir")
        return response

    method.__name__ = name
    method.__wrapped__ = original
    setattr(cls, name, method)


def _install_hooks() -> None:
    from moto.s3.models import S3Backend
    from moto.s3.responses import S3Response

    if getattr(S3Backend, "_localaws_persistence", False):
        return
    for name, member in list(vars(S3Backend).items()):
        if not callable(member) or name.startswith("_"):
            continue
        if name in _KEY_METHODS or name.startswith(_BUCKET_PREFIXES):
            if name.startswith(("get_", "list_")):
                continue
            _wrap_backend_method(S3Backend, name)
    _wrap_response_method(S3Response, "bucket_response", key_level=False)
    _wrap_response_method(S3Response, "key_response", key_level=True)
    S3Backend._localaws_persistence = True


def install(runtime) -> None:
    global _store
    if os.environ.get(DISABLE_ENV, "").lower() in ("0", "false", "no", "off"):
        log.info("S3 persistence off (%s): S3 starts empty and is not saved", DISABLE_ENV)
        runtime.add_status("s3_persistence", lambda: {"enabled": False})
        return
    root = runtime.path("s3")
    fmt = root / "FORMAT"
    if not fmt.exists():
        _write_atomic(fmt, f"{FORMAT}\n".encode())
    _store = S3Store(root)
    _store.restore()
    _install_hooks()
    stats = _store.stats
    log.info("S3 restored from %s: %d buckets, %d objects, %.1f MB in %.2fs", root,
             stats["restored_buckets"], stats["restored_objects"],
             stats["restored_bytes"] / 1e6, stats["restore_seconds"])
    runtime.add_status("s3_persistence",
                       lambda: {"enabled": True, "dir": str(root), **_store.stats})
