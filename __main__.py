"""The dask-platform stack: validated settings, then every component (components.stack)."""

from __future__ import annotations

from components.config import read_settings
from components.stack import build

build(read_settings())
