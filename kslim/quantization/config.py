"""QuantConfig: which quantizers and bit widths kslim.quantize uses, model-wide and per layer."""

import dataclasses
import enum

from kslim.quantization import quant_ops
from kslim.quantization import quantizers as quantizers_lib
from kslim.quantization.folded_batch_norm import FoldedBatchNorm

__all__ = ["QuantConfig", "LayerOverride", "Unsupported", "BatchNorm", "class_name_of"]


class Unsupported(str, enum.Enum):
  """What kslim.quantize does with a layer it has no quantization rule for."""
  FLOAT = "float"  # keep its weights float, warn once listing every such layer
  ERROR = "error"  # raise, naming the layer and its type


class BatchNorm(str, enum.Enum):
  """How kslim.quantize treats a BatchNormalization that follows a conv/dense layer.

  TFLite folds it into that layer either way; the choice is what QAT trains.
  """
  TRAIN = "train"    # `FoldedBatchNorm`: quantize the folded kernel, keep batch statistics
  FREEZE = "freeze"  # fold the moving statistics once; fine-tune without batch norm


_QUANTIZER_FIELDS = ("weight_bits", "activation_bits", "weight_quantizer", "activation_quantizer")


@dataclasses.dataclass(frozen=True)
class LayerOverride:
  """Settings that replace the model-wide ones for matching layers (None = inherit)."""
  weight_bits: int = None
  activation_bits: int = None
  weight_quantizer: str = None
  activation_quantizer: str = None

  def __post_init__(self):
    _validate(self, allow_none=True)


