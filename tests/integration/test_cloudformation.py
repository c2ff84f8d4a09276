"""A real stack (bucket + policy, IAM roles, SNS topic + e-mail subscription, state machine)
deploys, updates and deletes through CloudFormation as it does on AWS."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from localaws.services.sns_mail import read_messages

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  Suffix: {Type: String}
  OwnerEmail: {Type: String}
  Threshold: {Type: String, Default: "0.93"}
  Versioning: {Type: String, Default: Enabled}
Resources:
  DataBucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "ml-data-${Suffix}"
      BucketEncryption:
        ServerSideEncryptionConfiguration:
          - ServerSideEncryptionByDefault: {SSEAlgorithm: AES256}
      PublicAccessBlockConfiguration:
        BlockPublicAcls: true
        BlockPublicPolicy: true
        IgnorePublicAcls: true
        RestrictPublicBuckets: true
      VersioningConfiguration: {Status: !Ref Versioning}
      Tags: [{Key: project, Value: ml-workflow}]
  DataBucketPolicy:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: !Ref DataBucket
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Sid: DenyInsecureTransport
            Effect: Deny
            Principal: "*"
            Action: "s3:*"
            Resource: [!GetAtt DataBucket.Arn, !Sub "${DataBucket.Arn}/*"]
            Condition: {Bool: {"aws:SecureTransport": "false"}}
  SageMakerRole:
    Type: AWS::IAM::Role
    Properties:
      RoleName: !Sub "sagemaker-${Suffix}"
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {Service: sagemaker.amazonaws.com}
            Action: sts:AssumeRole
      ManagedPolicyArns:
        - arn:aws:iam::aws:policy/AmazonSageMakerFullAccess
      Policies:
        - PolicyName: bucket-access
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: ["s3:GetObject", "s3:PutObject"]
                Resource: !Sub "${DataBucket.Arn}/*"
  LambdaRole:
    Type: AWS::IAM::Role
    Properties:
      RoleName: !Sub "lambda-${Suffix}"
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {Service: lambda.amazonaws.com}
            Action: sts:AssumeRole
      ManagedPolicyArns:
        - arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole
  AlertTopic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub "alerts-${Suffix}"
      DisplayName: ML alerts
  AlertEmail:
    Type: AWS::SNS::Subscription
    Properties:
      TopicArn: !Ref AlertTopic
      Protocol: email
      Endpoint: !Ref OwnerEmail
  Workflow:
    Type: AWS::StepFunctions::StateMachine
    Properties:
      StateMachineName: !Sub "workflow-${Suffix}"
      RoleArn: !GetAtt LambdaRole.Arn
      Definition:
        StartAt: Threshold
        States:
          Threshold:
            Type: Pass
            Result: {threshold: "${Threshold}", topic: "${TopicArn}"}
            End: true
      DefinitionSubstitutions:
        Threshold: !Ref Threshold
        TopicArn: !Ref AlertTopic
Outputs:
  BucketName: {Value: !Ref DataBucket}
  BucketArn: {Value: !GetAtt DataBucket.Arn}
  RoleArn: {Value: !GetAtt SageMakerRole.Arn}
  TopicArn: {Value: !Ref AlertTopic}
  SubscriptionArn: {Value: !Ref AlertEmail}
  StateMachineArn: {Value: !Ref Workflow}
  StateMachineName: {Value: !GetAtt Workflow.Name}
"""

STRING_DEFINITION = {
    "StartAt": "Only",
    "States": {"Only": {"Type": "Pass", "Result": "${Greeting}", "End": True}},
}


