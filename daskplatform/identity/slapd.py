"""A throwaway OpenLDAP server shaped like FreeIPA, for local mode and tests.

It runs slapd as a plain child process on 127.0.0.1 with its own config and data
directory, LDAPS and StartTLS from a CA generated at start, and the memberOf and
refint overlays FreeIPA's group look-ups rely on. Debian ships no rfc2307bis schema
(its nis.schema posixGroup is STRUCTURAL and cannot sit on a groupOfNames entry), so a
small one with posixGroup AUXILIARY is written here.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3
from ldap3.utils.hashed import hashed

from daskplatform.processes import stop_process
from daskplatform.tls import CertificateAuthority

SCHEMA_DIR = Path("/etc/ldap/schema")
"""Where Debian's slapd package puts the stock schemas."""
MODULE_DIR = Path("/usr/lib/ldap")
"""Where Debian's slapd package puts backends and overlays."""
INSTALL_HINT = "sudo apt-get install slapd ldap-utils"

DEMO_BASE_DN = "dc=example,dc=internal"
"""The same base as Pulumi.dev.yaml, so the local directory looks like the dev stack's."""


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    groups: tuple[str, ...]


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("engineer1", "engineer1-demo", ("ipausers", "data_engineers")),
    DemoUser("analyst1", "analyst1-demo", ("ipausers", "data_analysts")),
    DemoUser("admin1", "admin1-demo", ("ipausers", "admins")),
    DemoUser("outsider1", "outsider1-demo", ("ipausers",)),
    DemoUser("svc-pipeline", "svc-pipeline-demo", ("data_engineers",)),
)
"""The demo directory's people; passwords are documented in docs/identity.md.
``svc-pipeline`` is the pipeline watcher's service account (pipeline.serviceUser): a
data engineer by group, no person (not in ipausers)."""


def load_users(count: int) -> tuple[DemoUser, ...]:
    """``user01`` ... for load tests (``local --demo-users N``), password
    ``<name>-demo``: every tenth an admin, then alternately data engineers (even) and
    data analysts (odd): 30 users are 3 admins, 12 engineers and 15 analysts."""
    users = []
    for index in range(1, count + 1):
        group = ("admins" if index % 10 == 0 else
                 "data_engineers" if index % 2 == 0 else "data_analysts")
        name = f"user{index:02d}"
        users.append(DemoUser(name, f"{name}-demo", ("ipausers", group)))
    return tuple(users)

SERVICE_ACCOUNT = "dask-gateway"
"""The service account the gateway and hub bind as for look-ups (FreeIPA sysaccount)."""


def service_bind_dn(base_dn: str) -> str:
    """The service account's DN, where FreeIPA keeps system accounts."""
    return f"uid={SERVICE_ACCOUNT},cn=sysaccounts,cn=etc,{base_dn}"

_RFC2307BIS_SCHEMA = """\
# rfc2307bis-style subset: posixGroup is AUXILIARY so it can sit on groupOfNames
# (uidNumber and gidNumber are built into slapd 2.5).
attributetype ( 1.3.6.1.1.1.1.2 NAME 'gecos'
    EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( 1.3.6.1.1.1.1.3 NAME 'homeDirectory'
    EQUALITY caseExactIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( 1.3.6.1.1.1.1.4 NAME 'loginShell'
    EQUALITY caseExactIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( 1.3.6.1.1.1.1.12 NAME 'memberUid'
    EQUALITY caseExactIA5Match SUBSTR caseExactIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
objectclass ( 1.3.6.1.1.1.2.0 NAME 'posixAccount' SUP top AUXILIARY
    MUST ( cn $ uid $ uidNumber $ gidNumber $ homeDirectory )
    MAY ( userPassword $ loginShell $ gecos $ description ) )
objectclass ( 1.3.6.1.1.1.2.2 NAME 'posixGroup' SUP top AUXILIARY
    MUST ( cn $ gidNumber )
    MAY ( userPassword $ memberUid $ description ) )
"""


class SlapdNotInstalled(RuntimeError):
    """slapd or its schemas are missing; the message says what to install."""


