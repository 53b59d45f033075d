"""The hub authenticator's directory logic in-process against a real slapd: what a
login and a periodic refresh hand JupyterHub, and how it behaves while LDAP is away."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado import web

from daskplatform.identity.hub import LdapHubAuthenticator
from daskplatform.identity.slapd import Slapd
from daskplatform.settings import RuntimeSettings


def authenticator(slapd: Slapd, directory: Path) -> LdapHubAuthenticator:
    settings = directory / "settings.json"
    settings.write_text(RuntimeSettings(ldap_url=slapd.ldaps_url, ldap_base_dn=slapd.base_dn,
                                        ldap_bind_dn=slapd.bind_dn).to_json())
    return LdapHubAuthenticator(settings_source=str(settings),
                                ldap_bind_password=slapd.bind_password,
                                ldap_ca_file=str(slapd.ca_file))


async def test_login_hands_the_hub_groups_and_admin_flag(slapd: Slapd, tmp_path: Path) -> None:
    auth = authenticator(slapd, tmp_path)
    assert auth.manage_groups is True
    assert await auth.authenticate(None, {"username": "admin1", "password": "admin1-demo"}) == {
        "name": "admin1", "groups": ["admins", "ipausers"], "admin": True}
    assert await auth.authenticate(None, {"username": "admin1", "password": "nope"}) is None


async def test_refresh_follows_the_directory(slapd: Slapd, tmp_path: Path) -> None:
    auth = authenticator(slapd, tmp_path)
    assert await auth.refresh_user(SimpleNamespace(name="analyst1")) == {
        "name": "analyst1", "groups": ["data_analysts", "ipausers"], "admin": False}
    assert await auth.refresh_user(SimpleNamespace(name="outsider1")) is False
    assert await auth.refresh_user(SimpleNamespace(name="gone-user")) is False


async def test_ldap_outage_keeps_sessions_and_refuses_logins_with_503(tmp_path: Path) -> None:
    with Slapd(tmp_path / "ldap") as ldap:
        auth = authenticator(ldap, tmp_path)
        await auth.refresh_user(SimpleNamespace(name="engineer1"))  # loads the settings
    assert await auth.refresh_user(SimpleNamespace(name="engineer1")) is True
    with pytest.raises(web.HTTPError) as refused:
        await auth.authenticate(None, {"username": "engineer1", "password": "engineer1-demo"})
    assert refused.value.status_code == 503
