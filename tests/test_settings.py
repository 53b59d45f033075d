"""The settings schema directly: defaults from the brief, field rules, each cross-field
check, error messages that name the key, and the runtime part hosts read."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
import yaml

from daskplatform.settings import (
    ClusterSettings,
    DataAccessSettings,
    GatewayHostSettings,
    GroupQuota,
    HostSettings,
    MonitoringSettings,
    PipelineSettings,
    PlatformSettings,
    PortSettings,
    QuotaSettings,
    RuntimeSettings,
    SchedulerHostSettings,
    SettingsError,
    TimeoutSettings,
    WorkerPoolSettings,
    check_edge,
    check_memory_order,
    check_network,
    check_ports,
    check_quotas,
    check_worker_pool,
    config_key,
    load_settings,
    load_stack_file,
    node_capacity,
    notebook_fit_problems,
    scheduler_slots,
    strip_namespace,
    terminate_headroom_problems,
)
from daskplatform.tls import CertificateAuthority

ROOT = Path(__file__).resolve().parent.parent
CERT = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
REQUIRED = {
    "allowedCidrs": ["10.20.0.0/16"],
    "certificateArn": CERT,
    "ldapUrl": "ldaps://ipa.example.internal:636",
    "ldapBaseDn": "dc=example,dc=internal",
    "ldapBindDn": "uid=svc,dc=example,dc=internal",
    "ldapCaBundle": "system",
}


def settings(**changes: Any) -> PlatformSettings:
    return load_settings({**REQUIRED, **changes})


def rejected(**changes: Any) -> str:
    with pytest.raises(SettingsError) as caught:
        settings(**changes)
    return str(caught.value)


def from_stack_file(folder: Path, document: dict) -> PlatformSettings:
    """Settings read back from ``document`` written as a stack file."""
    path = folder / "Pulumi.t.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_stack_file(str(path))


def quota(**changes: Any) -> GroupQuota:
    values = {
        "priority": 1,
        "cluster_max_cores": 2,
        "cluster_max_memory_gb": 4,
        "user_max_cores": 2,
        "user_max_memory_gb": 4,
    }
    return GroupQuota(**{**values, **changes})


def quotas(**groups: GroupQuota) -> QuotaSettings:
    defaults = QuotaSettings().groups
    return QuotaSettings(groups={**defaults, **groups})


# ------------------------------------------------------------------ defaults


def test_defaults_are_the_briefs() -> None:
    s = settings()
    assert (s.workers.instance_type, s.workers.min, s.workers.max) == ("c5.large", 5, 20)
    assert (s.workers.scale_out_cpu, s.workers.scale_in_cpu, s.workers.cooldown_seconds) == (
        70,
        30,
        300,
    )
    # The brief's c5.xlarge held four clusters at one core each: the scheduler host is
    # sized from measured schedulers for the expected team instead (docs/capacity.md).
    assert (s.scheduler.instance_type, s.gateway.instance_type) == ("m5.2xlarge", "t3.medium")
    assert s.expected_concurrent_users == 30
    groups = s.quotas.groups
    assert (
        groups["data_engineers"].user_max_cores,
        groups["data_engineers"].user_max_memory_gb,
    ) == (4, 8)
    assert (groups["data_analysts"].user_max_cores, groups["data_analysts"].user_max_memory_gb) == (
        2,
        4,
    )
    assert groups["admins"].user_max_cores > 4 and groups["admins"].user_max_memory_gb > 8
    assert (
        groups["admins"].priority
        > groups["data_engineers"].priority
        > groups["data_analysts"].priority
    )
    assert (s.quotas.idle_timeout_minutes, s.quotas.max_pending_per_user) == (120, 50)
    assert s.vpc_cidr == "10.0.0.0/16" and not s.adopts_vpc


def test_dask_tuning_defaults_are_the_briefs() -> None:
    c = settings().clusters
    assert (c.worker_memory_target, c.worker_memory_spill, c.worker_memory_pause,
            c.worker_memory_terminate) == (0.6, 0.7, 0.8, 0.9)
    assert c.node_spill_disk_gb == 16
    assert (c.scheduler_allowed_failures, c.scheduler_work_stealing,
            c.scheduler_worker_saturation) == (2, True, 1.0)


def test_the_dev_stack_file_is_valid_and_states_the_defaults() -> None:
    """Pulumi.dev.yaml says 'default X' beside each key: its values must be the schema's."""
    dev = load_stack_file(str(ROOT / "Pulumi.dev.yaml"))
    defaults = settings()
    for section in ("scheduler", "gateway", "workers", "clusters", "ports", "timeouts",
                    "data_access"):
        assert getattr(dev, section) == getattr(defaults, section), section
    assert dev.vpc_cidr == defaults.vpc_cidr
    # ldapGroups is spelled out there; the default (empty) means "the group's own name".
    assert dev.quotas.model_dump(
        exclude={"groups": {"__all__": {"ldap_groups"}}}
    ) == defaults.quotas.model_dump(exclude={"groups": {"__all__": {"ldap_groups"}}})
    assert dev.quotas.granting_ldap_groups() == defaults.quotas.granting_ldap_groups()


def test_stack_file_reads_nested_cluster_values(tmp_path: Path) -> None:
    clusters = {"workerMemoryTarget": 0.5, "workerMemorySpill": 0.55, "workerMemoryPause": 0.6,
                "workerMemoryTerminate": 0.85, "nodeSpillDiskGb": 10,
                "schedulerAllowedFailures": 0, "schedulerWorkStealing": False,
                "schedulerWorkerSaturation": 1.5}
    document = {"config": {**{f"dask-platform:{k}": v for k, v in REQUIRED.items()},
                           "dask-platform:clusters": clusters}}
    loaded = from_stack_file(tmp_path, document).clusters.model_dump(by_alias=True)
    assert {key: loaded[key] for key in clusters} == clusters


def test_stack_file_leaves_secure_values_out(tmp_path: Path) -> None:
    document = {
        "config": {
            "aws:region": "eu-west-1",
            **{f"dask-platform:{k}": v for k, v in REQUIRED.items()},
            "dask-platform:ldapBindPassword": {"secure": "AAAbase64"},
        }
    }
    assert from_stack_file(tmp_path, document).ldap_bind_password is None


def test_strip_namespace_keeps_only_ours() -> None:
    assert strip_namespace({"aws:region": "x", "dask-platform:vpcCidr": "10.0.0.0/16"}) == {
        "vpcCidr": "10.0.0.0/16"
    }


# ------------------------------------------------------------------ field rules


