"""The AIRFLOW_HOME that `make` generates points aws_default at localaws."""

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_home_points_aws_default_at_localaws(tmp_path):
    home = tmp_path / "home"
    subprocess.run([sys.executable, str(REPO / "scripts/airflow_home.py"), "--home", str(home)],
                   check=True, capture_output=True)
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(home / "airflow.cfg")
    assert cfg["core"]["load_examples"] == "False"
    assert cfg["api"]["host"] == "127.0.0.1"
    assert cfg["core"]["dags_folder"] == str(REPO / "dags")

    # Do what make does, then ask Airflow itself (in a clean process) what aws_default is.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "AWS_ENDPOINT"))}
    env["AIRFLOW_HOME"] = str(home)
    for args in (["db", "migrate"],
                 ["connections", "import", "--overwrite", str(home / "connections.json")]):
        subprocess.run([sys.executable, "-m", "airflow", *args], env=env, check=True,
                       capture_output=True)
    out = subprocess.run([sys.executable, "-m", "airflow", "connections", "get", "aws_default",
                          "-o", "json"], env=env, check=True, capture_output=True, text=True)
    conn = json.loads(out.stdout)[0]
    assert conn["conn_type"] == "aws"
    assert conn["extra_dejson"] == {"endpoint_url": "http://127.0.0.1:4566",
                                    "region_name": "us-east-1"}
    assert conn["is_encrypted"] == "True"  # a Fernet key is generated: stored encrypted


def test_secrets_survive_regeneration_and_file_is_private(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    from airflow_home import write_home

    cfg_path = write_home(tmp_path)
    first = cfg_path.read_text()
    write_home(tmp_path, endpoint_url="")
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(first)
    assert cfg["api_auth"]["jwt_secret"] in cfg_path.read_text()
    assert oct(cfg_path.stat().st_mode & 0o777) == "0o600"
    conn = json.loads((tmp_path / "connections.json").read_text())["aws_default"]
    assert "endpoint_url" not in conn["extra"]  # --aws-endpoint '' means real AWS
