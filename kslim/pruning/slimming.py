"""Network slimming's training-time L1 penalty on batch-norm scales.

Liu et al. train with ``loss + lambda * sum |gamma|`` so that unimportant channels' BN scales
go to zero; ``bn_gamma`` / ``opt_slim`` pruning then removes them almost for free.

Reference: Liu et al., "Learning Efficient Convolutional Networks through Network Slimming",
https://arxiv.org/abs/1708.06519 (lambda = 1e-4 to 1e-5).
"""

from kslim import _graph
from kslim._keras import keras

__all__ = ["add_slimming_penalty"]


def add_slimming_penalty(model, l1=1e-4):
  """A copy of `model` whose BatchNormalization gammas carry an L1 regularizer.

  The copy holds the same weights and serializes with standard Keras objects
  (``keras.regularizers.L1``); compile and fit it, then prune with ``bn_gamma`` or
  ``opt_slim``.

  Args:
    model: a Sequential, functional or nested tf_keras model (not modified).
    l1: the penalty weight lambda.

  Returns:
    A functional tf_keras model.
  """
  if l1 <= 0:
    raise ValueError(f"l1 must be positive, got {l1!r}")
  graph = _graph.Graph.from_model(model)
  graph.clone_layers()
  replaced = {}
  for op in graph.ops:
    layer = op.layer
    if not isinstance(layer, keras.layers.BatchNormalization) or not layer.scale:
      continue
    if id(layer) not in replaced:
      config = layer.get_config()
      config["gamma_regularizer"] = keras.regularizers.serialize(keras.regularizers.L1(l1))
      replaced[id(layer)] = type(layer).from_config(config)
      graph.initial_weights[replaced[id(layer)]] = graph.initial_weights.pop(layer)
    op.layer = replaced[id(layer)]
  return graph.build()
