"""Budgets a candidate must fit: MACs, parameters, or latency on a device.

Latency comes from a per-op table measured on the target with ``tflite-latency-table``
(`tflite_tools.latency_table`): `TableLatencyEvaluator` converts the candidate to TFLite and
estimates its latency from the table's entries (their sum, plus the cost of weights streamed
from memory when the candidate's weights outgrow the target's cache), so a search never needs
the device in the loop.

Example:
  >>> table = TableLatencyEvaluator("pixel7_float32.json")
  >>> constraint = Constraint("latency", 2.5, table)     # ms
  >>> constraint.satisfied(model)
"""

import numpy as np

from kslim import profiling
from kslim._enum import Choice
from kslim.conversion import convert
from kslim.conversion.representative_data import MIN_SAMPLES
from tflite_tools import latency_table

__all__ = ["Metric", "Constraint", "TableLatencyEvaluator"]


class Metric(Choice):
  """What a constraint bounds."""
  MACS = "macs"
  PARAMS = "params"
  LATENCY = "latency"


class TableLatencyEvaluator:
  """Estimates a tf_keras model's TFLite latency (ms) from a latency table.

  Args:
    table: a `tflite_tools.latency_table.LatencyTable`, or the path of one saved as JSON.
    mode: the conversion the table was measured for: ``"float32"`` or ``"int8"`` (calibrated
      on random inputs: latency does not depend on the ranges).

  Raises:
    ValueError: an unknown mode.
  """

  def __init__(self, table, mode="float32"):
    if mode not in ("float32", "int8"):
      raise ValueError(f"TableLatencyEvaluator: mode must be 'float32' or 'int8', got {mode!r}")
    self.table = (table if isinstance(table, latency_table.LatencyTable)
                  else latency_table.LatencyTable.load(table))
    self.mode = mode

  def estimate(self, model):
    """The table's `Estimate` for `model` (total ms, how many ops matched exactly)."""
    calibration = {}
    if self.mode == "int8":
      shape = (MIN_SAMPLES, *model.input_shape[1:])
      calibration = {"representative_data": np.random.default_rng(0).uniform(
          0, 1, shape).astype(np.float32), "num_samples": shape[0]}
    return self.table.estimate(convert(model, self.mode, **calibration))

  def __call__(self, model):
    """The estimated latency of `model` in milliseconds."""
    return self.estimate(model).total_ms


class Constraint:
  """An upper bound on a candidate's MACs, parameter count or estimated latency.

  Args:
    metric: ``"macs"``, ``"params"`` or ``"latency"``.
    budget: the largest allowed value (latency in ms).
    latency: a ``model -> ms`` callable (e.g. `TableLatencyEvaluator`); required for latency.

  Raises:
    ValueError: unknown metric, a budget <= 0, or latency without an evaluator.
  """

  def __init__(self, metric, budget, latency=None):
    self.metric = Metric.parse(metric, "constraint metric")
    if not budget > 0:
      raise ValueError(f"Constraint: budget must be > 0, got {budget!r}")
    if self.metric is Metric.LATENCY and latency is None:
      raise ValueError("Constraint: a latency budget needs an evaluator, e.g. "
                       "TableLatencyEvaluator('table.json')")
    self.budget = float(budget)
    self.latency = latency

  def value(self, model):
    """`model`'s MACs, parameters or estimated latency (ms)."""
    if self.metric is Metric.LATENCY:
      return float(self.latency(model))
    prof = profiling.profile(model)
    return float(prof.total_macs if self.metric is Metric.MACS else prof.total_params)

  def satisfied(self, model):
    """Whether `model` fits the budget."""
    return self.value(model) <= self.budget

  def __repr__(self):
    return f"Constraint({self.metric.value!r}, {self.budget:g})"
