"""Hostile HTTP input for the platform's APIs (issue 14), shared by the gateway and agent
tests: a raw client that sends what client libraries refuse to (non-UTF-8 header bytes,
broken bodies), and hypothesis strategies for hostile bodies, headers and path parts.

Calls carry placeholders (``{cluster}`` in a path, ``{basic}`` in a header value,
``{version}`` in a body) that ``resolve`` fills from the running servers, so seed
examples and valid generated values can be written as data.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

# ---------------------------------------------------------------- calls


@dataclass(frozen=True)
class Call:
    """One request; ``route`` is its route template (``POST /v1/processes``), for tallies."""

    route: str
    path: str
    headers: tuple[tuple[str, bytes], ...] = ()
    body: bytes | None = None

    @property
    def method(self) -> str:
        return self.route.split(" ", 1)[0]


@dataclass(frozen=True)
class Answer:
    status: int
    text: str

    @property
    def error(self) -> str:
        """The message of an ``{"error": ...}`` answer, '' for any other body."""
        try:
            return str(json.loads(self.text)["error"])
        except (ValueError, KeyError, TypeError):
            return ""


def resolve(call: Call, values: dict[str, str]) -> Call:
    """``call`` with each ``{name}`` placeholder of its path, headers and body filled in
    (a value is put in a body as is: placeholders there stand inside JSON strings)."""
    path, headers, body = call.path, [], call.body
    for name, value in values.items():
        placeholder = b"{" + name.encode() + b"}"
        path = path.replace("{" + name + "}", quote(value, safe=""))
        if body is not None:
            body = body.replace(placeholder, value.encode())
    for header, raw in call.headers:
        for name, value in values.items():
            raw = raw.replace(b"{" + name.encode() + b"}", value.encode())
        headers.append((header, raw))
    return replace(call, path=path, headers=tuple(headers), body=body)


def send(base_url: str, call: Call, timeout: float = 60) -> Answer:
    """Send ``call`` byte for byte (http.client adds only Host and Content-Length)."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.putrequest(call.method, parts.path.rstrip("/") + call.path,
                              skip_accept_encoding=True)
        for name, value in call.headers:
            connection.putheader(name, value)
        if call.body is not None:
            connection.putheader("Content-Length", str(len(call.body)))
        connection.endheaders(call.body)
        response = connection.getresponse()
        return Answer(response.status, response.read().decode("utf-8", "replace"))
    finally:
        connection.close()


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def dump(value: Any) -> bytes:
    """JSON as Python clients write it: NaN and Infinity as bare words."""
    return json.dumps(value).encode()


# ---------------------------------------------------------------- strategies

_header_bytes = st.lists(
    st.sampled_from([b"\t", *(bytes([i]) for i in range(0x20, 0x7f)),
                     *(bytes([i]) for i in range(0x80, 0x100))]),
    max_size=24).map(b"".join)
"""What HTTP lets a header value carry: visible ASCII, tab and any byte from 0x80 (not
UTF-8 as often as not). Control characters are refused with 400 by the HTTP servers
themselves (the gateway's proxy, aiohttp) before platform code sees them."""

_json_text = st.text(st.characters(exclude_categories=()), max_size=12)
"""Any text JSON can carry: lone surrogates (``"\\udc80"``) and NUL included."""

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(),
              st.integers(min_value=2**63, max_value=10**80), st.floats(), _json_text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        _json_text, inner, max_size=3),
    max_leaves=8)
"""Any JSON value, NaN, infinities and integers beyond 64 bits included."""