@pytest.mark.parametrize(
    "changes, key, hint",
    [
        ({"allowedCidrs": ["10.0.0.300/8"]}, "dask-platform:allowedCidrs", "valid CIDR"),
        ({"allowedCidrs": ["10.0.0.1/16"]}, "dask-platform:allowedCidrs", "valid CIDR"),
        ({"allowedCidrs": []}, "dask-platform:allowedCidrs", "at least 1"),
        ({"vpcCidr": "10.0.0.0/8"}, "dask-platform:vpcCidr", "/16 to /24"),
        ({"vpcCidr": "10.0.0.0/26"}, "dask-platform:vpcCidr", "/16 to /24"),
        ({"vpcCidr": "banana"}, "dask-platform:vpcCidr", "valid CIDR"),
        ({"vpcId": "vpc-xyz"}, "dask-platform:vpcId", "vpc-0123456789abcdef0"),
        (
            {"certificateArn": "arn:aws:iam::1:cert"},
            "dask-platform:certificateArn",
            "ACM certificate ARN",
        ),
        ({"ldapUrl": "https://ipa"}, "dask-platform:ldapUrl", "ldaps://host:636"),
        ({"alertEmails": ["not-an-address"]}, "dask-platform:alertEmails", "not e-mail"),
        (
            {"workers": {"instanceType": "c5.huge"}},
            "dask-platform:workers.instanceType",
            "allowed families",
        ),
        ({"workers": {"min": -1}}, "dask-platform:workers.min", "greater than or equal to 0"),
        ({"clusters": {"workerMemoryTarget": 1}}, "dask-platform:clusters.workerMemoryTarget",
         "less than 1"),
        ({"clusters": {"nodeSpillDiskGb": 25}}, "dask-platform:clusters.nodeSpillDiskGb",
         "less than or equal to 22"),
        ({"workers": {"scaleOutCpu": 100}}, "dask-platform:workers.scaleOutCpu", "less than 100"),
        ({"workers": {"cooldownSeconds": 30}}, "dask-platform:workers.cooldownSeconds", "60"),
        ({"quotas": {"maxPendingPerUser": 51}}, "dask-platform:quotas.maxPendingPerUser", "50"),
        (
            {
                "quotas": {
                    "groups": {
                        "admins": {
                            "priority": 3,
                            "clusterMaxCores": 16,
                            "clusterMaxMemoryGb": 32,
                            "userMaxCores": 32,
                            "userMaxMemoryGb": 64,
                        }
                    }
                }
            },
            "dask-platform:quotas.groups",
            "missing group(s) data_engineers, data_analysts",
        ),
        (
            {"quotas": {"groups": {"admins": {}}}},
            "dask-platform:quotas.groups.admins.priority",
            "is required but not set (pulumi config set --path quotas.groups.admins.priority",
        ),
        (
            {"ports": {"workerRange": [9999, 9200]}},
            "dask-platform:ports.workerRange",
            "low <= high",
        ),
        ({"colour": "blue"}, "dask-platform:colour", "not a known setting"),
        ({"workers": {"minimum": 3}}, "dask-platform:workers.minimum", "not a known setting"),
    ],
)
def test_bad_fields_are_named_with_what_is_allowed(changes: dict, key: str, hint: str) -> None:
    message = rejected(**changes)
    assert key in message and hint in message, message


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_each_required_key_is_named_when_missing(missing: str) -> None:
    with pytest.raises(SettingsError, match=f"dask-platform:{missing}: is required"):
        load_settings({k: v for k, v in REQUIRED.items() if k != missing})


def test_unknown_quota_group_lists_the_allowed_ones() -> None:
    groups = {
        name: {
            "priority": p,
            "clusterMaxCores": 2,
            "clusterMaxMemoryGb": 4,
            "userMaxCores": 2,
            "userMaxMemoryGb": 4,
        }
        for name, p in (("admins", 3), ("data_engineers", 2), ("data_analysts", 1), ("interns", 4))
    }
    message = rejected(quotas={"groups": groups})
    assert "interns" in message and "admins, data_engineers, data_analysts" in message


def test_data_access_defaults_are_the_briefs() -> None:
    access = settings().data_access
    levels = {g: (a.raw, a.processed) for g, a in access.groups.items()}
    assert levels == {"admins": ("readwrite", "readwrite"),
                      "data_engineers": ("readwrite", "readwrite"),
                      "data_analysts": ("none", "read")}
    assert access.session_minutes == 60
    assert settings().runtime().data_access == access


ENGINEERS = {"raw": "readwrite", "processed": "readwrite"}


@pytest.mark.parametrize("data_access, key, hint", [
    ({"groups": {"admins": ENGINEERS, "data_engineers": ENGINEERS,
                 "data_analysts": {"raw": "write", "processed": "read"}}},
     "dask-platform:dataAccess.groups.data_analysts.raw", "'readwrite', 'read' or 'none'"),
    ({"groups": {"admins": ENGINEERS, "data_engineers": ENGINEERS}},
     "dask-platform:dataAccess.groups", "missing group(s) data_analysts"),
    ({"groups": {"admins": ENGINEERS, "data_engineers": ENGINEERS, "data_analysts": ENGINEERS,
                 "interns": ENGINEERS}},
     "dask-platform:dataAccess.groups", "unknown group(s) interns"),
    ({"groups": {"admins": {**ENGINEERS, "audit": "readwrite"}, "data_engineers": ENGINEERS,
                 "data_analysts": ENGINEERS}},
     "dask-platform:dataAccess.groups.admins", "audit is written only through the platform"),
    ({"groups": {"admins": {"raw": "read"}, "data_engineers": ENGINEERS,
                 "data_analysts": ENGINEERS}},
     "dask-platform:dataAccess.groups.admins.processed", "is required but not set"),
    ({"sessionMinutes": 120}, "dask-platform:dataAccess.sessionMinutes",
     "less than or equal to 60"),
    ({"sessionMinutes": 5}, "dask-platform:dataAccess.sessionMinutes",
     "greater than or equal to 15"),
])
def test_bad_data_access_is_named_with_what_is_allowed(data_access: dict, key: str,
                                                        hint: str) -> None:
    message = rejected(dataAccess=data_access)
    assert key in message and hint in message, message


def test_the_password_never_shows_in_repr_or_runtime_json() -> None:
    s = settings(ldapBindPassword="hunter2-hunter2")
    assert s.ldap_bind_password.get_secret_value() == "hunter2-hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in s.runtime("arn:secret").to_json()


# ------------------------------------------------------------------ cross-field checks


def test_check_network_create_and_adopt() -> None:
    check_network(settings())
    check_network(
        settings(
            vpcId="vpc-0123456789abcdef0",
            privateSubnetIds=["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"],
            publicSubnetIds=["subnet-0bbbbbbbbbbbbbbb1", "subnet-0bbbbbbbbbbbbbbb2"],
        )
    )
    message = rejected(privateSubnetIds=["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"])
    assert "dask-platform:privateSubnetIds is set but dask-platform:vpcId is not" in message
    message = rejected(
        vpcId="vpc-0123456789abcdef0",
        privateSubnetIds=["subnet-0aaaaaaaaaaaaaaa1"],
        publicSubnetIds=["subnet-0bbbbbbbbbbbbbbb1", "subnet-0bbbbbbbbbbbbbbb2"],
    )
    assert "dask-platform:privateSubnetIds needs at least 2 subnets" in message


def test_check_worker_pool() -> None:
    check_worker_pool(WorkerPoolSettings(min=20, max=20, scale_in_cpu=69, scale_out_cpu=70))
    with pytest.raises(
        SettingsError,
        match=r"dask-platform:workers.min \(21\) must be <= "
        r"dask-platform:workers.max \(20\)",
    ):
        check_worker_pool(WorkerPoolSettings(min=21, max=20))
    for scale_in in (70, 80):
        with pytest.raises(
            SettingsError,
            match="dask-platform:workers.scaleInCpu .* must be below "
            "dask-platform:workers.scaleOutCpu",
        ):
            check_worker_pool(WorkerPoolSettings(scale_in_cpu=scale_in, scale_out_cpu=70))


