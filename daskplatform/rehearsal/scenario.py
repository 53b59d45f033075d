"""The rehearsal's scenario steps, each run inside the namespace of the host it acts
from (``python -m daskplatform.rehearsal.scenario STEP PLAN [ARG]``), each ending with
one JSON line: ``{"ok": ..., ...}``.

- ``web`` (from ``dp-user``, in allowedCidrs): port 80 redirects to HTTPS; JupyterHub's
  login through the ALB checks the password against FreeIPA over LDAPS; a wrong
  password and a user in no platform group are refused.
- ``compute`` (from ``dp-client``, a VPC host in the client group): a cluster through
  the gateway's API behind the ALB, workers on two worker hosts, a shuffle that moves
  data between them, through the gateway's scheduler proxy (8786).
- ``dashboard NAME`` (from ``dp-user``): the cluster's dashboard through the ALB.
- ``resume NAME`` (from ``dp-client``, after the gateway host was replaced): the
  cluster is still listed, reachable and computing; a new cluster starts.
- ``stop NAME`` (from ``dp-client``): the cluster stops.
- ``aws`` (from ``dp-gateway``, which may call AWS): which worker hosts the gateway
  protects from scale-in, and which pool metrics it has put, as AWS holds them.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import Any
from urllib.parse import urlparse

import aiohttp

from daskplatform.identity.slapd import DEMO_USERS
from daskplatform.rehearsal.plan import Plan
from daskplatform.settings import SERVICE_PREFIX, RuntimeSettings

PASSWORDS = {u.username: u.password for u in DEMO_USERS}
WORKERS = 4
"""Two default workers fit a c5.large worker node: four need two nodes."""
ROWS = 400_000


def _urls(plan: Plan) -> tuple[str, str, str]:
    """(the ALB's HTTPS URL, the gateway API behind it, the scheduler proxy address)."""
    ports = RuntimeSettings.from_json(plan.runtime_settings).ports
    alb = f"https://{plan.topology.host('alb').address}"
    gateway = plan.topology.host("gateway").address
    return alb, f"{alb}{SERVICE_PREFIX}", f"gateway://{gateway}:{ports.gateway_tls}"


async def _login(http: aiohttp.ClientSession, alb: str, username: str,
                 password: str) -> tuple[int, str]:
    async with http.get(f"{alb}/hub/login") as response:
        page = await response.text()
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page)
    if not xsrf:
        return 0, "no login form"
    async with http.post(f"{alb}/hub/login", allow_redirects=False,
                         data={"username": username, "password": password,
                               "_xsrf": xsrf.group(1)}) as response:
        return response.status, response.headers.get("Location", "")


async def web(plan: Plan) -> dict[str, Any]:
    alb, _, _ = _urls(plan)
    plain = alb.replace("https://", "http://")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{plain}/hub/login", allow_redirects=False) as response:
            redirect = (response.status, response.headers.get("Location", ""))
    outcomes = {}
    for name, username, password in (("engineer1", "engineer1", PASSWORDS["engineer1"]),
                                     ("wrong password", "engineer1", "not-the-password"),
                                     ("outsider1", "outsider1", PASSWORDS["outsider1"])):
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            outcomes[name] = await _login(http, alb, username, password)
    return {
        "ok": (redirect == (301, f"{alb}/hub/login") and outcomes["engineer1"][0] == 302
               and "/login" not in outcomes["engineer1"][1]
               and outcomes["wrong password"][0] == 403 and outcomes["outsider1"][0] == 403),
        "redirect": redirect, "logins": outcomes,
    }


def compute(plan: Plan) -> dict[str, Any]:
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd
    from dask_gateway import BasicAuth, Gateway

    _, api, proxy = _urls(plan)
    worker_hosts = {h.address for h in plan.topology.workers}
    with Gateway(api, proxy_address=proxy,
                 auth=BasicAuth("engineer1", PASSWORDS["engineer1"])) as gateway:
        cluster = gateway.new_cluster(shutdown_on_close=False)
        cluster.scale(WORKERS)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(WORKERS, timeout=240)
            info = client.scheduler_info()
            hosts = sorted({urlparse(a).hostname or "" for a in info["workers"]})
            frame = pd.DataFrame({"key": np.arange(ROWS) % 97, "value": np.arange(ROWS)})
            shuffled = dd.from_pandas(frame, npartitions=WORKERS * 2).shuffle(
                "key", shuffle_method="p2p")
            result = client.compute(shuffled.groupby("key").value.sum()).result()
            expected = frame.groupby("key").value.sum()
            right = bool((result.sort_index() == expected.sort_index()).all())
        return {"ok": right and len(hosts) >= 2 and set(hosts) <= worker_hosts,
                "cluster": cluster.name, "scheduler": info["address"], "worker_hosts": hosts,
                "right_result": right}


