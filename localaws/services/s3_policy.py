"""Bucket policies evaluated with their conditions, as AWS does for a request that reached
its TLS endpoint.

moto evaluates bucket-policy conditions with only ``StringEquals`` and treats any other
operator as matched, so the usual TLS-only statement
``{"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}`` denies
every request. Here a statement applies only when all its conditions hold for the request
context below; a statement with an operator we cannot evaluate does not apply (and is
logged once), so it neither grants nor denies.
"""

from __future__ import annotations

import fnmatch
import json
import logging

log = logging.getLogger("localaws.s3")

# localaws stands in for AWS's HTTPS endpoint: requests count as secure transport.
REQUEST_CONTEXT = {"aws:securetransport": "true"}
_warned: set[str] = set()


def _values(v) -> list[str]:
    return [str(x).lower() if isinstance(x, bool) else str(x) for x in
            (v if isinstance(v, list) else [v])]


def _operator_holds(operator: str, key: str, expected) -> bool | None:
    actual = REQUEST_CONTEXT.get(key.lower())
    if_exists = operator.endswith("IfExists")
    op = operator.removesuffix("IfExists")
    if actual is None:
        return True if if_exists else (op == "Null" and _values(expected)[0] == "true")
    wanted = _values(expected)
    if op == "Bool":
        return actual.lower() in [w.lower() for w in wanted]
    if op == "StringEquals":
        return actual in wanted
    if op == "StringNotEquals":
        return actual not in wanted
    if op == "StringLike":
        return any(fnmatch.fnmatchcase(actual, w) for w in wanted)
    if op == "StringNotLike":
        return not any(fnmatch.fnmatchcase(actual, w) for w in wanted)
    if op == "Null":
        return wanted[0] == "false"
    return None


def statement_applies(statement: dict) -> bool:
    for operator, pairs in (statement.get("Condition") or {}).items():
        for key, expected in pairs.items():
            holds = _operator_holds(operator, key, expected)
            if holds is None:
                if operator not in _warned:
                    _warned.add(operator)
                    log.warning("bucket policy condition %s is not evaluated by localaws: "
                                "its statement is ignored", operator)
                return False
            if not holds:
                return False
    return True


def install(runtime) -> None:
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult
    from moto.s3.models import FakeBucket

    def get_permission(self, action: str, resource: str):
        if self.policy is None:
            return PermissionResult.NEUTRAL
        raw = self.policy.decode() if isinstance(self.policy, bytes) else self.policy
        statements = json.loads(raw).get("Statement", [])
        permitted = False
        for st in statements if isinstance(statements, list) else [statements]:
            if not statement_applies(st):
                continue
            unconditional = {k: v for k, v in st.items() if k != "Condition"}
            result = IAMPolicyStatement(unconditional).is_action_permitted(action, resource)
            if result == PermissionResult.DENIED:
                return result
            permitted = permitted or result == PermissionResult.PERMITTED
        return PermissionResult.PERMITTED if permitted else PermissionResult.NEUTRAL

    FakeBucket.get_permission = get_permission
