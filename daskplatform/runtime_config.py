"""Where a host finds its runtime settings: the SSM parameter the stack publishes
(on AWS), or a stack file / JSON file (local mode and tests)."""

from __future__ import annotations

from pathlib import Path

from daskplatform.aws import aws_client
from daskplatform.settings import RuntimeSettings, load_stack_file

SSM_SCHEME = "ssm://"


def load_runtime_settings(source: str) -> RuntimeSettings:
    """``ssm://<parameter-name>``, a ``Pulumi.<stack>.yaml`` file, or a JSON file."""
    if source.startswith(SSM_SCHEME):
        name = source[len(SSM_SCHEME):]
        value = aws_client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
        return RuntimeSettings.from_json(value)
    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        return load_stack_file(str(path)).runtime()
    return RuntimeSettings.from_json(path.read_text(encoding="utf-8"))
