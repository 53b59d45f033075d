"""``dask-platform credentials``: short-lived AWS credentials for your group's data role,
printed as a ``credential_process`` prints them (JSON, Version 1).

    dask-platform credentials [--gateway URL] [--user NAME]

It logs in the way ``Gateway()`` does with no arguments, by where it runs:

- in a Dask scheduler or worker of a platform cluster: the cluster's own token
  (``$DASK_GATEWAY_API_TOKEN`` for ``$DASK_GATEWAY_CLUSTER_NAME`` at
  ``$DASK_GATEWAY_API_URL``);
- in a notebook: its JupyterHub token (``$JUPYTERHUB_API_TOKEN``) at
  ``$DASK_GATEWAY__ADDRESS``;
- elsewhere: ``--user NAME`` with the password in ``$DASK_PLATFORM_PASSWORD``.

Every process the platform starts finds it in its AWS config (``$AWS_CONFIG_FILE``,
``daskplatform/node/aws_config.py``), so boto3 and s3fs run it by themselves and again
before the credentials expire; on a laptop, put the same line in ``~/.aws/config``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from daskplatform.status_cli import ADDRESS_ENV, PASSWORD_ENV, StatusError, authorization, fetch

CLUSTER_ENV = ("DASK_GATEWAY_API_URL", "DASK_GATEWAY_API_TOKEN", "DASK_GATEWAY_CLUSTER_NAME")
"""What dask-gateway gives every scheduler and worker of a cluster."""


def where_and_how(gateway: str | None, user: str | None) -> tuple[str, str, str]:
    """(base URL, path, Authorization) for this process."""
    if user is None and all(os.environ.get(name) for name in CLUSTER_ENV):
        api_url, token, cluster = (os.environ[name] for name in CLUSTER_ENV)
        return api_url.rstrip("/").removesuffix("/api"), \
            f"/api/v1/clusters/{cluster}/credentials", f"token {token}"
    address = gateway or os.environ.get(ADDRESS_ENV)
    if not address:
        raise StatusError(f"no gateway to ask: give --gateway URL (the stack's gateway_url), "
                          f"or run in a notebook or a cluster, where ${ADDRESS_ENV} or "
                          "$DASK_GATEWAY_API_URL is set")
    return address, "/api/v1/credentials", authorization(user)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dask-platform credentials",
                                description=__doc__.split("\n")[0])
    p.add_argument("--gateway", default=None,
                   help=f"the gateway's URL (default ${ADDRESS_ENV})")
    p.add_argument("--user", help=f"log in as this user (password from ${PASSWORD_ENV})")
    args = p.parse_args(argv)
    try:
        base, path, auth = where_and_how(args.gateway, args.user)
        answer = fetch(base, auth, path=path)
    except StatusError as exc:
        print(f"dask-platform credentials: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0
