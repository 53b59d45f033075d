"""A team's workday on the platform, simulated: ``./dev bench workday [options]`` is
``dask-platform simulate [options]`` (docs/workday.md)."""

from __future__ import annotations

import sys

from daskplatform.simulate.cli import main

if __name__ == "__main__":
    sys.exit(main())
