"""SNS ``email`` / ``email-json`` delivery through real SMTP into a local mail sink.

moto auto-confirms e-mail subscriptions and never sends anything. This module owns:

* the mail sink: an aiosmtpd server on 127.0.0.1 (free port) that stores every message it
  receives as ``<data-dir>/mail/<ns-timestamp>-<id>.eml`` (written to a temp file, then
  renamed, so a reader never sees half a message). Any local program may use it as an SMTP
  relay; its address is in the ``mail`` status section.
* the delivery hook on ``moto.sns.models.Subscription.publish``: for ``email`` the body is
  the message text plus the unsubscribe footer AWS appends; for ``email-json`` it is the
  JSON notification envelope (Type, MessageId, TopicArn, Subject, Message, Timestamp,
  signature fields, UnsubscribeURL, MessageAttributes). The subject is the Publish
  ``Subject`` or AWS's default "AWS Notification Message"; the sender shows the topic's
  DisplayName like AWS does. Delivery is synchronous (the mail is on disk when Publish
  returns) and failures are logged, never raised: a mail problem must not break Publish.
  Other protocols (sqs, lambda, http) keep moto's behaviour.
* ``print_mail`` behind ``python -m localaws mail [--last N] [--json]``.

Subscriptions stay auto-confirmed (no confirmation e-mail is sent).
"""

from __future__ import annotations

import asyncio
import email.policy
import json
import logging
import os
import smtplib
import socket
import threading
import time
import uuid
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path
from typing import Any

log = logging.getLogger("localaws.sns_mail")

DEFAULT_SUBJECT = "AWS Notification Message"
SENDER_ADDRESS = "no-reply@sns.amazonaws.com"
SENDER_NAME = "AWS Notifications"
MAIL_DIR = "mail"
SMTP_TIMEOUT = 10.0

_FOOTER = (
    "\n\n--\n"
    "If you wish to stop receiving notifications from this topic, please click or visit "
    "the link below to unsubscribe:\n{unsubscribe_url}\n\n"
    "Please do not reply directly to this email. If you have any questions or comments "
    "regarding this email, please contact us at https://aws.amazon.com/support\n"
)

# long ARNs stay on one header line instead of being RFC 2047-encoded
_POLICY = email.policy.SMTP.clone(max_line_length=998)

_state: dict[str, Any] = {}


# --------------------------------------------------------------------------- mail store

def _mail_dir(data_dir: Path) -> Path:
    return Path(data_dir) / MAIL_DIR


def save_message(mail_dir: Path, content: bytes) -> Path:
    """Store one RFC 5322 message atomically; file names sort in arrival order."""
    mail_dir.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
    tmp = mail_dir / f".{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    final = mail_dir / f"{name}.eml"
    os.replace(tmp, final)
    return final


def _message_files(data_dir: Path) -> list[Path]:
    d = _mail_dir(data_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix == ".eml" and not p.name.startswith("."))


def read_messages(data_dir: Path, last: int | None = None) -> list[dict[str, Any]]:
    """The stored messages, oldest first, as dicts (date, from, to, subject, body, ...)."""
    files = _message_files(data_dir)
    if last is not None:
        files = files[-last:] if last > 0 else []
    parser = BytesParser(policy=email.policy.default)
    out = []
    for path in files:
        with open(path, "rb") as f:
            msg = parser.parse(f)
        part = msg.get_body(preferencelist=("plain", "html"))
        body = part.get_content() if part is not None else ""
        attributes = msg.get("X-Amz-Sns-Message-Attributes")
        out.append({
            "file": str(path),
            "date": str(msg.get("Date", "")),
            "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")),
            "subject": str(msg.get("Subject", "")),
            "topic_arn": str(msg.get("X-Amz-Sns-Topic-Arn", "")) or None,
            "message_id": str(msg.get("X-Amz-Sns-Message-Id", "")) or None,
            "message_attributes": json.loads(str(attributes)) if attributes else None,
            "body": body,
        })
    return out


def print_mail(data_dir: Path, last: int | None = None, as_json: bool = False) -> int:
    """``python -m localaws mail``: list what the local mail sink received."""
    messages = read_messages(Path(data_dir), last=last)
    if as_json:
        print(json.dumps(messages, indent=2))
        return 0
    if not messages:
        print(f"no mail in {_mail_dir(Path(data_dir))}")
        return 0
    for i, m in enumerate(messages):
        if i:
            print()
        print("=" * 72)
        print(f"Date:    {m['date']}")
        print(f"From:    {m['from']}")
        print(f"To:      {m['to']}")
        print(f"Subject: {m['subject']}")
        if m["topic_arn"]:
            print(f"Topic:   {m['topic_arn']}")
        print("-" * 72)
        print(m["body"].rstrip("\n"))
    return 0


# --------------------------------------------------------------------------- SMTP sink

