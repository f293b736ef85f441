"""kslim.quantize end to end: structure, training, save/load, conversion agreement."""

import os
import tempfile
import warnings

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import kslim
from kslim._keras import keras
from kslim.quantization import wrapper
from kslim.quantization.folded_batch_norm import FoldedBatchNorm
from tflite_tools import runner as runner_lib


def _data(n=256, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (n, 12, 12, 1)).astype(np.float32)
  y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype(np.int32)
  return x, y


def _small_model():
  """Conv/BN/ReLU, depthwise, Concatenate, pooling, Add and Dense: every rule kind."""
  inputs = keras.Input((12, 12, 1), name="image")
  x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
  x = keras.layers.BatchNormalization(name="bn")(x)
  x = keras.layers.ReLU(name="relu")(x)
  a = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
  b = keras.layers.Conv2D(8, 1, activation="relu", name="pw")(x)
  x = keras.layers.Concatenate(name="cat")([a, b])
  x = keras.layers.AveragePooling2D(name="avg")(x)
  y = keras.layers.Conv2D(16, 1, name="proj")(x)
  x = keras.layers.Add(name="add")([x, y])
  x = keras.layers.MaxPooling2D(name="max")(x)
  x = keras.layers.Flatten(name="flat")(x)
  outputs = keras.layers.Dense(2, name="logits")(x)
  return keras.Model(inputs, outputs, name="small")


