"""Reference models used by kslim's tests, benchmarks and demo, defined once here, and the
building blocks they share with kslim's NAS search spaces.

All take Fashion-MNIST-shaped inputs by default and return logits (no softmax), which is what
distillation losses and TFLite comparisons want.
"""

from kslim._keras import keras

__all__ = ["REFERENCE_MODELS", "reference_cnn", "plain_cnn", "standardized_cnn",
           "mini_mobilenet_v2", "row_lstm", "get", "adapt_normalization", "conv_bn_relu",
           "depthwise_bn_relu", "inverted_residual"]

_layers = keras.layers


def conv_bn_relu(x, filters, name, kernel_size=1, strides=1, max_value=None):
  """Conv2D (no bias) -> BatchNormalization -> ReLU (ReLU6 with ``max_value=6``), named
  ``<name>_conv``, ``<name>_bn``, ``<name>_relu``."""
  x = _layers.Conv2D(filters, kernel_size, strides, padding="same", use_bias=False,
                     name=f"{name}_conv")(x)
  x = _layers.BatchNormalization(name=f"{name}_bn")(x)
  return _layers.ReLU(max_value, name=f"{name}_relu")(x)


def depthwise_bn_relu(x, name, kernel_size=3, strides=1, max_value=None):
  """DepthwiseConv2D (no bias) -> BatchNormalization -> ReLU, named ``<name>_dw``,
  ``<name>_dw_bn``, ``<name>_dw_relu``."""
  x = _layers.DepthwiseConv2D(kernel_size, strides, padding="same", use_bias=False,
                              name=f"{name}_dw")(x)
  x = _layers.BatchNormalization(name=f"{name}_dw_bn")(x)
  return _layers.ReLU(max_value, name=f"{name}_dw_relu")(x)


def inverted_residual(x, filters, strides, expansion, name, kernel_size=3):
  """MobileNetV2 block: 1x1 expand (none at expansion 1), depthwise, linear 1x1 project, and
  an Add when the shapes allow."""
  in_channels = x.shape[-1]
  y = x
  if expansion > 1:
    y = conv_bn_relu(y, in_channels * expansion, f"{name}_expand", max_value=6.0)
  y = depthwise_bn_relu(y, name, kernel_size, strides, max_value=6.0)
  y = _layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(y)
  y = _layers.BatchNormalization(name=f"{name}_project_bn")(y)
  if strides == 1 and in_channels == filters:
    y = _layers.Add(name=f"{name}_add")([x, y])
  return y


def reference_cnn(input_shape=(28, 28, 1), num_classes=10, width=1.0):
  """The 5-layer Conv/BN/ReLU CNN (~70K params at width 1) of kslim's benchmarks.

  Args:
    input_shape: (H, W, C) of one image.
    num_classes: number of logits.
    width: multiplies every convolution's filter count (e.g. 0.5 for a small student).

  Returns:
    A functional tf_keras model named ``reference_cnn``.
  """
  return _five_layer_cnn(input_shape, num_classes, width, True, "reference_cnn")


def plain_cnn(input_shape=(28, 28, 1), num_classes=10, width=1.0):
  """`reference_cnn` without batch normalization (Conv with bias, then ReLU).

  Nothing keeps its activations normalized, so their ranges drift freely during training
  (`standardized_cnn` is the model whose activations are heavy-tailed).

  Returns:
    A functional tf_keras model named ``plain_cnn``.
  """
  return _five_layer_cnn(input_shape, num_classes, width, False, "plain_cnn")


def standardized_cnn(input_shape=(28, 28, 1), num_classes=10, width=1.0):
  """`reference_cnn` behind a per-pixel ``Normalization`` layer named ``standardize``.

  Each pixel is standardized with its own mean and variance, as per-feature scaling of
  tabular or sensor data does. Border pixels are almost always 0, so their variance is tiny
  and their rare non-zero values become huge: the layer is a large-range layer whose output
  is heavy-tailed (on Fashion-MNIST a max near 70 against a 99th percentile near 3), and
  whose per-pixel ``1 / std`` multipliers span three orders of magnitude. Adapt it to the
  training images with `adapt_normalization` before training (kslim's pipeline does).

  Returns:
    A functional tf_keras model named ``standardized_cnn``.
  """
  return _five_layer_cnn(input_shape, num_classes, width, True, "standardized_cnn",
                         standardize=True)


