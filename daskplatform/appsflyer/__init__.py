"""The AppsFlyer event pipeline: raw Data Locker / Pull API drops -> validated,
deduplicated Parquet events, daily aggregates, a quarantine and run manifests.

Entry points: :func:`run_pipeline` (library), ``dask-platform pipeline`` (shell),
:func:`generate` (test, demo and benchmark data). See docs/pipeline.md.
"""

from __future__ import annotations

from daskplatform.appsflyer.generator import generate
from daskplatform.appsflyer.pipeline import run_pipeline

__all__ = ["generate", "run_pipeline"]
