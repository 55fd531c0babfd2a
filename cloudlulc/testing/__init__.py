"""Loopback servers for the demo and the tests, as stackstac and odc-stac ship theirs.

* :mod:`~cloudlulc.testing.stac_server`: a real STAC API (``rustac serve``) over a catalog on disk;
* :mod:`~cloudlulc.testing.assets`: an HTTP file server with range requests and request counters;
* :mod:`~cloudlulc.testing.processes`: ports and child processes, started and stopped alike.

Loopback (127.0.0.1) only; not production servers.
"""
