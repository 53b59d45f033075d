"""Stack config read once, validated before any resource is registered.

Every ``dask-platform:*`` key Pulumi hands the program is collected (unknown keys
included, so the schema can reject them) and validated by
:func:`daskplatform.settings.load_settings` before any resource is declared.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env, is_config_secret

from daskplatform.settings import (
    CONFIG_NAMESPACE,
    PlatformSettings,
    SettingsError,
    load_settings,
    strip_namespace,
)


def _decode(value: Any) -> Any:
    """Pulumi passes structured values as JSON text; scalars stay text for pydantic."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # not JSON after all; the schema reports it if it is wrong
    return value


def all_config() -> dict[str, Any]:
    """Every config key the engine gave this program (``PULUMI_CONFIG`` under the CLI,
    the in-process config map under mocks and the Automation API)."""
    return {**get_config_env(), **CONFIG.get()}


def read_settings() -> PlatformSettings:
    """The validated settings of this stack.

    ``pulumi.Config`` resolves each key so per-key overrides (``PULUMI_CONFIG_<KEY>``)
    are honoured; the key list itself comes from :func:`all_config`. Secret values
    stay text (never JSON-decoded) and end up in a ``SecretStr``. Invalid settings
    raise ``pulumi.RunError`` (caused by the SettingsError), which Pulumi reports as
    the bare message naming each key, without a traceback.
    """
    config = pulumi.Config(CONFIG_NAMESPACE)
    raw = {
        key: config.get(key) if is_config_secret(config.full_key(key)) else _decode(config.get(key))
        for key in strip_namespace(all_config())
    }
    try:
        return load_settings(raw)
    except SettingsError as exc:
        raise pulumi.RunError(str(exc)) from exc
