"""Reference models used by kslim's tests, benchmarks and demo, defined once here, and the
building blocks they share with kslim's NAS search spaces.

All take Fashion-MNIST-shaped inputs by default and return logits (no softmax), which is what
distillation losses and TFLite comparisons want.
"""

from kslim._keras import keras

__all__ = ["REFERENCE_MODELS", "reference_cnn", "plain_cnn", "mini_mobilenet_v2", "get",
           "conv_bn_relu", "depthwise_bn_relu", "inverted_residual"]

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

  Nothing keeps its activations normalized, so their ranges are wide and long-tailed: the
  model on which post-training calibrators differ most from TFLite's min/max.

  Returns:
    A functional tf_keras model named ``plain_cnn``.
  """
  return _five_layer_cnn(input_shape, num_classes, width, False, "plain_cnn")


def _five_layer_cnn(input_shape, num_classes, width, batch_norm, name):
  inputs = keras.Input(input_shape, name="image")
  x = inputs
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


REFERENCE_MODELS = {
    "reference_cnn": reference_cnn,
    "mini_mobilenet_v2": mini_mobilenet_v2,
    "plain_cnn": plain_cnn,
}


def get(name, **kwargs):
  """Builds the reference model called `name` (a key of `REFERENCE_MODELS`)."""
  if name not in REFERENCE_MODELS:
    raise ValueError(f"unknown reference model {name!r}; choose one of "
                     f"{sorted(REFERENCE_MODELS)}")
  return REFERENCE_MODELS[name](**kwargs)
