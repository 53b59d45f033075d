"""Cost and ownership tags on every taggable AWS resource (advisory)."""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Mapping
from functools import cache
from typing import Any

from policies.model import ConfigOption, tag_map

TAG_OPTIONS = {
    "requiredTags": ConfigOption(
        ["project", "stack", "team", "cost-center"], "array",
        "Tag keys every taggable AWS resource must carry: the stack's common tags "
        "(project, stack) and the owner/cost tags set in dask-platform:tags."),
}


@cache
def is_taggable(resource_type: str) -> bool:
    """Whether the pulumi-aws resource class for a type token accepts ``tags``;
    asking the SDK avoids a hand-kept list that drifts."""
    match = re.fullmatch(r"aws:([A-Za-z0-9]+)/[A-Za-z0-9]+:([A-Za-z0-9]+)", resource_type)
    if match is None:
        return False
    module_name = re.sub(r"(?<!^)(?=[A-Z])", "_", match.group(1)).lower()
    try:
        with warnings.catch_warnings():  # importing a module warns about its deprecated types
            warnings.simplefilter("ignore", DeprecationWarning)
            cls = getattr(importlib.import_module(f"pulumi_aws.{module_name}"), match.group(2))
    except (ImportError, AttributeError):
        return False
    return "tags" in inspect.signature(cls._internal_init).parameters


def check_required_tags(resource_type: str, name: str, props: Mapping[str, Any],
                        config: Mapping[str, Any]) -> list[str]:
    if not is_taggable(resource_type):
        return []
    missing = [key for key in config["requiredTags"] if key not in tag_map(props)]
    if not missing:
        return []
    return [(f"missing tag(s) {', '.join(missing)}; add them to dask-platform:tags or the "
            "resource's tags")]
