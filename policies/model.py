"""What every rule shares: the resource views rules read, the violation they report,
their config options, and readers for Pulumi's wire format.

Props arrive as Pulumi sends them to a policy pack (camelCase keys, numbers as
floats, unknown values raising ``UnknownValueError`` in preview) so the same rule
code runs under ``pulumi preview``, in tests and in the offline plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy.proxy import UnknownValueError

MANDATORY = "mandatory"
ADVISORY = "advisory"

WORLD_CIDRS = frozenset({"0.0.0.0/0", "::/0"})


@dataclass(frozen=True)
class Violation:
    """One finding, as the offline plan prints it."""

    policy: str
    enforcement: str
    resource: str
    """Logical resource name; empty when the finding is about the stack as a whole."""
    message: str


@dataclass(frozen=True)
class StackResource:
    """A resource as stack-wide rules see it: rules that relate resources (a bucket
    and its encryption config) link them by dependency or by identifier."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""
    property_dependencies: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Property -> names and URNs of the resources its value came from."""
    identifiers: frozenset[str] = frozenset()
    """Known ids/ARNs of this resource beyond its props (e.g. the mock id)."""


@dataclass(frozen=True)
class ConfigOption:
    """One policy config property: its default (used when unset) and its meaning."""

    default: Any
    json_type: str
    description: str


ResourceCheck = Callable[[str, str, Mapping[str, Any], Mapping[str, Any]], list[str]]
"""(type token, logical name, props, config) -> violation messages."""

StackCheck = Callable[[Sequence[StackResource], Mapping[str, Any]], list[tuple[str, str]]]
"""(resources, config) -> (resource name or "", message) pairs."""


@dataclass(frozen=True)
class Rule:
    """A rule's identity and its pure check; rules.py wraps it for Pulumi, offline.py
    runs it directly."""

    name: str
    description: str
    enforcement: str
    resource_check: ResourceCheck | None = None
    stack_check: StackCheck | None = None
    config: Mapping[str, ConfigOption] = field(default_factory=dict)

    def effective_config(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid by what the user set (the engine may omit unset keys)."""
        merged = {key: option.default for key, option in self.config.items()}
        merged.update({k: v for k, v in (given or {}).items() if k != "enforcementLevel"})
        return merged


# --------------------------------------------------------------------------- wire-format readers


def as_int(value: Any, default: int = 0) -> int:
    """Ports and sizes arrive as floats (443.0) or, in some schemas, strings."""
    if value is None or value == "":
        return default
    return int(float(value))


def is_true(value: Any) -> bool:
    """Booleans arrive as bools, or as "true"/"false" strings in launch templates."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def items(value: Any) -> list[Any]:
    """A list-valued prop, treating absent as empty (a str is not a list here)."""
    if value is None or isinstance(value, str):
        return []
    if isinstance(value, Mapping):
        return [value]
    return list(value)


def known(props: Mapping[str, Any], key: str) -> Any:
    """The value, or None when it is absent or not known yet (preview)."""
    try:
        return props.get(key)
    except UnknownValueError:
        return None


def tag_map(props: Mapping[str, Any]) -> dict[str, str]:
    """Tags as a map; Auto Scaling groups send a list of {key, value}."""
    tags = props.get("tags")
    if isinstance(tags, Mapping):
        return {str(k): str(v) for k, v in tags.items()}
    return {str(t.get("key")): str(t.get("value")) for t in items(tags) if isinstance(t, Mapping)}


def identifiers(resource: StackResource) -> set[str]:
    """Strings another resource may hold to refer to this one."""
    found = {known(resource.props, key) for key in ("id", "arn", "bucket", "name")}
    return {v for v in found if isinstance(v, str) and v} | set(resource.identifiers)


def refers_to(source: StackResource, prop: str, target: StackResource) -> bool:
    """Whether ``source.<prop>`` points at ``target``: by recorded dependency (works in
    preview, where ids are unknown) or by a known identifier value."""
    dependencies = source.property_dependencies.get(prop, frozenset())
    if target.name in dependencies or (target.urn and target.urn in dependencies):
        return True
    value = known(source.props, prop)
    candidates = [value] if isinstance(value, str) else known_items(value)
    target_ids = identifiers(target)
    return any(isinstance(c, str) and c in target_ids for c in candidates)


def known_items(value: Any) -> list[Any]:
    """The elements of a list prop that are known (in preview some may not be yet)."""
    if value is None or isinstance(value, (str, Mapping)):
        return items(value)
    result = []
    for index in range(len(value)):
        try:
            result.append(value[index])
        except UnknownValueError:
            continue
    return result


def of_types(resources: Sequence[StackResource], types: Sequence[str]) -> list[StackResource]:
    return [r for r in resources if r.type in types]
