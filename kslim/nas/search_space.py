"""Token-based search spaces: a candidate architecture is a list of integers.

Token ``i`` of a candidate picks one of ``space.choices[i]`` options; `SearchSpace.decode`
checks the tokens and builds the tf_keras functional model they describe. Controllers
(`kslim.nas.SANAS`, `kslim.nas.RLNAS`) only ever see the tokens, as in PaddleSlim's NAS.

==================  ========================================================================
``MobileNetV2Space``  per stage: expansion ratio, kernel size, width, depth of inverted residuals
``MobileNetV1Space``  per stage: kernel size, width, depth of depthwise-separable blocks
``ResNetSpace``       per stage: kernel size, width, depth of basic residual blocks
``BlockSpace``        any options and a function that builds the model from the chosen values
==================  ========================================================================

Example:
  >>> space = MobileNetV2Space()
  >>> space.choices               # options per token
  (3, 2, 3, 3, 3, 2, 3, 3, 3, 2, 3, 3)
  >>> model = space.decode(space.init_tokens())
"""

import abc

import numpy as np

from kslim._keras import keras
from kslim.models import conv_bn_relu, depthwise_bn_relu, inverted_residual

__all__ = ["SearchSpace", "StagedSpace", "MobileNetV2Space", "MobileNetV1Space", "ResNetSpace",
           "BlockSpace"]

_layers = keras.layers


