"""Run the pack's rules without the Pulumi engine: over resources captured by running
the stack under Pulumi mocks (the tests and ``./dev plan``), so pull requests without
cloud credentials still get the same verdicts as ``pulumi preview --policy-pack``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy.deserialize import deserialize_properties

from policies.model import ADVISORY, MANDATORY, StackResource, Violation
from policies.rules import RULES

DISABLED = "disabled"
_LEVELS = (MANDATORY, ADVISORY, DISABLED)


def _field(resource: Any, key: str, default: Any = None) -> Any:
    if isinstance(resource, Mapping):
        return resource.get(key, default)
    return getattr(resource, key, default)


def as_stack_resource(resource: Any) -> StackResource:
    """A captured resource (mapping or object with ``type``, ``name``, ``props`` or
    ``inputs``, and optionally ``urn``, ``id``, ``outputs``, ``property_dependencies``)
    as rules see it: secrets unwrapped the way the engine hands props to a policy pack."""
    outputs = _field(resource, "outputs") or {}
    ids = {_field(resource, "id"), *(outputs.get(k) for k in ("id", "arn", "name", "bucket"))}
    return StackResource(
        type=_field(resource, "type"),
        name=_field(resource, "name"),
        props=deserialize_properties(
            dict(_field(resource, "props") or _field(resource, "inputs") or {})),
        urn=_field(resource, "urn") or "",
        property_dependencies={
            prop: frozenset(deps)
            for prop, deps in (_field(resource, "property_dependencies") or {}).items()
        },
        identifiers=frozenset(i for i in ids if isinstance(i, str) and i),
    )


def _level(rule_name: str, default: str, config: Mapping[str, Any]) -> str:
    given = config.get(rule_name)
    level = given if isinstance(given, str) else (given or {}).get("enforcementLevel", default)
    if level not in _LEVELS:
        raise ValueError(f"policy config {rule_name}.enforcementLevel is {level!r}; "
                         f"allowed: {', '.join(_LEVELS)}")
    return level


def _options(rule_name: str, config: Mapping[str, Any]) -> Mapping[str, Any]:
    given = config.get(rule_name)
    return given if isinstance(given, Mapping) else {}


def evaluate(resources: Iterable[Any],
             config: Mapping[str, Any] | None = None) -> list[Violation]:
    """Every violation of every enabled rule. ``config`` has the shape of the pack's
    policy config: ``{rule-name: level}`` or ``{rule-name: {enforcementLevel, ...}}``."""
    config = config or {}
    unknown = sorted(set(config) - {rule.name for rule in RULES})
    if unknown:
        raise ValueError(f"unknown policy name(s) in config: {', '.join(unknown)}; "
                         f"allowed: {', '.join(rule.name for rule in RULES)}")
    stack = [as_stack_resource(r) for r in resources]
    violations = []
    for rule in RULES:
        level = _level(rule.name, rule.enforcement, config)
        if level == DISABLED:
            continue
        options = rule.effective_config(_options(rule.name, config))
        if rule.resource_check is not None:
            violations += [
                Violation(rule.name, level, resource.name, message)
                for resource in stack
                for message in rule.resource_check(resource.type, resource.name,
                                                   resource.props, options)
            ]
        if rule.stack_check is not None:
            violations += [Violation(rule.name, level, name, message)
                           for name, message in rule.stack_check(stack, options)]
    return violations


def format_violations(violations: Iterable[Violation]) -> str:
    """One line per violation, mandatory first, for the offline plan's output."""
    ordered = sorted(violations, key=lambda v: (v.enforcement != MANDATORY, v.policy, v.resource))
    return "\n".join(f"[{v.enforcement}] {v.policy}: {v.resource or '(stack)'}: {v.message}"
                     for v in ordered)
