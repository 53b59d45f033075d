"""FreeIPA directory client: who a user is and which groups they are in.

The gateway and JupyterHub both log users in here. A service account looks the user
up (users may not be allowed to read their own ``memberOf``), then a bind as the
user proves the password. Connections are always encrypted: ``ldaps://`` or
``ldap://`` with StartTLS, never plain. Calls block, so async callers run them in a
thread; a short cache keeps a burst of requests from hammering FreeIPA.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as ldap_exceptions
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from daskplatform.aws import aws_client
from daskplatform.identifiers import USERNAME
from daskplatform.settings import RuntimeSettings

CA_FILE_ENV = "LDAPTLS_CACERT"
"""The OpenLDAP clients' variable for the CA that signs the LDAP server's certificate;
honoured here too so ldapsearch and the platform trust the same CA."""
BIND_PASSWORD_ENV = "DASK_PLATFORM_LDAP_BIND_PASSWORD"
"""The service bind password when no Secrets Manager ARN is configured."""




def is_valid_username(username: str) -> bool:
    """Whether ``username`` can be a FreeIPA login (so it is safe to log it: a password
    typed into the user field usually is not)."""
    return USERNAME.fullmatch(username) is not None


class DirectoryError(Exception):
    """Base class for directory failures."""


class InvalidCredentials(DirectoryError):
    """Unknown user or wrong password (deliberately indistinguishable)."""


class DirectoryUnavailable(DirectoryError):
    """The directory cannot be reached or refused the service account."""


@dataclass(frozen=True)
class DirectoryUser:
    username: str
    dn: str
    groups: frozenset[str]
    """Names (cn) of the FreeIPA groups the user is a direct or nested member of."""
    uid_number: int | None = None
    """The account's POSIX uid (FreeIPA ``uidNumber``): every process of the user runs
    under it. None when the entry has none."""
    gid_number: int | None = None


class _TTLCache:
    """Successful logins for ``seconds``; keys are keyed hashes, never passwords."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[float, DirectoryUser]] = {}
        self._lock = threading.Lock()

    def key(self, username: str, password: str) -> bytes:
        return hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()

    def get(self, key: bytes) -> DirectoryUser | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] < time.monotonic():
                self._entries.pop(key, None)
                return None
            return entry[1]

    def forget(self, username: str) -> None:
        """Drop every entry of ``username`` (their groups changed)."""
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items()
                             if v[1].username != username}

    def put(self, key: bytes, user: DirectoryUser) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            self._entries[key] = (now + self.seconds, user)


