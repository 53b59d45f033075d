"""The settings schema directly: defaults from the brief, field rules, each cross-field
check, error messages that name the key, and the runtime part hosts read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
import yaml

from daskplatform.settings import (
    ClusterSettings,
    GroupQuota,
    HostSettings,
    PlatformSettings,
    PortSettings,
    QuotaSettings,
    RuntimeSettings,
    SchedulerHostSettings,
    SettingsError,
    WorkerPoolSettings,
    check_edge,
    check_memory_order,
    check_network,
    check_ports,
    check_quotas,
    check_worker_pool,
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
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text(yaml.safe_dump(document))
    loaded = load_stack_file(str(path)).clusters.model_dump(by_alias=True)
    assert {key: loaded[key] for key in clusters} == clusters


def test_stack_file_leaves_secure_values_out(tmp_path: Path) -> None:
    document = {
        "config": {
            "aws:region": "eu-west-1",
            **{f"dask-platform:{k}": v for k, v in REQUIRED.items()},
            "dask-platform:ldapBindPassword": {"secure": "AAAbase64"},
        }
    }
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text(yaml.safe_dump(document))
    assert load_stack_file(str(path)).ldap_bind_password is None


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
