"""``dp-ipa``: FreeIPA as the gateway host sees it: slapd with the FreeIPA-shaped demo
directory, LDAPS on 636 (and StartTLS on 389) with a certificate from the rehearsal's
private CA, which hosts trust only through the stack's ``ldapCaBundle`` setting.

Run inside the namespace: ``python -m daskplatform.rehearsal.ipa_host PLAN``.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from daskplatform.identity.slapd import Slapd
from daskplatform.rehearsal.plan import Plan
from daskplatform.rehearsal.topology import IPA_ADDRESS

LDAPS_PORT = 636
LDAP_PORT = 389


def directory(plan: Plan) -> Slapd:
    return Slapd(Path(plan.workdir) / "ipa", host=IPA_ADDRESS, ldap_port=LDAP_PORT,
                 ldaps_port=LDAPS_PORT, bind_password=plan.ldap_bind_password)


def main(argv: list[str] | None = None) -> int:
    slapd = directory(Plan.load((argv or sys.argv[1:])[0]))
    slapd.start()
    print(f"ready: {slapd.ldaps_url} ({slapd.base_dn})", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    slapd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
