"""What `Distiller` and `DML` share: a Keras model trained on an objective of named parts,
the hard-label loss, and the scaling of losses across replicas."""

import tensorflow as tf

from kslim._keras import keras

__all__ = ["ObjectiveModel", "hard_label_loss", "per_example_mean"]


def hard_label_loss(loss):
  """The per-example form of a hard-label loss (`compile`'s ``loss=``).

  A `keras.losses.Loss` is rebuilt with reduction NONE, so the training step averages it
  itself (Keras refuses batch-mean reductions in custom steps under a distribution strategy);
  a function is used as is. None means sparse categorical cross-entropy on logits.
  """
  if loss is None:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  loss = keras.losses.get(loss)
  if isinstance(loss, keras.losses.Loss):
    return type(loss).from_config({**loss.get_config(), "reduction": "none"})
  return loss


def per_example_mean(loss_fn, y, logits, sample_weight):
  """The replica's batch mean of ``loss_fn(y, logits)``, each example weighted by
  `sample_weight` when given (Keras' SUM_OVER_BATCH_SIZE: divided by the batch size)."""
  values = tf.cast(loss_fn(y, logits), tf.float32)
  if sample_weight is not None:
    values *= tf.reshape(tf.cast(sample_weight, tf.float32), tf.shape(values))
  return tf.reduce_mean(values)


class ObjectiveModel(keras.Model):
  """A model whose training step minimises a loss made of named parts, each one reported.

  Subclasses implement `objective` (the total loss, its parts and the logits for a batch),
  `weights_to_train`, and optionally `update_prediction_metrics`; they create their trackers
  with `track` in ``__init__``. The steps follow tf_keras' canonical ``train_step``: unpack the
  batch, compute the loss under a tape, ``optimizer.minimize``, update metrics, return them.
  """

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.hard_label_loss = hard_label_loss(None)

  def compile(self, optimizer="adam", loss=None, **kwargs):  # pylint: disable=arguments-differ
    """Like `keras.Model.compile`; `loss` is the hard-label loss on each model's logits
    (default: sparse categorical cross-entropy from logits), `metrics` watch the predictions."""
    super().compile(optimizer=optimizer, **kwargs)
    self.hard_label_loss = hard_label_loss(loss)

  def track(self, names):
    """Creates a `keras.metrics.Mean` per part name, in order (a list: Keras would sort the
    metrics of a dict)."""
    self._part_trackers = [keras.metrics.Mean(name=name) for name in names]

  def targets(self, x):
    """What the objective compares with but never trains (a frozen teacher's outputs); runs
    outside the gradient tape, so nothing of it is recorded."""
    del x
    return None

  def objective(self, x, y, sample_weight, targets, training):
    """``(total, parts, logits)`` for one batch on this replica, not yet scaled for replicas;
    `parts` maps every tracked name to its value."""
    raise NotImplementedError

  def weights_to_train(self):
    """The variables the optimizer updates."""
    raise NotImplementedError

  def update_prediction_metrics(self, y, logits, sample_weight):
    """Updates metrics computed from the predictions (`compile`'s metrics by default)."""
    self.compiled_metrics.update_state(y, logits, sample_weight)

  def _finish_step(self, parts, y, logits, sample_weight):
    by_name = {t.name: t for t in self._part_trackers}
    for name, value in parts.items():
      by_name[name].update_state(value)
    self.update_prediction_metrics(y, logits, sample_weight)
    return {m.name: m.result() for m in self.metrics}

  def train_step(self, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    targets = self.targets(x)
    with tf.GradientTape() as tape:
      total, parts, logits = self.objective(x, y, sample_weight, targets, training=True)
      # Optimizers sum gradients over replicas: each contributes its share of the global mean.
      scaled = total / tf.distribute.get_strategy().num_replicas_in_sync
    self.optimizer.minimize(scaled, self.weights_to_train(), tape=tape)
    return self._finish_step(parts, y, logits, sample_weight)

  def test_step(self, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    _, parts, logits = self.objective(x, y, sample_weight, self.targets(x), training=False)
    return self._finish_step(parts, y, logits, sample_weight)
