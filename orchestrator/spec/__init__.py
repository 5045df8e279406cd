"""The job spec: a job file's YAML made into validated objects (the only place that happens).

    job.py      JobBase (what every job has), EngineJob (engines on worker actors), EndpointJob (a
                running server), JobSpec
    endpoint.py an endpoint job's parts: `endpoint:`, `prompts:`, `slo:`
    load.py     `load:`: offline | loadgen | endpoint, and the older `scenario:`/`loadgen:` spelling
    verdict.py  `verdict:`: the rules' profiles and overrides
    loading.py  YAML, `--set` overrides, sweeps, one-line errors; the resolved spec as YAML
"""

from orchestrator.spec.job import SWEEPABLE, EndpointJob, EngineJob, JobBase, JobSpec
from orchestrator.spec.loading import (
    apply_overrides,
    dump_spec,
    format_validation_error,
    load_spec,
    load_spec_text,
    parse_override,
    read_yaml,
    resolve_paths,
    validate,
)

__all__ = ["SWEEPABLE", "EndpointJob", "EngineJob", "JobBase", "JobSpec", "apply_overrides", "dump_spec",
           "format_validation_error",
           "load_spec", "load_spec_text", "parse_override", "read_yaml", "resolve_paths", "validate"]
