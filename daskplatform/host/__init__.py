"""What runs on a platform host outside the Dask processes: the boot steps after the
user data stub (``dask-platform host-setup``), the services' units, the stub itself."""
