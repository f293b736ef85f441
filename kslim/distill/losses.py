"""Distillation losses: what a student is pulled towards, besides its labels.

Each loss is one weighted term of a `Distiller`'s objective, computed from the teacher's and
the student's logits and named intermediate outputs (`Features`):

=============  ====================================================================================
``SoftLabel``  Hinton KD: ``T^2 * KL(softmax(t / T) || softmax(s / T))`` on the logits
``L2``         mean squared difference of two tensors: a FitNet hint between intermediate layers
               (through a learned adapter when channel counts differ), or, with no layers, the
               logits (PaddleSlim's ``l2_loss``); `FitNet` is the same class
``FSP``        mean squared difference of flow-of-solution-procedure Gram matrices between pairs
               of layers (PaddleSlim's ``fsp_loss``)
=============  ====================================================================================

The hard-label loss is the one given to ``Distiller.compile(loss=...)``; these terms add to it.
The losses are Keras layers so that learned parts (the adapters) are tracked, trained,
checkpointed and distributed with the `Distiller` that owns them; they serialize through
`get_config`. Adapters only serve training and are dropped with the distiller: the student
never contains them.

Example:
  >>> losses = [SoftLabel(temperature=4.0, weight=0.9),
  ...           FitNet("block3_relu", weight=0.5),
  ...           FSP([("block2_relu", "block3_relu")], weight=0.1)]
"""

import collections

import tensorflow as tf

from kslim._keras import keras

__all__ = ["Features", "DistillationLoss", "SoftLabel", "L2", "FitNet", "FSP", "soft_kl",
           "fsp_matrix"]

_register = keras.utils.register_keras_serializable(package="kslim")

Features = collections.namedtuple("Features", ["logits", "layers"])
Features.__doc__ = """One network's outputs for a batch: `logits` and ``layers``, a dict from
layer name to that layer's output, for the layers the losses asked for."""


def soft_kl(teacher_logits, student_logits, temperature):
  """Hinton's distillation term: ``T^2 * KL(softmax(t / T) || softmax(s / T))``, batch mean.

  The T^2 factor keeps the gradients' scale independent of T (Hinton et al. 2015, section 2).

  Args:
    teacher_logits: (N, C) logits of the network taught from (no gradient flows into them
      unless the caller wants it to).
    student_logits: (N, C) logits of the network being taught.
    temperature: T > 0.

  Returns:
    A scalar float32 tensor.

  References:
    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network",
    https://arxiv.org/abs/1503.02531
  """
  t = tf.cast(teacher_logits, tf.float32) / temperature
  s = tf.cast(student_logits, tf.float32) / temperature
  log_p_t = tf.nn.log_softmax(t, axis=-1)
  kl = tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - tf.nn.log_softmax(s, axis=-1)), axis=-1)
  return temperature ** 2 * tf.reduce_mean(kl)


def fsp_matrix(first, second):
  """The FSP (flow of solution procedure) matrix of two feature maps of one spatial size.

  ``G[n, i, j] = sum_{h,w} first[n, h, w, i] * second[n, h, w, j] / (H * W)``.

  Args:
    first: (N, H, W, C1) channels-last features.
    second: (N, H, W, C2) features of the same N, H, W.

  Returns:
    (N, C1, C2) float32.

  References:
    Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization
    and Transfer Learning", CVPR 2017.
  """
  first, second = tf.cast(first, tf.float32), tf.cast(second, tf.float32)
  positions = tf.cast(tf.reduce_prod(tf.shape(first)[1:-1]), tf.float32)
  return tf.einsum("nhwi,nhwj->nij", first, second) / positions


class DistillationLoss(keras.layers.Layer):
  """Base class: one weighted distillation term.

  Subclasses say which intermediate layers they read (`teacher_layers`, `student_layers`),
  may create adapters in `build_for`, and compute the unweighted term in `compute`.

  Args:
    weight: the term's weight in the distiller's total loss.
    name: the term's name; its metric is ``<name>_loss``.
  """

  def __init__(self, weight=1.0, name=None, **kwargs):
    super().__init__(name=name, **kwargs)
    if not weight >= 0:
      raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {weight!r}")
    self.weight = float(weight)

  @property
  def teacher_layers(self):
    """Names of the teacher's layers whose outputs `compute` reads."""
    return ()

  @property
  def student_layers(self):
    """Names of the student's layers whose outputs `compute` reads."""
    return ()

  def build_for(self, teacher_shapes, student_shapes):
    """Checks the layers' shapes and creates adapters; called once by the distiller.

    Args:
      teacher_shapes: dict from each of `teacher_layers` to its output's TensorShape, plus
        ``None`` for the logits.
      student_shapes: the same for the student.

    Raises:
      ValueError: shapes that cannot be compared, naming the layers.
    """
    del teacher_shapes, student_shapes
    self.built = True

  def compute(self, teacher, student):
    """The unweighted term for one batch, from the two networks' `Features`."""
    raise NotImplementedError

  def get_config(self):
    return {**super().get_config(), "weight": self.weight}


