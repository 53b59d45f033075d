"""The gateway's bookkeeping of usage: intervals in the ledger (usage.py), monthly budgets
per group, their alerts, the per-group figures in CloudWatch and the daily report.

- **Budgets** (``quotas.groups.<g>.monthlyBudgetUsd``): at 80 % of a month's budget an
  alert goes to the platform's SNS topic (once per group and month); at 100 % the
  group's new clusters are refused with a message naming the budget. Admins are never
  refused. Running clusters are left alone.
- **CloudWatch**: ``GroupCostUsd`` and ``GroupCoreHours`` month to date, per ``Group``.
- **Daily report**: yesterday's intervals as Parquet in the audit bucket
  (``usage/daily/YYYY-MM-DD.parquet``), written once, by the first round after midnight
  UTC (again after a restart only if it is missing).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from daskplatform.audit import trail
from daskplatform.audit_bucket import USAGE_REPORT_PREFIX
from daskplatform.aws import aws_client
from daskplatform.gateway.usage import UsageLedger, month_start

ADMINS = "admins"
ALERT_LEVELS = (80, 100)
GROUP_COST_METRIC = "GroupCostUsd"
GROUP_CORE_HOURS_METRIC = "GroupCoreHours"


class BudgetExceeded(Exception):
    """A group has spent its month's budget: its new clusters wait for the next month."""


def report_key(day: datetime) -> str:
    return f"{USAGE_REPORT_PREFIX}/{day:%Y-%m-%d}.parquet"


class Accounting:
    def __init__(self, ledger: UsageLedger, budgets: Mapping[str, float], *,
                 alert_topic_arn: str = "", audit_bucket: str = "",
                 metrics_namespace: str = "", log: logging.Logger) -> None:
        self.ledger = ledger
        self.budgets = dict(budgets)
        self.alert_topic_arn = alert_topic_arn
        self.audit_bucket = audit_bucket
        self.metrics_namespace = metrics_namespace
        self.log = log

    # ------------------------------------------------------------------ budgets

    def month_cost(self, group: str, now: float | None = None) -> float:
        now = time.time() if now is None else now
        return self.ledger.cost(month_start(now), group, now)

    def check_budget(self, group: str) -> None:
        """Refuse a new cluster of a group past its budget (BudgetExceeded says what)."""
        budget = self.budgets.get(group)
        if group == ADMINS or budget is None:
            return
        spent = self.month_cost(group)
        if spent >= budget:
            raise BudgetExceeded(
                f"the {group} group has used ${spent:,.2f} of its monthly budget of "
                f"${budget:,.2f} (quotas.groups.{group}.monthlyBudgetUsd); new clusters of "
                f"the group start again on the 1st of next month, or when an admin raises "
                "the budget; running clusters are not affected")

    def budget_alerts(self, now: float | None = None) -> list[str]:
        """Each group that crossed 80 % or 100 % of its budget this month and was not told
        yet: one SNS message per crossing; the messages sent."""
        now = time.time() if now is None else now
        month = datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
        sent = []
        for group, budget in sorted(self.budgets.items()):
            spent = self.month_cost(group, now)
            for level in ALERT_LEVELS:
                if spent < budget * level / 100 or self.ledger.alerted(group, month, level):
                    continue
                message = (f"dask-platform: the {group} group has used ${spent:,.2f} of its "
                           f"monthly budget of ${budget:,.2f} ({spent / budget:.0%}) in "
                           f"{month}" + ("; its new clusters are refused until next month"
                                         if level >= 100 else ""))
                self._publish(f"Budget {level}%: {group}", message)
                trail().record("budget.alert", group, group=group, level=level,
                               spent_usd=round(spent, 2), budget_usd=budget)
                sent.append(message)
        return sent

    def _publish(self, subject: str, message: str) -> None:
        self.log.warning("%s", message)
        if not self.alert_topic_arn:
            return
        try:
            aws_client("sns").publish(TopicArn=self.alert_topic_arn, Subject=subject[:100],
                                      Message=message)
        except (BotoCoreError, ClientError) as exc:
            self.log.warning("Could not send the budget alert to %s: %s",
                             self.alert_topic_arn, exc)

    # ------------------------------------------------------------------ CloudWatch

    def group_metrics(self, now: float | None = None) -> list[dict[str, object]]:
        """Month-to-date cost and core-hours per group, as CloudWatch metric data."""
        now = time.time() if now is None else now
        stamp = datetime.fromtimestamp(now, UTC)
        data: list[dict[str, object]] = []
        for row in self.ledger.usage(month_start(now), now, "group"):
            dimensions = [{"Name": "Group", "Value": row.key}]
            data += [{"MetricName": GROUP_COST_METRIC, "Dimensions": dimensions,
                      "Timestamp": stamp, "Value": row.cost_usd, "Unit": "None"},
                     {"MetricName": GROUP_CORE_HOURS_METRIC, "Dimensions": dimensions,
                      "Timestamp": stamp, "Value": row.core_seconds / 3600, "Unit": "None"}]
        return data

    def publish_group_metrics(self, now: float | None = None) -> None:
        data = self.group_metrics(now)
        if not (self.metrics_namespace and data):
            return
        try:
            aws_client("cloudwatch").put_metric_data(Namespace=self.metrics_namespace,
                                                     MetricData=data)
        except (BotoCoreError, ClientError) as exc:
            self.log.warning("Could not put the per-group usage metrics: %s", exc)

    # ------------------------------------------------------------------ daily report

    def daily_report(self, now: float | None = None) -> str | None:
        """Yesterday's intervals to the audit bucket, unless already there; its key."""
        if not self.audit_bucket:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        today = datetime.fromtimestamp(time.time() if now is None else now, UTC).replace(
            hour=0, minute=0, second=0, microsecond=0)
        day = today - timedelta(days=1)
        key = report_key(day)
        s3 = aws_client("s3")
        try:
            s3.head_object(Bucket=self.audit_bucket, Key=key)
            return None
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                raise
        rows = self.ledger.intervals(day.timestamp(), today.timestamp())
        columns = ["process_id", "user", "group", "cluster", "kind", "cores", "memory_gb",
                   "start", "end", "core_seconds", "gb_seconds", "cost_usd"]
        table = pa.table({c: [r[c] for r in rows] for c in columns})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        s3.put_object(Bucket=self.audit_bucket, Key=key, Body=buffer.getvalue(),
                      ServerSideEncryption="aws:kms")
        self.log.info("Usage report for %s: %d intervals in s3://%s/%s", f"{day:%Y-%m-%d}",
                      len(rows), self.audit_bucket, key)
        return key

    def round(self) -> None:
        """One periodic round: alerts, metrics, the daily report (blocking: run in a
        thread)."""
        self.budget_alerts()
        self.publish_group_metrics()
        try:
            self.daily_report()
        except (BotoCoreError, ClientError) as exc:
            self.log.warning("Could not write the daily usage report: %s", exc)
