"""The one typed event schema, the two vocabularies that map onto it, and reason codes.

AppsFlyer names the same field twice: Data Locker and the raw-data API use API names
(``event_revenue_usd``), Pull API / dashboard exports use display names ("Event Revenue
USD"). Both map here onto one snake_case column, so downstream code never sees either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    """One canonical column and the names AppsFlyer gives it."""

    name: str
    api_name: str
    display_name: str
    kind: str  # "string" | "timestamp" | "float"


COLUMNS: tuple[Column, ...] = (
    Column("appsflyer_id", "appsflyer_id", "AppsFlyer ID", "string"),
    Column("event_time", "event_time", "Event Time", "timestamp"),
    Column("install_time", "install_time", "Install Time", "timestamp"),
    Column("event_name", "event_name", "Event Name", "string"),
    Column("event_value", "event_value", "Event Value", "string"),
    Column("event_revenue", "event_revenue", "Event Revenue", "float"),
    Column("event_revenue_currency", "event_revenue_currency", "Event Revenue Currency", "string"),
    Column("event_revenue_usd", "event_revenue_usd", "Event Revenue USD", "float"),
    Column("media_source", "media_source", "Media Source", "string"),
    Column("channel", "af_channel", "Channel", "string"),
    Column("campaign", "campaign", "Campaign", "string"),
    Column("campaign_id", "af_c_id", "Campaign ID", "string"),
    Column("adset", "af_adset", "Adset", "string"),
    Column("ad", "af_ad", "Ad", "string"),
    Column("attributed_touch_type", "attributed_touch_type", "Attributed Touch Type", "string"),
    Column("country_code", "country_code", "Country Code", "string"),
    Column("city", "city", "City", "string"),
    Column("platform", "platform", "Platform", "string"),
    Column("os_version", "os_version", "OS Version", "string"),
    Column("app_version", "app_version", "App Version", "string"),
    Column("app_id", "app_id", "App ID", "string"),
    Column("customer_user_id", "customer_user_id", "Customer User ID", "string"),
    Column("advertising_id", "advertising_id", "Advertising ID", "string"),
    Column("idfa", "idfa", "IDFA", "string"),
)
CANONICAL = tuple(c.name for c in COLUMNS)

_HEADER_TO_CANONICAL: dict[str, str] = {
    alias.strip().casefold(): c.name
    for c in COLUMNS
    for alias in (c.name, c.api_name, c.display_name)
}


def canonical_name(header: str) -> str | None:
    """The canonical column for a raw header in either vocabulary; None if unknown."""
    return _HEADER_TO_CANONICAL.get(header.strip().casefold())


DEDUP_KEY: tuple[str, ...] = (
    "report", "app_id", "appsflyer_id", "event_time", "event_name", "event_value",
    "event_revenue", "event_revenue_currency", "event_revenue_usd",
)
"""What makes two rows the same event. A re-delivered row repeats all of these; two real
events (say two purchases in the same second) differ in value or revenue. Attribution and
device fields are left out so a re-delivery with corrected attribution does not count twice."""

# ------------------------------------------------------------------------------ reports

REPORTS: dict[str, str] = {
    "installs": "installs",
    "in_app_events": "events",
    "uninstalls": "uninstalls",
    "organic_installs": "installs",
    "organic_in_app_events": "events",
    "organic_uninstalls": "uninstalls",
}
"""Canonical report -> the daily-aggregate measure its rows count towards."""

_REPORT_ALIASES: dict[str, str] = {
    "installs": "installs", "installs_report": "installs", "non_organic_installs": "installs",
    "in_app_events": "in_app_events", "inapps": "in_app_events", "inapp_events": "in_app_events",
    "in_app_events_report": "in_app_events",
    "uninstalls": "uninstalls", "uninstall_events": "uninstalls",
    "uninstall_events_report": "uninstalls",
    "organic_installs": "organic_installs", "organic_installs_report": "organic_installs",
    "organic_in_app_events": "organic_in_app_events", "organic_inapps": "organic_in_app_events",
    "organic_in_app_events_report": "organic_in_app_events",
    "organic_uninstalls": "organic_uninstalls",
    "organic_uninstall_events": "organic_uninstalls",
    "organic_uninstall_events_report": "organic_uninstalls",
}
"""Data Locker folder names (``t=inapps``) and Pull API report names -> canonical report."""

_REPORT_IN_NAME = re.compile(
    r"(?:^|_)(" + "|".join(sorted(_REPORT_ALIASES, key=len, reverse=True)) + r")(?:_|$)"
)


def report_from_folder(value: str) -> str | None:
    """Canonical report of a Data Locker ``t=<value>`` folder."""
    return _REPORT_ALIASES.get(value.strip().lower().replace("-", "_"))


def report_from_filename(name: str) -> str | None:
    """Canonical report named inside a Pull API export file name, e.g.
    ``id123_organic-installs_2024-01-01_2024-01-07_UTC.csv``."""
    match = _REPORT_IN_NAME.search(name.lower().replace("-", "_").replace(".", "_"))
    return _REPORT_ALIASES[match.group(1)] if match else None


# ------------------------------------------------------------------------------ reasons


class Reason(str, Enum):
    """Why a row was quarantined. When a row has several problems the first in this
    order is recorded, so counts per reason are stable."""

    MALFORMED_ROW = "malformed_row"
    UNKNOWN_REPORT = "unknown_report"
    MISSING_APPSFLYER_ID = "missing_appsflyer_id"
    MISSING_APP_ID = "missing_app_id"
    MISSING_EVENT_NAME = "missing_event_name"
    BAD_EVENT_TIME = "bad_event_time"
    BAD_INSTALL_TIME = "bad_install_time"
    NON_NUMERIC_REVENUE = "non_numeric_revenue"
    BAD_CURRENCY = "bad_currency"
    BAD_COUNTRY_CODE = "bad_country_code"


ISO_4217 = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD
TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
""".split())
"""Active ISO 4217 currency codes; revenue in anything else cannot be trusted."""

