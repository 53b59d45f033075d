"""The directory settings both authenticators share (gateway and JupyterHub), as
traitlets so each is configured the way its server configures plug-ins."""

from __future__ import annotations

import asyncio

from traitlets import Unicode
from traitlets.config import Configurable

from daskplatform.identity.ldap import LdapDirectory
from daskplatform.runtime_config import load_runtime_settings
from daskplatform.settings import RuntimeSettings


class DirectoryConfig(Configurable):
    """Where the runtime settings are and how to reach the directory they name."""

    settings_source = Unicode(
        help="Where the runtime settings come from: ssm://<name>, a Pulumi.<stack>.yaml "
             "or a RuntimeSettings JSON file (daskplatform.runtime_config).",
        config=True,
    )
    ldap_bind_password = Unicode(
        "",
        help="Service bind password; empty reads it from Secrets Manager or the "
             "environment (daskplatform.identity.ldap.read_bind_password).",
        config=True,
    )
    ldap_ca_file = Unicode(
        "",
        help="CA bundle that signs the LDAP server certificate; empty uses LDAPTLS_CACERT "
             "or the system store.",
        config=True,
    )

    async def load_directory(self) -> tuple[RuntimeSettings, LdapDirectory]:
        """The settings and the directory client (blocking reads run in a thread)."""
        if not self.settings_source:
            raise ValueError(f"{type(self).__name__}.settings_source must be set")
        settings = await asyncio.to_thread(load_runtime_settings, self.settings_source)
        directory = await asyncio.to_thread(
            LdapDirectory.from_settings, settings,
            bind_password=self.ldap_bind_password or None, ca_file=self.ldap_ca_file or None)
        return settings, directory
