"""Deployment packages for the Lambdas in ``lambdas/<name>/``: a deterministic zip (same
files → same bytes → same SHA-256), so an unchanged function is never re-uploaded and a
changed one always is."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

LAMBDAS_DIR = Path(__file__).resolve().parents[2] / "lambdas"
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Package:
    name: str
    data: bytes

    @property
    def sha256_hex(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def code_sha256(self) -> str:
        """The form Lambda reports as CodeSha256 (base64 of the digest)."""
        return base64.b64encode(hashlib.sha256(self.data).digest()).decode()


def build(name: str, root: Path = LAMBDAS_DIR) -> Package:
    src = root / name
    if not (src / "app.py").is_file():
        raise FileNotFoundError(f"Lambda {name!r} has no {src / 'app.py'}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in src.rglob("*") if p.is_file()
                           and "__pycache__" not in p.parts and p.suffix != ".pyc"):
            info = zipfile.ZipInfo(path.relative_to(src).as_posix(), date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return Package(name, buf.getvalue())
