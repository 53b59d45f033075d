"""The rehearsal's scenario steps, each run inside the namespace of the host it acts
from (``python -m daskplatform.rehearsal.scenario STEP PLAN [ARG]``), each ending with
one JSON line: ``{"ok": ..., ...}``.

- ``web`` (from ``dp-user``, in allowedCidrs): port 80 redirects to HTTPS; JupyterHub's
  login through the ALB checks the password against FreeIPA over LDAPS; a wrong
  password and a user in no platform group are refused.
- ``compute`` (from ``dp-client``, a VPC host in the client group): a cluster through
  the gateway's API behind the ALB, workers on two worker hosts, a shuffle that moves
  data between them, through the gateway's scheduler proxy (8786).
- ``dashboard NAME`` (from ``dp-user``): the cluster's dashboard through the ALB, for
  its owner only (401 anonymous, 403 another user; password or JupyterHub login).
- ``notebook`` (from ``dp-user``): a user's JupyterLab server on a worker node through
  the ALB; in it, ``Gateway()`` with no arguments starts a cluster, and neither the
  notebook nor a task of the cluster reaches instance metadata or a node agent; the
  notebook lists processed data with its group's vended credentials; when the hub stops
  the server, the cluster stops too.
- ``data`` (from ``dp-client``): a task in an analyst's cluster, under the analyst's
  uid on a worker host, uses AWS with no keys of its own: the credentials its node's AWS
  config fetches from the gateway (the group's data role, through STS) read processed
  data and are refused on raw (the engineers' data) and on writing processed; instance
  metadata and the node agent stay out of reach.
- ``resume NAME`` (from ``dp-client``, after the gateway host was replaced): the
  cluster is still listed, reachable and computing; a new cluster starts.
- ``stop NAME`` (from ``dp-client``): the cluster stops.
- ``aws`` (from ``dp-gateway``, which may call AWS): which worker hosts the gateway
  protects from scale-in, and which pool metrics it has put, as AWS holds them.
- ``publish ARCHIVE VERSION`` (in ``dp-aws``): a new runtime version published as
  ``pulumi up`` publishes it (``aws_host.publish_runtime``).
- ``versions`` (from ``dp-user``, as admin1 through the ALB): the runtime version each
  host reports to the gateway's status API, and the roll-out's report.

The computation that spans a roll-out is a step of its own (``computation.py``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp

from daskplatform.identity.slapd import DEMO_USERS
from daskplatform.rehearsal.plan import SAMPLE_KEY, Plan
from daskplatform.settings import SERVICE_PREFIX, RuntimeSettings

PASSWORDS = {u.username: u.password for u in DEMO_USERS}
WORKERS = 4
"""Two default workers fit a c5.large worker node: four need two nodes."""
ROWS = 400_000


def urls(plan: Plan) -> tuple[str, str, str]:
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
    alb, _, _ = urls(plan)
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

    _, api, proxy = urls(plan)
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
    """The dashboard through the ALB: 401 without a login, 403 for another user, the
    page for its owner by password and by a JupyterHub login (OAuth, in a browser)."""
    alb, api, _ = urls(plan)
    url = f"{api}/clusters/{name}/status"
    seen = {}
    for who in (None, "analyst1", "engineer1"):
        auth = aiohttp.BasicAuth(who, PASSWORDS[who]) if who else None
        async with aiohttp.ClientSession() as http, http.get(url, auth=auth) as response:
            seen[who or "anonymous"] = (response.status, "Dask" in await response.text())
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        await _login(browser, alb, "engineer1", PASSWORDS["engineer1"])
        async with browser.get(url, headers={"Accept": "text/html"}) as response:
            seen["engineer1 via JupyterHub"] = (response.status,
                                                "Dask" in await response.text())
    return {"ok": seen == {"anonymous": (401, False), "analyst1": (403, False),
                           "engineer1": (200, True), "engineer1 via JupyterHub": (200, True)},
            "url": url, "seen": {k: v[0] for k, v in seen.items()}}


IN_THE_NOTEBOOK = """
import json, os, socket
from dask_gateway import Gateway
from distributed import get_worker

def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "open"
    except OSError as exc:
        return type(exc).__name__

def fences(node):
    return {"uid": os.getuid(), "imds": reach("169.254.169.254", 80),
            "agent": reach(node, AGENT_PORT)}

def from_a_task():
    return fences(get_worker().ip)

notebook = fences(os.environ["JUPYTERHUB_SERVICE_URL"].split("//")[1].split(":")[0])
import boto3  # no keys: the node's AWS config asks the gateway with the notebook's token
notebook["processed_keys"] = boto3.client("s3").list_objects_v2(
    Bucket="PROCESSED_BUCKET")["KeyCount"]
gateway = Gateway()
cluster = gateway.new_cluster(shutdown_on_close=False)
cluster.scale(1)
client = cluster.get_client()
client.wait_for_workers(1, timeout=240)
print(json.dumps({"notebook": notebook, "task": client.submit(from_a_task).result(),
                  "sum": client.submit(sum, range(101)).result(), "cluster": cluster.name}))
"""
"""A user's first cell: no address, no credentials; then what their code can reach."""