def test_node_capacity_subtracts_the_reserve() -> None:
    assert node_capacity(HostSettings(instance_type="c5.large"), ClusterSettings()) == (2.0, 3.5)
    assert node_capacity(
        HostSettings(instance_type="m5.xlarge"), ClusterSettings(node_reserved_memory_gb=1)
    ) == (4.0, 15.0)


def check(
    quota_settings: QuotaSettings | None = None,
    clusters: ClusterSettings | None = None,
    workers: WorkerPoolSettings | None = None,
) -> None:
    check_quotas(
        quota_settings or QuotaSettings(),
        clusters or ClusterSettings(),
        workers or WorkerPoolSettings(),
        SchedulerHostSettings(),
    )


def test_check_quotas_accepts_the_defaults() -> None:
    check()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (
            {"clusters": ClusterSettings(worker_cores=3)},
            "a worker (3 cores, 1.5 GB) does not fit a c5.large node",
        ),
        (
            {"clusters": ClusterSettings(worker_memory_gb=3.6)},
            "does not fit a c5.large node (2 cores, 3.5 GB",
        ),
        (
            {"clusters": ClusterSettings(scheduler_cores=9)},
            "does not fit a m5.2xlarge scheduler host",
        ),
        (
            {"quota_settings": quotas(data_analysts=quota(cluster_max_cores=3))},
            (
                "dask-platform:quotas.groups.data_analysts.clusterMaxCores (3) must be <= "
                "dask-platform:quotas.groups.data_analysts.userMaxCores (2)"
            ),
        ),
        (
            {"quota_settings": quotas(data_analysts=quota(cluster_max_memory_gb=5))},
            "dask-platform:quotas.groups.data_analysts.clusterMaxMemoryGb (5) must be <=",
        ),
        (
            {
                "quota_settings": quotas(
                    admins=quota(priority=3, user_max_cores=41, cluster_max_cores=2)
                )
            },
            (
                "dask-platform:quotas.groups.admins.userMaxCores (41) exceeds "
                "what the pool can ever hold at dask-platform:workers.max=20 x c5.large "
                "(40 cores, 70 GB)"
            ),
        ),
        (
            {
                "quota_settings": quotas(
                    data_analysts=quota(cluster_max_memory_gb=1, user_max_memory_gb=4)
                )
            },
            (
                "dask-platform:quotas.groups.data_analysts: per-cluster quota (2 cores, 1 GB) "
                "cannot hold one default worker"
            ),
        ),
        (
            {"quota_settings": quotas(data_analysts=quota(priority=2))},
            (
                "dask-platform:quotas.groups.data_engineers.priority, "
                "dask-platform:quotas.groups.data_analysts.priority are all 2"
            ),
        ),
    ],
)
def test_check_quotas_rejects(kwargs: dict, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        check(**kwargs)
    assert fragment in str(caught.value)


def test_check_quotas_reports_every_problem_at_once() -> None:
    """One fix-and-retry round, not one per problem: every offending key is named."""
    broken = quotas(
        data_analysts=quota(priority=2, cluster_max_cores=3),
        admins=quota(priority=3, user_max_cores=41, cluster_max_cores=2),
    )
    with pytest.raises(SettingsError) as caught:
        check(broken, ClusterSettings(scheduler_cores=9))
    message = str(caught.value)
    for key in (
        "dask-platform:clusters.schedulerCores",
        "dask-platform:quotas.groups.data_analysts.clusterMaxCores",
        "dask-platform:quotas.groups.admins.userMaxCores",
        "dask-platform:quotas.groups.data_analysts.priority",
    ):
        assert key in message


def test_quota_limits_scale_with_the_pool() -> None:
    """The same quota is fine or not depending on workers.max alone."""
    big = quotas(admins=quota(priority=3, user_max_cores=41, cluster_max_cores=2))
    check(big, workers=WorkerPoolSettings(max=21))
    with pytest.raises(SettingsError, match="exceeds what the pool can ever hold"):
        check(big, workers=WorkerPoolSettings(max=20))


def test_check_ports() -> None:
    check_ports(PortSettings())
    with pytest.raises(
        SettingsError,
        match="dask-platform:ports.schedulerRange 9000-9300 overlaps "
        "dask-platform:ports.workerRange 9200-9999",
    ):
        check_ports(PortSettings(scheduler_range=(9000, 9300)))
    with pytest.raises(
        SettingsError,
        match=r"dask-platform:ports.nodeAgent \(9100\) falls inside "
        "dask-platform:ports.schedulerRange 9000-9199",
    ):
        check_ports(PortSettings(node_agent=9100))
    with pytest.raises(
        SettingsError,
        match=r"dask-platform:ports.gatewayTls \(9500\) falls inside "
        "dask-platform:ports.workerRange",
    ):
        check_ports(PortSettings(gateway_tls=9500))
    with pytest.raises(SettingsError, match="dask-platform:ports.workerRange 9200-9999 "
                                            "overlaps dask-platform:ports.notebookRange "
                                            "9900-9950"):
        check_ports(PortSettings(notebook_range=(9900, 9950)))
    with pytest.raises(SettingsError, match=r"dask-platform:ports.hubApi \(8850\) falls "
                                            "inside dask-platform:ports.notebookRange"):
        check_ports(PortSettings(hub_api=8850))
    with pytest.raises(ValidationError, match="range 8899-8800 must satisfy"):
        PortSettings(notebook_range=(8899, 8800))  # the field's own check, before any pair


@pytest.mark.parametrize("fractions", [(0.6, 0.6, 0.8, 0.9), (0.6, 0.7, 0.9, 0.8),
                                       (0.8, 0.7, 0.75, 0.9)])
def test_memory_thresholds_must_increase(fractions: tuple[float, ...]) -> None:
    values = dict(zip(("worker_memory_target", "worker_memory_spill", "worker_memory_pause",
                       "worker_memory_terminate"), fractions))
    with pytest.raises(SettingsError, match=r"dask-platform:clusters.workerMemory\*: "
                       r"workerMemoryTarget \(.+\) must increase in that order"):
        check_memory_order(ClusterSettings.model_construct(**values))
    with pytest.raises(ValidationError, match="must increase in that order"):
        ClusterSettings(**values)
    check_memory_order(ClusterSettings())


def test_terminate_must_leave_the_nanny_room_below_the_cgroup_limit() -> None:
    assert terminate_headroom_problems(ClusterSettings()) == []
    # Dask's own 0.95 leaves 0.075 GB of the default 1.5 GB worker.
    (problem,) = terminate_headroom_problems(ClusterSettings(worker_memory_terminate=0.95))
    assert problem.startswith("dask-platform:clusters.workerMemoryTerminate (0.95) leaves "
                              "0.075 GB of a 1.5 GB worker")
    assert "at most 0.933" in problem
    # The room is in GB, so a smaller worker needs a lower fraction; the edge passes.
    assert terminate_headroom_problems(ClusterSettings(worker_memory_gb=0.5)) != []
    assert terminate_headroom_problems(ClusterSettings(
        worker_memory_gb=0.5, worker_memory_pause=0.75, worker_memory_terminate=0.8)) == []


def test_cross_field_checks_run_when_loading() -> None:
    assert "dask-platform:workers.min (9) must be <=" in rejected(workers={"min": 9, "max": 3})
    assert "overlaps" in rejected(ports={"schedulerRange": [9000, 9300]})
    assert "before the kernel's OOM killer" in rejected(clusters={"workerMemoryTerminate": 0.95})
    message = rejected(clusters={"workerMemoryPause": 0.65})
    assert message.count("dask-platform:") == 1, message  # the check's key, not prefixed twice


# ------------------------------------------------------------------ runtime part


def test_runtime_settings_round_trip_and_carry_the_secret_id_only() -> None:
    s = settings(workers={"max": 19}, ldapBindPassword="pw-pw-pw-pw")
    runtime = s.runtime("arn:aws:secretsmanager:eu-west-1:123456789012:secret:ldap")
    again = RuntimeSettings.from_json(runtime.to_json())
    assert again == runtime
    assert again.workers.max == 19 and again.ldap_url == REQUIRED["ldapUrl"]
    assert again.ldap_bind_password_secret_id.endswith(":secret:ldap")
    assert again.metrics_namespace == "DaskPlatform"
    assert "pw-pw-pw-pw" not in runtime.to_json()


def test_ldap_groups_map_to_the_highest_priority_platform_group() -> None:
    groups = quotas(data_analysts=quota(ldap_groups=("analysts", "interns"))).groups
    q = QuotaSettings(groups=groups)
    assert q.group_for_ldap({"interns"}) == "data_analysts"
    assert q.group_for_ldap({"interns", "admins"}) == "admins"
    assert q.group_for_ldap({"data_analysts"}) is None
    assert q.granting_ldap_groups() == ["admins", "analysts", "data_engineers", "interns"]


CA = CertificateAuthority("settings test CA").pem
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("bundle, fragment", [
    ("", "must be the CA certificate in PEM"),
    ("not a certificate", "must be the CA certificate in PEM"),
    (CA + "trailing words", "must be the CA certificate in PEM"),
    (CA.replace("CERTIFICATE-----\n", "CERTIFICATE-----\n***", 1), "must be the CA"),
    (CA + KEY, "holds a private key"),
    ("x" * 6001, "at most 6000 characters"),
])
def test_the_ldap_ca_bundle_is_certificates_only(bundle: str, fragment: str) -> None:
    message = rejected(ldapCaBundle=bundle)
    assert "dask-platform:ldapCaBundle" in message and fragment in message


def test_the_ldap_ca_bundle_reaches_the_hosts_settings() -> None:
    two = CA + CertificateAuthority("second CA").pem
    assert settings(ldapCaBundle=two).runtime().ldap_ca_bundle == two
    assert settings(ldapCaBundle="system").runtime().ldap_ca_bundle == ""
    with pytest.raises(ValidationError):
        RuntimeSettings(ldap_ca_bundle=KEY)


@pytest.mark.parametrize("cidrs, internal", [
    (["10.20.0.0/16"], True),
    (["10.20.0.0/16", "192.168.7.0/24"], True),
    (["100.64.0.0/10"], True),  # a CGNAT VPN range cannot reach an internet-facing ALB
    (["81.2.69.0/24", "2a00:1450::/32"], False),
])
def test_the_alb_is_internal_exactly_when_no_range_is_public(cidrs: list[str],
                                                             internal: bool) -> None:
    assert settings(allowedCidrs=cidrs).internal_alb is internal


def test_private_and_public_ranges_together_are_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        check_edge(("10.20.0.0/16", "81.2.69.0/24"))
    message = str(caught.value)
    assert "dask-platform:allowedCidrs mixes private (10.20.0.0/16) and public (81.2.69.0/24)"\
        in message
    assert "dask-platform:allowedCidrs" in rejected(allowedCidrs=["10.0.0.0/8", "8.8.8.0/24"])


def test_the_default_scheduler_host_holds_the_expected_team() -> None:
    s = settings()
    assert scheduler_slots(s.scheduler, s.clusters) == 32  # 8 cores / 0.25 binds first
    assert (s.clusters.scheduler_cpu_limit, s.clusters.scheduler_memory_limit_gb) == (2, 2)
    assert {g: q.max_clusters for g, q in s.quotas.groups.items()} == {
        "admins": 4, "data_engineers": 2, "data_analysts": 2}


@pytest.mark.parametrize("changes, fragments", [
    ({"scheduler": {"instanceType": "c5.xlarge"}},
     ["dask-platform:expectedConcurrentUsers is 30", "c5.xlarge scheduler host",
      "holds 15 clusters", "dask-platform:clusters.schedulerCores = 0.25"]),
    ({"expectedConcurrentUsers": 33}, ["is 33", "holds 32 clusters"]),
    ({"clusters": {"schedulerCpuLimit": 0.2}},
     ["dask-platform:clusters.schedulerCpuLimit (0.2) must be at least "
      "dask-platform:clusters.schedulerCores (0.25)"]),
    ({"clusters": {"schedulerMemoryLimitGb": 40}},
     ["dask-platform:clusters.schedulerMemoryLimitGb (40) must be", "at most what a "
      "m5.2xlarge scheduler host offers (31.5)"]),
])
def test_scheduler_capacity_below_the_team_is_refused_naming_the_keys(
        changes: dict, fragments: list[str]) -> None:
    message = rejected(**changes)
    for fragment in fragments:
        assert fragment in message


def test_exactly_enough_scheduler_capacity_is_accepted() -> None:
    assert settings(expectedConcurrentUsers=32).expected_concurrent_users == 32
    assert settings(scheduler={"instanceType": "c5.xlarge"},
                    expectedConcurrentUsers=15).scheduler.instance_type == "c5.xlarge"


def test_a_notebook_larger_than_a_worker_node_is_refused() -> None:
    problems = notebook_fit_problems(quotas(data_analysts=quota(notebook_memory_gb=4)),
                                     ClusterSettings(), WorkerPoolSettings())
    assert problems == [
        "dask-platform:quotas.groups.data_analysts.notebookCores/notebookMemoryGb: a notebook "
        "(0.5 cores, 4 GB) does not fit a c5.large node (2 cores, 3.5 GB); shrink it"]
    exact = quotas(data_analysts=quota(notebook_cores=2, notebook_memory_gb=3.5))
    assert notebook_fit_problems(exact, ClusterSettings(), WorkerPoolSettings()) == []


# ------------------------------------------------------------------ edges of each rule


def test_a_stack_file_with_nested_values_in_every_section_is_read_whole(tmp_path: Path) -> None:
    nested = {
        "scheduler": {"instanceType": "m5.4xlarge"},
        "gateway": {"instanceType": "t3.large", "stateVolumeGib": 20},
        "workers": {"instanceType": "m5.xlarge", "min": 2, "max": 9, "warmPoolMin": 0},
        "quotas": {"idleTimeoutMinutes": 30, "maxPendingPerUser": 7},
        "ports": {"nodeAgent": 8791},
        "timeouts": {"drainSeconds": 600},
        "costs": {"instancePricesUsdPerHour": {"m5.xlarge": 0.2}},
        "tags": {"team": "data"},
    }
    document = {"config": {**{f"dask-platform:{k}": v for k, v in {**REQUIRED,
                                                                   **nested}.items()},
                           "dask-platform:vpcCidr": "10.8.0.0/20"}}
    loaded = from_stack_file(tmp_path, document)
    dumped = loaded.model_dump(by_alias=True)
    for section, values in nested.items():
        for key, value in values.items():
            assert dumped[section][key] == value, (section, key)
    assert loaded.vpc_cidr == "10.8.0.0/20"


def test_an_empty_stack_file_names_the_required_keys(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text("")
    with pytest.raises(SettingsError, match="dask-platform:certificateArn: is required but not "
                                            r"set \(pulumi config set certificateArn \.\.\.\)"):
        load_stack_file(str(path))


@pytest.mark.parametrize("cidr, normalised", [
    ("10.0.0.0/16", "10.0.0.0/16"), ("10.8.0.0/20", "10.8.0.0/20"),
    ("192.168.4.0/24", "192.168.4.0/24")])
def test_vpc_blocks_from_16_to_24_are_accepted(cidr: str, normalised: str) -> None:
    assert settings(vpcCidr=cidr).vpc_cidr == normalised


@pytest.mark.parametrize("cidr", ["10.0.0.0/15", "192.168.4.0/25"])
def test_vpc_blocks_past_16_to_24_are_refused(cidr: str) -> None:
    assert (f"dask-platform:vpcCidr: {cidr!r} must be a /16 to /24 block: the stack cuts it "
            "into four subnets of a sixteenth each") in rejected(vpcCidr=cidr)


ADOPT = {"vpcId": "vpc-0123abcd",
         "privateSubnetIds": ["subnet-0123abcd", "subnet-0123456789abcdef0"],
         "publicSubnetIds": ["subnet-0123abce", "subnet-0123456789abcdef1"]}


def test_adopting_a_vpc_takes_ids_of_8_to_17_hex_digits() -> None:
    s = settings(**ADOPT)
    assert s.adopts_vpc and s.private_subnet_ids == ("subnet-0123abcd", "subnet-0123456789abcdef0")
    assert settings(**{**ADOPT, "vpcId": "vpc-0123456789abcdef0"}).vpc_id.endswith("ef0")


@pytest.mark.parametrize("key, bad", [
    ("privateSubnetIds", "subnet-0123abc"), ("privateSubnetIds", "subnet-0123456789abcdef01"),
    ("publicSubnetIds", "subnet-0123ABCD"), ("publicSubnetIds", "sn-0123abcd"),
    ("publicSubnetIds", "subnet-0123abcd "),
])
def test_subnet_ids_that_are_not_ids_are_named(key: str, bad: str) -> None:
    ids = [bad, ADOPT[key][1]]
    assert (f"dask-platform:{key}: {bad!r} not subnet ids like subnet-0123abcd"
            in rejected(**{**ADOPT, key: ids}))


@pytest.mark.parametrize("bad", ["vpc-0123abc", "vpc-0123456789abcdef01", "vpc-0123ABCD"])
def test_vpc_ids_that_are_not_ids_are_named(bad: str) -> None:
    assert (f"dask-platform:vpcId: {bad!r} is not a VPC id like vpc-0123456789abcdef0"
            in rejected(**{**ADOPT, "vpcId": bad}))


def test_adopting_needs_two_public_subnets_too() -> None:
    message = rejected(**{**ADOPT, "publicSubnetIds": ["subnet-0123abce"]})
    assert ("dask-platform:publicSubnetIds needs at least 2 subnets (one per AZ) when "
            "dask-platform:vpcId is set; got 1") in message


def test_subnets_without_a_vpc_name_the_first_key_given() -> None:
    assert ("dask-platform:publicSubnetIds is set but dask-platform:vpcId is not; set vpcId "
            "to adopt an existing VPC") in rejected(publicSubnetIds=ADOPT["publicSubnetIds"])


@pytest.mark.parametrize("low, high", [(1024, 1024), (1024, 2000), (60000, 65535),
                                       (65535, 65535)])
def test_port_ranges_may_reach_1024_and_65535(low: int, high: int) -> None:
    assert PortSettings(worker_range=(low, high)).worker_range == (low, high)


@pytest.mark.parametrize("low, high", [(1023, 2000), (60000, 65536), (70000, 70001)])
def test_port_ranges_past_1024_or_65535_are_refused(low: int, high: int) -> None:
    with pytest.raises(ValidationError, match=f"range {low}-{high} must satisfy 1024 <= low "
                                              "<= high <= 65535"):
        PortSettings(scheduler_range=(low, high))


@pytest.mark.parametrize("port, inside", [(8999, False), (9000, True), (9199, True),
                                          (9200, True), (10000, False)])
def test_a_fixed_port_at_either_end_of_a_range_falls_inside_it(port: int, inside: bool) -> None:
    if inside:
        with pytest.raises(SettingsError, match=rf"dask-platform:ports.gatewayHttp \({port}\) "
                                                "falls inside"):
            check_ports(PortSettings(gateway_http=port))
    else:
        check_ports(PortSettings(gateway_http=port))


def test_ranges_sharing_only_their_last_port_overlap() -> None:
    with pytest.raises(SettingsError, match="dask-platform:ports.schedulerRange 9000-9200 "
                                            "overlaps dask-platform:ports.workerRange 9200-9999"):
        check_ports(PortSettings(scheduler_range=(9000, 9200)))
    with pytest.raises(SettingsError, match="dask-platform:ports.schedulerRange 8899-9199 "
                                            "overlaps dask-platform:ports.notebookRange"):
        check_ports(PortSettings(scheduler_range=(8899, 9199)))
    check_ports(PortSettings(scheduler_range=(8900, 9199)))


def test_a_worker_or_scheduler_exactly_its_hosts_size_fits() -> None:
    check(clusters=ClusterSettings(worker_cores=2, worker_memory_gb=3.5, scheduler_cores=8,
                                   scheduler_memory_gb=31.5))
    for changes in ({"worker_memory_gb": 3.6}, {"scheduler_memory_gb": 31.6},
                    {"scheduler_cores": 8.1}):
        with pytest.raises(SettingsError, match="does not fit a"):
            check(clusters=ClusterSettings(**{"worker_cores": 2, "worker_memory_gb": 3.5,
                                              "scheduler_cores": 8,
                                              "scheduler_memory_gb": 31.5, **changes}))


def test_a_user_total_exactly_the_pools_capacity_is_accepted() -> None:
    """20 c5.large nodes hold 40 cores and 20 x 3.5 = 70 GB."""
    exact = quotas(admins=quota(priority=3, user_max_cores=40, user_max_memory_gb=70))
    check(exact)
    over = quotas(admins=quota(priority=3, user_max_cores=40, user_max_memory_gb=70.5))
    with pytest.raises(SettingsError) as caught:
        check(over)
    assert str(caught.value) == (
        "dask-platform:quotas.groups.admins.userMaxMemoryGb (70.5) exceeds what the pool can "
        "ever hold at dask-platform:workers.max=20 x c5.large (40 cores, 70 GB); lower it or "
        "raise dask-platform:workers.max")


def test_a_cluster_limit_equal_to_the_user_total_and_to_one_worker_is_accepted() -> None:
    check(quotas(data_analysts=quota(cluster_max_cores=1, cluster_max_memory_gb=1.5,
                                     user_max_cores=1, user_max_memory_gb=1.5)))
    with pytest.raises(SettingsError, match=r"data_analysts: per-cluster quota \(0.9 cores, "
                                            r"1.5 GB\) cannot hold one default worker \(1 cores"):
        check(quotas(data_analysts=quota(cluster_max_cores=0.9, cluster_max_memory_gb=1.5)))


def test_a_notebook_with_too_many_cores_is_refused() -> None:
    (problem,) = notebook_fit_problems(quotas(admins=quota(priority=3, notebook_cores=2.5)),
                                       ClusterSettings(), WorkerPoolSettings())
    assert problem.startswith("dask-platform:quotas.groups.admins.notebookCores/"
                              "notebookMemoryGb: a notebook (2.5 cores, 1 GB)")


def test_node_capacity_of_burstable_and_other_families() -> None:
    clusters = ClusterSettings()
    assert node_capacity(HostSettings(instance_type="t3.medium"), clusters) == (2.0, 3.5)
    assert node_capacity(HostSettings(instance_type="r6i.2xlarge"), clusters) == (8.0, 63.5)
    assert node_capacity(HostSettings(instance_type="c7a.8xlarge"), clusters) == (32.0, 63.5)


def test_scheduler_slots_where_memory_binds_first() -> None:
    """A c5.xlarge (4 cores, 7.5 GB after the reserve) at 1 GB a scheduler holds 7."""
    clusters = ClusterSettings(scheduler_memory_gb=1, scheduler_cores=0.25)
    assert scheduler_slots(HostSettings(instance_type="c5.xlarge"), clusters) == 7
    exact = ClusterSettings(scheduler_memory_gb=0.75, scheduler_cores=0.1)  # 7.5 / 0.75 = 10
    assert scheduler_slots(HostSettings(instance_type="c5.xlarge"), exact) == 10


def test_prices_are_checked_and_a_missing_one_is_named() -> None:
    assert settings().costs.hourly("c5.large") == 0.096
    assert settings(costs={"instancePricesUsdPerHour": {"c5.large": 0}}).costs.hourly(
        "c5.large") == 0
    with pytest.raises(SettingsError, match="dask-platform:costs.instancePricesUsdPerHour has "
                                            "no price for r5.large; add one"):
        settings().costs.hourly("r5.large")
    assert "c5.large: a price must be >= 0, got -0.1" in rejected(
        costs={"instancePricesUsdPerHour": {"c5.large": -0.1}})
    assert "unknown instance type 'z1.large'" in rejected(
        costs={"instancePricesUsdPerHour": {"z1.large": 1}})


def test_a_group_may_set_a_monthly_budget_above_zero() -> None:
    assert quota(monthly_budget_usd=500).monthly_budget_usd == 500
    assert quota().monthly_budget_usd is None
    with pytest.raises(ValidationError, match="greater than 0"):
        quota(monthly_budget_usd=0)


QUOTA = {"priority": 1, "clusterMaxCores": 2, "clusterMaxMemoryGb": 4, "userMaxCores": 2,
         "userMaxMemoryGb": 4}


def _group(values: dict[str, Any]) -> GroupQuota:
    return GroupQuota.model_validate({**QUOTA, **values})


_gateway, _workers = GatewayHostSettings.model_validate, WorkerPoolSettings.model_validate
_quotas, _clusters = QuotaSettings.model_validate, ClusterSettings.model_validate
_timeouts = TimeoutSettings.model_validate
_access, _monitoring = DataAccessSettings.model_validate, MonitoringSettings.model_validate
_pipeline = PipelineSettings.model_validate

# Each setting's documented range: the values at its edges are accepted, the first value
# past one edge is refused with pydantic's words for the bound.
BOUNDS = [
    (_gateway, "stateVolumeGib", (1, 1024), 0, "greater than or equal to 1"),
    (_gateway, "stateVolumeGib", (1024,), 1025, "less than or equal to 1024"),
    (_workers, "min", (0, 100), 101, "less than or equal to 100"),
    (_workers, "max", (1, 100), 0, "greater than or equal to 1"),
    (_workers, "max", (100,), 101, "less than or equal to 100"),
    (_workers, "scaleOutCpu", (0.5, 99.5), 0, "greater than 0"),
    (_workers, "scaleInCpu", (0.5, 99.5), 0, "greater than 0"),
    (_workers, "scaleInCpu", (99.5,), 100, "less than 100"),
    (_workers, "cooldownSeconds", (60, 3600), 3601, "less than or equal to 3600"),
    (_workers, "warmPoolMin", (0, 100), -1, "greater than or equal to 0"),
    (_workers, "warmPoolMin", (100,), 101, "less than or equal to 100"),
    (_group, "priority", (1, 100), 0, "greater than or equal to 1"),
    (_group, "priority", (100,), 101, "less than or equal to 100"),
    (_group, "clusterMaxCores", (0.5,), 0, "greater than 0"),
    (_group, "clusterMaxMemoryGb", (0.5,), 0, "greater than 0"),
    (_group, "userMaxCores", (0.5,), 0, "greater than 0"),
    (_group, "userMaxMemoryGb", (0.5,), 0, "greater than 0"),
    (_group, "maxClusters", (1, 20), 0, "greater than or equal to 1"),
    (_group, "maxClusters", (20,), 21, "less than or equal to 20"),
    (_group, "notebookCores", (0.1,), 0, "greater than 0"),
    (_group, "notebookMemoryGb", (0.1,), 0, "greater than 0"),
    (_group, "monthlyBudgetUsd", (0.5,), 0, "greater than 0"),
    (_quotas, "idleTimeoutMinutes", (1,), 0, "greater than or equal to 1"),
    (_quotas, "notebookIdleMinutes", (0.5, 10080), 0, "greater than 0"),
    (_quotas, "notebookIdleMinutes", (10080,), 10081, "less than or equal to 10080"),
    (_quotas, "maxPendingPerUser", (1, 50), 0, "greater than or equal to 1"),
    (_clusters, "schedulerCores", (0.05,), 0, "greater than 0"),
    (_clusters, "schedulerCpuLimit", (0.05,), 0, "greater than 0"),
    (_clusters, "schedulerMemoryGb", (0.05,), 0, "greater than 0"),
    (_clusters, "schedulerMemoryLimitGb", (0.5,), 0, "greater than 0"),
    (_clusters, "workerCores", (0.1,), 0, "greater than 0"),
    (_clusters, "workerMemoryGb", (0.1,), 0, "greater than 0"),
    (_clusters, "nodeReservedMemoryGb", (0,), -0.5, "greater than or equal to 0"),
    (_clusters, "workerMemoryTarget", (0.05,), 0, "greater than 0"),
    (_clusters, "workerMemorySpill", (0.65,), 0, "greater than 0"),
    (_clusters, "workerMemorySpill", (0.65,), 1, "less than 1"),
    (_clusters, "workerMemoryPause", (0.85,), 0, "greater than 0"),
    (_clusters, "workerMemoryTerminate", (0.95,), 0, "greater than 0"),
    (_clusters, "workerMemoryPause", (0.85,), 1, "less than 1"),
    (_clusters, "workerMemoryTerminate", (0.95,), 1, "less than 1"),
    (_clusters, "nodeSpillDiskGb", (0.5, 22), 0, "greater than 0"),
    (_clusters, "schedulerAllowedFailures", (0,), -1, "greater than or equal to 0"),
    (_clusters, "schedulerWorkerSaturation", (0.5,), 0, "greater than 0"),
    (_timeouts, "clusterStartSeconds", (0.5,), 0, "greater than 0"),
    (_timeouts, "workerStartSeconds", (0.5,), 0, "greater than 0"),
    (_timeouts, "agentRequestSeconds", (0.5,), 0, "greater than 0"),
    (_timeouts, "stopGraceSeconds", (0,), -0.5, "greater than or equal to 0"),
    (_timeouts, "ldapCacheSeconds", (0,), -0.5, "greater than or equal to 0"),
    (_timeouts, "orphanGraceSeconds", (0, 86400), -0.5, "greater than or equal to 0"),
    (_timeouts, "orphanGraceSeconds", (86400,), 86401, "less than or equal to 86400"),
    (_timeouts, "drainSeconds", (0.5, 604800), 0, "greater than 0"),
    (_timeouts, "drainSeconds", (604800,), 604801, "less than or equal to 604800"),
    (_access, "sessionMinutes", (15, 60), 14, "greater than or equal to 15"),
    (_access, "sessionMinutes", (60,), 61, "less than or equal to 60"),
    (_monitoring, "workerCpuPercent", (0.5, 100), 0, "greater than 0"),
    (_monitoring, "workerCpuPercent", (100,), 100.5, "less than or equal to 100"),
    (_monitoring, "queuedTasks", (1,), 0, "greater than or equal to 1"),
    (_monitoring, "clusterStartP90Seconds", (0.5, 3600), 0, "greater than 0"),
    (_monitoring, "clusterStartP90Seconds", (3600,), 3601, "less than or equal to 3600"),
    (_monitoring, "workerMemoryPercent", (0.5, 100), 0, "greater than 0"),
    (_monitoring, "workerMemoryPercent", (100,), 100.5, "less than or equal to 100"),
    (_monitoring, "efsBurstCreditGib", (0.5, 2150), 0, "greater than 0"),
    (_monitoring, "efsBurstCreditGib", (2150,), 2150.5, "less than or equal to 2150"),
    (_pipeline, "workers", (1, 20), 0, "greater than or equal to 1"),
    (_pipeline, "workers", (20,), 21, "less than or equal to 20"),
    (_pipeline, "maxReceives", (1, 1000), 0, "greater than or equal to 1"),
    (_pipeline, "maxReceives", (1000,), 1001, "less than or equal to 1000"),
    (_pipeline, "retrySeconds", (30, 43200), 29, "greater than or equal to 30"),
    (_pipeline, "retrySeconds", (43200,), 43201, "less than or equal to 43200"),
]


@pytest.mark.parametrize("model, key, accepted, refused, bound", BOUNDS,
                         ids=[f"{row[1]}-{row[3]}" for row in BOUNDS])
def test_each_setting_takes_the_edges_of_its_range(model: Callable[[dict], Any], key: str,
                                                   accepted: tuple, refused: float,
                                                   bound: str) -> None:
    for value in accepted:
        assert model({key: value}).model_dump(by_alias=True)[key] == value
    with pytest.raises(ValidationError) as caught:
        model({key: refused})
    assert f"{key}\n  Input should be {bound}" in str(caught.value)


def test_expected_users_range_from_1_to_1000() -> None:
    assert settings(expectedConcurrentUsers=1).expected_concurrent_users == 1
    assert "expectedConcurrentUsers: Input should be" not in rejected(
        expectedConcurrentUsers=1000)  # refused only for the scheduler host's capacity
    assert ("dask-platform:expectedConcurrentUsers: Input should be less than or equal to 1000"
            in rejected(expectedConcurrentUsers=1001))
    assert ("dask-platform:expectedConcurrentUsers: Input should be greater than or equal to 1"
            in rejected(expectedConcurrentUsers=0))


def test_defaults_a_user_sees_in_the_config_reference() -> None:
    assert _group({}).max_clusters == 2
    assert QuotaSettings().notebook_idle_minutes == 60
    ports = PortSettings()
    assert (ports.https, ports.http, ports.gateway_http, ports.gateway_tls, ports.node_agent,
            ports.hub_api, ports.nfs, ports.ldaps) == (443, 80, 8000, 8786, 8790, 8081, 2049, 636)
    assert (ports.scheduler_range, ports.worker_range, ports.notebook_range) == (
        (9000, 9199), (9200, 9999), (8800, 8899))


@pytest.mark.parametrize("instance_type, vcpus, gib", [
    ("c5.large", 2, 4), ("c5.xlarge", 4, 8), ("c5.2xlarge", 8, 16), ("c5.4xlarge", 16, 32),
    ("c5.8xlarge", 32, 64), ("c6i.large", 2, 4), ("c7i.large", 2, 4), ("c6a.large", 2, 4),
    ("c7a.large", 2, 4), ("m5.large", 2, 8), ("m6i.large", 2, 8), ("m7i.large", 2, 8),
    ("m6a.large", 2, 8), ("m7a.large", 2, 8), ("r5.large", 2, 16), ("r6i.large", 2, 16),
    ("r7i.large", 2, 16), ("t3.medium", 2, 4), ("t3.large", 2, 8), ("t3.xlarge", 4, 16),
    ("t3.2xlarge", 8, 32),
])
def test_instance_shapes_are_awss(instance_type: str, vcpus: int, gib: int) -> None:
    """Published EC2 shapes: quota checks are only as right as these."""
    host = HostSettings(instance_type=instance_type)
    assert (host.vcpus, host.memory_gib) == (vcpus, gib)


def test_an_unknown_instance_type_lists_the_families_and_sizes() -> None:
    assert ("dask-platform:workers.instanceType: unknown instance type 'c5.9xlarge'; allowed "
            "families c5, c6a, c6i, c7a, c7i, m5, m6a, m6i, m7a, m7i, r5, r6i, r7i, t3 in sizes "
            "large, xlarge, 2xlarge, 4xlarge, 8xlarge (t3: medium..2xlarge)"
            ) in rejected(workers={"instanceType": "c5.9xlarge"})


def test_default_prices_are_eu_west_1_on_demand() -> None:
    assert settings().costs.instance_prices_usd_per_hour == {
        "c5.large": 0.096, "c5.xlarge": 0.192, "c5.2xlarge": 0.384, "m5.large": 0.107,
        "m5.xlarge": 0.214, "m5.2xlarge": 0.428, "t3.medium": 0.0456}


def test_settings_cannot_change_once_validated() -> None:
    s = settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.workers = WorkerPoolSettings(max=3)  # type: ignore[misc]


def test_the_published_runtime_settings_use_the_config_keys() -> None:
    published = json.loads(settings().runtime().to_json())
    assert published["workers"]["instanceType"] == "c5.large"
    assert published["quotas"]["groups"]["admins"]["userMaxMemoryGb"] == 64
    assert "instance_type" not in published["workers"]


@pytest.mark.parametrize("bundle", [
    "trusted",  # a word other than "system"
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n",
])
def test_a_ca_bundle_is_system_or_certificates_and_nothing_else(bundle: str) -> None:
    assert "must be the CA certificate in PEM" in rejected(ldapCaBundle=bundle)


def test_system_trust_read_from_a_stack_file_reaches_hosts_as_empty(tmp_path: Path) -> None:
    """The value is parsed from YAML, not the literal in the code."""
    document = {"config": {f"dask-platform:{k}": v for k, v in REQUIRED.items()}}
    assert from_stack_file(tmp_path, document).runtime().ldap_ca_bundle == ""


def test_both_subnet_lists_without_a_vpc_name_the_private_one_first() -> None:
    message = rejected(privateSubnetIds=ADOPT["privateSubnetIds"],
                       publicSubnetIds=ADOPT["publicSubnetIds"])
    assert "dask-platform:privateSubnetIds is set but dask-platform:vpcId is not" in message


def test_more_than_two_subnets_are_fine() -> None:
    three = ["subnet-0123abc1", "subnet-0123abc2", "subnet-0123abc3"]
    assert len(settings(vpcId="vpc-0123abcd", privateSubnetIds=three,
                        publicSubnetIds=three).private_subnet_ids) == 3


def test_terminate_headroom_at_low_fractions() -> None:
    """1 - 0.45 of a 0.15 GB worker is 0.0825 GB: too little, and said so."""
    clusters = ClusterSettings(worker_memory_gb=0.15, worker_memory_target=0.1,
                               worker_memory_spill=0.2, worker_memory_pause=0.3,
                               worker_memory_terminate=0.45)
    (problem,) = terminate_headroom_problems(clusters)
    assert "(0.45) leaves 0.0825 GB of a 0.15 GB worker" in problem


@pytest.mark.parametrize("scheduler_cores, scheduler_memory_gb, slots", [
    (0.4, 0.5, 10),  # 4 cores / 0.4: exactly 10, though 4 // 0.4 rounds down to 9
    (0.05, 0.1, 75),  # 7.5 GB / 0.1: exactly 75, though 7.5 // 0.1 rounds down to 74
])
def test_scheduler_slots_are_not_lost_to_float_rounding(scheduler_cores: float,
                                                        scheduler_memory_gb: float,
                                                        slots: int) -> None:
    clusters = ClusterSettings(scheduler_cores=scheduler_cores,
                               scheduler_memory_gb=scheduler_memory_gb)
    assert scheduler_slots(HostSettings(instance_type="c5.xlarge"), clusters) == slots


def test_scheduler_limits_may_equal_the_reservation_or_the_host() -> None:
    s = settings(clusters={"schedulerCpuLimit": 0.25, "schedulerMemoryLimitGb": 31.5})
    assert (s.clusters.scheduler_cpu_limit, s.clusters.scheduler_memory_limit_gb) == (0.25, 31.5)
    s = settings(clusters={"schedulerCpuLimit": 8, "schedulerMemoryLimitGb": 0.5})
    assert (s.clusters.scheduler_cpu_limit, s.clusters.scheduler_memory_limit_gb) == (8, 0.5)
    assert ("dask-platform:clusters.schedulerCpuLimit (8.5) must be at least "
            "dask-platform:clusters.schedulerCores (0.25) and at most what a m5.2xlarge "
            "scheduler host offers (8)") in rejected(clusters={"schedulerCpuLimit": 8.5})


def test_every_problem_is_named_including_one_after_a_cross_field_check() -> None:
    message = rejected(workers={"min": -1}, clusters={"workerMemoryPause": 0.65},
                       timeouts={"drainSeconds": 0})
    for key in ("dask-platform:workers.min:", "dask-platform:clusters.workerMemory*:",
                "dask-platform:timeouts.drainSeconds:"):
        assert key in message


def test_a_wrong_type_is_described_not_called_unknown() -> None:
    message = rejected(clusters={"schedulerWorkStealing": "maybe"})
    assert ("dask-platform:clusters.schedulerWorkStealing: Input should be a valid boolean"
            in message)


def test_config_keys_are_namespaced_and_dotted() -> None:
    assert config_key("quotas", "groups", "admins") == "dask-platform:quotas.groups.admins"


def test_monitoring_and_pipeline_defaults_a_user_sees() -> None:
    m = settings().monitoring
    assert (m.worker_cpu_percent, m.queued_tasks, m.cluster_start_p90_seconds,
            m.worker_memory_percent, m.efs_burst_credit_gib, m.webhooks) == (
        85, 50, 120, 85, 512, ())
    p = settings().pipeline
    assert (p.raw_prefix, p.service_user, p.workers, p.max_receives, p.retry_seconds) == (
        "appsflyer/", "svc-pipeline", 2, 3, 600)
    assert settings().runtime().pipeline == p


def hook(name: str, url: str = "https://events.pagerduty.com/integration/k/enqueue") -> dict:
    return {"name": name, "url": url}


def test_webhooks_need_distinct_short_names_and_https() -> None:
    hooks = settings(monitoring={"webhooks": [hook("pagerduty"), hook("a" * 40)]})
    assert [h.name for h in hooks.monitoring.webhooks] == ["pagerduty", "a" * 40]
    assert ("dask-platform:monitoring.webhooks: webhook name(s) pagerduty used more than "
            "once; give each webhook its own name") in rejected(
        monitoring={"webhooks": [hook("pagerduty"), hook("slack"), hook("pagerduty")]})
    for name in ("a" * 41, "-relay", "Pager"):
        assert (f"{name!r} must be 1-40 lowercase letters, digits or dashes"
                in rejected(monitoring={"webhooks": [hook(name)]}))


@pytest.mark.parametrize("url, shown", [
    ("http://example.com/hook", "'http://example.com/hook'"),
    ("https://", "'https://'"),
    ("https://example.com/a b", "'https://example.com/a b'"),
    ("http://example.com/" + "x" * 41, repr("http://example.com/" + "x" * 41)),  # 60
    ("http://example.com/" + "x" * 42, repr("http://example.com/" + "x" * 38 + "...")),
])
def test_a_webhook_url_that_is_not_https_is_shown_cut_short(url: str, shown: str) -> None:
    assert f"{shown} is not an https:// URL; webhooks must be https" in rejected(
        monitoring={"webhooks": [hook("relay", url)]})


@pytest.mark.parametrize("prefix, ok", [
    ("appsflyer/", True), ("drops/appsflyer/", True), ("a/", True), ("appsflyer", False),
    ("/appsflyer/", False), ("app flyer/", False), ("", False)])
def test_the_pipelines_raw_prefix_is_a_key_prefix_ending_in_a_slash(prefix: str,
                                                                    ok: bool) -> None:
    if ok:
        assert settings(pipeline={"rawPrefix": prefix}).pipeline.raw_prefix == prefix
    else:
        assert (f"dask-platform:pipeline.rawPrefix: {prefix!r} must be a key prefix ending in "
                "/") in rejected(pipeline={"rawPrefix": prefix})


@pytest.mark.parametrize("user, ok", [
    ("svc-pipeline", True), ("_etl.1", True), ("a" * 32, True), ("a" * 33, False),
    ("Svc", False), ("1svc", False), ("svc pipeline", False)])
def test_the_pipelines_service_user_is_a_login_name(user: str, ok: bool) -> None:
    if ok:
        assert settings(pipeline={"serviceUser": user}).pipeline.service_user == user
    else:
        assert (f"dask-platform:pipeline.serviceUser: {user!r} is not a directory login name"
                in rejected(pipeline={"serviceUser": user}))


def test_data_access_names_each_problem_exactly() -> None:
    engineers = {"raw": "readwrite", "processed": "readwrite"}
    assert ("dask-platform:dataAccess.groups: missing group(s) data_analysts; give each of "
            "admins, data_engineers, data_analysts its access, e.g. {raw: none, processed: "
            "read}") in rejected(dataAccess={"groups": {"admins": engineers,
                                                         "data_engineers": engineers}})
    assert "dask-platform:dataAccess.groups: unknown group(s) interns; give each of" in rejected(
        dataAccess={"groups": {g: engineers for g in ("admins", "data_engineers",
                                                      "data_analysts", "interns")}})
    platform = {"admins": {**engineers, "artifacts": "read", "audit": "read"},
                "data_engineers": engineers, "data_analysts": engineers}
    assert ("dask-platform:dataAccess.groups.admins: artifacts, audit: no group gets access "
            "to the platform's own buckets") in rejected(dataAccess={"groups": platform})
