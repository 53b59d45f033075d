"""Untrusted HTTP input in the platform's aiohttp servers (the gateway API, the node
agent): headers that must decode, bodies that must be JSON objects, and pydantic
errors turned into one message that names each field, what it allows and what came.

A refusal is an ``InputError``: a 4xx status and that message, answered as
``{"error": message}`` before anything is created, changed or deleted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ValidationError

from daskplatform.identifiers import is_safe_name
from daskplatform.shown import shown

_UTF8 = ("utf-8", "utf8")


class InputError(Exception):
    """A request refused for what it carries; ``message`` names the field."""

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return web.json_response({"error": self.message}, status=self.status,
                                 headers=self.headers)


def check_headers(request: web.BaseRequest) -> None:
    """Every header value must be UTF-8 text (aiohttp keeps other bytes as surrogates,
    which fail wherever the value is used)."""
    for name, value in request.headers.items():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(400, f"header {name}: must be UTF-8 text") from None


async def json_object(request: web.BaseRequest) -> dict[str, Any]:
    """The body as a JSON object (NaN and Infinity are read, for the fields to refuse
    with their names), or InputError 400 saying what the body is instead."""
    if request.charset is not None and request.charset.lower() not in _UTF8:
        raise InputError(400, f"Content-Type: charset must be utf-8, got {shown(request.charset)}")
    raw = await request.read()
    if not raw.strip():
        raise InputError(400, "body: must be a JSON object, got an empty body")
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(400, f"body: must be UTF-8 JSON; byte {exc.start} is not UTF-8") from None
    except RecursionError:
        raise InputError(400, "body: not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise InputError(400, f"body: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(400, f"body: must be a JSON object, got {_json_kind(value)}")
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return shown(value)


def problems(exc: ValidationError, model: type[BaseModel]) -> str:
    """One message for all of a body's problems, each naming the field, what it allows
    (the field's description, or a validator's own message) and what came."""
    found: list[str] = []
    for error in exc.errors():
        where = ".".join(_part(part) for part in error["loc"])
        field = model.model_fields.get(str(error["loc"][0])) if error["loc"] else None
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            line = f"{where}: unknown field; allowed: {', '.join(model.model_fields)}"
        elif error["type"] == "value_error":
            line = f"{where}: {message}" if where else message
        elif field is None or field.description is None:
            line = f"{where or 'body'}: {message}"
        elif error["type"] == "missing":
            line = f"{where}: required, {field.description}"
        else:
            line = f"{where}: must be {field.description}, got {shown(error['input'])}"
        if line not in found:
            found.append(line)
    return "; ".join(found)


def _part(part: int | str) -> str:
    """A location part as is when it is a plain name or an index, else as JSON (a key
    sent by a client may hold anything)."""
    return str(part) if isinstance(part, int) or is_safe_name(part) else shown(part)


def plain_text(value: str) -> str:
    try:
        value.encode("utf-8")  # a lone surrogate (JSON "\udc80") cannot be encoded
    except UnicodeEncodeError:
        plain = False
    else:
        plain = "\0" not in value
    if not plain:
        raise ValueError(f"must be text without NUL characters or lone surrogates, "
                         f"got {shown(value)}")
    return value


Text = Annotated[str, AfterValidator(plain_text)]
"""A string that can be an argument, an environment value, file content or a label."""
