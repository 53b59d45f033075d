"""Where the platform itself writes in the audit bucket; the gateway's IAM policy grants
exactly these prefixes (components/identity.py), so both sides read them from here."""

from __future__ import annotations

USAGE_REPORT_PREFIX = "usage/daily"
"""The gateway's daily usage reports (Parquet, one per day)."""
HOME_ARCHIVE_PREFIX = "home-archives"
"""Homes of offboarded users (``dask-platform users remove``), tar.gz."""
GATEWAY_PREFIXES = (USAGE_REPORT_PREFIX.split("/")[0], HOME_ARCHIVE_PREFIX)
"""Top-level prefixes the gateway host writes."""
