"""Quota (and worker memory) rules on the runtime settings the stack publishes as an SSM
parameter (``RuntimeSettings.to_json()``), so `pulumi preview` refuses quotas the pool
cannot serve. Pydantic validation of RuntimeSettings does not run the cross-field checks;
each rule here runs one of the settings' own problem finders (the same ones that stop
invalid stack config), which report every offending key, not only the first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from daskplatform.settings import (
    QuotaSettings,
    RuntimeSettings,
    config_key,
    priority_problems,
    process_fit_problems,
    quota_limit_problems,
    quota_pool_problems,
    terminate_headroom_problems,
    validation_problems,
)
from policies.model import ConfigOption

SSM_PARAMETER = "aws:ssm/parameter:Parameter"

_QUOTA_DEFAULTS = QuotaSettings()
IDLE_OPTIONS = {
    "maxIdleTimeoutMinutes": ConfigOption(
        _QUOTA_DEFAULTS.idle_timeout_minutes, "integer",
        "Largest quotas.idleTimeoutMinutes allowed (idle clusters hold pool capacity)."),
}
PENDING_OPTIONS = {
    "maxPendingPerUser": ConfigOption(
        50, "integer", "Largest quotas.maxPendingPerUser allowed (queue fairness)."),
}


def published_settings(resource_type: str, props: Mapping[str, Any]) -> dict[str, Any] | None:
    """The raw settings document if this is the runtime-settings parameter: a JSON
    object with ``quotas`` and ``workers``; other parameters are not ours."""
    if resource_type != SSM_PARAMETER:
        return None
    value = props.get("value") or props.get("insecureValue")
    if not isinstance(value, str):
        return None
    try:
        document = json.loads(value)
    except ValueError:
        return None
    if isinstance(document, dict) and "quotas" in document and "workers" in document:
        return document
    return None


def _parsed(resource_type: str, props: Mapping[str, Any]) -> RuntimeSettings | None:
    """Parsed settings; None if absent or invalid (invalid is check_settings_schema's)."""
    document = published_settings(resource_type, props)
    if document is None:
        return None
    try:
        return RuntimeSettings.model_validate(document)
    except ValidationError:
        return None


def check_settings_schema(resource_type: str, name: str, props: Mapping[str, Any],
                          config: Mapping[str, Any]) -> list[str]:
    """The hosts refuse to start on settings they cannot parse."""
    document = published_settings(resource_type, props)
    if document is None:
        return []
    try:
        RuntimeSettings.model_validate(document)
    except ValidationError as exc:
        return [f"{problem}; fix it in the stack config" for problem in validation_problems(exc)]
    return []


def check_cluster_within_user(resource_type: str, name: str, props: Mapping[str, Any],
                              config: Mapping[str, Any]) -> list[str]:
    """A cluster limit above the user's total (or below one worker) is never usable."""
    settings = _parsed(resource_type, props)
    return [] if settings is None else quota_limit_problems(settings.quotas, settings.clusters)


def check_user_within_pool(resource_type: str, name: str, props: Mapping[str, Any],
                           config: Mapping[str, Any]) -> list[str]:
    """A per-user total the pool cannot hold at its maximum size is a false promise."""
    settings = _parsed(resource_type, props)
    if settings is None:
        return []
    return quota_pool_problems(settings.quotas, settings.clusters, settings.workers)


def check_worker_fits_node(resource_type: str, name: str, props: Mapping[str, Any],
                           config: Mapping[str, Any]) -> list[str]:
    """A worker (or scheduler) larger than its host would wait in the queue forever."""
    settings = _parsed(resource_type, props)
    if settings is None:
        return []
    return process_fit_problems(settings.clusters, settings.workers, settings.scheduler)


def check_distinct_priorities(resource_type: str, name: str, props: Mapping[str, Any],
                              config: Mapping[str, Any]) -> list[str]:
    """Equal priorities make the queue order between groups arbitrary."""
    settings = _parsed(resource_type, props)
    return [] if settings is None else priority_problems(settings.quotas)


def check_terminate_headroom(resource_type: str, name: str, props: Mapping[str, Any],
                             config: Mapping[str, Any]) -> list[str]:
    """A worker the kernel kills before its nanny acts dies with no word of why."""
    settings = _parsed(resource_type, props)
    return [] if settings is None else terminate_headroom_problems(settings.clusters)


def _quota_value(resource_type: str, props: Mapping[str, Any], field: str) -> float | None:
    """A raw ``quotas.<field>`` value (its default when unset), read before pydantic so
    a value past the schema's own bound is still reported against the policy limit."""
    document = published_settings(resource_type, props)
    if document is None or not isinstance(document.get("quotas"), dict):
        return None
    info = QuotaSettings.model_fields[field]
    value = document["quotas"].get(info.alias or field, info.default)
    return value if isinstance(value, (int, float)) else None


def check_idle_timeout(resource_type: str, name: str, props: Mapping[str, Any],
                       config: Mapping[str, Any]) -> list[str]:
    value = _quota_value(resource_type, props, "idle_timeout_minutes")
    limit = int(config["maxIdleTimeoutMinutes"])
    if value is None or value <= limit:
        return []
    return [(f"{config_key('quotas', 'idleTimeoutMinutes')} ({value:g}) is above the maximum "
            f"{limit} minutes; lower it so idle clusters give back the pool")]


def check_pending_per_user(resource_type: str, name: str, props: Mapping[str, Any],
                           config: Mapping[str, Any]) -> list[str]:
    value = _quota_value(resource_type, props, "max_pending_per_user")
    limit = int(config["maxPendingPerUser"])
    if value is None or value <= limit:
        return []
    return [(f"{config_key('quotas', 'maxPendingPerUser')} ({value:g}) is above {limit}; lower "
            "it so one user cannot flood the queue")]