def _wait(cf, stack, wanted, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        stacks = cf.describe_stacks(StackName=stack)["Stacks"]
        status = stacks[0]["StackStatus"]
        if status == wanted:
            return stacks[0]
        assert not status.endswith(("FAILED", "ROLLBACK_COMPLETE")), stacks[0]
        assert time.monotonic() < deadline, f"{stack} stuck in {status}"
        time.sleep(0.1)


def _outputs(stack):
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


@pytest.fixture()
def clients(localaws):
    return {name: boto3.client(name) for name in
            ("cloudformation", "s3", "iam", "sns", "stepfunctions")}


def test_stack_create_update_delete(localaws, clients):
    cf, s3, iam, sns, sfn = (clients[n] for n in
                             ("cloudformation", "s3", "iam", "sns", "stepfunctions"))
    suffix = uuid.uuid4().hex[:8]
    email = f"owner-{suffix}@example.com"
    params = [{"ParameterKey": "Suffix", "ParameterValue": suffix},
              {"ParameterKey": "OwnerEmail", "ParameterValue": email}]
    stack_id = cf.create_stack(StackName=f"ml-{suffix}", TemplateBody=TEMPLATE,
                               Parameters=params,
                               Capabilities=["CAPABILITY_NAMED_IAM"])["StackId"]
    out = _outputs(_wait(cf, stack_id, "CREATE_COMPLETE"))
    bucket = f"ml-data-{suffix}"
    assert out["BucketName"] == bucket
    assert out["BucketArn"] == f"arn:aws:s3:::{bucket}"

    # S3: everything the template asked for
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert pab == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                   "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"][0]["Sid"] == "DenyInsecureTransport"
    assert policy["Statement"][0]["Resource"] == [f"arn:aws:s3:::{bucket}",
                                                  f"arn:aws:s3:::{bucket}/*"]
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [
        {"Key": "project", "Value": "ml-workflow"}]

    # IAM: managed and inline policies, inline documents as JSON
    attached = iam.list_attached_role_policies(RoleName=f"sagemaker-{suffix}")
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [
        "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"]
    attached = iam.list_attached_role_policies(RoleName=f"lambda-{suffix}")
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == [
        "AWSLambdaBasicExecutionRole"]
    inline = iam.get_role_policy(RoleName=f"sagemaker-{suffix}", PolicyName="bucket-access")
    assert inline["PolicyDocument"]["Statement"][0]["Resource"] == f"arn:aws:s3:::{bucket}/*"
    assert out["RoleArn"] == iam.get_role(RoleName=f"sagemaker-{suffix}")["Role"]["Arn"]

    # SNS: the e-mail subscription exists, is the stack's Ref, and delivers mail
    subs = sns.list_subscriptions_by_topic(TopicArn=out["TopicArn"])["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", email)]
    assert subs[0]["SubscriptionArn"] == out["SubscriptionArn"]
    sns.publish(TopicArn=out["TopicArn"], Subject="stack test", Message="hello from the stack")
    mails = [m for m in read_messages(localaws.data_dir) if m["to"] == email]
    assert [m["subject"] for m in mails] == ["stack test"]
    assert mails[0]["from"].startswith("ML alerts")

    # Step Functions: visible to the API, definition object with substitutions applied
    desc = sfn.describe_state_machine(stateMachineArn=out["StateMachineArn"])
    definition = json.loads(desc["definition"])
    assert definition["States"]["Threshold"]["Result"] == {"threshold": "0.93",
                                                           "topic": out["TopicArn"]}
    assert desc["roleArn"].endswith(f":role/lambda-{suffix}")
    assert out["StateMachineName"] == f"workflow-{suffix}"
    execution = sfn.start_execution(stateMachineArn=out["StateMachineArn"],
                                    name=f"run-{suffix}")["executionArn"]
    deadline = time.monotonic() + 20
    while (result := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert result["status"] == "SUCCEEDED"
    assert json.loads(result["output"])["threshold"] == "0.93"

    # ---- UpdateStack: change every extended property
    updated = (TEMPLATE
               .replace("AmazonSageMakerFullAccess", "AmazonS3ReadOnlyAccess")
               .replace('["s3:GetObject", "s3:PutObject"]', '["s3:GetObject"]')
               .replace("Sid: DenyInsecureTransport", "Sid: DenyHttp")
               .replace("DisplayName: ML alerts", "DisplayName: ML alerts v2")
               .replace("      Endpoint: !Ref OwnerEmail",
                        "      Endpoint: !Ref OwnerEmail\n"
                        "      FilterPolicy: {severity: [high]}"))
    pab_block = updated[updated.index("      PublicAccessBlockConfiguration:"):
                        updated.index("      VersioningConfiguration:")]
    updated = updated.replace(pab_block, "")
    cf.update_stack(StackName=stack_id, TemplateBody=updated,
                    Parameters=[*params,
                                {"ParameterKey": "Threshold", "ParameterValue": "0.5"},
                                {"ParameterKey": "Versioning", "ParameterValue": "Suspended"}],
                    Capabilities=["CAPABILITY_NAMED_IAM"])
    out2 = _outputs(_wait(cf, stack_id, "UPDATE_COMPLETE"))

    with pytest.raises(ClientError, match="NoSuchPublicAccessBlockConfiguration"):
        s3.get_public_access_block(Bucket=bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"][0]["Sid"] == "DenyHttp"
    attached = iam.list_attached_role_policies(RoleName=f"sagemaker-{suffix}")
    assert [p["PolicyName"] for p in attached["AttachedPolicies"]] == ["AmazonS3ReadOnlyAccess"]
    inline = iam.get_role_policy(RoleName=f"sagemaker-{suffix}", PolicyName="bucket-access")
    assert inline["PolicyDocument"]["Statement"][0]["Action"] == ["s3:GetObject"]
    # the topic changed in place: same ARN, subscription kept, filter policy applied
    assert out2["TopicArn"] == out["TopicArn"]
    attrs = sns.get_topic_attributes(TopicArn=out["TopicArn"])["Attributes"]
    assert attrs["DisplayName"] == "ML alerts v2"
    subs = sns.list_subscriptions_by_topic(TopicArn=out["TopicArn"])["Subscriptions"]
    assert [s["SubscriptionArn"] for s in subs] == [out["SubscriptionArn"]]
    sub_attrs = sns.get_subscription_attributes(SubscriptionArn=out["SubscriptionArn"])
    assert json.loads(sub_attrs["Attributes"]["FilterPolicy"]) == {"severity": ["high"]}
    desc = sfn.describe_state_machine(stateMachineArn=out["StateMachineArn"])
    assert json.loads(desc["definition"])["States"]["Threshold"]["Result"]["threshold"] == "0.5"

    # ---- DeleteStack: every resource goes
    cf.delete_stack(StackName=stack_id)
    _wait(cf, stack_id, "DELETE_COMPLETE")
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    roles = [r["RoleName"] for r in iam.list_roles()["Roles"]]
    assert f"sagemaker-{suffix}" not in roles and f"lambda-{suffix}" not in roles
    assert out["TopicArn"] not in [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    assert out["SubscriptionArn"] not in [
        s["SubscriptionArn"] for s in sns.list_subscriptions()["Subscriptions"]]
    assert out["StateMachineArn"] not in [
        m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]]


def test_definition_string_with_substitutions_and_generated_names(localaws, clients):
    cf, sfn, s3 = clients["cloudformation"], clients["stepfunctions"], clients["s3"]
    template = {
        "Resources": {
            "Role": {"Type": "AWS::IAM::Role", "Properties": {
                "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"},
                    "Action": "sts:AssumeRole"}]}}},
            "Machine": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
                "RoleArn": {"Fn::GetAtt": ["Role", "Arn"]},
                "DefinitionString": json.dumps(STRING_DEFINITION),
                "DefinitionSubstitutions": {"Greeting": "hello"}}},
            "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {
                "VersioningConfiguration": {"Status": "Enabled"},
                "Tags": [{"Key": "a", "Value": "1"}]}},
        },
        "Outputs": {"Machine": {"Value": {"Ref": "Machine"}},
                    "Bucket": {"Value": {"Ref": "Bucket"}}},
    }
    name = f"strdef-{uuid.uuid4().hex[:8]}"
    stack_id = cf.create_stack(StackName=name, TemplateBody=json.dumps(template),
                               Capabilities=["CAPABILITY_IAM"])["StackId"]
    out = _outputs(_wait(cf, stack_id, "CREATE_COMPLETE"))
    desc = sfn.describe_state_machine(stateMachineArn=out["Machine"])
    assert json.loads(desc["definition"])["States"]["Only"]["Result"] == "hello"
    assert s3.get_bucket_versioning(Bucket=out["Bucket"])["Status"] == "Enabled"

    # an update of a bucket without BucketName (moto crashed on Tags here)
    template["Resources"]["Bucket"]["Properties"]["Tags"] = [{"Key": "a", "Value": "2"}]
    template["Resources"]["Machine"]["Properties"]["DefinitionSubstitutions"] = {
        "Greeting": "bye"}
    cf.update_stack(StackName=name, TemplateBody=json.dumps(template),
                    Capabilities=["CAPABILITY_IAM"])
    _wait(cf, name, "UPDATE_COMPLETE")
    assert s3.get_bucket_tagging(Bucket=out["Bucket"])["TagSet"] == [{"Key": "a", "Value": "2"}]
    desc = sfn.describe_state_machine(stateMachineArn=out["Machine"])
    assert json.loads(desc["definition"])["States"]["Only"]["Result"] == "bye"
    cf.delete_stack(StackName=name)
    _wait(cf, stack_id, "DELETE_COMPLETE")
    assert out["Machine"] not in [m["stateMachineArn"]
                                  for m in sfn.list_state_machines()["stateMachines"]]
    assert out["Bucket"] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_aws_managed_policy_attaches_through_the_api(localaws, clients):
    iam = clients["iam"]
    role = f"api-{uuid.uuid4().hex[:8]}"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}))
    arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    assert iam.get_policy(PolicyArn=arn)["Policy"]["PolicyName"] == "AWSLambdaBasicExecutionRole"
    assert [p["PolicyArn"] for p in
            iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]] == [arn]
    with pytest.raises(ClientError):
        iam.attach_role_policy(RoleName=role,
                               PolicyArn="arn:aws:iam::aws:policy/NoSuchPolicyAnywhere")
    iam.detach_role_policy(RoleName=role, PolicyArn=arn)
    iam.delete_role(RoleName=role)


