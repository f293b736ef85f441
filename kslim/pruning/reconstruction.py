"""Least-squares reconstruction: refit the layers that lost input channels to pruning.

Removing channels takes inputs away from the layers that consume them (the projection after
an expansion, the next block's convolution, the classifier). Each such Conv/Dense is refitted
so that, on calibration images, its output from the kept inputs is as close as possible (in
least squares) to the original layer's output from all of them (He et al., "Channel Pruning
for Accelerating Very Deep Neural Networks", https://arxiv.org/abs/1707.06168; Luo et al.,
"ThiNet", https://arxiv.org/abs/1707.06342). Kept channels usually correlate with removed
ones, so the refit recovers much of what the prune lost before any fine-tuning.

Layers are refitted in graph order, each on the inputs the pruned model gives it once the
layers before it are refitted, so errors do not pile up along the network. With ``Q`` those
input patches, ``P`` the original's and ``W`` the original kernel, ``argmin ||Q W' - P W||^2
= (Q^T Q)^-1 Q^T P W``: only the moment matrices ``Q^T Q`` and ``Q^T P`` are accumulated.
"""

from absl import logging
import numpy as np
import tensorflow as tf
import tqdm

from kslim import _graph
from kslim._keras import keras
from kslim.pruning import layer_pruners

__all__ = ["reconstruct"]


def reconstruct(graph, removed, pruned, images, batch_size=256, ridge=1e-4, progress=True):
  """Refits, in `pruned`, the kernels of the Conv/Dense layers whose inputs lost channels.

  Args:
    graph: the `DependencyGraph` of the original model.
    removed: the union-find roots pruned away (as given to `surgery.rebuild`).
    pruned: the rebuilt model (`surgery.rebuild(graph, removed)`), modified in place.
    images: calibration inputs of the original model (a numpy array; e.g. 2,000 training
      images).
    batch_size: images per forward pass.
    ridge: Tikhonov regularization, relative to the mean diagonal of each moment matrix,
      which keeps the solve stable when kept inputs are nearly collinear.
    progress: show a progress bar over the layers (off inside a sensitivity scan).

  Returns:
    The names of the layers refitted, in graph order.

  Raises:
    ValueError: the model has more than one input, or `images` are none or do not fit it.
  """
  if len(graph.graph.inputs) != 1:
    raise ValueError(f"reconstruction needs a single-input model; {graph.graph.name!r} has "
                     f"{len(graph.graph.inputs)} inputs")
  expected = graph.graph.inputs[0].ref.shape
  shape = np.shape(images)
  if not shape or shape[0] == 0 or len(shape) != len(expected) or any(
      e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
    raise ValueError(f"reconstruction images of shape {shape} do not fit model "
                     f"{graph.graph.name!r}, whose input is {tuple(expected)}; pass at least "
                     "one image")
  removed = np.asarray(sorted(int(r) for r in removed), dtype=np.int64)
  targets = {}  # layer name -> (original layer, kept output positions), in graph order
  for op in graph.graph.ops:
    lost = len(graph.kept_positions(op.inputs[0], removed)) < op.inputs[0].shape[-1]
    if lost and op.layer.name not in targets and _refittable(graph, op):
      targets[op.layer.name] = (op.layer, graph.kept_positions(op.output_refs[0], removed))
  pruned_graph = _graph.Graph.from_model(pruned)
  bar = tqdm.tqdm(targets.items(), desc="reconstruction", unit="layer",
                  disable=not (targets and progress))
  for name, (layer, kept_out) in bar:
    gram, cross = 0.0, 0.0
    for start in range(0, len(images), batch_size):
      # The dtype a model call would cast the inputs to (e.g. uint8 images to float32).
      batch = tf.cast(images[start:start + batch_size], graph.graph.inputs[0].ref.dtype)
      for source, refit in zip(_inputs_of(graph.graph, batch, name),
                               _inputs_of(pruned_graph, batch, name)):
        p, q = _patches(layer, source), _patches(layer, refit)
        gram += tf.matmul(q, q, transpose_a=True).numpy().astype(np.float64)
        cross += tf.matmul(q, p, transpose_a=True).numpy().astype(np.float64)
    kernel = layer.kernel.numpy()
    rows = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)[:, kept_out]
    regularizer = ridge * max(float(np.trace(gram)) / len(gram), 1e-12)
    solution = np.linalg.solve(gram + regularizer * np.eye(len(gram)), cross @ rows)
    target = pruned.get_layer(name)
    target.kernel.assign(solution.reshape(target.kernel.shape).astype(np.float32))
    logging.info("reconstruction refitted %s on %d of its %d inputs", name,
                 target.kernel.shape[-2], kernel.shape[-2])
  return list(targets)


def _refittable(graph, op):
  """Whether `op` is a plain Conv/Dense whose input patches kslim can form."""
  rule = graph.rule(op.layer)
  if type(rule) not in (layer_pruners.Conv, layer_pruners.Dense):
    return False
  if isinstance(rule, layer_pruners.Dense):
    return True
  config = op.layer.get_config()
  if isinstance(op.layer, keras.layers.Conv2D) or all(k == 1 for k in config["kernel_size"]):
    return True
  if isinstance(op.layer, keras.layers.Conv1D) and config["padding"] != "causal":
    return True
  logging.info("reconstruction leaves %s as pruned: no patches for a %s with kernel %s and "
               "padding %s", op.layer.name, type(op.layer).__name__, config["kernel_size"],
               config["padding"])
  return False


def _inputs_of(graph, batch, name):
  """The inputs of every call of the layer named `name` when `graph` runs on `batch`."""
  calls = [i for i, op in enumerate(graph.ops) if op.layer.name == name]
  values, found = {graph.inputs[0].ref.id: batch}, []
  for op in graph.ops[:calls[-1] + 1]:
    if op.layer.name == name:
      found.append(values[op.inputs[0].id])
    args, kwargs = tf.nest.map_structure(
        lambda x: values[x.id] if isinstance(x, _graph.Ref) else x, (op.args, op.kwargs))
    outputs = op.layer(*args, **kwargs)  # outside `fit`: inference (batch norm statistics)
    for ref, value in zip(op.output_refs, tf.nest.flatten(outputs)):
      values[ref.id] = value
  return found


def _patches(layer, inputs):
  """The rows a Conv/Dense kernel multiplies: (positions, taps * input channels)."""
  if isinstance(layer, keras.layers.Dense):
    return tf.reshape(tf.cast(inputs, tf.float32), [-1, inputs.shape[-1]])
  config = layer.get_config()
  kernel, strides, rates = config["kernel_size"], config["strides"], config["dilation_rate"]
  if isinstance(layer, keras.layers.Conv1D) and config["padding"] != "causal":
    # A Conv1D is a Conv2D over an image of height 1.
    inputs, kernel, strides, rates = inputs[:, None], (1, *kernel), (1, *strides), (1, *rates)
  if inputs.shape.rank == 4:
    inputs = tf.image.extract_patches(inputs, [1, *kernel, 1], [1, *strides, 1],
                                      [1, *rates, 1], config["padding"].upper())
  else:  # a kernel of ones (causal Conv1D, Conv3D): the strides only subsample positions
    inputs = inputs[(slice(None),) + tuple(slice(None, None, s) for s in strides)]
  return tf.reshape(tf.cast(inputs, tf.float32), [-1, inputs.shape[-1]])
