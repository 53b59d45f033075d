"""Group membership in FreeIPA over LDAP, written with an admin's own login.

The platform stores no credentials that may write the directory: ``dask-platform users``
binds as the admin running it (their uid and password), so FreeIPA's own rules decide
what they may change, and the directory's log shows who did. Only the ``member``
attribute of the groups that grant platform groups is touched.
"""

from __future__ import annotations

import ldap3
from ldap3.core import exceptions as ldap_exceptions

from daskplatform.identity.ldap import (
    DirectoryUnavailable,
    DirectoryUser,
    InvalidCredentials,
    LdapDirectory,
)


class MembershipError(RuntimeError):
    """The change was refused; the message says why and what to do."""


class Membership:
    def __init__(self, directory: LdapDirectory, admin: str, password: str) -> None:
        self.directory = directory
        try:
            self.admin = directory.authenticate(admin, password)
        except InvalidCredentials:
            raise MembershipError(f"the directory refused the login of {admin}: check the "
                                  "name and $DASK_PLATFORM_PASSWORD") from None
        self._password = password

    def user(self, username: str) -> DirectoryUser | None:
        return self.directory.lookup(username)

    def members(self, group: str) -> list[str]:
        return self.directory.group_members(group)

    def group_dn(self, group: str) -> str:
        return f"cn={ldap3.utils.dn.escape_rdn(group)},{self.directory.groups_dn}"

    def add(self, user: DirectoryUser, group: str) -> bool:
        """Put ``user`` in the LDAP ``group``; False if they were in it already."""
        if group in user.groups:
            return False
        self._modify(group, ldap3.MODIFY_ADD, user.dn)
        return True

    def remove(self, user: DirectoryUser, group: str) -> bool:
        """Take ``user`` out of ``group``; False if they were not in it."""
        if group not in user.groups:
            return False
        self._modify(group, ldap3.MODIFY_DELETE, user.dn)
        return True

    def _modify(self, group: str, operation: str, member: str) -> None:
        try:
            with self.directory.writer(self.admin.dn, self._password) as conn:
                conn.modify(self.group_dn(group), {"member": [(operation, [member])]})
        except ldap_exceptions.LDAPInsufficientAccessRightsResult:
            raise MembershipError(f"{self.admin.username} may not change the members of "
                                  f"{group} in the directory (FreeIPA: the admins group "
                                  "may)") from None
        except ldap_exceptions.LDAPNoSuchObjectResult:
            raise MembershipError(f"there is no group {group} in the directory; create it "
                                  f"first (FreeIPA: ipa group-add {group})") from None
        except ldap_exceptions.LDAPObjectClassViolationResult:
            raise MembershipError(f"the directory keeps at least one member in {group}; add "
                                  "another member first") from None
        except DirectoryUnavailable as exc:
            raise MembershipError(str(exc)) from None
