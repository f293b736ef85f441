"""`DARTS`: differentiable architecture search over a cell-based supernet.

Every edge of a cell is a mixed op, ``sum_o softmax(alpha)_o * o(x)`` over the candidate
operations (`PRIMITIVES`); the architecture parameters alpha (one row per edge, one set for
normal and one for reduction cells) are trained on held-out batches, alternating with the
network weights on training batches (the first-order bilevel approximation). The genotype keeps,
for every intermediate node, its two strongest incoming edges with their strongest op other
than ``none``; `build_network` turns a genotype into a plain tf_keras functional model to train
from scratch. `kslim.nas.PCDARTS` runs on the same machinery with partial channels and edge
normalization.

References:
  Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search",
  https://arxiv.org/abs/1806.09055
"""

import collections

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from kslim._keras import keras
from kslim.nas.checkpoint import EpochCheckpoint

__all__ = ["PRIMITIVES", "Genotype", "Supernet", "DARTS", "build_network", "edge_count"]

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")

Genotype = collections.namedtuple("Genotype", ["normal", "reduce"])
Genotype.__doc__ = """A discrete cell pair: ``normal`` and ``reduce`` are lists, per
intermediate node, of two ``(op name, input index)`` pairs; inputs 0 and 1 are the two
previous cells' outputs, input ``i + 2`` is intermediate node ``i``."""

_L = keras.layers


def edge_count(steps):
  """Edges of a cell with `steps` intermediate nodes (node i has i + 2 inputs)."""
  return sum(i + 2 for i in range(steps))


def _bn(affine):
  return _L.BatchNormalization(center=affine, scale=affine)


def _operation(name, channels, stride, affine):
  """The layer of one candidate op: channels in equal channels out, `stride` 1 or 2."""
  if name == "none":
    return _L.Lambda(lambda x: tf.zeros_like(x[:, ::stride, ::stride, :]))  # supernet only
  if name in ("max_pool_3x3", "avg_pool_3x3"):
    pool = _L.MaxPooling2D if name == "max_pool_3x3" else _L.AveragePooling2D
    return pool(3, stride, padding="same")
  if name == "skip_connect":
    if stride == 1:
      return _L.Activation("linear")  # identity, as a layer that serializes
    return keras.Sequential([_L.ReLU(), _L.Conv2D(channels, 1, stride, use_bias=False),
                             _bn(affine)])
  kernel = int(name[-1])
  if name.startswith("sep_conv"):  # two depthwise-separable convolutions, as in DARTS
    return keras.Sequential([
        _L.ReLU(), _L.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False),
        _L.Conv2D(channels, 1, use_bias=False), _bn(affine),
        _L.ReLU(), _L.DepthwiseConv2D(kernel, padding="same", use_bias=False),
        _L.Conv2D(channels, 1, use_bias=False), _bn(affine)])
  # dil_conv: Keras refuses dilation with strides > 1, so dilate at stride 1 and subsample
  # (a 1x1 max pool of stride s keeps every s-th pixel: x[:, ::s, ::s]).
  return keras.Sequential([
      _L.ReLU(), _L.DepthwiseConv2D(kernel, padding="same", dilation_rate=2, use_bias=False),
      *([_L.MaxPooling2D(1, stride)] if stride > 1 else []),
      _L.Conv2D(channels, 1, use_bias=False), _bn(affine)])