PROJECT_STACK = Path(__file__).resolve().parents[2] / "include" / "cloudformation" / "stack.yaml"


@pytest.mark.skipif(not PROJECT_STACK.exists(), reason="the project's stack is not there")
def test_project_stack_deploys_as_on_aws(localaws, clients):
    cf, s3, iam, sns = (clients[n] for n in ("cloudformation", "s3", "iam", "sns"))
    suffix = uuid.uuid4().hex[:8]
    project, bucket, email = f"mlw-{suffix}", f"mlw-data-{suffix}", f"alerts-{suffix}@example.com"
    stack_id = cf.create_stack(
        StackName=f"project-{suffix}", TemplateBody=PROJECT_STACK.read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": "ProjectName", "ParameterValue": project},
                    {"ParameterKey": "BucketName", "ParameterValue": bucket},
                    {"ParameterKey": "AlertEmail", "ParameterValue": email}])["StackId"]
    out = _outputs(_wait(cf, stack_id, "CREATE_COMPLETE"))
    assert out["BucketName"] == bucket

    assert all(s3.get_public_access_block(Bucket=bucket)[
        "PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
        "Rules"][0]
    assert rule["BucketKeyEnabled"] is True
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert lifecycle[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert lifecycle[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]

    for output in ("SageMakerRoleArn", "LambdaRoleArn", "StepFunctionsRoleArn"):
        role = out[output].rsplit("/", 1)[1]
        names = iam.list_role_policies(RoleName=role)["PolicyNames"]
        assert names
        doc = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
        assert doc["Version"] == "2012-10-17"

    subs = sns.list_subscriptions_by_topic(TopicArn=out["AlertTopicArn"])["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", email)]
    sns.publish(TopicArn=out["AlertTopicArn"], Message="low confidence")
    mails = [m for m in read_messages(localaws.data_dir) if m["to"] == email]
    assert len(mails) == 1 and mails[0]["from"].startswith("ml-workflow-aws alerts")

    cf.delete_stack(StackName=stack_id)
    _wait(cf, stack_id, "DELETE_COMPLETE")
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert out["AlertTopicArn"] not in [t["TopicArn"] for t in sns.list_topics()["Topics"]]
