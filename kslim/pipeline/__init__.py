"""Named compression stages run in order over a shared context (the demo and, later, YAML jobs)."""

from kslim.pipeline.report import format_table
from kslim.pipeline.stages import STAGES, Context, Settings, StageResult, register_stage, run

__all__ = ["STAGES", "Context", "Settings", "StageResult", "format_table", "register_stage",
           "run"]
