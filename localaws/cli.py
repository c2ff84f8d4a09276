"""Command line: ``python -m localaws serve|status|mail``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from pathlib import Path

DEFAULT_PORT = 4566


def _default_url() -> str:
    return os.environ.get("AWS_ENDPOINT_URL", f"http://127.0.0.1:{DEFAULT_PORT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localaws", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the AWS runtime in the foreground")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    p_serve.add_argument("--data-dir", type=Path, default=Path(".localaws"))
    p_serve.add_argument("--verbose", action="store_true", help="log every request")

    p_status = sub.add_parser("status", help="what a running localaws holds")
    p_status.add_argument("--url", default=_default_url())

    p_mail = sub.add_parser("mail", help="list e-mails delivered to the local mail sink")
    p_mail.add_argument("--data-dir", type=Path, default=Path(".localaws"))
    p_mail.add_argument("--last", type=int, default=None, help="only the last N messages")
    p_mail.add_argument("--json", action="store_true", help="print JSON instead of text")

    args = parser.parse_args(argv)
    if args.command == "serve":
        from localaws.server import serve

        return serve(args.host, args.port, args.data_dir, verbose=args.verbose)
    if args.command == "status":
        from localaws.server import STATUS_PATH

        try:
            with urllib.request.urlopen(args.url.rstrip("/") + STATUS_PATH, timeout=5) as r:
                print(json.dumps(json.load(r), indent=2))
        except OSError as exc:
            print(f"localaws is not answering at {args.url}: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "mail":
        from localaws.services.sns_mail import print_mail

        return print_mail(args.data_dir, last=args.last, as_json=args.json)
    return 2
