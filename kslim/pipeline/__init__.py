"""Compression pipelines.

`run(config, workdir)` runs a YAML-described job (prune -> distill -> quantize -> export ->
benchmark), resumable stage by stage, and writes its report; `run_stages` runs the fixed named
stages the benchmarks share (a cached baseline, float32 export, evaluation).
"""

from kslim.pipeline.config import ConfigError
from kslim.pipeline.config import load as load_config
from kslim.pipeline.job import Row
from kslim.pipeline.job import run
from kslim.pipeline.report import format_table
from kslim.pipeline.report import job_table
from kslim.pipeline.stages import STAGES, Context, Settings, StageResult, register_stage
from kslim.pipeline.stages import run as run_stages

__all__ = ["STAGES", "ConfigError", "Context", "Row", "Settings", "StageResult", "format_table",
           "job_table", "load_config", "register_stage", "run", "run_stages"]
