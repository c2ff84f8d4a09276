"""Lambda packages are deterministic and contain the handler."""

import io
import zipfile

from ml_workflow import lambda_package


def test_same_files_same_bytes_and_handler_inside():
    a, b = lambda_package.build("classify"), lambda_package.build("classify")
    assert a.data == b.data and a.sha256_hex == b.sha256_hex
    names = zipfile.ZipFile(io.BytesIO(a.data)).namelist()
    assert "app.py" in names and not any("__pycache__" in n for n in names)


def test_a_change_changes_the_hash(tmp_path):
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text("def lambda_handler(e, c):\n    return 1\n")
    first = lambda_package.build("fn", root=tmp_path)
    (tmp_path / "fn" / "app.py").write_text("def lambda_handler(e, c):\n    return 2\n")
    assert lambda_package.build("fn", root=tmp_path).sha256_hex != first.sha256_hex
