"""The compression job's YAML config: schema, defaults and validation with line numbers.

A job names its model, its dataset, shared training settings, and an ordered list of
strategies, each a one-key mapping ``{kind: {parameters}}``:

  model: {reference: reference_cnn, train_epochs: 5}     # or {file: model.keras}
  dataset: fashion_mnist                                 # or a .npz file
  training: {batch_size: 128, seed: 0}
  strategies:
    - prune: {criterion: fpgm, flops_reduction: 0.5, fine_tune_epochs: 2,
              distill: {losses: [soft_label]}}
    - quantize: {epochs: 1}                              # may distill too, as prune does
    - export: {modes: [int8]}
    - benchmark: {threads: [1, 2]}

`load` reads the file and `validate` checks everything before any work starts: an unknown key,
a wrong type, a value out of range, a strategy in an impossible order or a missing file is a
`ConfigError` naming the file, line and key. The result is the config with every default
filled in, so the job, its fingerprints and its report all see the same complete settings.
"""

import copy
import os

import yaml

from kslim.pruning.criteria import Criterion

__all__ = ["ConfigError", "STRATEGIES", "load", "validate", "apply_override"]

MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
CALIBRATIONS = ("minmax", "percentile", "kl", "mse")
LOSSES = ("soft_label", "fitnet", "logits_l2")  # FSP needs layer pairs: Python API only
QUANTIZERS = ("abs_max", "moving_average_abs_max", "channel_wise_abs_max", "channel_wise_mse",
              "pact")
# kslim.models.REFERENCE_MODELS' names, spelled out so that reading a config needs no TensorFlow.
_REFERENCE_MODELS = ("reference_cnn", "plain_cnn", "standardized_cnn", "mini_mobilenet_v2",
                     "row_lstm")


class ConfigError(ValueError):
  """A config problem; the message names the file, line and key."""


class _Field:
  """One key: its type, default, and optional check (`choices`, bounds)."""

  def __init__(self, kind, default=None, choices=None, low=None, high=None, required=False,
               items=None):
    self.kind, self.default, self.choices = kind, default, choices
    self.low, self.high, self.required, self.items = low, high, required, items


_DISTILL = {
    "teacher": _Field("str", "baseline"),  # "baseline" (the job's input model) or a file
    "losses": _Field("list", ["soft_label"], items=LOSSES),
    "temperature": _Field("float", 4.0, low=0.0),
    "hard_label_weight": _Field("float", 1.0, low=0.0),
    "hint_layer": _Field("str", None),  # fitnet: the layer of both models (same name)
}
_SCHEMA = {
    "model": _Field("map", {}, items={
        "reference": _Field("str", None, choices=_REFERENCE_MODELS),
        "file": _Field("file", None),
        "train_epochs": _Field("int", 5, low=1),
    }),
    "dataset": _Field("str", "fashion_mnist"),
    "training": _Field("map", {}, items={
        "batch_size": _Field("int", 128, low=1),
        "learning_rate": _Field("float", 2e-3, low=0.0),
        "seed": _Field("int", 0),
        "train_examples": _Field("int", None, low=1),
        "test_examples": _Field("int", None, low=1),
    }),
    "strategies": _Field("list", None, required=True),
}
STRATEGIES = {
    "prune": {
        "criterion": _Field("str", "l1", choices=tuple(c.value for c in Criterion)),
        "ratio": _Field("float", None, low=0.0, high=0.99),
        "flops_reduction": _Field("float", None, low=0.01, high=0.99),
        "ratios": _Field("dict", None),  # layer name -> share of its channels
        "sensitive": _Field("bool", False),
        "align": _Field("int", 1, low=1),
        "fine_tune_epochs": _Field("int", 1, low=0),
        "learning_rate": _Field("float", 1e-3, low=0.0),
        "held_out": _Field("int", 2000, low=1),
        "reconstruction_images": _Field("int", 0, low=0),
        "sensitivity_refit": _Field("bool", False),
        "distill": _Field("map", None, items=_DISTILL),
    },
    "distill": {
        **_DISTILL,
        "epochs": _Field("int", 2, low=1),
        "learning_rate": _Field("float", 1e-3, low=0.0),
    },
    "quantize": {
        "epochs": _Field("int", 1, low=0),
        "learning_rate": _Field("float", 2e-4, low=0.0),
        "weight_bits": _Field("int", 8, low=2, high=8),
        "activation_bits": _Field("int", 8, low=2, high=8),
        "weight_quantizer": _Field("str", "channel_wise_abs_max", choices=QUANTIZERS),
        "activation_quantizer": _Field("str", "moving_average_abs_max", choices=QUANTIZERS),
        "edge_bits": _Field("int", None, low=2, high=8),
        "distill": _Field("map", None, items=_DISTILL),
    },
    "ptq": {
        "mode": _Field("str", "int8", choices=MODES),
        "calibration": _Field("str", "minmax", choices=CALIBRATIONS),
        "num_samples": _Field("int", 256, low=1),
        "per_channel": _Field("bool", True),
        "bias_correction": _Field("bool", False),
    },
    "export": {"modes": _Field("list", ["float32"], items=MODES)},
    "benchmark": {"threads": _Field("list", [1], items="int"), "runs": _Field("int", 50, low=1)},
}
# What may follow a strategy whose result is no longer a float Keras model.
_ONLY_AFTER = {"quantize": ("export", "benchmark"), "ptq": ("ptq", "export", "benchmark")}