@dataclasses.dataclass(frozen=True)
class QuantConfig:
  """How kslim.quantize quantizes a model.

  Args:
    weight_bits: bits for weights, 2 to 8.
    activation_bits: bits for activations, 2 to 8.
    weight_quantizer: ``"channel_wise_abs_max"``, ``"channel_wise_mse"`` (per-channel ranges
      with the least squared error: for 2-4 bits) or ``"abs_max"``.
    activation_quantizer: ``"moving_average_abs_max"``, ``"abs_max"`` or ``"pact"``.
    moving_average_decay: EMA decay of ``moving_average_abs_max`` and
      ``moving_average_min_max``.
    pact_decay: L2 coefficient on PACT's alpha.
    edge_bits: if set, the bits of the model's edges: the weights of the first weighted layers
      (those the inputs reach first) and of the last ones (those that reach the outputs), the
      input ranges and the output ranges. Low-bit papers (PACT, DoReFa, LSQ) keep these at 8:
      the first layer has few weights per filter and the input image is 8-bit already, and
      4-bit logits tie. A name in `overrides` still wins over it for the fields it sets.
    overrides: layer name or layer class name -> `LayerOverride` (or a dict of its fields).
      A name match wins over a class-name match.
    skip: layer names or class names whose weights stay float.
    unsupported: ``"float"`` or ``"error"``, see `Unsupported`.
    batch_norm: ``"train"`` or ``"freeze"``, see `BatchNorm`.

  Example:
    >>> config = QuantConfig(weight_bits=4, activation_quantizer="pact",
    ...                      overrides={"logits": {"weight_bits": 8}}, skip=("stem",))
    >>> QuantConfig.from_config(config.get_config()) == config
    True
  """
  weight_bits: int = 8
  activation_bits: int = 8
  weight_quantizer: str = "channel_wise_abs_max"
  activation_quantizer: str = "moving_average_abs_max"
  moving_average_decay: float = 0.9
  pact_decay: float = 1e-4
  edge_bits: int = None
  overrides: dict = dataclasses.field(default_factory=dict)
  skip: tuple = ()
  unsupported: str = "float"
  batch_norm: str = "train"

  def __post_init__(self):
    _validate(self, allow_none=False)
    if self.edge_bits is not None:
      try:
        quant_ops.check_num_bits(self.edge_bits)
      except ValueError as error:
        raise ValueError(f"QuantConfig.edge_bits: {error}") from None
    overrides = {}
    for key, value in dict(self.overrides).items():
      if not isinstance(key, str):
        raise ValueError(f"QuantConfig.overrides keys are layer or class names, got {key!r}")
      overrides[key] = value if isinstance(value, LayerOverride) else _override(key, value)
    object.__setattr__(self, "overrides", overrides)
    skip = (self.skip,) if isinstance(self.skip, str) else tuple(self.skip)
    object.__setattr__(self, "skip", skip)
    for field, choices in (("unsupported", Unsupported), ("batch_norm", BatchNorm)):
      try:
        object.__setattr__(self, field, choices(getattr(self, field)).value)
      except ValueError:
        raise ValueError(f"QuantConfig.{field} must be one of {[c.value for c in choices]}, "
                         f"got {getattr(self, field)!r}") from None
    if not 0.0 <= self.moving_average_decay < 1.0:
      raise ValueError(f"QuantConfig.moving_average_decay must be in [0, 1), got "
                       f"{self.moving_average_decay!r}")

  def with_edges(self, first, last, tensors):
    """This config with `edge_bits` applied to the named layers and tensors.

    Args:
      first: names of the first weighted layers (their weight bits become `edge_bits`).
      last: names of the last weighted layers (likewise).
      tensors: names that the input and output ranges go by (their activation bits).

    Returns:
      A `QuantConfig` whose name overrides carry the edges; a field the user's override for the
      same name sets is kept. `self` when `edge_bits` is None.
    """
    if self.edge_bits is None:
      return self
    edges = {}
    for names, field in ((first, "weight_bits"), (last, "weight_bits"),
                         (tensors, "activation_bits")):
      for name in names:
        edges.setdefault(name, {})[field] = self.edge_bits
    overrides = dict(self.overrides)
    for name, fields in edges.items():
      user = overrides.get(name, LayerOverride())
      fields.update({f: v for f, v in dataclasses.asdict(user).items() if v is not None})
      overrides[name] = LayerOverride(**fields)
    return dataclasses.replace(self, overrides=overrides)

  def is_skipped(self, layer):
    """Whether `layer` (a Keras layer) is listed in `skip` by name or class name."""
    return layer.name in self.skip or class_name_of(layer) in self.skip

  def for_layer(self, name, class_name):
    """The effective settings for a layer: a `LayerOverride` with every field filled in.

    Args:
      name: the layer's name (for a model input, the input's name).
      class_name: the layer's class name, e.g. ``"Conv2D"`` (``"InputLayer"`` for an input).
    """
    values = {f: getattr(self, f) for f in _QUANTIZER_FIELDS}
    for key in (class_name, name):  # the name match is applied last, so wins
      if key in self.overrides:
        values.update({f: v for f, v in dataclasses.asdict(self.overrides[key]).items()
                       if v is not None})
    return LayerOverride(**values)

  def weight_quantizer_for(self, layer, depthwise=False, per_channel=True):
    """The weight `Quantizer` for `layer`.

    Args:
      layer: the Keras layer.
      depthwise: its kernel is a depthwise kernel.
      per_channel: whether TFLite can store per-channel ranges for it; if not,
        the channel-wise quantizers fall back to ``abs_max``.
    """
    settings = self.for_layer(layer.name, class_name_of(layer))
    name, kwargs = settings.weight_quantizer, {"num_bits": settings.weight_bits}
    if name.startswith("channel_wise") and not per_channel:
      name = "abs_max"
    elif name.startswith("channel_wise"):
      kwargs["depthwise"] = depthwise
    return quantizers_lib.get(name, quantizers_lib.Role.WEIGHTS, **kwargs)

  def activation_quantizer_for(self, name, class_name, signed, edge=False):
    """The activation `Quantizer` for the output of a layer (see `for_layer`).

    PACT replaces the clipping of a ReLU on non-negative tensors, and clips the signed
    tensors inside the model (linear projections, residual sums) on its symmetric grid: at 4
    bits, an abs-max range on those alone cost the mini MobileNetV2 all of its 4-bit
    activation loss. A model input or output (`edge`) that can be negative gets
    moving_average_abs_max instead: clipping the data or the logits only loses information.
    """
    settings = self.for_layer(name, class_name)
    choice = settings.activation_quantizer
    if choice == "pact" and signed and edge:
      choice = "moving_average_abs_max"
    kwargs = {"num_bits": settings.activation_bits, "signed": signed}
    if choice in ("moving_average_abs_max", "moving_average_min_max"):
      kwargs["decay"] = self.moving_average_decay
    elif choice == "pact":
      kwargs["decay"] = self.pact_decay
    return quantizers_lib.get(choice, quantizers_lib.Role.ACTIVATIONS, **kwargs)

  def get_config(self):
    config = dataclasses.asdict(self)
    config["overrides"] = {k: {f: v for f, v in dataclasses.asdict(o).items() if v is not None}
                           for k, o in self.overrides.items()}
    config["skip"] = list(self.skip)
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def class_name_of(layer):
  """The class name `skip` and `overrides` match: a FoldedBatchNorm goes by the layer it wraps
  (it also carries that layer's name)."""
  return type(layer.layer if isinstance(layer, FoldedBatchNorm) else layer).__name__


def _override(key, value):
  if not isinstance(value, dict):
    raise ValueError(f"QuantConfig.overrides[{key!r}] must be a LayerOverride or a dict, got "
                     f"{value!r}")
  unknown = set(value) - set(_QUANTIZER_FIELDS)
  if unknown:
    raise ValueError(f"QuantConfig.overrides[{key!r}] has unknown keys {sorted(unknown)}; "
                     f"allowed: {list(_QUANTIZER_FIELDS)}")
  return LayerOverride(**value)


def _validate(settings, allow_none):
  """Checks the quantizer fields of a QuantConfig or LayerOverride, naming the bad one."""
  owner = type(settings).__name__
  for field in ("weight_bits", "activation_bits"):
    value = getattr(settings, field)
    if value is None and allow_none:
      continue
    try:
      quant_ops.check_num_bits(value)
    except ValueError as error:
      raise ValueError(f"{owner}.{field}: {error}") from None
  for field, role in (("weight_quantizer", quantizers_lib.Role.WEIGHTS),
                      ("activation_quantizer", quantizers_lib.Role.ACTIVATIONS)):
    value = getattr(settings, field)
    if value is None and allow_none:
      continue
    if value not in quantizers_lib.names(role):
      raise ValueError(f"{owner}.{field} must be one of {quantizers_lib.names(role)}, got "
                       f"{value!r}")