class _SinkHandler:
    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd)
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, save_message, self.mail_dir, content)
        except OSError:
            log.exception("could not store a message in %s", self.mail_dir)
            return "451 Requested action aborted: local error in processing"
        return "250 Message accepted for delivery"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _start_sink(mail_dir: Path, host: str = "127.0.0.1"):
    from aiosmtpd.controller import Controller

    last_error: Exception | None = None
    for _ in range(5):  # the free port can be taken between probe and bind
        controller = Controller(_SinkHandler(mail_dir), hostname=host, port=_free_port(host),
                                ready_timeout=10.0)
        try:
            controller.start()
            return controller
        except Exception as exc:  # aiosmtpd reports bind failures with several types
            last_error = exc
    raise RuntimeError(f"could not start the local SMTP sink: {last_error!r}")


# --------------------------------------------------------------------------- delivery

def _unsubscribe_url(sub) -> str:
    region = sub.topic.sns_backend.region_name
    return (f"https://sns.{region}.amazonaws.com/unsubscribe.html?"
            f"SubscriptionArn={sub.arn}&Endpoint={sub.endpoint}")


def _json_envelope(sub, message: str, message_id: str, subject: str | None,
                   message_attributes: dict | None) -> str:
    data = sub.get_post_data(message, message_id, subject, message_attributes=message_attributes)
    region = sub.topic.sns_backend.region_name
    data["UnsubscribeURL"] = (f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe"
                              f"&SubscriptionArn={sub.arn}")
    return json.dumps(data, indent=2)


def build_message(sub, message: str, message_id: str, subject: str | None,
                  message_attributes: dict | None) -> EmailMessage:
    topic = sub.topic
    display_name = getattr(topic, "display_name", "") or SENDER_NAME
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = formataddr((display_name, SENDER_ADDRESS))
    msg["To"] = sub.endpoint
    msg["Subject"] = subject or DEFAULT_SUBJECT
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="email.amazonses.com")
    msg["X-Amz-Sns-Message-Id"] = message_id
    msg["X-Amz-Sns-Topic-Arn"] = topic.arn
    msg["X-Amz-Sns-Subscription-Arn"] = sub.arn
    if message_attributes:
        msg["X-Amz-Sns-Message-Attributes"] = json.dumps(message_attributes,
                                                         separators=(",", ":"))
    if sub.protocol == "email-json":
        body = _json_envelope(sub, message, message_id, subject, message_attributes)
    else:
        body = message + _FOOTER.format(unsubscribe_url=_unsubscribe_url(sub))
    longest = max((len(line.encode()) for line in body.splitlines()), default=0)
    # 8bit keeps the stored .eml readable; RFC 5322 caps a line at 998 octets
    msg.set_content(body, charset="utf-8", cte="8bit" if longest <= 990 else "quoted-printable")
    return msg


def _send(msg: EmailMessage) -> None:
    port = _state.get("port")
    if not port:
        raise ConnectionRefusedError("the local SMTP sink is not running")
    with smtplib.SMTP("127.0.0.1", port, timeout=SMTP_TIMEOUT) as smtp:
        smtp.send_message(msg, from_addr=SENDER_ADDRESS, to_addrs=[msg["To"]])


def _patch_publish() -> None:
    from moto.sns.models import Subscription

    if getattr(Subscription.publish, "_localaws", False):
        return
    original = Subscription.publish

    def publish(self, message, message_id, subject=None, message_attributes=None,
                group_id=None, deduplication_id=None, message_structure=None):
        if self.protocol not in ("email", "email-json"):
            return original(self, message, message_id, subject=subject,
                            message_attributes=message_attributes, group_id=group_id,
                            deduplication_id=deduplication_id,
                            message_structure=message_structure)
        matcher = self._filter_policy_matcher
        if matcher is not None and not matcher.matches(message_attributes, message):
            return None
        if message_structure == "json":
            message = self._parse_message_structure(message, self.protocol)
        try:
            msg = build_message(self, message, message_id, subject, message_attributes)
            _send(msg)
            with _state["lock"]:
                _state["sent"] += 1
        except (OSError, smtplib.SMTPException) as exc:
            # werkzeug never answers when a ConnectionError escapes a handler
            with _state["lock"]:
                _state["failed"] += 1
            log.warning("SNS e-mail to %s not delivered: %r", self.endpoint, exc)
        except Exception:  # a mail problem must not fail the Publish call
            with _state["lock"]:
                _state["failed"] += 1
            log.exception("SNS e-mail to %s not delivered", self.endpoint)
        return None

    publish._localaws = True  # type: ignore[attr-defined]
    Subscription.publish = publish


def install(runtime) -> None:
    mail_dir = runtime.path(MAIL_DIR)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    _state.update(lock=threading.Lock(), sent=0, failed=0, port=None, mail_dir=mail_dir)
    controller = _start_sink(mail_dir)
    _state["port"] = controller.port
    _patch_publish()

    def _stop() -> None:
        _state["port"] = None
        controller.stop()

    def _status() -> dict[str, Any]:
        return {
            "smtp_host": "127.0.0.1",
            "smtp_port": _state["port"],
            "dir": str(mail_dir),
            "count": len(_message_files(runtime.data_dir)),
            "sent_by_sns": _state["sent"],
            "failed": _state["failed"],
        }

    runtime.on_shutdown("sns_mail", _stop)
    runtime.add_status("mail", _status)
    log.info("SNS e-mail goes to the SMTP sink on 127.0.0.1:%s (%s)", controller.port, mail_dir)