def either(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` about half of the time, and what hypothesis shrinks towards (``usual |
    other`` would weigh it like each of the branches inside ``other``)."""
    return st.booleans().flatmap(lambda spoilt: other if spoilt else usual)


def objects(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects over a route's fields (``fields`` draws valid values): valid ones, so
    the handler behind the checks runs too, valid ones spoilt in one place (a field
    hostile, missing, or one more), and any mix of fields."""
    valid = st.fixed_dictionaries(fields)
    names = sorted(fields)

    def spoil(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.one_of(
            st.tuples(st.sampled_from(names), json_values).map(
                lambda pair: {**body, pair[0]: pair[1]}),
            st.sampled_from(names).map(
                lambda name: {k: v for k, v in body.items() if k != name}),
            st.tuples(_json_text, json_values).map(
                lambda pair: {pair[0]: pair[1], **body}),
        )

    mixed = st.fixed_dictionaries(
        {}, optional={name: valid_value | json_values for name, valid_value in fields.items()})
    return st.one_of(valid, valid.flatmap(spoil), mixed)


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes | None]:
    """Request bodies: objects as above, other JSON, broken or truncated JSON, another
    encoding, deep nesting, bytes, or none at all."""
    written = objects(fields).map(dump)
    return st.one_of(
        written,
        json_values.map(dump),
        written.flatmap(lambda raw: st.integers(0, max(len(raw) - 1, 0)).map(
            lambda cut: raw[:cut])),
        written.map(lambda raw: raw.decode().encode("utf-16")),
        st.integers(1, 100_000).map(lambda depth: b"[" * depth + b"]" * depth),
        st.binary(max_size=40),
        st.sampled_from([None, b""]),
    )


def authorizations(valid: list[bytes]) -> st.SearchStrategy[bytes | None]:
    """Authorization values: the ``valid`` ones half of the time (to reach what is behind
    the login), else none, bare schemes, junk, non-ASCII and non-UTF-8 bytes, junk
    base64 or very long values."""
    schemes = st.sampled_from([b"Basic", b"basic", b"jupyterhub", b"token", b"Bearer", b""])
    hostile = st.one_of(
        st.none(),
        schemes,
        st.tuples(schemes, _header_bytes).map(lambda pair: pair[0] + b" " + pair[1]),
        _header_bytes.map(lambda raw: b"Basic " + base64.b64encode(raw)),
        st.tuples(st.sampled_from(valid), _header_bytes).map(lambda pair: pair[0] + pair[1]),
        st.integers(1000, 9000).map(lambda size: b"Basic " + b"A" * size),
    )
    return either(st.sampled_from(valid), hostile)


def headers(valid_authorizations: list[bytes]) -> st.SearchStrategy[tuple[tuple[str, bytes], ...]]:
    """Authorization as above; Content-Type JSON half of the time, else another charset
    or junk; a quarter of the time one more header of junk bytes."""
    content_type = either(st.just(b"application/json"), st.sampled_from([
        b"application/json; charset=utf-16", b"application/json; charset=no-such-charset",
        b"text/plain; charset=latin-1"]) | _header_bytes)
    drawn = st.tuples(authorizations(valid_authorizations), content_type,
                      either(st.none(), either(st.none(), _header_bytes)))
    return drawn.map(lambda values: tuple(
        (name, value) for name, value in zip(("Authorization", "Content-Type", "X-Hostile"),
                                              values, strict=True) if value is not None))


path_parts = st.one_of(
    st.sampled_from([".", "..", "%2e%2e", "%2F", "-rf", "a" * 300, "%00", "%ff%fe"]),
    st.text(min_size=1, max_size=16).map(lambda text: quote(text, safe="")),
)
"""Identifiers in a path: dot names, encoded slashes and NULs, long and non-ASCII ones."""


def query_values(valid: list[str]) -> st.SearchStrategy[str]:
    """A query parameter's value: one of ``valid`` half of the time, else numbers that
    are not (NaN, infinite, negative, hexadecimal), words and any text."""
    return either(st.sampled_from(valid), st.one_of(
        st.sampled_from(["", "nan", "inf", "-1", "1e400", "0x10", "true"]),
        st.text(max_size=12).map(lambda text: quote(text, safe="")),
    ))


def calls(route: str, paths: st.SearchStrategy[str], valid_authorizations: list[bytes],
          body: st.SearchStrategy[bytes | None] | None = None) -> st.SearchStrategy[Call]:
    """Calls of one route: its paths, hostile headers, and ``body`` (by default none or
    a few bytes, which a route without a body must ignore)."""
    drawn_body = body if body is not None else st.none() | st.binary(max_size=16)
    return st.builds(lambda path, head, raw: Call(route, path, head, raw), paths,
                     headers(valid_authorizations), drawn_body)


# ---------------------------------------------------------------- the property

MIN_PER_ROUTE = 10


class Server(Protocol):
    """A running server under test, and what it must keep through refused requests."""

    def send(self, call: Call) -> Answer: ...

    def snapshot(self) -> Any: ...

    def assert_unchanged(self, before: Any) -> None: ...

    def accepted(self, call: Call, answer: Answer) -> None:
        """Undo what an accepted call started, where it costs the machine."""


def assert_refused(server: Server, call: Call, status: int, message: str) -> None:
    """``call`` gets ``status`` with ``message`` in its error, and changes nothing."""
    before = server.snapshot()
    answer = server.send(call)
    assert answer.status == status and message in answer.error, answer
    server.assert_unchanged(before)


def fuzz(server: Server, generated: st.SearchStrategy[Call], examples: int,
         seeds: Sequence[Call], routes: Sequence[str]) -> None:
    """The ``seeds``, then ``examples`` generated calls, reproducibly: none may get a 5xx
    or a traceback, and a refused one (4xx) must leave ``server`` unchanged. Every one of
    ``routes`` must have been called at least MIN_PER_ROUTE times; the count per route
    and the answers each got are printed (``pytest -s``)."""
    tally: Counter[str] = Counter()
    answers: dict[str, Counter[int]] = {route: Counter() for route in routes}

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(call=generated)
    def probe(call: Call) -> None:
        tally[call.route] += 1
        before = server.snapshot()
        answer = server.send(call)
        answers.setdefault(call.route, Counter())[answer.status] += 1
        assert answer.status < 500, (call, answer)
        assert "Traceback" not in answer.text, answer
        if answer.status >= 400:
            server.assert_unchanged(before)
        else:
            server.accepted(call, answer)

    for seed in seeds:
        probe = example(call=seed)(probe)
    probe()
    print("calls per route:", dict(sorted(tally.items())))
    print("answers per route:", {route: dict(sorted(counts.items()))
                                 for route, counts in sorted(answers.items())})
    assert set(tally) == set(routes) and min(tally.values()) >= MIN_PER_ROUTE, tally