async def dashboard(plan: Plan, name: str) -> dict[str, Any]:
    _, api, _ = _urls(plan)
    url = f"{api}/clusters/{name}/status"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        body = await response.text()
    return {"ok": response.status == 200 and "Dask" in body, "url": url,
            "status": response.status}


def resume(plan: Plan, name: str) -> dict[str, Any]:
    from dask_gateway import BasicAuth, Gateway

    _, api, proxy = _urls(plan)
    with Gateway(api, proxy_address=proxy,
                 auth=BasicAuth("engineer1", PASSWORDS["engineer1"])) as gateway:
        listed = [c.name for c in gateway.list_clusters()]
        with gateway.connect(name) as cluster, \
                cluster.get_client(set_as_default=False) as client:
            value = client.submit(sum, range(1000)).result(timeout=120)
            workers = len(client.scheduler_info()["workers"])
        new = gateway.new_cluster()
        new_name, new_status = new.name, gateway.get_cluster(new.name).status.name
        new.shutdown()
    return {"ok": name in listed and value == 499500 and workers == WORKERS
            and new_status == "RUNNING", "listed": listed, "sum": value,
            "workers": workers, "new_cluster": [new_name, new_status]}


def stop(plan: Plan, name: str) -> dict[str, Any]:
    from dask_gateway import BasicAuth, Gateway

    _, api, proxy = _urls(plan)
    with Gateway(api, proxy_address=proxy,
                 auth=BasicAuth("engineer1", PASSWORDS["engineer1"])) as gateway:
        gateway.stop_cluster(name)
        left = [c.name for c in gateway.list_clusters()]
    return {"ok": name not in left, "clusters_left": left}


def aws(plan: Plan) -> dict[str, Any]:
    """What the gateway has told AWS: scale-in protection by worker address, and the
    metrics in the stack's namespace with the worker group's dimension."""
    import boto3

    settings = RuntimeSettings.from_json(plan.runtime_settings)
    session = boto3.session.Session(aws_access_key_id="rehearsal",
                                     aws_secret_access_key="rehearsal",
                                     region_name=plan.region)
    autoscaling, ec2, cloudwatch = (session.client(s, endpoint_url=plan.aws_endpoint)
                                    for s in ("autoscaling", "ec2", "cloudwatch"))
    (group,) = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[settings.worker_asg_name])["AutoScalingGroups"]
    addresses = {i["InstanceId"]: i["PrivateIpAddress"]
                 for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    metrics = cloudwatch.list_metrics(Namespace=settings.metrics_namespace)["Metrics"]
    return {"ok": True,
            "protected": sorted(addresses[i["InstanceId"]] for i in group["Instances"]
                                if i.get("ProtectedFromScaleIn")),
            "pool_metrics": sorted(m["MetricName"] for m in metrics
                                   if {"Name": "AutoScalingGroupName",
                                       "Value": settings.worker_asg_name} in m["Dimensions"])}


def main(argv: list[str] | None = None) -> int:
    step, plan_path, *rest = argv if argv is not None else sys.argv[1:]
    plan = Plan.load(plan_path)
    try:
        if step == "web":
            result = asyncio.run(web(plan))
        elif step == "compute":
            result = compute(plan)
        elif step == "dashboard":
            result = asyncio.run(dashboard(plan, rest[0]))
        elif step == "resume":
            result = resume(plan, rest[0])
        elif step == "stop":
            result = stop(plan, rest[0])
        elif step == "aws":
            result = aws(plan)
        else:
            raise SystemExit(f"unknown step {step!r}")
    except Exception as exc:  # reported to the orchestrator, which prints it
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
