"""Run one rule's pure check the way the pack and the offline plan do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.model import StackResource
from policies.rules import RULES

RULE = {rule.name: rule for rule in RULES}


def run(rule_name: str, resource_type: str, props: Mapping[str, Any], name: str = "res",
        config: Mapping[str, Any] | None = None) -> list[str]:
    rule = RULE[rule_name]
    assert rule.resource_check is not None
    return rule.resource_check(resource_type, name, props, rule.effective_config(config))


def run_stack(rule_name: str, resources: Sequence[StackResource],
              config: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    rule = RULE[rule_name]
    assert rule.stack_check is not None
    return rule.stack_check(resources, rule.effective_config(config))
