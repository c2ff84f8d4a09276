"""SNS e-mail subscriptions deliver through SMTP into localaws' mail sink."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import boto3
import pytest

from localaws.services.sns_mail import read_messages


def _poll(fn, timeout=15.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def _mails_to(server, address, count=1):
    def found():
        mails = [m for m in read_messages(server.data_dir) if m["to"] == address]
        return mails if len(mails) >= count else None
    mails = _poll(found)
    assert mails, f"no mail to {address} in {server.data_dir / 'mail'}"
    return mails


@pytest.fixture()
def sns(localaws):
    return boto3.client("sns")


@pytest.fixture()
def topic(sns):
    arn = sns.create_topic(Name=f"mail-{uuid.uuid4().hex[:8]}")["TopicArn"]
    yield arn
    sns.delete_topic(TopicArn=arn)


def _address():
    return f"owner-{uuid.uuid4().hex[:8]}@example.com"


def test_email_subscription_delivers_text_with_footer(localaws, sns, topic):
    to = _address()
    sub_arn = sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=to,
                            ReturnSubscriptionArn=True)["SubscriptionArn"]
    sns.set_topic_attributes(TopicArn=topic, AttributeName="DisplayName",
                             AttributeValue="ML Alerts")
    message_id = sns.publish(
        TopicArn=topic, Subject="Low confidence", Message="3 images below 0.8",
        MessageAttributes={"severity": {"DataType": "String", "StringValue": "high"}},
    )["MessageId"]

    (mail,) = _mails_to(localaws, to)
    assert mail["subject"] == "Low confidence"
    assert mail["from"] == "ML Alerts <no-reply@sns.amazonaws.com>"
    assert mail["topic_arn"] == topic
    assert mail["message_id"] == message_id
    assert mail["message_attributes"]["severity"]["Value"] == "high"
    assert mail["body"].startswith("3 images below 0.8\n\n--\n")
    assert "to unsubscribe" in mail["body"]
    assert f"SubscriptionArn={sub_arn}" in mail["body"]
    assert mail["file"].endswith(".eml")


def test_default_subject_and_message_structure(localaws, sns, topic):
    to = _address()
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=to)
    sns.publish(TopicArn=topic, MessageStructure="json",
                Message=json.dumps({"default": "for everyone", "email": "for e-mail"}))
    (mail,) = _mails_to(localaws, to)
    assert mail["subject"] == "AWS Notification Message"
    assert mail["body"].startswith("for e-mail\n")


def test_email_json_subscription_delivers_envelope(localaws, sns, topic):
    to = _address()
    sns.subscribe(TopicArn=topic, Protocol="email-json", Endpoint=to)
    message_id = sns.publish(
        TopicArn=topic, Subject="Drift", Message='{"psi": 0.3}',
        MessageAttributes={"model": {"DataType": "String", "StringValue": "v2"}},
    )["MessageId"]
    (mail,) = _mails_to(localaws, to)
    envelope = json.loads(mail["body"])
    assert envelope["Type"] == "Notification"
    assert envelope["MessageId"] == message_id
    assert envelope["TopicArn"] == topic
    assert envelope["Subject"] == "Drift"
    assert envelope["Message"] == '{"psi": 0.3}'
    assert envelope["MessageAttributes"]["model"] == {"Type": "String", "Value": "v2"}
    assert {"Timestamp", "Signature", "SigningCertURL", "UnsubscribeURL"} <= set(envelope)
    assert mail["subject"] == "Drift"


def test_filter_policy_is_respected(localaws, sns, topic):
    to = _address()
    sub = sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=to,
                        ReturnSubscriptionArn=True)["SubscriptionArn"]
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicy",
                                    AttributeValue=json.dumps({"level": ["alert"]}))
    sns.publish(TopicArn=topic, Message="ignored",
                MessageAttributes={"level": {"DataType": "String", "StringValue": "info"}})
    sns.publish(TopicArn=topic, Message="wanted",
                MessageAttributes={"level": {"DataType": "String", "StringValue": "alert"}})
    mails = _mails_to(localaws, to)
    # delivery is synchronous: once "wanted" is there, "ignored" would be too
    assert [m["body"].split("\n")[0] for m in mails] == ["wanted"]


def test_sqs_subscription_still_delivers(localaws, sns, topic):
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=_address())
    sns.publish(TopicArn=topic, Subject="s", Message="to the queue")

    def receive():
        return sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages")
    messages = _poll(receive)
    assert messages, "the SQS subscription received nothing"
    body = json.loads(messages[0]["Body"])
    assert body["Message"] == "to the queue"
    assert body["TopicArn"] == topic


def test_publish_without_subscribers(localaws, sns, topic):
    assert sns.publish(TopicArn=topic, Message="nobody listens")["MessageId"]


def test_status_and_cli(localaws, sns, topic):
    to = _address()
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=to)
    sns.publish(TopicArn=topic, Subject="From the CLI test", Message="hello cli")
    _mails_to(localaws, to)

    status = localaws.status()["mail"]
    assert status["smtp_port"] > 0
    assert status["count"] >= 1

    out = subprocess.run(
        [sys.executable, "-m", "localaws", "mail", "--data-dir", str(localaws.data_dir),
         "--last", "1", "--json"], capture_output=True, text=True, check=True).stdout
    (last,) = json.loads(out)
    assert last["to"] == to and last["subject"] == "From the CLI test"
    assert last["body"].startswith("hello cli")

    text = subprocess.run(
        [sys.executable, "-m", "localaws", "mail", "--data-dir", str(localaws.data_dir),
         "--last", "1"], capture_output=True, text=True, check=True).stdout
    assert "Subject: From the CLI test" in text and f"To:      {to}" in text
    assert "hello cli" in text