def _adapter(name, teacher_shape, student_shape):
  """A bias-free linear map over the last axis (a 1x1 convolution for feature maps) taking the
  student's channels to the teacher's, or None when they already match."""
  if teacher_shape[-1] == student_shape[-1]:
    return None
  adapter = keras.layers.Dense(teacher_shape[-1], use_bias=False, name=name)
  adapter.build(student_shape)
  return adapter


def _check_spatial(what, teacher_layer, teacher_shape, student_layer, student_shape):
  """Raises unless the shapes agree on every axis but the batch and the channels."""
  if (teacher_shape.rank != student_shape.rank
      or teacher_shape[1:-1].as_list() != student_shape[1:-1].as_list()):
    raise ValueError(
        f"{what}: teacher layer {teacher_layer!r} outputs {teacher_shape} but student layer "
        f"{student_layer!r} outputs {student_shape}; they must agree on every axis but the "
        "batch and the channels (an adapter maps the channels)")


@_register
class SoftLabel(DistillationLoss):
  """Hinton knowledge distillation on softened logits: ``T^2 * KL(p_t^T || p_s^T)``.

  Combine with the hard-label loss of ``Distiller.compile`` for Hinton's full objective (e.g.
  ``SoftLabel(4.0, weight=0.9)`` with ``Distiller(..., hard_label_weight=0.1)``).

  Args:
    temperature: T > 0; higher T exposes more of the teacher's "dark knowledge".
    weight: the term's weight.

  Example:
    >>> Distiller(student, teacher, [SoftLabel(temperature=4.0)])

  References:
    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network",
    https://arxiv.org/abs/1503.02531
  """

  def __init__(self, temperature=4.0, weight=1.0, name="soft_label", **kwargs):
    super().__init__(weight, name, **kwargs)
    if not temperature > 0:
      raise ValueError(f"SoftLabel: temperature must be > 0, got {temperature!r}")
    self.temperature = float(temperature)

  def build_for(self, teacher_shapes, student_shapes):
    if teacher_shapes[None][-1] != student_shapes[None][-1]:
      raise ValueError(f"SoftLabel: the teacher has {teacher_shapes[None][-1]} logits but the "
                       f"student {student_shapes[None][-1]}")
    super().build_for(teacher_shapes, student_shapes)

  def compute(self, teacher, student):
    return soft_kl(teacher.logits, student.logits, self.temperature)

  def get_config(self):
    return {**super().get_config(), "temperature": self.temperature}


@_register
class L2(DistillationLoss):
  """Mean squared difference between a teacher output and a student output.

  With layer names it is a FitNet hint: the student's intermediate features, through a learned
  linear adapter (a 1x1 convolution on feature maps) when their channel count differs from the
  teacher's, regress the teacher's. Without, it compares the logits, like PaddleSlim's
  ``l2_loss`` on the two networks' outputs.

  Args:
    teacher_layer: name of the teacher layer whose output is the target; None for the logits.
    student_layer: name of the student layer; defaults to `teacher_layer`.
    weight: the term's weight.
    name: defaults to ``fitnet`` for a hint and ``logits_l2`` for the logits.

  Example:
    >>> FitNet("block3_relu", "block3_relu", weight=0.5)   # a hint
    >>> L2(weight=0.1)                                      # logits

  References:
    Romero et al., "FitNets: Hints for Thin Deep Nets", https://arxiv.org/abs/1412.6550
  """

  def __init__(self, teacher_layer=None, student_layer=None, weight=1.0, name=None, **kwargs):
    student_layer = student_layer or teacher_layer
    if (teacher_layer is None) != (student_layer is None):
      raise ValueError("L2: give a teacher_layer for the student_layer "
                       f"{student_layer!r}, or neither to compare the logits")
    super().__init__(weight, name or ("fitnet" if teacher_layer else "logits_l2"), **kwargs)
    self.teacher_layer, self.student_layer = teacher_layer, student_layer
    self.adapter = None

  @property
  def teacher_layers(self):
    return (self.teacher_layer,) if self.teacher_layer else ()

  @property
  def student_layers(self):
    return (self.student_layer,) if self.student_layer else ()

  def build_for(self, teacher_shapes, student_shapes):
    t, s = teacher_shapes[self.teacher_layer], student_shapes[self.student_layer]
    if self.teacher_layer is None:
      if t[1:].as_list() != s[1:].as_list():
        raise ValueError(f"{self.name}: teacher logits {t} and student logits {s} differ")
    else:
      _check_spatial(self.name, self.teacher_layer, t, self.student_layer, s)
      self.adapter = _adapter(f"{self.name}_adapter", t, s)
    super().build_for(teacher_shapes, student_shapes)

  def compute(self, teacher, student):
    if self.teacher_layer is None:
      t, s = teacher.logits, student.logits
    else:
      t, s = teacher.layers[self.teacher_layer], student.layers[self.student_layer]
      if self.adapter is not None:
        s = self.adapter(s)
    return tf.reduce_mean(tf.square(tf.cast(t, tf.float32) - tf.cast(s, tf.float32)))

  def get_config(self):
    return {**super().get_config(), "teacher_layer": self.teacher_layer,
            "student_layer": self.student_layer}


