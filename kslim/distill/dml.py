"""`DML`: deep mutual learning — peers that teach each other while they all train.

Each peer minimises its own hard-label loss plus the mean softened KL divergence from every
other peer's predictions to its own; the others' predictions count as fixed targets (no
gradient flows through them), so one optimizer step updates every peer by its own objective,
the simultaneous form of the paper's alternating updates.
"""

import tensorflow as tf

from kslim._keras import check_model, keras
from kslim.distill import _objective
from kslim.distill.losses import soft_kl

__all__ = ["DML"]


@keras.utils.register_keras_serializable(package="kslim")
class DML(_objective.ObjectiveModel):
  """Trains two or more peer models together with `fit`, each following the others.

  Per peer i: ``L_i = CE(y, z_i) + kl_weight * mean_{j != i} T^2 KL(softmax(z_j / T) ||
  softmax(z_i / T))``; the step minimises ``sum_i L_i``. The progress bar and history show
  ``loss`` (the sum) and, per peer, ``<peer>_loss``, ``<peer>_kl_loss`` and
  ``<peer>_accuracy``. One optimizer serves all peers: Adam and its kin keep per-weight
  state, so this equals one optimizer per peer.

  Args:
    models: two or more tf_keras models (logits out, one input shape). They are trained in
      place; `peers` returns them. Metrics are named after them, or ``peer0``, ``peer1``, ...
      when their names repeat.
    temperature: T of the softened KL (1 is the paper's).
    kl_weight: weight of the mimicry term.

  Raises:
    ValueError: fewer than two peers or different input shapes.

  Example:
    >>> dml = DML([reference_cnn(width=0.5), reference_cnn(width=0.5)])
    >>> dml.compile(keras.optimizers.Adam(2e-3))
    >>> dml.fit(x, y, epochs=5)
    >>> best = max(dml.peers, key=lambda m: m.evaluate(x_val, y_val)[1])

  References:
    Zhang et al., "Deep Mutual Learning", https://arxiv.org/abs/1706.00384
  """

  def __init__(self, models, temperature=1.0, kl_weight=1.0, name="dml", **kwargs):
    super().__init__(name=name, **kwargs)
    models = list(models)
    if len(models) < 2:
      raise ValueError(f"DML: needs at least two peer models, got {len(models)}")
    for i, model in enumerate(models):
      check_model(model, f"kslim.distill.DML (peer {i})")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
      names = [f"peer{i}" for i in range(len(models))]
    shapes = {str(m.input_shape) for m in models}
    if len(shapes) != 1:
      raise ValueError(f"DML: the peers take different inputs {sorted(shapes)}")
    if not temperature > 0:
      raise ValueError(f"DML: temperature must be > 0, got {temperature!r}")
    self._peers = models
    self.peer_names = names
    self.temperature = float(temperature)
    self.kl_weight = float(kl_weight)
    self.track(["loss", *(f"{n}_{part}" for n in names for part in ("loss", "kl_loss"))])
    self._accuracies = [keras.metrics.SparseCategoricalAccuracy(name=f"{n}_accuracy")
                        for n in names]
    self.built = True  # every peer is built; BackupAndRestore and load_weights need to know

  @property
  def peers(self):
    """The peer models, trained in place."""
    return list(self._peers)

  def call(self, inputs, training=None):
    """Every peer's logits, in order."""
    return [peer(inputs, training=training) for peer in self._peers]

  def objective(self, x, y, sample_weight, targets, training):
    del targets  # the peers teach each other
    logits = self(x, training=training)
    parts, total = {}, 0.0
    for i, (peer, name, z) in enumerate(zip(self._peers, self.peer_names, logits)):
      hard = _objective.per_example_mean(self.hard_label_loss, y, z, sample_weight)
      kl = tf.add_n([soft_kl(tf.stop_gradient(other), z, self.temperature)
                     for j, other in enumerate(logits) if j != i]) / (len(logits) - 1)
      peer_total = hard + self.kl_weight * kl
      if peer.losses:
        peer_total += tf.add_n(peer.losses)
      parts[f"{name}_loss"], parts[f"{name}_kl_loss"] = peer_total, kl
      total += peer_total
    parts["loss"] = total
    return total, parts, logits

  def weights_to_train(self):
    return [w for peer in self._peers for w in peer.trainable_weights]

  def update_prediction_metrics(self, y, logits, sample_weight):
    for metric, z in zip(self._accuracies, logits):
      metric.update_state(y, z, sample_weight)

  def get_config(self):
    return {"name": self.name, "models": [keras.saving.serialize_keras_object(m)
                                          for m in self._peers],
            "temperature": self.temperature, "kl_weight": self.kl_weight}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    config["models"] = [keras.saving.deserialize_keras_object(m, custom_objects=custom_objects)
                        for m in config["models"]]
    return cls(**config)