class _Lines:
  """Line numbers of every key and list item of a YAML document, by path."""

  def __init__(self, text):
    self.lines = {}
    try:
      root = yaml.compose(text)
    except yaml.YAMLError as error:
      raise ConfigError(f"not valid YAML: {error}") from error
    if root is not None:
      self._walk(root, ())

  def _walk(self, node, path):
    self.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
      for key, value in node.value:
        self.lines[path + (key.value,)] = key.start_mark.line + 1
        self._walk(value, path + (key.value,))
    elif isinstance(node, yaml.SequenceNode):
      for i, item in enumerate(node.value):
        self._walk(item, path + (i,))

  def at(self, path):
    while path and path not in self.lines:
      path = path[:-1]
    return self.lines.get(path)


def _name(path):
  out = ""
  for part in path:
    out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
  return out or "(top level)"


class _Checker:
  def __init__(self, source, lines):
    self.source, self.lines = source, lines

  def error(self, path, message):
    line = self.lines.at(path) if self.lines else None
    where = f"{self.source}:{line}" if line else self.source
    return ConfigError(f"{where}: {_name(path)}: {message}")

  def value(self, field, value, path):
    """`value` checked and converted to the field's kind."""
    kind = field.kind
    if kind == "int":
      if isinstance(value, bool) or not isinstance(value, int):
        raise self.error(path, f"expected an integer, got {value!r}")
    elif kind == "float":
      if isinstance(value, str):  # YAML 1.1 reads 2e-3 (no dot) as a string
        try:
          value = float(value)
        except ValueError:
          raise self.error(path, f"expected a number, got {value!r}") from None
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise self.error(path, f"expected a number, got {value!r}")
      value = float(value)
    elif kind == "bool":
      if not isinstance(value, bool):
        raise self.error(path, f"expected true or false, got {value!r}")
    elif kind in ("str", "file"):
      if not isinstance(value, str):
        raise self.error(path, f"expected a string, got {value!r}")
      if kind == "file" and not os.path.isfile(value):
        raise self.error(path, f"no such file: {value!r}")
    elif kind == "dict":
      if not isinstance(value, dict):
        raise self.error(path, f"expected a mapping, got {value!r}")
    elif kind == "list":
      if not isinstance(value, list):
        value = [value]  # a single item needs no brackets
      if field.items is not None:
        item_field = _Field(field.items if isinstance(field.items, str) else "str",
                            choices=None if isinstance(field.items, str) else field.items)
        value = [self.value(item_field, v, path + (i,)) for i, v in enumerate(value)]
    elif kind == "map":
      return self.mapping(field.items, value, path)
    if field.choices is not None and value not in field.choices:
      raise self.error(path, f"{value!r} is not one of {', '.join(map(str, field.choices))}")
    if field.low is not None and value < field.low:
      raise self.error(path, f"{value!r} is below the minimum {field.low}")
    if field.high is not None and value > field.high:
      raise self.error(path, f"{value!r} is above the maximum {field.high}")
    return value

  def mapping(self, schema, data, path):
    """`data` (a dict) checked against `schema`, defaults filled in."""
    if data is None:
      data = {}
    if not isinstance(data, dict):
      raise self.error(path, f"expected a mapping of {', '.join(schema)}, got {data!r}")
    unknown = [k for k in data if k not in schema]
    if unknown:
      raise self.error(path + (unknown[0],), f"unknown key; known keys here: "
                       f"{', '.join(schema)}")
    out = {}
    for key, field in schema.items():
      if key in data and data[key] is not None:
        out[key] = self.value(field, data[key], path + (key,))
      elif field.required:
        raise self.error(path + (key,), "is required")
      elif field.kind == "map" and field.default is not None:
        out[key] = self.mapping(field.items, {}, path + (key,))
      else:
        out[key] = copy.deepcopy(field.default)
    return out


