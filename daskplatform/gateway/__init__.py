"""dask-gateway-server plug-ins: the pool backend, group quotas, the worker queue,
node discovery and scale-in protection (DESIGN.md, "Runtime architecture")."""
