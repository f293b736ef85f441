"""Once-for-All: one elastic MobileNetV2-style supernet, trained once, many subnets.

Every inverted-residual block holds its largest weights; a subnet configuration picks, per
block, the depthwise kernel size (the centre of the largest kernel) and the expansion ratio
(the first channels of the expansion), and per stage the depth (the first blocks). The
supernet runs any configuration without retracing: the choices live in non-trainable
variables and act as masks (kernel centre, active channels, skipped blocks), which compute
exactly what the smaller network computes. `OFASupernet.extract` builds that smaller network
as a standalone tf_keras model with the sliced weights, ready for `kslim.convert`.

`OFA` trains the supernet by progressive shrinking (full network, then elastic kernel, depth
and width) with knowledge distillation from the full network (`kslim.distill.losses.soft_kl`);
before the width phase every block's hidden channels are sorted by importance, as in the OFA
paper, so the narrow subnets keep the channels that matter.
Every shrinking step averages the gradients of the phase's smallest subnet and random ones
(BigNAS's sandwich rule: the smallest subnets, which one random draw per step almost never
reaches, train at every step). `OFA.pick` finds the best subnet under a
MACs, params or latency-table budget without retraining (batch-norm statistics recalibrated
per subnet).

References:
  Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment",
  https://arxiv.org/abs/1908.09791
  Yu et al., "BigNAS: Scaling Up Neural Architecture Search with Big Single-Stage Models",
  https://arxiv.org/abs/2003.11142
"""

import itertools

import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from kslim._keras import keras
from kslim.distill.losses import soft_kl
from kslim.nas.batch_norm import recalibrate_batch_norm
from kslim.nas.checkpoint import EpochCheckpoint
from kslim.training import model_accuracy

__all__ = ["OFASupernet", "OFA", "PHASES", "parse_epochs"]

_L = keras.layers
PHASES = ("full", "kernel", "depth", "width")  # progressive shrinking, in order


def parse_epochs(text):
  """Epochs per phase from the command lines' ``"full=2,kernel=1,..."`` form.

  Raises:
    ValueError: an item that is not ``phase=epochs`` with a phase of `PHASES` (named).
  """
  epochs = {}
  for item in filter(None, text.split(",")):
    phase, _, count = item.partition("=")
    if phase not in PHASES or not count.isdigit():
      raise ValueError(f"{item!r} is not phase=epochs with a phase of {PHASES}")
    epochs[phase] = int(count)
  return epochs