def channel_shuffle(x, groups):
  """Interleaves `groups` equal channel groups (ShuffleNet), channels last."""
  shape = tf.shape(x)
  channels = x.shape[-1]
  x = tf.reshape(x, [shape[0], shape[1], shape[2], groups, channels // groups])
  x = tf.transpose(x, [0, 1, 2, 4, 3])
  return tf.reshape(x, [shape[0], shape[1], shape[2], channels])


class MixedOp(_L.Layer):
  """``sum_o w_o * o(x)`` over `PRIMITIVES`; with ``partial > 1`` only the first
  ``channels / partial`` channels go through the ops and the rest bypass them, then the
  channels are shuffled (PC-DARTS)."""

  def __init__(self, channels, stride, partial=1, **kwargs):
    super().__init__(**kwargs)
    if channels % partial:
      raise ValueError(f"MixedOp: {channels} channels do not split into {partial} parts")
    self.channels, self.stride, self.partial = channels, stride, partial
    self.ops = [_operation(name, channels // partial, stride, affine=False)
                for name in PRIMITIVES]

  def call(self, x, weights, training=None):
    active = x[..., :self.channels // self.partial] if self.partial > 1 else x
    out = tf.add_n([weights[i] * op(active, training=training) for i, op in enumerate(self.ops)])
    if self.partial == 1:
      return out
    bypass = x[..., self.channels // self.partial:]
    if self.stride > 1:
      bypass = tf.nn.max_pool2d(bypass, 2, 2, "VALID" if x.shape[1] % 2 == 0 else "SAME")
    return channel_shuffle(tf.concat([out, bypass], axis=-1), self.partial)


def _cell_plan(layers, channels):
  """Per cell of the macro network: (is a reduction cell, follows one, its channels).

  Reductions sit at 1/3 and 2/3 of the depth (with at least 3 cells) and double the channels.
  """
  plan, reduce_previous = [], False
  for i in range(layers):
    reduction = i in (layers // 3, 2 * layers // 3) and layers >= 3
    channels = channels * 2 if reduction else channels
    plan.append((reduction, reduce_previous, channels))
    reduce_previous = reduction
  return plan


def _preprocess(channels, reduce_input, affine):
  """Brings a previous cell's output to `channels` (and halves it when it is a step behind)."""
  return keras.Sequential([_L.ReLU(), _L.Conv2D(channels, 1, 2 if reduce_input else 1,
                                                use_bias=False), _bn(affine)])


class SearchCell(_L.Layer):
  """A cell of mixed ops: each intermediate node sums its (weighted) incoming edges."""

  def __init__(self, steps, channels, reduction, reduce_previous, partial=1, **kwargs):
    super().__init__(**kwargs)
    self.steps, self.reduction = steps, reduction
    self.pre0 = _preprocess(channels, reduce_previous, affine=False)
    self.pre1 = _preprocess(channels, False, affine=False)
    self.edges = [MixedOp(channels, 2 if reduction and j < 2 else 1, partial)
                  for i in range(steps) for j in range(i + 2)]

  def call(self, s0, s1, weights, edge_weights=None, training=None):
    states = [self.pre0(s0, training=training), self.pre1(s1, training=training)]
    offset = 0
    for i in range(self.steps):
      terms = [self.edges[offset + j](h, weights[offset + j], training=training)
               for j, h in enumerate(states)]
      if edge_weights is not None:
        terms = [edge_weights[offset + j] * t for j, t in enumerate(terms)]
      states.append(tf.add_n(terms))
      offset += len(terms)
    return tf.concat(states[2:], axis=-1)


class Supernet(keras.Model):
  """The DARTS search network: stem, `layers` cells (reduction at 1/3 and 2/3), classifier.

  Args:
    num_classes: logits out.
    channels: initial cell channels (doubled at each reduction).
    layers: number of cells.
    steps: intermediate nodes per cell.
    partial: PC-DARTS' channel proportion K (1: DARTS).
    edge_normalization: PC-DARTS' per-edge weights beta, softmax over a node's inputs.
  """

  def __init__(self, num_classes=10, channels=8, layers=3, steps=4, partial=1,
               edge_normalization=False, **kwargs):
    super().__init__(**kwargs)
    self.steps, self.edge_normalization = steps, edge_normalization
    edges = edge_count(steps)
    init = keras.initializers.RandomNormal(stddev=1e-3, seed=0)
    self.alpha_normal = self.add_weight("alpha_normal", (edges, len(PRIMITIVES)), initializer=init)
    self.alpha_reduce = self.add_weight("alpha_reduce", (edges, len(PRIMITIVES)), initializer=init)
    self.beta_normal = self.beta_reduce = None
    if edge_normalization:
      self.beta_normal = self.add_weight("beta_normal", (edges,), initializer=init)
      self.beta_reduce = self.add_weight("beta_reduce", (edges,), initializer=init)
    self.stem = keras.Sequential([_L.Conv2D(3 * channels, 3, padding="same", use_bias=False),
                                  _bn(True)])
    self.cells = [SearchCell(steps, c, reduction, reduce_previous, partial)
                  for reduction, reduce_previous, c in _cell_plan(layers, channels)]
    self.pool = _L.GlobalAveragePooling2D()
    self.classifier = _L.Dense(num_classes)

  @property
  def arch_weights(self):
    """The architecture parameters (alpha, and beta with edge normalization)."""
    betas = [self.beta_normal, self.beta_reduce] if self.edge_normalization else []
    return [self.alpha_normal, self.alpha_reduce, *betas]

  @property
  def network_weights(self):
    """Every trainable weight but the architecture parameters."""
    arch = {id(w) for w in self.arch_weights}
    return [w for w in self.trainable_weights if id(w) not in arch]

  def edge_weights(self, beta):
    """Per edge, softmax of beta over the edges entering the same node."""
    out, offset = [], 0
    for i in range(self.steps):
      out.append(tf.nn.softmax(beta[offset:offset + i + 2]))
      offset += i + 2
    return tf.concat(out, axis=0)

  def call(self, x, training=None):
    s0 = s1 = self.stem(x, training=training)
    for cell in self.cells:
      alpha = self.alpha_reduce if cell.reduction else self.alpha_normal
      beta = self.beta_reduce if cell.reduction else self.beta_normal
      edges = self.edge_weights(beta) if self.edge_normalization else None
      s0, s1 = s1, cell(s0, s1, tf.nn.softmax(alpha, axis=-1), edges, training=training)
    return self.classifier(self.pool(s1))

  def genotype(self):
    """The discrete cells: per node the two strongest edges and their best non-none op.

    An edge's strength is its largest op weight other than ``none`` (times its normalized
    beta with edge normalization), as in DARTS' and PC-DARTS' ``genotype()``.
    """
    def parse(alpha, beta):
      weights = tf.nn.softmax(alpha, axis=-1).numpy()
      if beta is not None:
        weights = weights * self.edge_weights(beta).numpy()[:, None]
      none = PRIMITIVES.index("none")
      cell, offset = [], 0
      for i in range(self.steps):
        rows = weights[offset:offset + i + 2]
        strength = [max(w for k, w in enumerate(row) if k != none) for row in rows]
        best_edges = sorted(range(i + 2), key=lambda j: -strength[j])[:2]
        node = []
        for j in sorted(best_edges):
          row = rows[j].copy()
          row[none] = -np.inf
          node.append((PRIMITIVES[int(np.argmax(row))], j))
        cell.append(node)
        offset += i + 2
      return cell

    return Genotype(parse(self.alpha_normal, self.beta_normal),
                    parse(self.alpha_reduce, self.beta_reduce))


def build_network(genotype, input_shape=(28, 28, 1), num_classes=10, channels=16, layers=3):
  """The discrete network of `genotype` as a plain tf_keras functional model.

  Same macro structure as the supernet (stem, `layers` cells with reductions at 1/3 and 2/3,
  pooled classifier); each node sums its two chosen ops; ops use affine batch norm.
  """
  inputs = keras.Input(input_shape, name="image")
  s0 = s1 = _bn(True)(_L.Conv2D(3 * channels, 3, padding="same", use_bias=False,
                                name="stem_conv")(inputs))
  for i, (reduction, reduce_previous, c) in enumerate(_cell_plan(layers, channels)):
    nodes = genotype.reduce if reduction else genotype.normal
    states = [_preprocess(c, reduce_previous, True)(s0), _preprocess(c, False, True)(s1)]
    for node in nodes:
      states.append(_L.Add()([
          _operation(op, c, 2 if reduction and j < 2 else 1, affine=True)(states[j])
          for op, j in node]))
    # One node needs no concatenation (a one-input Concatenate does not reload).
    join = (_L.Concatenate(name=f"cell{i + 1}") if len(nodes) > 1
            else _L.Activation("linear", name=f"cell{i + 1}"))
    s0, s1 = s1, join(states[2:] if len(nodes) > 1 else states[2])
  x = _L.GlobalAveragePooling2D(name="pool")(s1)
  return keras.Model(inputs, _L.Dense(num_classes, name="logits")(x), name="darts_network")


class DARTS:
  """First-order DARTS: alternate architecture steps on held-out batches and weight steps on
  training batches of a `Supernet`.

  Args:
    num_classes, channels, layers, steps: the `Supernet`'s shape.
    weight_learning_rate: the network weights' learning rate (Adam).
    arch_learning_rate: the architecture parameters' learning rate (Adam, as in DARTS).
    arch_weight_decay: L2 decay on the architecture parameters.

  Example:
    >>> darts = DARTS(channels=8, layers=3)
    >>> genotype = darts.search(x_train, y_train, x_val, y_val, epochs=2)
    >>> model = build_network(genotype)   # train it from scratch
  """

  def __init__(self, num_classes=10, channels=8, layers=3, steps=4, weight_learning_rate=2e-3,
               arch_learning_rate=3e-4, arch_weight_decay=1e-3):
    self.supernet = self.make_supernet(num_classes, channels, layers, steps)
    self.weight_optimizer = keras.optimizers.Adam(weight_learning_rate)
    self.arch_optimizer = keras.optimizers.Adam(arch_learning_rate, beta_1=0.5, beta_2=0.999)
    self.arch_weight_decay = arch_weight_decay
    self._loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def make_supernet(self, num_classes, channels, layers, steps):
    """The supernet searched (full channels, no edge normalization)."""
    return Supernet(num_classes, channels, layers, steps)

  def _gradients(self, x, y, weights, decay=0.0):
    with tf.GradientTape() as tape:
      loss = self._loss(y, self.supernet(x, training=True))
      if decay:
        loss += decay * tf.add_n([tf.reduce_sum(tf.square(w)) for w in weights])
    return loss, tape.gradient(loss, weights)

  @tf.function
  def _step(self, x_train, y_train, x_val, y_val):
    arch = self.supernet.arch_weights
    _, grads = self._gradients(x_val, y_val, arch, self.arch_weight_decay)
    self.arch_optimizer.apply_gradients(zip(grads, arch))
    network = self.supernet.network_weights
    loss, grads = self._gradients(x_train, y_train, network)
    self.weight_optimizer.apply_gradients(zip(grads, network))
    return loss

  def search(self, x_train, y_train, x_val, y_val, epochs=1, batch_size=64, seed=0,
             progress=True, checkpoint_dir=None):
    """Runs `epochs` passes over the training data, each step also taking a held-out batch.

    Args:
      x_train, y_train: the data the network weights learn from.
      x_val, y_val: held-out data the architecture parameters learn from.
      epochs: passes over `x_train`, in total across resumes.
      batch_size: batch size of both.
      seed: seed of the batch order (epoch e draws from ``(seed, e)``).
      progress: show tqdm bars.
      checkpoint_dir: when given, the supernet and both optimizers are saved after every
        epoch, and a search restarted with the same directory resumes after the last one.

    Returns:
      The final `Genotype`.
    """
    self.supernet(x_train[:1])  # builds every weight before the tf.function traces
    self.weight_optimizer.build(self.supernet.network_weights)
    self.arch_optimizer.build(self.supernet.arch_weights)
    state = EpochCheckpoint(checkpoint_dir, supernet=self.supernet,
                            weight_optimizer=self.weight_optimizer,
                            arch_optimizer=self.arch_optimizer)
    steps = len(x_train) // batch_size
    for epoch in range(state.epochs_done, epochs):
      rng = np.random.default_rng([seed, epoch])
      order, val_order = rng.permutation(len(x_train)), rng.integers(0, len(x_val), len(x_train))
      bar = tqdm(range(steps), desc=f"{type(self).__name__} epoch {epoch + 1}/{epochs}",
                 disable=not progress)
      for s in bar:
        batch, val = order[s * batch_size:(s + 1) * batch_size], val_order[
            s * batch_size:(s + 1) * batch_size]
        loss = self._step(x_train[batch], y_train[batch], x_val[val], y_val[val])
        bar.set_postfix(loss=f"{float(loss):.3f}")
      state.epoch_finished()
    return self.supernet.genotype()