FitNet = L2


@_register
class FSP(DistillationLoss):
  """Flow-of-solution-procedure loss: the student's FSP matrices regress the teacher's.

  For each pair of layers (first, second) of one spatial size, the FSP matrix is
  ``G = sum_{h,w} F1[h, w, :]^T F2[h, w, :] / (H * W)`` (`fsp_matrix`); the term is the mean
  squared difference between teacher and student matrices, averaged over the pairs. When the
  student's channel counts differ from the teacher's, its feature maps first pass through
  learned 1x1 adapters to the teacher's channels.

  Args:
    teacher_pairs: list of (first layer, second layer) names in the teacher.
    student_pairs: the matching pairs in the student; defaults to `teacher_pairs`.
    weight: the term's weight.

  Example:
    >>> FSP([("block2_relu", "block3_relu"), ("block4_relu", "block5_relu")], weight=0.1)

  References:
    Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization
    and Transfer Learning", CVPR 2017.
  """

  def __init__(self, teacher_pairs, student_pairs=None, weight=1.0, name="fsp", **kwargs):
    super().__init__(weight, name, **kwargs)
    self.teacher_pairs = self._pairs(teacher_pairs, "teacher_pairs")
    self.student_pairs = self._pairs(student_pairs or teacher_pairs, "student_pairs")
    if len(self.teacher_pairs) != len(self.student_pairs):
      raise ValueError(f"FSP: {len(self.teacher_pairs)} teacher pairs but "
                       f"{len(self.student_pairs)} student pairs")
    self.adapters = {}

  @staticmethod
  def _pairs(pairs, what):
    pairs = [tuple(p) for p in pairs]
    if not pairs or any(len(p) != 2 or not all(isinstance(n, str) for n in p) for p in pairs):
      raise ValueError(f"FSP: {what} must be a non-empty list of (first, second) layer names, "
                       f"got {pairs!r}")
    return pairs

  @property
  def teacher_layers(self):
    return tuple(dict.fromkeys(n for p in self.teacher_pairs for n in p))

  @property
  def student_layers(self):
    return tuple(dict.fromkeys(n for p in self.student_pairs for n in p))

  def build_for(self, teacher_shapes, student_shapes):
    for i, (t_pair, s_pair) in enumerate(zip(self.teacher_pairs, self.student_pairs)):
      for names, shapes in ((t_pair, teacher_shapes), (s_pair, student_shapes)):
        first, second = (shapes[n] for n in names)
        if first.rank != 4 or first[1:3].as_list() != second[1:3].as_list():
          raise ValueError(f"{self.name}: layers {names[0]!r} {first} and {names[1]!r} "
                           f"{second} must be (N, H, W, C) feature maps of one spatial size")
      for k in range(2):
        t, s = teacher_shapes[t_pair[k]], student_shapes[s_pair[k]]
        _check_spatial(self.name, t_pair[k], t, s_pair[k], s)
        adapter = self.adapters.get(s_pair[k])
        if adapter is not None and adapter.units != t[-1]:
          raise ValueError(f"{self.name}: student layer {s_pair[k]!r} is paired with teacher "
                           f"layers of {adapter.units} and {t[-1]} channels")
        adapter = adapter or _adapter(f"{self.name}_adapter_{s_pair[k]}", t, s)
        if adapter is not None:
          self.adapters[s_pair[k]] = adapter
    super().build_for(teacher_shapes, student_shapes)

  def student_matrix(self, student, pair):
    """The student's FSP matrices for one of its pairs, through the adapters."""
    first, second = (student.layers[n] for n in pair)
    first = self.adapters[pair[0]](first) if pair[0] in self.adapters else first
    second = self.adapters[pair[1]](second) if pair[1] in self.adapters else second
    return fsp_matrix(first, second)

  def compute(self, teacher, student):
    terms = [tf.reduce_mean(tf.square(
        fsp_matrix(*(teacher.layers[n] for n in t_pair)) - self.student_matrix(student, s_pair)))
             for t_pair, s_pair in zip(self.teacher_pairs, self.student_pairs)]
    return tf.add_n(terms) / len(terms)

  def get_config(self):
    return {**super().get_config(), "teacher_pairs": [list(p) for p in self.teacher_pairs],
            "student_pairs": [list(p) for p in self.student_pairs]}
