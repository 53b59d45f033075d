"""Run code as root in a throwaway host: a private mount namespace whose /etc and /var are
overlays (changes land in a test folder, never on this machine) and whose /srv holds
the two EFS mount points, as the rehearsal's hosts have them, in a network namespace of
its own (its nftables rules never touch this machine's)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PREPARE = textwrap.dedent("""
    import subprocess, sys
    from pathlib import Path
    for path in ("/etc", "/var"):
        upper, work = Path(sys.argv[1], path.strip("/")), Path(sys.argv[1], "w" + path)
        upper.mkdir(parents=True); work.mkdir(parents=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={path},upperdir={upper},workdir={work}", path], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/srv"], check=True)
    for name in ("homes", "shared"):
        Path("/srv", name).mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", f"/srv/{name}"], check=True)
    sys.argv = sys.argv[1:]
""")


def run_in_throwaway_host(disk: Path, code: str, *args: str,
                          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``code`` (Python) after the mounts; ``sys.argv[1:]`` are ``args``."""
    return subprocess.run(["unshare", "--mount", "--net", "--propagation", "private",
                           sys.executable,
                           "-c", PREPARE + textwrap.dedent(code), str(disk), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
