"""The one place that imports tf_keras, and the guard against Keras 3 models.

kslim builds on tf_keras (Keras 2): it is what tfmot wraps and what the TFLite converter's
Keras path understands. Users set ``TF_USE_LEGACY_KERAS=1`` before importing TensorFlow; kslim
itself never changes the environment.
"""

import tf_keras as keras

__all__ = ["keras", "check_model"]


def check_model(model, where):
  """Raises a clear error unless `model` is a tf_keras model.

  Args:
    model: the object handed to a kslim function.
    where: the public function's name, for the message (e.g. ``"kslim.profile"``).

  Returns:
    `model`, unchanged.

  Raises:
    TypeError: `model` is a Keras 3 model or not a Keras model at all.
  """
  if isinstance(model, keras.Model):
    return model
  kind = f"{type(model).__module__}.{type(model).__qualname__}"
  if type(model).__module__.split(".")[0] == "keras":
    raise TypeError(
        f"{where}: got a Keras 3 model ({kind}). kslim works on tf_keras (Keras 2) models, "
        "the ones tensorflow-model-optimization and the TFLite converter support. Set "
        "TF_USE_LEGACY_KERAS=1 before importing TensorFlow, build the model with "
        "`import tf_keras as keras`, or load a saved one with `tf_keras.models.load_model`.")
  raise TypeError(f"{where}: expected a tf_keras.Model, got {kind}.")


def call_sites(model, layer):
  """Indices of the nodes through which `layer` is called inside `model`'s own graph.

  A layer object can also be called in other models (its other nodes); those must not count.
  tf_keras keeps the model's node keys in ``_network_nodes``: this helper is the one place that
  relies on that attribute.
  """
  own = getattr(model, "_network_nodes", None)
  indices = range(len(layer._inbound_nodes))  # pylint: disable=protected-access
  if own is None:
    return list(indices)
  return [i for i in indices if f"{layer.name}_ib-{i}" in own]
