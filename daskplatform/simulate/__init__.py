"""The workday simulation (``dask-platform simulate``, docs/workday.md): a team's day on
the platform, driven through the gateway's own queue, placement and quota code and the
stack's scaling rules, on a simulated clock."""