async def notebook(plan: Plan) -> dict[str, Any]:
    from daskplatform import notebook_client

    alb, api, _ = urls(plan)
    ports = RuntimeSettings.from_json(plan.runtime_settings).ports
    user, password = "engineer1", PASSWORDS["engineer1"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        await _login(browser, alb, user, password)
    async with notebook_client.session() as http:
        async with http.post(f"{alb}/hub/api/users/{user}/tokens", json={
                "auth": {"username": user, "password": password}, "note": "rehearsal"}) as r:
            token = (await r.json())["token"]
        started = time.monotonic()
        try:
            server = await notebook_client.start_server(http, alb, user, token)
            ready_after = time.monotonic() - started
            printed = await notebook_client.run_code(
                http, f"{alb}/user/{user}", token,
                IN_THE_NOTEBOOK.replace("AGENT_PORT", str(ports.node_agent))
                .replace("PROCESSED_BUCKET", plan.bucket("processed")))
            seen = json.loads(printed.strip().splitlines()[-1])
        finally:
            await notebook_client.stop_server(http, alb, user, token)
    left = await _clusters_after_stop(api, user, password, seen["cluster"])
    fenced = all(seen[where]["imds"] != "open" and seen[where]["agent"] != "open"
                 and seen[where]["uid"] == 10001 for where in ("notebook", "task"))
    return {"ok": fenced and seen["sum"] == 5050 and seen["cluster"] not in left
            and seen["notebook"]["processed_keys"] >= 1,
            "server": urlparse(server.get("url") or "").path, "ready_seconds":
            round(ready_after, 1), "from_notebook": seen["notebook"],
            "from_task": seen["task"], "cluster_stopped_with_notebook":
            seen["cluster"] not in left}


async def _clusters_after_stop(api: str, user: str, password: str, cluster: str,
                               timeout: float = 60) -> list[str]:
    """The user's clusters once ``cluster`` has gone (or ``timeout`` passed)."""
    auth = aiohttp.BasicAuth(user, password)
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(auth=auth) as http:
        while True:
            async with http.get(f"{api}/api/v1/clusters/") as response:
                names = list(await response.json())
            if cluster not in names or time.monotonic() > deadline:
                return names
            await asyncio.sleep(2)


DATA_USER, DATA_UID = "analyst1", 10002


def from_an_analysts_task(raw: str, processed: str, agent_port: int) -> dict[str, Any]:
    """Runs in the analyst's worker: boto3 as user code calls it, no keys, no endpoint."""
    import os
    import socket

    import boto3
    from botocore.exceptions import ClientError
    from distributed import get_worker

    def reach(host: str, port: int) -> str:
        try:
            socket.create_connection((host, port), timeout=3).close()
            return "open"
        except OSError as exc:
            return type(exc).__name__

    s3 = boto3.client("s3")
    tries = {"read processed": lambda: s3.get_object(Bucket=processed, Key=SAMPLE_KEY),
             "read raw": lambda: s3.get_object(Bucket=raw, Key=SAMPLE_KEY),
             "write processed": lambda: s3.put_object(Bucket=processed, Key="rehearsal",
                                                      Body=b"x")}
    seen: dict[str, Any] = {"uid": os.getuid(), "imds": reach("169.254.169.254", 80),
                            "agent": reach(get_worker().ip, agent_port)}
    for name, attempt in tries.items():
        try:
            attempt()
            seen[name] = "ok"
        except ClientError as exc:
            seen[name] = exc.response["Error"]["Code"]
    return seen


def data(plan: Plan) -> dict[str, Any]:
    from dask_gateway import BasicAuth, Gateway

    _, api, proxy = urls(plan)
    ports = RuntimeSettings.from_json(plan.runtime_settings).ports
    with Gateway(api, proxy_address=proxy,
                 auth=BasicAuth(DATA_USER, PASSWORDS[DATA_USER])) as gateway, \
            gateway.new_cluster() as cluster:
        cluster.scale(1)
        with cluster.get_client(set_as_default=False) as client:
            client.wait_for_workers(1, timeout=240)
            seen = client.submit(from_an_analysts_task, plan.bucket("raw"),
                                 plan.bucket("processed"), ports.node_agent,
                                 pure=False).result(timeout=120)
    return {"ok": seen["read processed"] == "ok" and seen["read raw"] == "AccessDenied"
            and seen["write processed"] == "AccessDenied" and seen["uid"] == DATA_UID
            and seen["imds"] != "open" and seen["agent"] != "open", "from_task": seen}


def resume(plan: Plan, name: str) -> dict[str, Any]:
    from dask_gateway import BasicAuth, Gateway

    _, api, proxy = urls(plan)
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

    _, api, proxy = urls(plan)
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


def versions(plan: Plan) -> dict[str, Any]:
    from daskplatform.status_cli import fetch

    _, api, _ = urls(plan)
    auth = "Basic " + base64.b64encode(f"admin1:{PASSWORDS['admin1']}".encode()).decode()
    runtime = fetch(api, auth)["runtime"]
    rollout = fetch(api, auth, path="/api/v1/rollout")
    return {"ok": True, "gateway": runtime["gateway"], "mixed": runtime["mixed"],
            "nodes": {n["node_id"]: [n["role"], n["version"]] for n in runtime["node_list"]},
            "rollout": {k: rollout.get(k) for k in ("version", "done", "started_at",
                                                    "finished_at", "counts", "gateway")}}


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
        elif step == "notebook":
            result = asyncio.run(notebook(plan))
        elif step == "data":
            result = data(plan)
        elif step == "resume":
            result = resume(plan, rest[0])
        elif step == "stop":
            result = stop(plan, rest[0])
        elif step == "aws":
            result = aws(plan)
        elif step == "publish":
            from daskplatform.rehearsal.aws_host import publish_runtime

            result = publish_runtime(plan, Path(rest[0]), rest[1])
        elif step == "versions":
            result = versions(plan)
        else:
            raise SystemExit(f"unknown step {step!r}")
    except Exception as exc:  # reported to the orchestrator, which prints it
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
