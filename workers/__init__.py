"""Actor side of raybench: everything that runs once per device.

Nothing here imports `orchestrator`; the driver depends on this package, never the reverse.
"""
