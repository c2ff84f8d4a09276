"""CloudFormation: fill moto 5.2.5's gaps so the project's stack deploys as it does on AWS.

What moto does wrong or not at all, and what this module does about it (create, update and
delete of each resource):

* ``AWS::S3::Bucket``: ``PublicAccessBlockConfiguration``, ``VersioningConfiguration``,
  ``LifecycleConfiguration``, ``OwnershipControls`` and ``BucketKeyEnabled`` were ignored;
  an update with ``Tags`` but no ``BucketName`` crashed; removing encryption, tags or the
  public access block in an update did nothing. All handled here.
* ``AWS::S3::BucketPolicy``, ``AWS::SNS::Subscription``, ``AWS::SNS::TopicPolicy``: no model
  in moto (skipped with a warning); added here.
* ``AWS::SNS::Topic``: any update deleted and re-created the topic, which dropped every
  subscription; an update that keeps the name now changes the topic in place. ``Tags``
  become topic tags (moto stored them as an attribute).
* ``AWS::IAM::Role``: ``ManagedPolicyArns`` ignored; inline ``Policies`` stored as a Python
  repr instead of JSON; updates only touched the description; delete failed once a managed
  policy was attached. AWS-managed policy ARNs (``arn:aws:iam::aws:policy/...``) are loaded
  on demand from moto's bundled copy, so ``AttachRolePolicy`` with one works through the
  API too (moto only knows them when it loads all of them at start-up).
* ``AWS::StepFunctions::StateMachine``: only ``DefinitionString`` was read and the machine
  went to a backend that the API does not read once executions are enabled (it was
  invisible). ``Definition`` (object), ``DefinitionString``, ``DefinitionS3Location`` and
  ``DefinitionSubstitutions`` are applied, and the machine lives where the API finds it.

Not handled: bucket CORS/notification/website/logging properties, replacing a topic under
a new name (dependent subscriptions are not re-pointed), stack rollback semantics.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

from moto.cloudformation import parsing
from moto.core.common_models import CloudFormationModel
from moto.utilities.utils import get_partition

log = logging.getLogger("localaws.cloudformation")

_installed = False


def _json_text(doc: Any) -> str:
    return doc if isinstance(doc, str) else json.dumps(doc)


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _cfn_tags(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


# --------------------------------------------------------------------------- S3

def _s3(account_id: str, region_name: str):
    from moto.s3.models import s3_backends

    return s3_backends[account_id][get_partition(region_name)]


def _lifecycle_rule(rule: dict) -> dict:
    """One CloudFormation lifecycle rule in the shape of the S3 API (what moto parses)."""
    out: dict[str, Any] = {"Status": rule.get("Status", "Enabled")}
    if rule.get("Id"):
        out["ID"] = rule["Id"]
    tags = rule.get("TagFilters") or []
    prefix = rule.get("Prefix")
    if len(tags) > 1 or (tags and prefix):
        out["Filter"] = {"And": {"Prefix": prefix or "", "Tag": tags}}
    elif tags:
        out["Filter"] = {"Tag": tags[0]}
    else:
        out["Filter"] = {"Prefix": prefix or ""}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": rule["ExpirationInDays"]}
    elif "ExpirationDate" in rule:
        out["Expiration"] = {"Date": rule["ExpirationDate"]}
    elif rule.get("ExpiredObjectDeleteMarker") is not None:
        out["Expiration"] = {"ExpiredObjectDeleteMarker": str(rule["ExpiredObjectDeleteMarker"])
                             .lower()}
    nve = rule.get("NoncurrentVersionExpiration")
    if nve is None and "NoncurrentVersionExpirationInDays" in rule:
        nve = {"NoncurrentDays": rule["NoncurrentVersionExpirationInDays"]}
    if nve:
        out["NoncurrentVersionExpiration"] = dict(nve)
    if rule.get("AbortIncompleteMultipartUpload"):
        out["AbortIncompleteMultipartUpload"] = dict(rule["AbortIncompleteMultipartUpload"])
    transitions = rule.get("Transitions") or ([rule["Transition"]] if "Transition" in rule
                                              else [])
    if transitions:
        out["Transition"] = [
            {"StorageClass": t["StorageClass"],
             **({"Days": t["TransitionInDays"]} if "TransitionInDays" in t
                else {"Date": t.get("TransitionDate")})}
            for t in transitions]
    nvts = rule.get("NoncurrentVersionTransitions") or (
        [rule["NoncurrentVersionTransition"]] if "NoncurrentVersionTransition" in rule else [])
    if nvts:
        out["NoncurrentVersionTransition"] = [
            {"StorageClass": t["StorageClass"], "NoncurrentDays": t["TransitionInDays"],
             **({"NewerNoncurrentVersions": t["NewerNoncurrentVersions"]}
                if "NewerNoncurrentVersions" in t else {})}
            for t in nvts]
    return out


def _apply_bucket_properties(backend, name: str, props: dict, old: dict | None) -> None:
    from moto.s3.models import cfn_to_api_encryption

    old = old or {}
    if "BucketEncryption" in props:
        encryption = cfn_to_api_encryption(props["BucketEncryption"])
        rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        if "BucketKeyEnabled" in rule:  # moto drops it
            encryption["Rule"]["BucketKeyEnabled"] = str(_flag(rule["BucketKeyEnabled"])).lower()
        backend.put_bucket_encryption(name, encryption)
    elif "BucketEncryption" in old:
        backend.delete_bucket_encryption(name)

    if "Tags" in props:
        backend.put_bucket_tagging(name, _cfn_tags(props["Tags"]))
    elif "Tags" in old:
        backend.delete_bucket_tagging(name)

    pab = props.get("PublicAccessBlockConfiguration")
    if pab:
        backend.put_public_access_block(name, {
            key: _flag(pab.get(key, False)) for key in (
                "BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                "RestrictPublicBuckets")})
    elif old.get("PublicAccessBlockConfiguration"):
        backend.delete_public_access_block(name)

    lifecycle = (props.get("LifecycleConfiguration") or {}).get("Rules")
    if lifecycle:
        backend.put_bucket_lifecycle_configuration(name, [_lifecycle_rule(r) for r in lifecycle])
    elif (old.get("LifecycleConfiguration") or {}).get("Rules"):
        backend.delete_bucket_lifecycle(name)

    ownership = (props.get("OwnershipControls") or {}).get("Rules")
    if ownership:
        backend.put_bucket_ownership_controls(name, ownership[0]["ObjectOwnership"])
    elif (old.get("OwnershipControls") or {}).get("Rules"):
        backend.delete_bucket_ownership_controls(name)

    versioning = (props.get("VersioningConfiguration") or {}).get("Status")
    if versioning:
        backend.put_bucket_versioning(name, versioning)
    elif (old.get("VersioningConfiguration") or {}).get("Status") == "Enabled":
        backend.put_bucket_versioning(name, "Suspended")  # a bucket cannot be un-versioned


def _patch_bucket() -> None:
    from moto.s3.models import FakeBucket

    def create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        props = cloudformation_json.get("Properties", {})
        backend = _s3(account_id, region_name)
        bucket = backend.create_bucket(resource_name, region_name)
        _apply_bucket_properties(backend, bucket.name, props, None)
        bucket._localaws_cfn_props = props
        return bucket

    def update(cls, original_resource, new_resource_name, cloudformation_json, account_id,
               region_name):
        props = cloudformation_json.get("Properties", {})
        backend = _s3(account_id, region_name)
        if "BucketName" in props and props["BucketName"] != original_resource.name:
            new = create(cls, props["BucketName"], cloudformation_json, account_id,
                         region_name)
            backend.delete_bucket(original_resource.name)  # as moto: only when empty
            return new
        old = getattr(original_resource, "_localaws_cfn_props", None)
        _apply_bucket_properties(backend, original_resource.name, props, old)
        original_resource._localaws_cfn_props = props
        return original_resource

    FakeBucket.create_from_cloudformation_json = classmethod(create)
    FakeBucket.update_from_cloudformation_json = classmethod(update)


class BucketPolicy(CloudFormationModel):
    """``AWS::S3::BucketPolicy``: the policy of one bucket."""

    def __init__(self, bucket: str, account_id: str, region_name: str) -> None:
        self.bucket = bucket
        self.account_id = account_id
        self.region_name = region_name

    @property
    def physical_resource_id(self) -> str:
        return self.bucket

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::S3::BucketPolicy"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return False

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name, **kwargs):
        props = cloudformation_json["Properties"]
        bucket = props["Bucket"]
        _s3(account_id, region_name).put_bucket_policy(
            bucket, _json_text(props["PolicyDocument"]).encode())
        return cls(bucket, account_id, region_name)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource, new_resource_name,
                                        cloudformation_json, account_id, region_name):
        if cloudformation_json["Properties"]["Bucket"] != original_resource.bucket:
            original_resource.delete(account_id, region_name)
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json,
                                                   account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name):
        cls(resource_name, account_id, region_name).delete(account_id, region_name)

    def delete(self, account_id: str, region_name: str) -> None:
        from moto.s3.exceptions import MissingBucket

        try:
            _s3(account_id, region_name).delete_bucket_policy(self.bucket)
        except MissingBucket:  # the bucket went first: nothing left to do
            pass

    def is_created(self) -> bool:
        return True


# --------------------------------------------------------------------------- SNS

def _sns(account_id: str, region_name: str):
    from moto.sns.models import sns_backends

    return sns_backends[account_id][region_name]


_TOPIC_SKIP = {"Subscription", "Tags", "TopicName"}


def _patch_topic() -> None:
    from moto.sns.models import Topic

    def create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        backend = _sns(account_id, region_name)
        props = cloudformation_json.get("Properties", {})
        attributes = {k: v for k, v in props.items() if k not in _TOPIC_SKIP}
        topic = backend.create_topic(resource_name, attributes, tags=_cfn_tags(props.get("Tags")))
        for sub in props.get("Subscription", []):
            backend.subscribe(topic.arn, sub["Endpoint"], sub["Protocol"])
        return topic

    def update(cls, original_resource, new_resource_name, cloudformation_json, account_id,
               region_name):
        props = cloudformation_json.get("Properties", {})
        if props.get("TopicName", original_resource.name) != original_resource.name:
            original_resource.delete(account_id, region_name)
            return create(cls, new_resource_name, cloudformation_json, account_id, region_name)
        from moto.core.utils import camelcase_to_underscores

        backend = _sns(account_id, region_name)
        topic = original_resource
        for key, value in props.items():
            if key not in _TOPIC_SKIP:
                setattr(topic, camelcase_to_underscores(key), value)
        if "DisplayName" not in props:
            topic.display_name = ""
        topic._tags = _cfn_tags(props.get("Tags"))
        for sub in props.get("Subscription", []):
            backend.subscribe(topic.arn, sub["Endpoint"], sub["Protocol"])
        return topic

    Topic.create_from_cloudformation_json = classmethod(create)
    Topic.update_from_cloudformation_json = classmethod(update)


_SUBSCRIPTION_ATTRIBUTES = ("FilterPolicyScope", "FilterPolicy", "RawMessageDelivery",
                            "RedrivePolicy", "DeliveryPolicy", "SubscriptionRoleArn")


class SnsSubscription(CloudFormationModel):
    """``AWS::SNS::Subscription``: Ref and PhysicalResourceId are the subscription ARN."""

    def __init__(self, arn: str, topic_arn: str, protocol: str, endpoint: str) -> None:
        self.arn = arn
        self.topic_arn = topic_arn
        self.protocol = protocol
        self.endpoint = endpoint

    @property
    def physical_resource_id(self) -> str:
        return self.arn

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::Subscription"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Arn"

    def get_cfn_attribute(self, attribute_name: str) -> str:
        from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

        if attribute_name == "Arn":
            return self.arn
        raise UnformattedGetAttTemplateException()

    @staticmethod
    def _set_attributes(backend, arn: str, props: dict, old: dict | None) -> None:
        for name in _SUBSCRIPTION_ATTRIBUTES:  # the scope must be set before the policy
            if name in props:
                value = props[name]
                if isinstance(value, (dict, list)):
                    value = json.dumps(value)
                elif isinstance(value, bool):
                    value = "true" if value else "false"
                backend.set_subscription_attributes(arn, name, str(value))
            elif old and name in old and name == "FilterPolicy":
                backend.set_subscription_attributes(arn, name, "")

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name, **kwargs):
        props = cloudformation_json["Properties"]
        topic_arn = props["TopicArn"]
        backend = _sns(account_id, props.get("Region") or topic_arn.split(":")[3])
        sub = backend.subscribe(topic_arn, props["Endpoint"], props["Protocol"])
        cls._set_attributes(backend, sub.arn, props, None)
        resource = cls(sub.arn, topic_arn, props["Protocol"], props["Endpoint"])
        resource._props = props
        return resource

    @classmethod
    def update_from_cloudformation_json(cls, original_resource, new_resource_name,
                                        cloudformation_json, account_id, region_name):
        props = cloudformation_json["Properties"]
        same = (props["TopicArn"], props["Protocol"], props["Endpoint"]) == (
            original_resource.topic_arn, original_resource.protocol, original_resource.endpoint)
        if not same:
            original_resource.delete(account_id, region_name)
            return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json,
                                                       account_id, region_name)
        backend = _sns(account_id, original_resource.topic_arn.split(":")[3])
        cls._set_attributes(backend, original_resource.arn, props,
                            getattr(original_resource, "_props", None))
        original_resource._props = props
        return original_resource

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name):
        _sns(account_id, resource_name.split(":")[3]).unsubscribe(resource_name)

    def delete(self, account_id: str, region_name: str) -> None:
        _sns(account_id, self.topic_arn.split(":")[3]).unsubscribe(self.arn)

    def is_created(self) -> bool:
        return True


class SnsTopicPolicy(CloudFormationModel):
    """``AWS::SNS::TopicPolicy``: the access policy of one or more topics."""

    def __init__(self, topics: list[str], policy: str) -> None:
        self.topics = topics
        self.policy = policy

    @property
    def physical_resource_id(self) -> str:
        return ",".join(self.topics)

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::TopicPolicy"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return False

    @staticmethod
    def _topics(account_id: str, arns: list[str]):
        from moto.sns.exceptions import TopicNotFound

        for arn in arns:
            try:
                yield _sns(account_id, arn.split(":")[3]).get_topic(arn)
            except TopicNotFound:
                continue

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name, **kwargs):
        props = cloudformation_json["Properties"]
        policy = _json_text(props["PolicyDocument"])
        for topic in cls._topics(account_id, props["Topics"]):
            topic.policy = policy
        return cls(list(props["Topics"]), policy)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource, new_resource_name,
                                        cloudformation_json, account_id, region_name):
        original_resource.delete(account_id, region_name)
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json,
                                                   account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id,
                                        region_name):
        cls(resource_name.split(","), "").delete(account_id, region_name)

    def delete(self, account_id: str, region_name: str) -> None:
        for topic in self._topics(account_id, self.topics):
            topic._policy_json = topic._create_default_topic_policy(
                topic.sns_backend.region_name, topic.account_id, topic.name)

    def is_created(self) -> bool:
        return True


# --------------------------------------------------------------------------- IAM

_aws_policies: dict[str, Any] | None = None
_aws_policies_lock = threading.Lock()
_AWS_POLICY_ARN = re.compile(r"^arn:aws[\w-]*:iam::aws:policy(/(?:.*/)?)([^/]+)$")


def ensure_aws_managed_policy(backend, policy_arn: str) -> None:
    """Make one AWS-managed policy known to an IAM backend (moto's copy of its document)."""
    global _aws_policies
    if policy_arn in backend.managed_policies:
        return
    match = _AWS_POLICY_ARN.match(policy_arn or "")
    if not match:
        return
    from moto.iam.models import AWSManagedPolicy

    with _aws_policies_lock:
        if _aws_policies is None:
            from moto.iam.aws_managed_policies import aws_managed_policies_data

            _aws_policies = json.loads(aws_managed_policies_data)
        data = _aws_policies.get(match.group(2))
        if data is None or data.get("Path", "/") != match.group(1):
            return
        if policy_arn in backend.managed_policies:
            return
        policy = AWSManagedPolicy.from_data(match.group(2), backend.account_id,
                                            backend.region_name, data)
        if policy.arn != policy_arn:  # another partition
            return
        backend.aws_managed_policies.append(policy)
        backend.managed_policies[policy.arn] = policy


def _patch_iam_aws_managed() -> None:
    from moto.iam.models import IAMBackend

    def wrap(name: str) -> None:
        original = getattr(IAMBackend, name)

        def method(self, *args, **kwargs):
            arn = kwargs.get("policy_arn", args[0] if args else None)
            ensure_aws_managed_policy(self, arn)
            return original(self, *args, **kwargs)

        method.__name__ = name
        setattr(IAMBackend, name, method)

    for name in ("attach_role_policy", "attach_user_policy", "attach_group_policy",
                 "get_policy", "get_policy_version", "list_policy_versions"):
        wrap(name)


def _iam(account_id: str, region_name: str):
    from moto.iam.models import iam_backends

    return iam_backends[account_id][get_partition(region_name)]


def _apply_role_policies(backend, role, props: dict) -> None:
    inline = {p["PolicyName"]: _json_text(p["PolicyDocument"])
              for p in props.get("Policies", [])}
    for name in list(role.policies):
        if name not in inline:
            role.delete_policy(name)
    for name, doc in inline.items():
        role.put_policy(name, doc)

    wanted = list(dict.fromkeys(props.get("ManagedPolicyArns", [])))
    for arn in list(role.managed_policies):
        if arn not in wanted:
            backend.detach_role_policy(arn, role.name)
    for arn in wanted:
        if arn not in role.managed_policies:
            backend.attach_role_policy(arn, role.name)


def _patch_role() -> None:
    from moto.iam.models import Role

    original_create = Role.create_from_cloudformation_json.__func__
    original_delete = Role.delete_from_cloudformation_json.__func__

    def create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        props = cloudformation_json["Properties"]
        bare = {k: v for k, v in props.items() if k not in ("Policies", "ManagedPolicyArns")}
        role = original_create(cls, resource_name, {**cloudformation_json, "Properties": bare},
                               account_id, region_name, **kwargs)
        _apply_role_policies(_iam(account_id, region_name), role, props)
        return role

    def update(cls, original_resource, new_resource_name, cloudformation_json, account_id,
               region_name):
        props = cloudformation_json["Properties"]
        role = original_resource
        if props.get("RoleName", role.name) != role.name or props.get("Path", role.path) != (
                role.path):
            new = create(cls, props.get("RoleName", new_resource_name), cloudformation_json,
                         account_id, region_name)
            delete(cls, role.name, cloudformation_json, account_id, region_name)
            return new
        if "AssumeRolePolicyDocument" in props:
            role.assume_role_policy_document = _json_text(props["AssumeRolePolicyDocument"])
        role.description = props.get("Description", "")
        role.max_session_duration = props.get("MaxSessionDuration", 3600)
        _apply_role_policies(_iam(account_id, region_name), role, props)
        return role

    def delete(cls, resource_name, cloudformation_json, account_id, region_name):
        backend = _iam(account_id, region_name)
        for role in list(backend.roles.values()):
            if role.name == resource_name:
                for arn in list(role.managed_policies):
                    backend.detach_role_policy(arn, role.name)
        return original_delete(cls, resource_name, cloudformation_json, account_id,
                               region_name)

    Role.create_from_cloudformation_json = classmethod(create)
    Role.update_from_cloudformation_json = classmethod(update)
    Role.delete_from_cloudformation_json = classmethod(delete)


# --------------------------------------------------------------------------- Step Functions

def _sfn(account_id: str, region_name: str):
    # the backend the API reads: the executing one when execute_state_machine is on
    from moto.stepfunctions.responses import get_backend

    return get_backend(account_id, region_name)


def state_machine_definition(props: dict, account_id: str, region_name: str) -> str:
    """The definition text CloudFormation would send: DefinitionString, Definition (object)
    or DefinitionS3Location, with ``${name}`` DefinitionSubstitutions applied."""
    if "DefinitionString" in props:
        text = _json_text(props["DefinitionString"])
    elif "Definition" in props:
        text = json.dumps(props["Definition"])
    elif "DefinitionS3Location" in props:
        loc = props["DefinitionS3Location"]
        key = _s3(account_id, region_name).get_object(loc["Bucket"], loc["Key"],
                                                     version_id=loc.get("Version"))
        if key is None:
            raise ValueError(f"DefinitionS3Location s3://{loc['Bucket']}/{loc['Key']} missing")
        text = key.value.decode("utf-8")
    else:
        text = ""
    for name, value in (props.get("DefinitionSubstitutions") or {}).items():
        if not isinstance(value, str):
            value = json.dumps(value)
        text = text.replace("${" + name + "}", value)
    return text


def _patch_state_machine() -> None:
    from moto.stepfunctions.models import StateMachine
    from moto.stepfunctions.utils import cfn_to_api_tags

    def create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        props = cloudformation_json["Properties"]
        return _sfn(account_id, region_name).create_state_machine(
            name=props.get("StateMachineName", resource_name),
            definition=state_machine_definition(props, account_id, region_name),
            roleArn=props.get("RoleArn", ""),
            tags=cfn_to_api_tags(props.get("Tags", [])),
            loggingConfiguration=props.get("LoggingConfiguration"),
            tracingConfiguration=props.get("TracingConfiguration"),
            sm_type=props.get("StateMachineType"),
        )

    def update(cls, original_resource, new_resource_name, cloudformation_json, account_id,
               region_name):
        props = cloudformation_json.get("Properties", {})
        name = props.get("StateMachineName", original_resource.name)
        backend = _sfn(account_id, region_name)
        if name != original_resource.name:
            new = create(cls, name, cloudformation_json, account_id, region_name)
            backend.delete_state_machine(original_resource.arn)
            return new
        sm = backend.update_state_machine(
            original_resource.arn,
            definition=state_machine_definition(props, account_id, region_name),
            role_arn=props.get("RoleArn") or None,
            logging_configuration=props.get("LoggingConfiguration"),
            tracing_configuration=props.get("TracingConfiguration"),
        )
        tags = cfn_to_api_tags(props.get("Tags", []))
        if tags:
            backend.tagger.tag_resource(sm.arn, tags)
        return sm

    def delete(cls, resource_name, cloudformation_json, account_id, region_name):
        _sfn(account_id, region_name).delete_state_machine(resource_name)

    StateMachine.create_from_cloudformation_json = classmethod(create)
    StateMachine.update_from_cloudformation_json = classmethod(update)
    StateMachine.delete_from_cloudformation_json = classmethod(delete)


# --------------------------------------------------------------------------- install

def _refresh_model_registry() -> None:
    # moto caches CloudFormationModel.__subclasses__() on first use
    for cached in (parsing.get_model_list, parsing.get_model_map, parsing.get_name_type_map):
        cached.cache_clear()


def install(runtime) -> None:
    global _installed
    if _installed:
        return
    _patch_bucket()
    _patch_topic()
    _patch_iam_aws_managed()
    _patch_role()
    _patch_state_machine()
    _refresh_model_registry()
    _installed = True
    log.debug("CloudFormation extensions installed: %s", sorted(
        cls.cloudformation_type() for cls in (BucketPolicy, SnsSubscription, SnsTopicPolicy)))