class SearchSpace(abc.ABC):
  """Base class: the options per token, and the model a list of tokens describes.

  Subclasses define `choices` and `build`; `decode` validates tokens first, so a bad
  candidate fails with the position and the allowed range instead of a broken model.
  """

  @property
  @abc.abstractmethod
  def choices(self):
    """How many options each token position has (a tuple of ints >= 1)."""

  @abc.abstractmethod
  def build(self, tokens):
    """The tf_keras model of valid `tokens` (a list of ints)."""

  def decode(self, tokens):
    """Checks `tokens` and builds their model.

    Raises:
      ValueError: wrong length, or a token out of its range (the message names the position).
    """
    return self.build(self.check(tokens))

  def check(self, tokens):
    """`tokens` as a list of ints, or a ValueError naming what is wrong."""
    tokens = [int(t) for t in tokens]
    if len(tokens) != len(self.choices):
      raise ValueError(f"{type(self).__name__}: expected {len(self.choices)} tokens, got "
                       f"{len(tokens)}")
    for i, (token, count) in enumerate(zip(tokens, self.choices)):
      if not 0 <= token < count:
        raise ValueError(f"{type(self).__name__}: token {i} is {token}, expected 0..{count - 1}")
    return tokens

  def key(self, tokens):
    """A hashable key, equal for valid token lists that build the same model. Controllers
    score each key once. By default every token matters; a space with tokens that can go
    unused (a block past its stage's depth) maps those to one value."""
    return tuple(tokens)

  def init_tokens(self):
    """A starting candidate: the middle option of every token."""
    return [count // 2 for count in self.choices]

  def random_tokens(self, rng):
    """A uniformly random candidate drawn with the numpy Generator `rng`."""
    return [int(rng.integers(count)) for count in self.choices]

  def size(self):
    """The number of distinct candidates."""
    return int(np.prod(self.choices, dtype=np.float64))


class StagedSpace(SearchSpace):
  """A stem, stages whose options come from one table, and a pooled Dense head.

  Each stage owns one token per entry of `options` (in its order), so the tokens are
  ``[stage0 option0, stage0 option1, ..., stage1 option0, ...]``. Subclasses set `options`
  and implement `stage`.

  Args:
    input_shape: (H, W, C) of one input.
    num_classes: logits out.
    stages: (base filters, stride) per stage; the width option multiplies the filters.
    stem_filters: filters of the 3x3 stem convolution.
  """

  options = {}  # option name -> tuple of values; set by subclasses

  def __init__(self, input_shape=(28, 28, 1), num_classes=10,
               stages=((16, 1), (24, 2), (32, 2)), stem_filters=16):
    self.input_shape = tuple(input_shape)
    self.num_classes = num_classes
    self.stages = tuple(tuple(s) for s in stages)
    self.stem_filters = stem_filters

  @property
  def choices(self):
    return tuple(len(values) for _ in self.stages for values in self.options.values())

  def config(self, tokens):
    """Per stage, the option values `tokens` pick, e.g. ``[{"kernel": 3, "depth": 2}, ...]``."""
    tokens = self.check(tokens)
    names, per_stage = list(self.options), len(self.options)
    return [{name: self.options[name][tokens[s * per_stage + k]]
             for k, name in enumerate(names)} for s in range(len(self.stages))]

  def build(self, tokens):
    inputs = keras.Input(self.input_shape, name="image")
    x = conv_bn_relu(inputs, self.stem_filters, "stem", kernel_size=3)
    for s, (cfg, (filters, stride)) in enumerate(zip(self.config(tokens), self.stages)):
      x = self.stage(x, cfg, filters, stride, f"stage{s + 1}")
    x = _layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = _layers.Dense(self.num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=type(self).__name__.lower())

  @abc.abstractmethod
  def stage(self, x, cfg, filters, stride, name):
    """Appends one stage configured by `cfg` (option name -> value) to tensor `x`."""


def _width(filters, multiplier):
  return max(8, int(round(filters * multiplier / 8)) * 8)


class MobileNetV2Space(StagedSpace):
  """Stages of MobileNetV2 inverted residuals: expansion, kernel, width and depth per stage.

  References:
    Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    https://arxiv.org/abs/1801.04381
  """

  options = {"expansion": (1, 3, 6), "kernel": (3, 5), "width": (0.5, 0.75, 1.0),
             "depth": (1, 2, 3)}

  def stage(self, x, cfg, filters, stride, name):
    filters = _width(filters, cfg["width"])
    for d in range(cfg["depth"]):
      x = inverted_residual(x, filters, stride if d == 0 else 1, cfg["expansion"],
                            f"{name}_block{d + 1}", cfg["kernel"])
    return x


class MobileNetV1Space(StagedSpace):
  """Stages of MobileNetV1 depthwise-separable blocks: kernel, width and depth per stage.

  References:
    Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
    Applications", https://arxiv.org/abs/1704.04861
  """

  options = {"kernel": (3, 5), "width": (0.5, 0.75, 1.0), "depth": (1, 2, 3)}

  def stage(self, x, cfg, filters, stride, name):
    filters = _width(filters, cfg["width"])
    for d in range(cfg["depth"]):
      block = f"{name}_block{d + 1}"
      x = depthwise_bn_relu(x, block, cfg["kernel"], stride if d == 0 else 1)
      x = conv_bn_relu(x, filters, f"{block}_pw")
    return x


class ResNetSpace(StagedSpace):
  """Stages of ResNet basic blocks (two convolutions and a shortcut): kernel, width, depth.

  References:
    He et al., "Deep Residual Learning for Image Recognition", https://arxiv.org/abs/1512.03385
  """

  options = {"kernel": (3, 5), "width": (0.5, 0.75, 1.0), "depth": (1, 2, 3)}

  def stage(self, x, cfg, filters, stride, name):
    filters = _width(filters, cfg["width"])
    for d in range(cfg["depth"]):
      block, inputs, s = f"{name}_block{d + 1}", x, stride if d == 0 else 1
      x = conv_bn_relu(x, filters, f"{block}_a", cfg["kernel"], s)
      x = _layers.Conv2D(filters, cfg["kernel"], padding="same", use_bias=False,
                         name=f"{block}_b_conv")(x)
      x = _layers.BatchNormalization(name=f"{block}_b_bn")(x)
      if s != 1 or inputs.shape[-1] != filters:
        inputs = _layers.Conv2D(filters, 1, s, use_bias=False, name=f"{block}_shortcut")(inputs)
        inputs = _layers.BatchNormalization(name=f"{block}_shortcut_bn")(inputs)
      x = _layers.Add(name=f"{block}_add")([inputs, x])
      x = _layers.ReLU(name=f"{block}_out")(x)
    return x


class BlockSpace(SearchSpace):
  """A user-defined space: named options and a function that builds the model.

  Args:
    options: dict from option name to the tuple of its values (one token each, in order).
    builder: ``builder(**values) -> tf_keras.Model`` with one keyword per option.

  Example:
    >>> space = BlockSpace({"filters": (8, 16, 32), "kernel": (3, 5)},
    ...                    lambda filters, kernel: my_net(filters, kernel))
  """

  def __init__(self, options, builder):
    if not options or any(len(v) == 0 for v in options.values()):
      raise ValueError(f"BlockSpace: every option needs at least one value, got {options!r}")
    self.options = {name: tuple(values) for name, values in options.items()}
    self.builder = builder

  @property
  def choices(self):
    return tuple(len(values) for values in self.options.values())

  def config(self, tokens):
    """The option values `tokens` pick, by name."""
    return {name: values[t] for (name, values), t in zip(self.options.items(),
                                                           self.check(tokens))}

  def build(self, tokens):
    return self.builder(**self.config(tokens))
