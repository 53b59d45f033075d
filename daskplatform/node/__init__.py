"""The node agent: starts, confines, lists and stops Dask processes on one host."""
