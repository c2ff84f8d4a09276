"""Prepare a repo-local AIRFLOW_HOME: airflow.cfg, and ``connections.json`` in which
``aws_default`` points at localaws (or at real AWS when ``--aws-endpoint ''``).

    python scripts/airflow_home.py --home .airflow [--aws-endpoint http://127.0.0.1:4566]

``make`` then runs ``airflow db migrate`` and ``airflow connections import`` of that file,
so the connection lives in the metadata DB like any other (an ``AIRFLOW_CONN_AWS_DEFAULT``
environment variable still overrides it).

Idempotent: generated secrets (JWT, API secret key) are kept across runs so a running
Airflow is not invalidated; everything else is rewritten from the arguments.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import json
import secrets
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"


def aws_connection(endpoint_url: str, region: str) -> dict:
    extra: dict[str, object] = {"region_name": region}
    if endpoint_url:
        # localaws accepts any credentials; these are placeholders, not secrets.
        return {"conn_type": "aws", "login": "testing", "password": "testing",
                "extra": {**extra, "endpoint_url": endpoint_url}}
    return {"conn_type": "aws", "extra": extra}  # real AWS: the default credential chain


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def write_home(home: Path, endpoint_url: str = DEFAULT_ENDPOINT, region: str = "us-east-1",
               api_port: int = 8080, parallelism: int = 4) -> Path:
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg_path = home / "airflow.cfg"
    old = configparser.ConfigParser(interpolation=None)
    if cfg_path.exists():
        old.read(cfg_path)

    def kept(section: str, key: str) -> str:
        return old.get(section, key, fallback="") or secrets.token_urlsafe(32)

    connections = home / "connections.json"
    connections.write_text(json.dumps({"aws_default": aws_connection(endpoint_url, region)},
                                      indent=2) + "\n")
    cfg = configparser.ConfigParser(interpolation=None)
    cfg["core"] = {
        "dags_folder": str(REPO / "dags"),
        "plugins_folder": str(REPO / "plugins"),
        "load_examples": "False",
        "executor": "LocalExecutor",
        "parallelism": str(parallelism),
        "max_active_tasks_per_dag": str(parallelism),
        "execution_api_server_url": f"http://127.0.0.1:{api_port}/execution/",
        "simple_auth_manager_users": "admin:admin",
        "dags_are_paused_at_creation": "True",
        "fernet_key": old.get("core", "fernet_key", fallback="") or _fernet_key(),
    }
    cfg["database"] = {"sql_alchemy_conn": f"sqlite:///{home / 'airflow.db'}"}
    cfg["logging"] = {"base_log_folder": str(home / "logs")}
    cfg["api"] = {"host": "127.0.0.1", "port": str(api_port),
                  "secret_key": kept("api", "secret_key")}
    cfg["api_auth"] = {"jwt_secret": kept("api_auth", "jwt_secret")}
    cfg["dag_processor"] = {"refresh_interval": "30", "min_file_process_interval": "10"}
    cfg["scheduler"] = {"enable_health_check": "False"}
    tmp = cfg_path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        cfg.write(f)
    tmp.replace(cfg_path)
    cfg_path.chmod(0o600)
    return cfg_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=REPO / ".airflow")
    parser.add_argument("--aws-endpoint", default=DEFAULT_ENDPOINT,
                        help="endpoint_url of aws_default; empty for real AWS")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--api-port", type=int, default=8080)
    args = parser.parse_args()
    print(write_home(args.home, args.aws_endpoint, args.region, args.api_port))


if __name__ == "__main__":
    main()
