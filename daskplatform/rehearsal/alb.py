"""``dp-alb``: the Application Load Balancer as users see it. HTTPS on 443 with a
certificate from the rehearsal's CA (TLS 1.2 and 1.3 only, as the listener's policy),
HTTP on 80 answering a 301 to HTTPS, and one target group: the gateway host's port,
health-checked on the stack's path (healthy after 2 good checks, unhealthy after 3
bad ones; a 503 while no target is healthy, as an ALB answers). Requests and WebSocket
upgrades (JupyterLab, Dask dashboards) are forwarded with the X-Forwarded-* headers an
ALB adds.

Run inside the namespace: ``python -m daskplatform.rehearsal.alb PLAN``.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from daskplatform.http_forward import end_to_end_headers, forward
from daskplatform.network_plan import ALB_HEALTH_CHECK_PATH
from daskplatform.rehearsal.plan import Plan
from daskplatform.settings import RuntimeSettings

HEALTH_INTERVAL_SECONDS = 5.0
HEALTHY_THRESHOLD = 2
UNHEALTHY_THRESHOLD = 3
TLS_FILES = ("alb.crt", "alb.key")
SESSION = web.AppKey("session", aiohttp.ClientSession)
"""In ``<workdir>/alb``, issued by the orchestrator from the rehearsal CA."""


class Target:
    """The gateway host behind the ALB, with the target group's health state."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.healthy = False
        self._streak = 0

    async def check_forever(self, session: aiohttp.ClientSession) -> None:
        while True:
            try:
                async with session.get(self.base_url + ALB_HEALTH_CHECK_PATH,
                                       timeout=aiohttp.ClientTimeout(total=5)) as response:
                    good = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                good = False
            self._streak = self._streak + 1 if good != self.healthy else 0
            threshold = HEALTHY_THRESHOLD if good else UNHEALTHY_THRESHOLD
            if self._streak >= threshold:
                self.healthy, self._streak = good, 0
                print(f"alb: target {self.base_url} is {'healthy' if good else 'unhealthy'}",
                      flush=True)
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)


def _forward_headers(request: web.Request) -> dict[str, str]:
    headers = end_to_end_headers(request.headers)
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = "https"
    headers["X-Forwarded-Port"] = "443"
    headers["Host"] = request.host
    return headers


def make_app(target: Target) -> web.Application:
    async def to_target(request: web.Request) -> web.StreamResponse:
        if not target.healthy:
            return web.Response(status=503, text="503 Service Temporarily Unavailable")
        return await forward(request, request.app[SESSION],
                             target.base_url + str(request.rel_url), _forward_headers(request))

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", to_target)
    return app


def redirect_app() -> web.Application:
    """The port-80 listener: a 301 to the same place over HTTPS."""
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(f"https://{request.host.split(':')[0]}"
                                       f"{request.rel_url}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app


async def serve(plan: Plan) -> None:
    settings = RuntimeSettings.from_json(plan.runtime_settings)
    alb = plan.topology.host("alb")
    gateway = plan.topology.host("gateway")
    target = Target(f"http://{gateway.address}:{settings.ports.gateway_http}")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    folder = Path(plan.workdir) / "alb"
    tls.load_cert_chain(*(folder / name for name in TLS_FILES))
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        app = make_app(target)
        app[SESSION] = session
        runners = [web.AppRunner(app, access_log=None),
                   web.AppRunner(redirect_app(), access_log=None)]
        for runner in runners:
            await runner.setup()
        await web.TCPSite(runners[0], alb.address, settings.ports.https,
                          ssl_context=tls).start()
        await web.TCPSite(runners[1], alb.address, settings.ports.http).start()
        print(f"ready: https://{alb.address} -> {target.base_url} "
              f"(health check {ALB_HEALTH_CHECK_PATH})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        checker = asyncio.ensure_future(target.check_forever(session))
        await stop.wait()
        checker.cancel()
        for runner in runners:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(Plan.load((argv or sys.argv[1:])[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