def _check_strategy(checker, kind, params, path):
  if kind == "prune":
    given = [k for k in ("ratio", "flops_reduction", "ratios") if params[k] is not None]
    if len(given) != 1:
      raise checker.error(path, "give exactly one of ratio, flops_reduction, ratios")
    if params["sensitive"] and params["flops_reduction"] is None:
      raise checker.error(path + ("sensitive",), "a sensitivity scan needs flops_reduction")
    if params["sensitivity_refit"] and not (params["sensitive"]
                                            and params["reconstruction_images"]):
      raise checker.error(path + ("sensitivity_refit",),
                          "needs sensitive: true and reconstruction_images > 0")
    for layer, ratio in (params["ratios"] or {}).items():
      checker.value(_Field("float", low=0.0, high=0.99), ratio, path + ("ratios", layer))
  distill = params if kind == "distill" else params.get("distill")
  if distill:
    if kind != "distill":
      path += ("distill",)
    teacher = distill["teacher"]
    if teacher != "baseline" and not os.path.isfile(teacher):
      raise checker.error(path + ("teacher",), f"no such file: {teacher!r} (or 'baseline')")
    if "fitnet" in distill["losses"] and not distill["hint_layer"]:
      raise checker.error(path + ("losses",), "fitnet needs hint_layer")
    if "fitnet" in distill["losses"] and kind == "quantize":
      raise checker.error(path + ("losses",), "fitnet cannot follow a hint layer through "
                          "QAT, which renames the student's layers; use soft_label or logits_l2")


def validate(data, source="<config>", lines=None):
  """The complete config (defaults filled in) of the parsed YAML `data`.

  Args:
    data: what ``yaml.safe_load`` returned.
    source: the file name errors mention.
    lines: line numbers by path (from `load`), for the messages.

  Raises:
    ConfigError: naming the file, line and key at fault.
  """
  checker = _Checker(source, lines)
  config = checker.mapping(_SCHEMA, data, ())
  model = config["model"]
  if (model["reference"] is None) == (model["file"] is None):
    raise checker.error(("model",), "give exactly one of reference and file")
  dataset = config["dataset"]
  if dataset != "fashion_mnist" and not (dataset.endswith(".npz") and os.path.isfile(dataset)):
    raise checker.error(("dataset",), f"expected 'fashion_mnist' or an existing .npz file, "
                        f"got {dataset!r}")
  strategies, previous = [], None
  if not config["strategies"]:
    raise checker.error(("strategies",), "needs at least one strategy")
  for i, entry in enumerate(config["strategies"]):
    path = ("strategies", i)
    if not isinstance(entry, dict) or len(entry) != 1:
      raise checker.error(path, f"each strategy is one of {', '.join(STRATEGIES)} with its "
                          f"parameters, e.g. '- prune: {{ratio: 0.3}}'; got {entry!r}")
    (kind, params), = entry.items()
    if kind not in STRATEGIES:
      raise checker.error(path + (kind,), f"unknown strategy; known: {', '.join(STRATEGIES)}")
    if previous in _ONLY_AFTER and kind not in _ONLY_AFTER[previous]:
      raise checker.error(path + (kind,), f"cannot follow '{previous}' (its result is "
                          f"{'a QAT model' if previous == 'quantize' else 'a TFLite file'}); "
                          f"only {', '.join(_ONLY_AFTER[previous])} can")
    params = checker.mapping(STRATEGIES[kind], params, path + (kind,))
    _check_strategy(checker, kind, params, path + (kind,))
    strategies.append({kind: params})
    if kind not in ("export", "benchmark"):
      previous = kind
  config["strategies"] = strategies
  return config


def apply_override(data, assignment):
  """Sets ``dotted.path=value`` (YAML value; list items by index) in the parsed `data`:
  ``strategies.0.prune.ratio=0.5``, ``training.seed=3``."""
  key, sep, raw = assignment.partition("=")
  if not sep or not key:
    raise ConfigError(f"override {assignment!r}: expected key.path=value")
  parts = [int(p) if p.isdigit() else p for p in key.split(".")]
  node = data
  for i, part in enumerate(parts[:-1]):
    try:
      node = node[part]
    except (KeyError, IndexError, TypeError):
      if isinstance(part, int) or not isinstance(node, dict):
        raise ConfigError(f"override {assignment!r}: {_name(parts[:i + 1])} does not "
                          "exist") from None
      node = node.setdefault(part, {})
  last = parts[-1]
  if isinstance(last, int) and not (isinstance(node, list) and last < len(node)):
    raise ConfigError(f"override {assignment!r}: {_name(parts)} does not exist")
  node[last] = yaml.safe_load(raw)
  return data


def load(path, overrides=()):
  """Reads and validates the YAML job at `path`, after applying ``key.path=value``
  `overrides`; returns the complete config."""
  try:
    text = open(path).read()
  except OSError as error:
    raise ConfigError(f"cannot read config {path!r}: {error.strerror}") from error
  lines = _Lines(text)
  data = yaml.safe_load(text)
  for assignment in overrides:
    data = apply_override(data if data is not None else {}, assignment)
  return validate(data, path, lines)
