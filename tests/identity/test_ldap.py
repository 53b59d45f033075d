"""The directory client against a real slapd: TLS both ways, groups via memberOf,
distinct errors, and the short cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from daskplatform.aws import aws_client
from daskplatform.identity.ldap import (
    DirectoryUnavailable,
    InvalidCredentials,
    LdapDirectory,
    read_bind_password,
)
from daskplatform.identity.slapd import DEMO_USERS, Slapd, write_tls_files
from daskplatform.settings import RuntimeSettings, TimeoutSettings


def directory(slapd: Slapd, url: str, **kwargs: object) -> LdapDirectory:
    return LdapDirectory(url, slapd.base_dn, slapd.bind_dn, slapd.bind_password,
                         ca_file=str(slapd.ca_file), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", ["ldaps", "starttls"])
def test_demo_users_log_in_with_their_freeipa_groups(slapd: Slapd, transport: str) -> None:
    url = slapd.ldaps_url if transport == "ldaps" else slapd.starttls_url
    client = directory(slapd, url)
    for demo in DEMO_USERS:
        user = client.authenticate(demo.username, demo.password)
        assert user.dn == f"uid={demo.username},cn=users,cn=accounts,{slapd.base_dn}"
        assert user.groups == frozenset(demo.groups)


@pytest.mark.parametrize("username,password", [
    ("engineer1", "wrong"), ("nobody", "engineer1-demo"), ("engineer1", ""),
    ("engineer1)(uid=*", "x"), ("*", "x"),
])
def test_bad_credentials_are_invalid_not_unavailable(slapd: Slapd, username: str,
                                                     password: str) -> None:
    with pytest.raises(InvalidCredentials):
        directory(slapd, slapd.ldaps_url).authenticate(username, password)


def test_untrusted_certificate_is_refused(slapd: Slapd, tmp_path: Path) -> None:
    other_ca = write_tls_files(tmp_path)
    client = LdapDirectory(slapd.ldaps_url, slapd.base_dn, slapd.bind_dn, slapd.bind_password,
                           ca_file=str(other_ca))
    with pytest.raises(DirectoryUnavailable, match="certificate verify failed"):
        client.authenticate("engineer1", "engineer1-demo")


def test_wrong_service_password_says_so(slapd: Slapd) -> None:
    client = LdapDirectory(slapd.ldaps_url, slapd.base_dn, slapd.bind_dn, "not-it",
                           ca_file=str(slapd.ca_file))
    with pytest.raises(DirectoryUnavailable, match="service account was refused"):
        client.authenticate("engineer1", "engineer1-demo")


def test_cache_serves_recent_logins_only_for_the_same_password(tmp_path: Path) -> None:
    with Slapd(tmp_path) as server:
        cached = directory(server, server.ldaps_url, cache_seconds=300)
        uncached = directory(server, server.ldaps_url, cache_seconds=0)
        cached.authenticate("analyst1", "analyst1-demo")
        uncached.authenticate("analyst1", "analyst1-demo")
    # slapd is gone now
    assert cached.authenticate("analyst1", "analyst1-demo").groups == {"ipausers",
                                                                      "data_analysts"}
    with pytest.raises(DirectoryUnavailable, match="unreachable"):
        cached.authenticate("analyst1", "another-password")
    with pytest.raises(DirectoryUnavailable, match="unreachable"):
        uncached.authenticate("analyst1", "analyst1-demo")


def test_bind_password_comes_from_secrets_manager(aws_env: str, slapd: Slapd) -> None:
    arn = aws_client("secretsmanager").create_secret(
        Name="identity-test-bind", SecretString=slapd.bind_password)["ARN"]
    settings = RuntimeSettings(ldap_url=slapd.ldaps_url, ldap_base_dn=slapd.base_dn,
                               ldap_bind_dn=slapd.bind_dn, ldap_bind_password_secret_id=arn,
                               timeouts=TimeoutSettings(ldap_cache_seconds=0))
    assert read_bind_password(settings) == slapd.bind_password
    client = LdapDirectory.from_settings(settings, ca_file=str(slapd.ca_file))
    assert client.authenticate("admin1", "admin1-demo").groups == {"ipausers", "admins"}


def test_missing_bind_password_names_both_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASK_PLATFORM_LDAP_BIND_PASSWORD", raising=False)
    with pytest.raises(ValueError, match="ldapBindPasswordSecretId.*"
                                         "DASK_PLATFORM_LDAP_BIND_PASSWORD"):
        read_bind_password(RuntimeSettings())