def _trained_qat(config=None, epochs=3):
  tf.keras.utils.set_random_seed(0)
  x, y = _data()
  qat = kslim.quantize(_small_model(), config)
  qat.compile(keras.optimizers.Adam(3e-3),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  qat.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
  return qat, x


class StructureTest(absltest.TestCase):

  def test_layers_are_wrapped_and_ranges_placed_as_tflite_stores_tensors(self):
    model = _small_model()
    weights_before = [w.copy() for w in model.get_weights()]
    qat = kslim.quantize(model)
    names = {layer.name for layer in qat.layers}
    self.assertNotIn("bn", names)  # folded into conv, which goes on training it
    self.assertIsInstance(qat.get_layer("conv"), FoldedBatchNorm)
    self.assertEqual(qat.get_layer("conv").quantizer,
                     kslim.quantization.quantizers.ChannelWiseAbsMax(8))
    for name in ("quant_dw", "quant_pw", "quant_proj", "quant_logits"):
      self.assertIsInstance(qat.get_layer(name), wrapper.QuantizeWrapper)
    ranges = {layer.name: layer for layer in kslim.quantization.activation_quantizers(qat)}
    # The conv's own output is fused with its ReLU: one range after the ReLU. The two
    # concatenated branches and the pooled output share one range layer, called 3 times.
    self.assertEqual(sorted(ranges),
                     ["add_quant", "dw_quant", "image_quant", "logits_quant", "proj_quant",
                      "relu_quant"])
    self.assertLen(ranges["dw_quant"]._inbound_nodes, 3)
    self.assertFalse(ranges["relu_quant"].quantizer.signed)
    self.assertTrue(ranges["proj_quant"].quantizer.signed)
    # Dense kernels use one range: TFLite cannot keep per-channel ranges through their transpose.
    self.assertEqual(qat.get_layer("quant_logits").quantize_config.quantizer,
                     kslim.quantization.quantizers.AbsMax(8))
    for before, after in zip(weights_before, model.get_weights()):
      np.testing.assert_array_equal(before, after)

  def test_nested_models_are_inlined(self):
    inner = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Conv2D(4, 3, name="c1"),
                              keras.layers.ReLU(name="r1")], name="inner")
    inputs = keras.Input((12, 12, 1))
    x = inner(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outer = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    qat = kslim.quantize(outer)
    self.assertIn("quant_c1", [layer.name for layer in qat.layers])
    self.assertNotIn("inner", [layer.name for layer in qat.layers])
    x, _ = _data(8)
    qat(x, training=True)
    np.testing.assert_allclose(qat(x).numpy(), outer(x).numpy(), atol=0.05)

  def test_unsupported_layers_error_or_warn_once(self):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="fc")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.GaussianNoise(0.1, name="noise")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    with self.assertRaisesRegex(ValueError, r"norm \(LayerNormalization\), noise \(GaussianNoise\)"):
      kslim.quantize(model, kslim.QuantConfig(unsupported="error"))
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      qat = kslim.quantize(model)
    messages = [str(w.message) for w in caught if "kslim.quantize" in str(w.message)]
    self.assertLen(messages, 1)
    self.assertIn("norm (LayerNormalization), noise (GaussianNoise)", messages[0])
    self.assertIn("norm_quant", [layer.name for layer in qat.layers])

  def test_frozen_batch_norm_is_folded_once_with_the_moving_statistics(self):
    model = _small_model()
    rng = np.random.default_rng(1)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 2.0, w.shape) for w in bn.get_weights()])
    qat = kslim.quantize(model, kslim.QuantConfig(batch_norm="freeze"))
    conv = qat.get_layer("quant_conv")
    self.assertIsInstance(conv, wrapper.QuantizeWrapper)
    gamma, beta, mean, variance = bn.get_weights()
    scale = gamma / np.sqrt(variance + bn.epsilon)
    weights = {w.name.split("/")[-1]: w.numpy() for w in conv.weights}
    kernel, bias = weights["kernel:0"], weights["bias:0"]
    np.testing.assert_allclose(kernel, model.get_layer("conv").get_weights()[0] * scale,
                               rtol=1e-6)
    np.testing.assert_allclose(bias, beta - mean * scale, rtol=1e-6, atol=1e-7)

  def test_skip_keeps_weights_float(self):
    qat = kslim.quantize(_small_model(), kslim.QuantConfig(skip=("logits", "DepthwiseConv2D")))
    names = [layer.name for layer in qat.layers]
    self.assertIn("logits", names)
    self.assertIn("dw", names)
    self.assertIn("quant_pw", names)

  def test_edge_bits_keep_the_first_and_last_layers_and_the_io_ranges_at_8_bits(self):
    qat = kslim.quantize(_small_model(), kslim.QuantConfig(
        weight_bits=4, activation_bits=4, activation_quantizer="pact", edge_bits=8))
    quantizers = kslim.quantization.quantizers
    self.assertEqual(qat.get_layer("conv").quantizer, quantizers.ChannelWiseAbsMax(8))
    self.assertEqual(qat.get_layer("quant_logits").quantize_config.quantizer,
                     quantizers.AbsMax(8))
    for name in ("quant_dw", "quant_pw", "quant_proj"):  # the middle stays at 4 bits
      self.assertEqual(qat.get_layer(name).quantize_config.quantizer.num_bits, 4)
    bits = {layer.name: layer.quantizer.num_bits
            for layer in kslim.quantization.activation_quantizers(qat)}
    self.assertEqual(bits, {"image_quant": 8, "relu_quant": 4, "dw_quant": 4, "proj_quant": 4,
                            "add_quant": 4, "logits_quant": 8})

  def test_pact_clips_signed_tensors_inside_the_model_but_not_its_edges(self):
    qat = kslim.quantize(_small_model(), kslim.QuantConfig(activation_quantizer="pact"))
    kinds = {layer.name: (type(layer.quantizer).__name__, layer.quantizer.signed)
             for layer in kslim.quantization.activation_quantizers(qat)}
    self.assertEqual(kinds["relu_quant"], ("PACT", False))
    for name in ("proj_quant", "add_quant"):  # a linear projection and a residual sum
      self.assertEqual(kinds[name], ("PACT", True))
    for name in ("image_quant", "logits_quant"):
      self.assertEqual(kinds[name][0], "MovingAverageAbsMax")

  def test_subclassed_model_is_refused(self):
    class Net(keras.Model):
      def call(self, x):
        return x
    with self.assertRaisesRegex(ValueError, "has no layer graph"):
      kslim.quantize(Net())


class TrainingAndExportTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.qat, cls.x = _trained_qat()

  def test_int8_tflite_agrees_with_the_keras_qat_model(self):
    content = kslim.convert(self.qat, "int8", io_dtype="float32", report=True,
                            representative_data=self.x)
    report = content.report
    self.assertEqual(report.float_ops, ())
    self.assertIn("CONV_2D", report.ops_by_dtype["int8"])
    keras_logits = self.qat.predict(self.x, verbose=0)
    tflite_logits = runner_lib.TFLiteRunner(content).predict(self.x)
    keras_top, tflite_top = keras_logits.argmax(1), tflite_logits.argmax(1)
    self.assertGreaterEqual((keras_top == tflite_top).mean(), 0.97)
    # The labels differ only where the Keras model nearly ties: its margin between the two
    # labels is within the logit differences bounded below.
    scale = self.qat.get_layer("logits_quant").scale()
    rows = np.flatnonzero(keras_top != tflite_top)
    margins = keras_logits[rows, keras_top[rows]] - keras_logits[rows, tflite_top[rows]]
    self.assertTrue(np.all(margins <= 2 * 8.01 * scale), margins / scale)
    # TFLite's AVERAGE_POOL_2D rounds ties of the int8 average away from zero, the fake-quant
    # op rounds them up: about 10% of pooled values differ by one step. Everything before the
    # pooling matches to one or two steps; after it the Dense sums 576 such differences,
    # which reach the logits as about one step on average and a few at most.
    steps = np.abs(keras_logits - tflite_logits) / scale
    self.assertLessEqual(steps.mean(), 1.5)
    self.assertLessEqual(steps.max(), 8.01)
    parity = {p.layer: p for p in report.parity}
    self.assertLen(parity, 8)
    for name in ("image_quant", "relu_quant", "dw_quant", "dw_quant[1]"):
      self.assertEqual(parity[name].tflite_tensor is None, False, name)
      self.assertLessEqual(parity[name].max_steps, 2.5, name)
      self.assertLess(parity[name].mismatch, 0.01, name)
    for name in ("dw_quant[2]", "proj_quant", "add_quant"):
      self.assertLessEqual(parity[name].max_steps, 4.01, name)

  def test_moving_averages_change_only_in_training(self):
    layer = self.qat.get_layer("relu_quant")
    before = layer.range()
    self.qat.predict(self.x[:32], verbose=0)
    self.assertEqual(layer.range(), before)
    self.qat(self.x[:32] * 3.0, training=True)
    self.assertNotEqual(layer.range(), before)

  @parameterized.parameters("qat.keras", "qat.h5", "qat_savedmodel")
  def test_save_and_load_give_identical_outputs(self, filename):
    path = os.path.join(tempfile.mkdtemp(), filename)
    self.qat.save(path)
    with kslim.quantization.scope():
      loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(self.x, verbose=0),
                                  self.qat.predict(self.x, verbose=0))


