"""What `Distiller` and `DML` share: the hard-label loss, loss trackers, distribution scaling."""

import tensorflow as tf

from kslim._keras import keras

__all__ = ["hard_label_loss", "per_example_mean", "trackers", "update_trackers", "scale_for_replicas", "results"]


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


def trackers(names):
  """A `keras.metrics.Mean` per name, in order (a list: Keras would sort a dict's metrics)."""
  return [keras.metrics.Mean(name=name) for name in names]


def update_trackers(tracker_list, parts):
  """Records each of `parts` (name -> value) in the tracker of that name."""
  by_name = {t.name: t for t in tracker_list}
  for name, value in parts.items():
    by_name[name].update_state(value)


def scale_for_replicas(loss):
  """`loss` divided by the replica count: optimizers sum gradients over replicas, so each
  replica contributes its batch mean's share of the global mean."""
  return loss / tf.distribute.get_strategy().num_replicas_in_sync


def results(model):
  """What a training or test step returns: every metric's current value by name."""
  return {m.name: m.result() for m in model.metrics}
