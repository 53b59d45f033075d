"""The services' units: what systemd is told on AWS, and (as root, in a throwaway host)
that foreground mode honours the same unit: its user, state directory, log, restarts,
and which processes a stop reaches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daskplatform.host.units import agent_unit, gateway_unit, setup_unit
from daskplatform.settings import PortSettings
from tests.cloud.host_units import directives
from tests.host.throwaway import run_in_throwaway_host

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a private mount "
                                "namespace, another user (CI runs as root)")


def test_the_agent_unit_keeps_dask_processes_and_only_what_it_needs_of_root() -> None:
    """Root, to start each user's processes under their own uid, bounded to the
    capabilities that takes; KillMode=process keeps Dask running across a restart."""
    unit = directives(agent_unit("worker", "ssm:///p", "eu-west-1", PortSettings()).render())
    assert "User" not in unit and unit["KillMode"] == ["process"]
    assert unit["CapabilityBoundingSet"] == [
        "CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_KILL"]
    assert "Delegate" not in unit and unit["Restart"] == ["always"]
    assert unit["StateDirectoryMode"] == ["0711"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["Environment"] == ["AWS_DEFAULT_REGION=eu-west-1"]
    assert unit["ExecStart"][0].endswith("--advertise-host imds --homes /srv/homes")


def test_the_gateway_unit_stops_its_whole_tree_and_waits_for_clusters() -> None:
    unit = directives(gateway_unit("ssm:///p", "eu-west-1", PortSettings()).render())
    assert unit["KillMode"] == ["control-group"] and unit["TimeoutStopSec"] == ["120"]
    assert "User" not in unit


SERVICE = """
    import os, time
    from pathlib import Path
    from daskplatform.host.units import ForegroundService, Unit, LOG_FILE
    script = ("import os, subprocess, sys, pathlib; "
              "d = pathlib.Path(os.environ['STATE_DIRECTORY']); "
              "child = subprocess.Popen(['sleep', '300']); "
              "(d / 'child').write_text(str(child.pid)); "
              "print('uid', os.getuid(), 'home', os.environ.get('HOME'), "
              "'extra', os.environ.get('AWS_ENDPOINT_URL'), flush=True); "
              "time.sleep(float(sys.argv[1]))")
    results = {}
    for mode, run_for in (("process", 300), ("control-group", 0.2)):
        unit = Unit(name=f"t-{mode}.service", description="test",
                    exec_start=(sys.executable, "-c", "import time;" + script, str(run_for)),
                    environment={"AWS_DEFAULT_REGION": "eu-west-1"}, state_directory=f"t-{mode}",
                    state_directory_mode="0700", user="nobody", kill_mode=mode,
                    restart_seconds=0.2, stop_timeout_seconds=5)
        service = ForegroundService(unit, {"AWS_ENDPOINT_URL": "http://aws.example"})
        service.start()
        state = Path("/var/lib", f"t-{mode}")
        deadline = time.monotonic() + 20
        while not (state / "child").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int((state / "child").read_text())
        time.sleep(1)
        for _ in range(10):  # Restart=always: an exited service starts again
            service.supervise()
            time.sleep(0.1)
        service.stop()
        time.sleep(0.3)
        alive = os.path.exists(f"/proc/{child}") and "Z" not in Path(
            f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        print(mode, "restarts", service.restarts, "child_alive", alive,
              "state_mode", oct(state.stat().st_mode & 0o777), "owner", state.stat().st_uid)
        if alive:
            os.kill(child, 9)
    print(Path(LOG_FILE).read_text())
"""


@needs_root
def test_foreground_mode_runs_a_unit_as_systemd_would(tmp_path: Path) -> None:
    done = run_in_throwaway_host(tmp_path / "disk", SERVICE)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # KillMode=process: the stop reaches the main process only (Dask outlives an agent
    # restart); by default what an exited service left is killed before it restarts.
    # It ran as its user, with its own private state directory, the passed-through
    # variable, and its log appended.
    assert "process restarts 0 child_alive True state_mode 0o700 owner 65534" in out
    assert "control-group restarts" in out and "child_alive False" in out
    assert int(out.split("control-group restarts ")[1].split()[0]) >= 1
    assert "uid 65534 home /nonexistent extra http://aws.example" in out


def test_host_setup_runs_again_at_every_later_boot() -> None:
    """A node started from the warm pool boots without user data: this unit completes
    its launch hook."""
    argv = ["/opt/dask-platform/venv/bin/dask-platform", "host-setup", "--role", "worker",
            "--settings", "ssm:///p"]
    unit = directives(setup_unit(argv, "/var/log/dask-platform-boot.log"))
    assert unit["Type"] == ["oneshot"] and unit["WantedBy"] == ["multi-user.target"]
    assert unit["ExecStart"] == [" ".join(argv)]
    assert unit["After"] == ["network-online.target"]
    assert unit["StandardOutput"] == ["append:/var/log/dask-platform-boot.log"]