# ------------------------------------------------------------------------------ Parquet

_ARROW = {"string": pa.string(), "timestamp": pa.timestamp("us", tz="UTC"),
          "float": pa.float64()}

EVENT_FIELDS: tuple[pa.Field, ...] = (
    pa.field("event_id", pa.string(), nullable=False),
    *(pa.field(c.name, _ARROW[c.kind]) for c in COLUMNS),
    pa.field("extra", pa.string()),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_row", pa.int64(), nullable=False),
)
EVENTS_SCHEMA = pa.schema(EVENT_FIELDS)
"""Files under ``events/report=<r>/date=<d>/``; report and date come from the path.
``extra`` is a JSON object of the columns AppsFlyer sent that the schema does not know
(null when there were none); ``source_file``/``source_row`` trace each row to its input."""

STAGED_SCHEMA = pa.schema([pa.field("report", pa.string()), *EVENT_FIELDS])
"""Rows between validation and deduplication (same as events, plus the report)."""

QUARANTINE_SCHEMA = pa.schema([
    pa.field("report", pa.string()),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_row", pa.int64(), nullable=False),
    pa.field("raw", pa.string(), nullable=False),
])
"""Rejected rows: ``raw`` is the row as delivered (JSON, original headers)."""

AGGREGATE_DIMENSIONS = ("app_id", "media_source", "campaign", "country_code")
AGGREGATES_SCHEMA = pa.schema([
    pa.field("app_id", pa.string()),
    pa.field("media_source", pa.string()),
    pa.field("campaign", pa.string()),
    pa.field("country_code", pa.string()),
    pa.field("installs", pa.int64(), nullable=False),
    pa.field("events", pa.int64(), nullable=False),
    pa.field("uninstalls", pa.int64(), nullable=False),
    pa.field("revenue_usd", pa.float64(), nullable=False),
])
"""One file per day, ``aggregates/date=<d>/part-0.parquet`` (the date comes from the path);
installs/events/uninstalls count rows of the matching reports, organic or not;
revenue_usd sums in-app event revenue."""
