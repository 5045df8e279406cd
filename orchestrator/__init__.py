"""Driver side of raybench: everything that runs once per job.

Public Python API: `from orchestrator.driver import run_job` and `orchestrator.spec.load_spec`.
"""