class LdapDirectory:
    """Look-ups and logins against a FreeIPA-shaped directory."""

    def __init__(self, url: str, base_dn: str, bind_dn: str, bind_password: str, *,
                 ca_file: str | None = None, ca_data: str = "", cache_seconds: float = 300,
                 timeout: float = 5) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError(f"ldapUrl {url!r} must look like ldaps://host:636 or "
                             "ldap://host:389 (StartTLS)")
        self.url = url
        self.base_dn = base_dn
        self.users_dn = f"cn=users,cn=accounts,{base_dn}"
        self.groups_dn = f"cn=groups,cn=accounts,{base_dn}"
        self._bind_dn = bind_dn
        self._bind_password = bind_password
        self._timeout = timeout
        self._use_ssl = parts.scheme == "ldaps"
        # The CA from the settings (ldapCaBundle) when they carry one: on hosts that is
        # the only trust for LDAP; a given file (tests) or LDAPTLS_CACERT otherwise.
        ca_file = ca_file or (None if ca_data else os.environ.get(CA_FILE_ENV)) or None
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                        ca_certs_file=ca_file, ca_certs_data=None if ca_file else ca_data or None)
        self._host = parts.hostname
        self._port = parts.port or (636 if self._use_ssl else 389)
        self._tls = tls
        self._cache = _TTLCache(cache_seconds)

    @classmethod
    def from_settings(cls, settings: RuntimeSettings, *, bind_password: str | None = None,
                      ca_file: str | None = None) -> LdapDirectory:
        """The directory the runtime settings name; the password from
        :func:`read_bind_password` unless given."""
        if not settings.ldap_url or not settings.ldap_base_dn:
            raise ValueError("ldapUrl and ldapBaseDn must be set to log users in")
        password = read_bind_password(settings) if bind_password is None else bind_password
        return cls(settings.ldap_url, settings.ldap_base_dn, settings.ldap_bind_dn, password,
                   ca_file=ca_file, ca_data=settings.ldap_ca_bundle,
                   cache_seconds=settings.timeouts.ldap_cache_seconds)

    def authenticate(self, username: str, password: str) -> DirectoryUser:
        """The user with their groups if the password is right.

        Raises InvalidCredentials or DirectoryUnavailable. Blocking.
        """
        if not is_valid_username(username) or not password:
            # An empty password would be an anonymous bind that "succeeds".
            raise InvalidCredentials("invalid username or password")
        key = self._cache.key(username, password)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        user = self.lookup(username)
        if user is None:
            raise InvalidCredentials("invalid username or password")
        try:
            with self._connection(user.dn, password):
                pass
        except ldap_exceptions.LDAPInvalidCredentialsResult:
            raise InvalidCredentials("invalid username or password") from None
        self._cache.put(key, user)
        return user

    def forget(self, username: str) -> None:
        """Make the next login or look-up of ``username`` ask the directory (an admin
        changed their groups: it applies at once, not after the cache's time)."""
        self._cache.forget(username)

    def lookup_cached(self, username: str) -> DirectoryUser | None:
        """:meth:`lookup`, reused for the login cache's time (hub-token requests would
        otherwise search the directory on every call)."""
        key = self._cache.key(username, "\0lookup")
        found = self._cache.get(key)
        if found is None:
            found = self.lookup(username)
            if found is not None:
                self._cache.put(key, found)
        return found

    def lookup(self, username: str) -> DirectoryUser | None:
        """The user's entry and groups via the service account, or None if absent."""
        if not is_valid_username(username):
            return None
        try:
            with self._connection(self._bind_dn, self._bind_password) as conn:
                conn.search(self.users_dn, f"(uid={escape_filter_chars(username)})",
                            search_scope=ldap3.LEVEL,
                            attributes=["memberOf", "uidNumber", "gidNumber"], size_limit=2)
                entries = list(conn.response or [])
        except ldap_exceptions.LDAPInvalidCredentialsResult:
            raise DirectoryUnavailable(
                "the LDAP service account was refused (check ldapBindDn and its password)"
            ) from None
        except ldap_exceptions.LDAPNoSuchObjectResult:
            return None
        entries = [e for e in entries if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            return None
        entry = entries[0]
        attributes = entry["attributes"]
        return DirectoryUser(username=username, dn=entry["dn"],
                             groups=self._group_names(attributes.get("memberOf", [])),
                             uid_number=_number(attributes.get("uidNumber")),
                             gid_number=_number(attributes.get("gidNumber")))

    def group_members(self, group: str) -> list[str]:
        """The uids of ``group``'s members, via the service account ([] if no group)."""
        with self._connection(self._bind_dn, self._bind_password) as conn:
            conn.search(self.groups_dn, f"(cn={escape_filter_chars(group)})",
                        search_scope=ldap3.LEVEL, attributes=["member"], size_limit=2)
            entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        members = entries[0]["attributes"].get("member", []) if len(entries) == 1 else []
        return sorted(parse_dn(dn)[0][1] for dn in members)

    def _group_names(self, member_of: list[str]) -> frozenset[str]:
        """cn of each memberOf DN that sits in the groups container (not roles, HBAC...)."""
        suffix = parse_dn(self.groups_dn.lower())
        names = set()
        for dn in member_of:
            parsed = parse_dn(dn.lower())
            if len(parsed) == len(suffix) + 1 and parsed[1:] == suffix and parsed[0][0] == "cn":
                names.add(parse_dn(dn)[0][1])
        return frozenset(names)

    def writer(self, dn: str, password: str) -> AbstractContextManager[ldap3.Connection]:
        """A connection bound as ``dn`` that may write (what ``dn`` may write: an admin's
        own login, membership.py)."""
        return self._connection(dn, password, read_only=False)

    @contextmanager
    def _connection(self, dn: str, password: str, read_only: bool = True
                    ) -> Iterator[ldap3.Connection]:
        """A bound, encrypted connection, closed afterwards. A wrong password or a missing
        entry propagate as ldap3's result exceptions; anything else (unreachable, TLS,
        server refusals) becomes DirectoryUnavailable."""
        # A fresh Server each time: ldap3 remembers a failed address for minutes, which
        # would keep logins failing long after the directory is back.
        server = ldap3.Server(self._host, port=self._port, use_ssl=self._use_ssl,
                              tls=self._tls, connect_timeout=self._timeout,
                              get_info=ldap3.NONE)
        conn = ldap3.Connection(server, dn, password, raise_exceptions=True,
                                receive_timeout=self._timeout, read_only=read_only)
        try:
            conn.open()
            if not self._use_ssl:
                conn.start_tls()
            conn.bind()
            yield conn
        except (ldap_exceptions.LDAPInvalidCredentialsResult,
                ldap_exceptions.LDAPNoSuchObjectResult):
            raise
        except ldap_exceptions.LDAPOperationResult as exc:
            raise DirectoryUnavailable(f"LDAP server {self.url} refused: {exc}") from None
        except (ldap_exceptions.LDAPException, OSError) as exc:
            raise DirectoryUnavailable(f"LDAP server {self.url} unreachable: {exc}") from None
        finally:
            try:
                conn.unbind()
            except (ldap_exceptions.LDAPException, OSError):
                pass


def _number(value: object) -> int | None:
    """An LDAP integer attribute as ldap3 hands it (an int, or an empty list if absent)."""
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def read_bind_password(settings: RuntimeSettings) -> str:
    """The service bind password: Secrets Manager when the settings name a secret
    (AWS and local mode), else the environment variable."""
    if settings.ldap_bind_password_secret_id:
        secret = aws_client("secretsmanager").get_secret_value(
            SecretId=settings.ldap_bind_password_secret_id)
        return secret["SecretString"]
    password = os.environ.get(BIND_PASSWORD_ENV)
    if password is None:
        raise ValueError(f"no LDAP bind password: set ldapBindPasswordSecretId in the "
                         f"settings or {BIND_PASSWORD_ENV}")
    return password
