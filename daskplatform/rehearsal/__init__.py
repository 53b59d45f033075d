"""The rehearsal: the AWS stack's hosts on one machine, each in a network namespace of
its own, the stack's security groups enforced as nftables rules, each platform host
booted by the command its user data runs (``dask-platform rehearse``)."""