class SlapdError(RuntimeError):
    """slapd did not start; the message carries the tail of its log."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _slapd_binary() -> str:
    binary = shutil.which("slapd") or shutil.which("slapd", path="/usr/sbin:/usr/local/sbin")
    if binary is None or not (SCHEMA_DIR / "core.schema").exists():
        raise SlapdNotInstalled(
            f"slapd (OpenLDAP) is not installed; install it with: {INSTALL_HINT}"
        )
    return binary


def write_tls_files(directory: Path, host: str = "127.0.0.1",
                    ca: CertificateAuthority | None = None) -> Path:
    """A server certificate for ``host`` (and localhost) from ``ca`` (a fresh one by
    default) as server.crt/server.key, and the CA as ca.crt; returns the CA file."""
    ca = ca or CertificateAuthority("dask-platform local CA")
    ca.issue(directory, "server", [host, "localhost"])
    return ca.write_certificate(directory / "ca.crt")


class Slapd:
    """A slapd process with the demo directory. Start, stop and start again keeps
    its data and ports, so tests can take LDAP away and bring it back."""

    def __init__(self, workdir: Path, *, base_dn: str = DEMO_BASE_DN,
                 users: tuple[DemoUser, ...] = DEMO_USERS, host: str = "127.0.0.1",
                 ldap_port: int | None = None, ldaps_port: int | None = None,
                 bind_password: str | None = None) -> None:
        """Listens on ``host`` (127.0.0.1; the rehearsal's FreeIPA its own address) on
        the given ports (free ones by default). Its certificate is ``tls/server.crt``
        in ``workdir`` if one is there (the rehearsal's CA issued it), else from a CA of
        its own (``tls/ca.crt``)."""
        self.workdir = Path(workdir)
        self.base_dn = base_dn
        self.users = users
        self.host = host
        self.ldap_port = ldap_port or _free_port()
        self.ldaps_port = ldaps_port or _free_port()
        self.bind_dn = service_bind_dn(base_dn)
        self.bind_password = bind_password or secrets.token_urlsafe(16)
        self._root_dn = f"cn=Directory Manager,{base_dn}"
        self._root_password = secrets.token_urlsafe(16)
        self._process: subprocess.Popen[bytes] | None = None
        self._seeded = False

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    @property
    def starttls_url(self) -> str:
        return f"ldap://{self.host}:{self.ldap_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "tls" / "ca.crt"

    def start(self, timeout: float = 15) -> None:
        """Start slapd (writing config and data on first start) and wait until it answers."""
        binary = _slapd_binary()
        if not (self.workdir / "slapd.conf").exists():
            self._write_config()
        urls = f"{self.starttls_url}/ {self.ldaps_url}/"
        with open(self.workdir / "slapd.log", "ab") as log:
            # -d 0: stay in the foreground, so this object owns the process.
            self._process = subprocess.Popen(
                [binary, "-d", "0", "-f", str(self.workdir / "slapd.conf"), "-h", urls],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
            if not self._seeded:
                self._seed()
                self._seeded = True
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; waits until the process is gone."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, timeout)

    def __enter__(self) -> Slapd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log_tail(self) -> str:
        path = self.workdir / "slapd.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise SlapdError(f"slapd exited with {self._process.returncode}:\n"
                                 f"{self._log_tail()}")
            try:
                with socket.create_connection((self.host, self.ldaps_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise SlapdError(f"slapd did not listen within {timeout:g}s:\n{self._log_tail()}")

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls = self.workdir / "tls"
        tls.mkdir(exist_ok=True)
        if not (tls / "server.crt").exists():
            write_tls_files(tls, self.host)
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        schema = self.workdir / "rfc2307bis.schema"
        schema.write_text(_RFC2307BIS_SCHEMA)
        service = self.bind_dn
        conf = f"""\
include {SCHEMA_DIR}/core.schema
include {SCHEMA_DIR}/cosine.schema
include {SCHEMA_DIR}/inetorgperson.schema
include {schema}
pidfile {self.workdir}/slapd.pid
argsfile {self.workdir}/slapd.args
modulepath {MODULE_DIR}
moduleload back_mdb
moduleload memberof
moduleload refint
TLSCACertificateFile {tls}/ca.crt
TLSCertificateFile {tls}/server.crt
TLSCertificateKeyFile {tls}/server.key

database mdb
suffix "{self.base_dn}"
rootdn "{self._root_dn}"
rootpw {hashed(ldap3.HASHED_SALTED_SHA, self._root_password)}
directory {data}
maxsize 67108864
index objectClass,uid,cn,member,memberOf eq

overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
overlay refint
refint_attributes member

access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to dn.one="cn=groups,cn=accounts,{self.base_dn}" attrs=member
    by group.exact="cn=admins,cn=groups,cn=accounts,{self.base_dn}" write
    by dn.exact="{service}" read
    by * none
access to *
    by group.exact="cn=admins,cn=groups,cn=accounts,{self.base_dn}" read
    by dn.exact="{service}" read
    by self read
    by * none
"""
        (self.workdir / "slapd.conf").write_text(conf)

    def _seed(self) -> None:
        """Add the FreeIPA-shaped tree through the server, so memberOf is maintained."""
        base = self.base_dn
        users_dn = f"cn=users,cn=accounts,{base}"
        groups_dn = f"cn=groups,cn=accounts,{base}"
        entries: list[tuple[str, list[str], dict[str, object]]] = [
            (base, ["top", "domain"], {"dc": base.split(",")[0].split("=")[1]}),
            (f"cn=accounts,{base}", ["top", "organizationalRole"],
             {"cn": "accounts"}),
            (users_dn, ["top", "organizationalRole"], {"cn": "users"}),
            (groups_dn, ["top", "organizationalRole"], {"cn": "groups"}),
            (f"cn=etc,{base}", ["top", "organizationalRole"], {"cn": "etc"}),
            (f"cn=sysaccounts,cn=etc,{base}", ["top", "organizationalRole"],
             {"cn": "sysaccounts"}),
            (self.bind_dn, ["top", "account", "simpleSecurityObject"],
             {"uid": SERVICE_ACCOUNT,
              "userPassword": hashed(ldap3.HASHED_SALTED_SHA, self.bind_password)}),
        ]
        for number, user in enumerate(self.users, start=10001):
            entries.append((f"uid={user.username},{users_dn}",
                            ["top", "person", "organizationalPerson", "inetOrgPerson",
                             "posixAccount"],
                            {"uid": user.username, "cn": user.username, "sn": user.username,
                             "uidNumber": number, "gidNumber": number,
                             "homeDirectory": f"/home/{user.username}",
                             "loginShell": "/bin/bash",
                             "userPassword": hashed(ldap3.HASHED_SALTED_SHA, user.password)}))
        group_names = sorted({g for user in self.users for g in user.groups})
        for number, group in enumerate(group_names, start=20001):
            members = [f"uid={u.username},{users_dn}" for u in self.users if group in u.groups]
            entries.append((f"cn={group},{groups_dn}",
                            ["top", "groupOfNames", "posixGroup"],
                            {"cn": group, "gidNumber": number, "member": members}))
        server = ldap3.Server(self.host, port=self.ldap_port, connect_timeout=5)
        with ldap3.Connection(server, self._root_dn, self._root_password,
                              auto_bind=True, raise_exceptions=True) as conn:
            for dn, classes, attributes in entries:
                conn.add(dn, classes, attributes)