class LowBitTest(absltest.TestCase):

  def test_4_bit_pact_exports_values_on_the_4_bit_grid(self):
    qat, x = _trained_qat(kslim.QuantConfig(weight_bits=4, activation_bits=4,
                                            activation_quantizer="pact"), epochs=2)
    content = kslim.convert(qat, "int8", report=True, representative_data=x[:64])
    self.assertNotIn("CONV_2D", content.report.float_ops)
    # Unsigned 4-bit tensors saturate at the int8 top (no op); each signed one gets one
    # MAXIMUM for its lower clip.
    int8_ops = content.report.ops_by_dtype["int8"]
    signed = [layer.name for layer in kslim.quantization.activation_quantizers(qat)
              if layer.quantizer.signed and layer.quantizer.num_bits < 8]
    self.assertNotIn("MINIMUM", int8_ops)
    self.assertNotIn("RELU", int8_ops)
    self.assertEqual(int8_ops.get("MAXIMUM", 0), len(signed), signed)
    runner = runner_lib.TFLiteRunner(content, preserve_all_tensors=True)
    runner.predict(x[:64], batch_size=64)
    relu = qat.get_layer("relu_quant")
    matched = 0
    for detail, values in runner.intermediates():
      if abs(detail["quantization"][0] / relu.scale() - 1) < 1e-4:
        matched += 1
        levels = np.round(values / relu.scale())
        self.assertLessEqual(levels.max(), 15)
        self.assertGreaterEqual(levels.min(), 0)
    self.assertGreater(matched, 0)
    # Every layer agrees with the Keras model to a few 4-bit steps (rounding ties differ).
    for entry in content.report.parity:
      self.assertLessEqual(entry.max_steps, 3.01, entry)


  def test_2_bit_weights_leave_the_int32_bias_as_exact_as_at_8_bits(self):
    # TFLite rounds a conv's bias to weight step * input step. On the 2-bit step itself
    # (int8 kernels in {-1, 0, 1}) 9-24% of every layer's values came out one step off; on
    # the fine step the int8 kernels are multiples of 127 and the layers before the pooling
    # (whose ties TFLite rounds differently) match but for the builtin kernels' rare slips:
    # under 0.2% on the AMD EPYC, 0.23% of one layer on a Xeon with VNNI.
    qat, x = _trained_qat(kslim.QuantConfig(weight_bits=2, activation_bits=4,
                                            activation_quantizer="pact"), epochs=2)
    content = kslim.convert(qat, "int8", report=True, representative_data=x[:64])
    interpreter = runner_lib.TFLiteRunner(content).interpreter
    kernels = [interpreter.get_tensor(d["index"]) for d in interpreter.get_tensor_details()
               if d["dtype"] == np.int8 and len(d["shape"]) == 4
               and len(d["quantization_parameters"]["scales"]) > 1]
    self.assertNotEmpty(kernels)
    for values in kernels:
      self.assertEqual(set(np.unique(values)) - {-127, 0, 127}, set())
    parity = {entry.layer: entry for entry in content.report.parity}
    for name in ("relu_quant", "dw_quant", "dw_quant[1]"):  # [2] is the average pool's output
      self.assertLess(parity[name].mismatch, 0.01, parity[name])
    # After the pooling its tie slips spread: up to 15% of the 2 logits one step off on a Xeon
    # (1.8% of the pooled values), under 5% on the AMD EPYC; a slip one layer up can come out
    # 2 steps off.
    for entry in parity.values():
      self.assertLess(entry.mismatch, 0.25, entry)
      self.assertLessEqual(entry.max_steps, 2.01, entry)

  def test_4_bit_mse_weights_export_their_clipped_ranges(self):
    qat, x = _trained_qat(kslim.QuantConfig(weight_bits=4, weight_quantizer="channel_wise_mse"),
                          epochs=1)
    content = kslim.convert(qat, "int8", report=True, representative_data=x[:64])
    self.assertNotIn("CONV_2D", content.report.float_ops)
    # The int8 kernels hold each channel's 4-bit grid (levels -7..7) as multiples of
    # 127 // 7 = 18, on the fine step that keeps the int32 bias exact (quant_ops), and the
    # file's scales are the clipped ranges / 126, not abs max / 126.
    interpreter = runner_lib.TFLiteRunner(content).interpreter
    kernels = [d for d in interpreter.get_tensor_details()
               if d["dtype"] == np.int8 and len(d["shape"]) == 4
               and len(d["quantization_parameters"]["scales"]) > 1]
    self.assertNotEmpty(kernels)
    for detail in kernels:
      values = interpreter.get_tensor(detail["index"]).astype(np.int32)
      self.assertLessEqual(np.abs(values).max(), 126, detail["name"])
      np.testing.assert_array_equal(values % 18, 0, detail["name"])
    for entry in content.report.parity:
      self.assertLessEqual(entry.max_steps, 3.01, entry)


class ConvertErrorsTest(absltest.TestCase):

  def test_untrained_and_wrong_mode(self):
    qat = kslim.quantize(_small_model())
    with self.assertRaisesRegex(ValueError, "activation range of layer 'image_quant' is empty"):
      kslim.convert(qat, "int8")
    with self.assertRaisesRegex(ValueError, "convert it with mode='int8', not 'float16'"):
      kslim.convert(qat, "float16")
    with self.assertRaisesRegex(ValueError, "representative_data is required"):
      kslim.convert(_small_model(), "int8")
    with self.assertRaisesRegex(ValueError, "unknown io_dtype 'int4'"):
      kslim.convert(_small_model(), "int8", io_dtype="int4")


class DistributedTest(absltest.TestCase):

  def test_fit_under_mirrored_strategy(self):
    x, y = _data(64)
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
      qat = kslim.quantize(_small_model(), kslim.QuantConfig(activation_quantizer="pact"))
      qat.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=1, batch_size=32, verbose=0)
    self.assertGreater(qat.get_layer("relu_quant").range()[1], 0.0)


if __name__ == "__main__":
  absltest.main()