class OFASupernet(keras.Model):
  """The elastic supernet: stem, stages of elastic inverted residuals, 1x1 head, classifier.

  A configuration is a dict ``{"kernel": [per block], "expand": [per block], "depth": [per
  stage]}`` with ``len(stages) * max(depths)`` blocks; blocks past a stage's depth are skipped.

  Args:
    input_shape: (H, W, C) of one input.
    num_classes: logits out.
    stages: (output channels, stride) per stage.
    kernels, expands, depths: the elastic choices (largest last).
    stem_channels, head_channels: the fixed stem and head widths.
  """

  def __init__(self, input_shape=(28, 28, 1), num_classes=10, stages=((16, 1), (24, 2), (32, 2)),
               kernels=(3, 5), expands=(3, 4, 6), depths=(1, 2, 3), stem_channels=16,
               head_channels=64, **kwargs):
    super().__init__(**kwargs)
    self.image_shape, self.num_classes = tuple(input_shape), num_classes
    self.stages = tuple(tuple(s) for s in stages)
    self.kernels, self.expands, self.depths = tuple(kernels), tuple(expands), tuple(depths)
    self.stem_channels, self.head_channels = stem_channels, head_channels
    self.max_depth, self.max_kernel = max(depths), max(kernels)
    self.stem = [_L.Conv2D(stem_channels, 3, padding="same", use_bias=False, name="stem_conv"),
                 _L.BatchNormalization(name="stem_bn")]
    self.blocks = []  # (stage, index in stage, in channels, out channels, stride, layers)
    channels = stem_channels
    for s, (out, stride) in enumerate(self.stages):
      for d in range(self.max_depth):
        hidden, name = channels * max(expands), f"s{s + 1}b{d + 1}"
        self.blocks.append((s, d, channels, out, stride if d == 0 else 1, {
            "expand": _L.Conv2D(hidden, 1, use_bias=False, name=f"{name}_expand"),
            "expand_bn": _L.BatchNormalization(name=f"{name}_expand_bn"),
            "dw": _L.DepthwiseConv2D(self.max_kernel, stride if d == 0 else 1, padding="same",
                                     use_bias=False, name=f"{name}_dw"),
            "dw_bn": _L.BatchNormalization(name=f"{name}_dw_bn"),
            "project": _L.Conv2D(out, 1, use_bias=False, name=f"{name}_project"),
            "project_bn": _L.BatchNormalization(name=f"{name}_project_bn")}))
        self.blocks[-1][-1]["dw"].build((None, None, None, hidden))  # used via its kernel
        channels = out
    self.head = [_L.Conv2D(head_channels, 1, use_bias=False, name="head_conv"),
                 _L.BatchNormalization(name="head_bn")]
    self.classifier = _L.Dense(num_classes, name="logits")
    n = len(self.blocks)
    self._kernel = tf.Variable([self.max_kernel] * n, trainable=False, name="active_kernel")
    self._expand = tf.Variable([max(expands)] * n, trainable=False, name="active_expand")
    self._depth = tf.Variable([self.max_depth] * len(self.stages), trainable=False,
                              name="active_depth")
    self(tf.zeros((1, *self.image_shape)))  # builds every weight

  # Configurations -----------------------------------------------------------------------------

  def largest(self):
    """The full network's configuration."""
    n = len(self.blocks)
    return {"kernel": [self.max_kernel] * n, "expand": [max(self.expands)] * n,
            "depth": [self.max_depth] * len(self.stages)}

  def random_config(self, rng, phase="width"):
    """A random configuration allowed in progressive-shrinking `phase` (see `PHASES`)."""
    config, n = self.largest(), len(self.blocks)
    if phase in ("kernel", "depth", "width"):
      config["kernel"] = [int(rng.choice(self.kernels)) for _ in range(n)]
    if phase in ("depth", "width"):
      config["depth"] = [int(rng.choice(self.depths)) for _ in self.stages]
    if phase == "width":
      config["expand"] = [int(rng.choice(self.expands)) for _ in range(n)]
    return config

  def smallest(self, phase="width"):
    """The smallest configuration allowed in progressive-shrinking `phase`."""
    config, n = self.largest(), len(self.blocks)
    if phase in ("kernel", "depth", "width"):
      config["kernel"] = [min(self.kernels)] * n
    if phase in ("depth", "width"):
      config["depth"] = [min(self.depths)] * len(self.stages)
    if phase == "width":
      config["expand"] = [min(self.expands)] * n
    return config

  def check(self, config):
    """`config` with its lists validated; a ValueError names the bad entry."""
    n = len(self.blocks)
    for key, allowed, length in (("kernel", self.kernels, n), ("expand", self.expands, n),
                                 ("depth", self.depths, len(self.stages))):
      values = list(config.get(key, ()))
      if len(values) != length or any(v not in allowed for v in values):
        raise ValueError(f"OFA config {key!r} must be {length} values of {allowed}, got "
                         f"{values}")
    return {k: [int(v) for v in config[k]] for k in ("kernel", "expand", "depth")}

  def set_config(self, config):
    """Makes the supernet run `config` (no retracing: the choices are variables)."""
    config = self.check(config)
    self._kernel.assign(config["kernel"])
    self._expand.assign(config["expand"])
    self._depth.assign(config["depth"])

  def sort_channels(self, optimizer=None):
    """Reorders every block's hidden (expansion) channels by importance, most important
    first: the L1 norm of each channel's projection weights (the OFA paper's channel
    sorting, done before the width phase). Width subnets keep a block's first channels, so
    after sorting they start from the channels that matter instead of arbitrary ones. The
    full network computes the same function: the expansion, depthwise and projection
    weights and both batch norms move together.

    Args:
      optimizer: the Adam optimizer training the supernet, if any; its moments of the
        reordered weights are reordered with them.

    Returns:
      Per block, the permutation applied (new position -> old channel index).
    """
    orders = []
    for *_, layers in self.blocks:
      importance = np.abs(layers["project"].kernel.numpy()).sum(axis=(0, 1, 3))
      order = np.argsort(-importance, kind="stable")
      moved = [(layers["expand"].kernel, 3), (layers["dw"].depthwise_kernel, 2),
               (layers["project"].kernel, 2)]
      moved += [(w, 0) for bn in ("expand_bn", "dw_bn") for w in layers[bn].weights]
      for variable, axis in moved:
        slots = [] if optimizer is None or not variable.trainable else _adam_moments(
            optimizer, variable)
        for v in [variable, *slots]:
          v.assign(np.take(v.numpy(), order, axis=axis))
      orders.append(order)
    return orders

  # Forward -------------------------------------------------------------------------------------

  def call(self, x, training=None):
    x = tf.nn.relu6(self.stem[1](self.stem[0](x), training=training))
    for i, (stage, d, cin, cout, stride, layers) in enumerate(self.blocks):
      hidden = cin * max(self.expands)
      active = tf.cast(tf.range(hidden) < cin * self._expand[i], x.dtype)
      half = self._kernel[i] // 2
      grid = tf.abs(tf.range(self.max_kernel) - self.max_kernel // 2) <= half
      kernel_mask = tf.cast(grid[:, None] & grid[None, :], x.dtype)[:, :, None, None]
      h = tf.nn.relu6(layers["expand_bn"](layers["expand"](x), training=training)) * active
      dw = layers["dw"]
      h = tf.nn.depthwise_conv2d(h, dw.depthwise_kernel * kernel_mask, [1, stride, stride, 1],
                                 "SAME")
      h = tf.nn.relu6(layers["dw_bn"](h, training=training)) * active
      h = layers["project_bn"](layers["project"](h), training=training)
      if d == 0:
        x = x + h if stride == 1 and cin == cout else h
      else:  # a block past the stage's depth is skipped: identity
        x = x + tf.cast(d < self._depth[stage], x.dtype) * h
    x = tf.nn.relu6(self.head[1](self.head[0](x), training=training))
    return self.classifier(tf.reduce_mean(x, axis=[1, 2]))

  # Extraction ----------------------------------------------------------------------------------

  def extract(self, config):
    """The subnet of `config` as a standalone functional tf_keras model with sliced weights.

    In inference mode it computes what the supernet computes with ``set_config(config)``.
    """
    config = self.check(config)
    copies = []  # (new layer, its weights), set once the model is built

    def made(layer, weights):
      copies.append((layer, weights))
      return layer

    def bn(name, source, c=None):
      return made(_L.BatchNormalization(name=name), [w[:c] for w in source.get_weights()])

    inputs = keras.Input(self.image_shape, name="image")
    x = made(_L.Conv2D(self.stem_channels, 3, padding="same", use_bias=False, name="stem_conv"),
             self.stem[0].get_weights())(inputs)
    x = _L.ReLU(6.0, name="stem_relu")(bn("stem_bn", self.stem[1])(x))
    for i, (stage, d, cin, cout, stride, layers) in enumerate(self.blocks):
      if d >= config["depth"][stage]:
        continue
      k, c, name = config["kernel"][i], cin * config["expand"][i], f"s{stage + 1}b{d + 1}"
      crop = (self.max_kernel - k) // 2
      h = made(_L.Conv2D(c, 1, use_bias=False, name=f"{name}_expand"),
               [layers["expand"].get_weights()[0][..., :c]])(x)
      h = _L.ReLU(6.0, name=f"{name}_expand_relu")(bn(f"{name}_expand_bn",
                                                      layers["expand_bn"], c)(h))
      kernel = layers["dw"].get_weights()[0][crop:crop + k, crop:crop + k, :c]
      h = made(_L.DepthwiseConv2D(k, stride, padding="same", use_bias=False, name=f"{name}_dw"),
               [kernel])(h)
      h = _L.ReLU(6.0, name=f"{name}_dw_relu")(bn(f"{name}_dw_bn", layers["dw_bn"], c)(h))
      h = made(_L.Conv2D(cout, 1, use_bias=False, name=f"{name}_project"),
               [layers["project"].get_weights()[0][:, :, :c]])(h)
      h = bn(f"{name}_project_bn", layers["project_bn"])(h)
      residual = d > 0 or (stride == 1 and cin == cout)
      x = _L.Add(name=f"{name}_add")([x, h]) if residual else h
    x = made(_L.Conv2D(self.head_channels, 1, use_bias=False, name="head_conv"),
             self.head[0].get_weights())(x)
    x = _L.ReLU(6.0, name="head_relu")(bn("head_bn", self.head[1])(x))
    x = _L.GlobalAveragePooling2D(name="pool")(x)
    outputs = made(_L.Dense(self.num_classes, name="logits"), self.classifier.get_weights())(x)
    model = keras.Model(inputs, outputs, name="ofa_subnet")
    for layer, weights in copies:
      layer.set_weights(weights)
    return model


def _adam_moments(optimizer, variable):
  """Adam's first and second moments of `variable`. tf_keras keeps them in lists indexed by
  a variable key and has no public accessor (variable names are not unique here: every
  depthwise kernel is "depthwise_kernel")."""
  # pylint: disable=protected-access
  index = optimizer._index_dict[optimizer._var_key(variable)]
  return optimizer._momentums[index], optimizer._velocities[index]


class OFA:
  """Progressive-shrinking training of an `OFASupernet`, and subnet selection under a budget.

  Args:
    supernet: the `OFASupernet`.
    learning_rate: Adam's learning rate.
    kd_weight: weight of the distillation term from the full network (phases after "full").
    temperature: the distillation temperature.
    subnets_per_step: subnets trained per shrinking step, gradients averaged: the phase's
      smallest and ``subnets_per_step - 1`` random ones; 1 trains one random subnet per step
      (the original OFA recipe).

  Example:
    >>> ofa = OFA(OFASupernet())
    >>> ofa.train(x, y, epochs={"full": 2, "kernel": 1, "depth": 1, "width": 1})
    >>> config, model = ofa.pick(Constraint("macs", 1e6), x_val, y_val, x_calib=x[:1000])
  """

  def __init__(self, supernet, learning_rate=2e-3, kd_weight=1.0, temperature=1.0,
               subnets_per_step=2):
    if subnets_per_step < 1:
      raise ValueError(f"OFA: subnets_per_step must be >= 1, got {subnets_per_step!r}")
    self.supernet = supernet
    self.subnets_per_step = subnets_per_step
    self.optimizer = keras.optimizers.Adam(learning_rate)
    self.kd_weight, self.temperature = kd_weight, temperature
    self.teacher = None
    self.trials = []  # what the last pick() looked at
    self._loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  @tf.function
  def _gradients(self, x, y, teacher_logits, kd_weight):
    """Loss and gradients of the active subnet on one batch."""
    with tf.GradientTape() as tape:
      logits = self.supernet(x, training=True)
      loss = self._loss(y, logits) + kd_weight * soft_kl(teacher_logits, logits,
                                                         self.temperature)
    return loss, tape.gradient(loss, self.supernet.trainable_weights)

  def _step(self, xb, yb, configs, teacher_logits, kd_weight):
    """One optimizer step on the mean gradient of the `configs` subnets; their mean loss."""
    total_loss, total = 0.0, None
    for config in configs:
      self.supernet.set_config(config)
      loss, gradients = self._gradients(xb, yb, teacher_logits, kd_weight)
      total_loss += float(loss)
      total = gradients if total is None else [t + g for t, g in zip(total, gradients)]
    scale = 1.0 / len(configs)
    self.optimizer.apply_gradients(zip([g * scale for g in total],
                                       self.supernet.trainable_weights))
    return total_loss * scale

  def train(self, x, y, epochs, batch_size=128, seed=0, progress=True, checkpoint_dir=None,
            calibration_images=1000):
    """Runs the progressive-shrinking phases.

    Args:
      x, y: training images and labels.
      epochs: dict from phase (`PHASES`) to its epochs; missing phases are skipped.
      batch_size: batch size.
      seed: seed of the shuffling and the subnet sampling (epoch i of the whole schedule
        draws from ``(seed, i)``).
      progress: show tqdm bars.
      checkpoint_dir: when given, the supernet, the optimizer and the distillation teacher
        are saved after every epoch, and a restarted training resumes after the last one.
      calibration_images: the first this many images recalibrate the teacher's batch-norm
        statistics when it is frozen. The supernet's running statistics mix every subnet's
        and, after a short full phase, have not settled: a teacher using them would
        distil near-random logits (measured: the full network scored 9% with them, 86%
        recalibrated, and one kernel epoch of distilling those logits took it to 58%).
    """
    unknown = set(epochs) - set(PHASES)
    if unknown:
      raise ValueError(f"OFA.train: unknown phases {sorted(unknown)}; phases are {PHASES}")
    schedule = [(phase, e) for phase in PHASES for e in range(epochs.get(phase, 0))]
    first_shrinking = epochs.get("full", 0)  # the full network becomes the teacher here
    self.supernet(x[:1])
    self.teacher = self.supernet.extract(self.supernet.largest())
    self.optimizer.build(self.supernet.trainable_weights)
    state = EpochCheckpoint(checkpoint_dir, supernet=self.supernet, optimizer=self.optimizer,
                            teacher=self.teacher)
    for index in range(state.epochs_done, len(schedule)):
      phase, epoch = schedule[index]
      if phase == "width" and epoch == 0:  # the narrowest subnets keep the best channels
        self.supernet.sort_channels(self.optimizer)
      if index == first_shrinking:  # freeze a copy of the trained full network
        self.supernet.set_config(self.supernet.largest())
        self.teacher.set_weights(self.supernet.extract(self.supernet.largest()).get_weights())
        recalibrate_batch_norm(self.teacher, x[:calibration_images])
      rng = np.random.default_rng([seed, index])
      order = rng.permutation(len(x))
      bar = tqdm(range(len(x) // batch_size), desc=f"OFA {phase} {epoch + 1}/{epochs[phase]}",
                 disable=not progress)
      for s in bar:
        batch = order[s * batch_size:(s + 1) * batch_size]
        xb, yb = x[batch], y[batch]
        if phase == "full":
          configs = [self.supernet.largest()]
          teacher_logits, kd = tf.zeros((len(batch), self.supernet.num_classes)), 0.0
        else:
          configs = [self.supernet.smallest(phase)] if self.subnets_per_step > 1 else []
          configs += [self.supernet.random_config(rng, phase)
                      for _ in range(self.subnets_per_step - len(configs))]
          teacher_logits, kd = self.teacher(xb, training=False), self.kd_weight
        loss = self._step(xb, yb, configs, teacher_logits, tf.constant(kd, tf.float32))
        bar.set_postfix(loss=f"{loss:.3f}")
      state.epoch_finished()
    self.supernet.set_config(self.supernet.largest())

  def pick(self, constraint, x_val, y_val, x_calib, samples=20, seed=0):
    """The most accurate of `samples` random subnets within `constraint` (plus the smallest
    and largest), each extracted, batch-norm recalibrated on `x_calib` and scored on the
    held-out `x_val`.

    Returns:
      ``(config, model, accuracy)`` of the best subnet within budget. ``self.trials`` lists
      every subnet looked at: config, cost (None without a constraint) and held-out accuracy
      (None when over budget, so never trained or scored).

    Raises:
      ValueError: no sampled subnet fits the budget.
    """
    rng = np.random.default_rng(seed)
    candidates = itertools.chain([self.supernet.smallest(), self.supernet.largest()],
                                 (self.supernet.random_config(rng) for _ in range(samples)))
    best, self.trials = None, []
    for config in candidates:
      model = self.supernet.extract(config)
      cost = None if constraint is None else constraint.value(model)
      if cost is not None and cost > constraint.budget:
        self.trials.append({"config": config, "cost": cost, "accuracy": None})
        continue
      recalibrate_batch_norm(model, x_calib)
      score = model_accuracy(model, x_val, y_val)
      self.trials.append({"config": config, "cost": cost, "accuracy": score})
      logging.info("OFA subnet %s: held-out accuracy %.4f", config, score)
      if best is None or score > best[2]:
        best = (config, model, score)
    if best is None:
      raise ValueError(f"OFA.pick: no subnet within {constraint} among {samples + 2} sampled")
    return best