def adapt_normalization(model, images):
  """Adapts every not-yet-adapted ``Normalization`` layer that reads `model`'s input to
  `images` (its mean and variance become theirs).

  Args:
    model: a functional tf_keras model.
    images: the training inputs, shaped like the model's input.

  Returns:
    The names of the layers adapted.

  Raises:
    ValueError: an unadapted ``Normalization`` layer does not read the model's input, so the
      images say nothing about what it sees.
  """
  adapted = []
  for layer in model.layers:
    if not isinstance(layer, _layers.Normalization) or layer.is_adapted:
      continue
    if layer.input is not model.input:
      raise ValueError(f"adapt_normalization: layer {layer.name!r} does not read the model "
                       "input; adapt it to its own inputs")
    layer.adapt(images)
    adapted.append(layer.name)
  return adapted


def _five_layer_cnn(input_shape, num_classes, width, batch_norm, name, standardize=False):
  inputs = keras.Input(input_shape, name="image")
  x = inputs
  if standardize:
    x = _layers.Normalization(axis=(1, 2, 3), name="standardize")(x)
  for i, (filters, strides) in enumerate([(16, 1), (32, 2), (32, 1), (64, 2), (64, 1)]):
    filters, block = max(1, round(filters * width)), f"block{i + 1}"
    if batch_norm:
      x = conv_bn_relu(x, filters, block, 3, strides)
    else:
      x = _layers.Conv2D(filters, 3, strides, padding="same", name=f"{block}_conv")(x)
      x = _layers.ReLU(name=f"{block}_relu")(x)
  x = _layers.GlobalAveragePooling2D(name="pool")(x)
  outputs = _layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name=name)


def mini_mobilenet_v2(input_shape=(28, 28, 1), num_classes=10, width=1.0):
  """A MobileNetV2-style mini net: depthwise convs, residual Adds and a Concatenate.

  The Concatenate joins a depthwise branch and a pointwise branch, so pruning and quantization
  code meet channel concatenation and shared ranges on a real model.

  Args:
    input_shape: (H, W, C) of one image.
    num_classes: number of logits.
    width: multiplies every filter count.

  Returns:
    A functional tf_keras model named ``mini_mobilenet_v2``.
  """
  def c(filters):
    return max(1, round(filters * width))

  inputs = keras.Input(input_shape, name="image")
  x = conv_bn_relu(inputs, c(16), "stem", kernel_size=3, max_value=6.0)
  x = inverted_residual(x, c(16), 1, 2, "ir1")
  x = inverted_residual(x, c(24), 2, 4, "ir2")
  x = inverted_residual(x, c(24), 1, 4, "ir3")
  left = depthwise_bn_relu(x, "branch", max_value=6.0)
  right = conv_bn_relu(x, c(24), "branch_pw", max_value=6.0)
  x = _layers.Concatenate(name="concat")([left, right])
  x = inverted_residual(x, c(48), 2, 2, "ir4")
  x = inverted_residual(x, c(48), 1, 2, "ir5")
  x = conv_bn_relu(x, c(96), "head", max_value=6.0)
  x = _layers.GlobalAveragePooling2D(name="pool")(x)
  outputs = _layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="mini_mobilenet_v2")


def row_lstm(input_shape=(28, 28, 1), num_classes=10, units=64):
  """An LSTM reading an image row by row (28 steps of 28 pixels), then a Dense: the reference
  sequence model, whose int8 file runs TFLite's integer LSTM kernel.

  Args:
    input_shape: (H, W, C) of one image; the H rows are the time steps.
    num_classes: number of logits.
    units: the LSTM's hidden size.

  Returns:
    A functional tf_keras model named ``row_lstm``.
  """
  inputs = keras.Input(input_shape, name="image")
  x = _layers.Reshape((input_shape[0], input_shape[1] * input_shape[2]), name="rows")(inputs)
  x = _layers.LSTM(units, name="lstm")(x)
  return keras.Model(inputs, _layers.Dense(num_classes, name="logits")(x), name="row_lstm")


REFERENCE_MODELS = {
    "reference_cnn": reference_cnn,
    "mini_mobilenet_v2": mini_mobilenet_v2,
    "plain_cnn": plain_cnn,
    "standardized_cnn": standardized_cnn,
    "row_lstm": row_lstm,
}


def get(name, **kwargs):
  """Builds the reference model called `name` (a key of `REFERENCE_MODELS`)."""
  if name not in REFERENCE_MODELS:
    raise ValueError(f"unknown reference model {name!r}; choose one of "
                     f"{sorted(REFERENCE_MODELS)}")
  return REFERENCE_MODELS[name](**kwargs)
