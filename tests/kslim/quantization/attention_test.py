"""MultiHeadAttention split into its TFLite ops: same function, then int8 end to end."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest

import kslim
from kslim import _graph
from kslim._keras import keras
from kslim.quantization import attention
from kslim.quantization import wrapper
from tflite_tools import runner as runner_lib


def _transformer(dropout=0.0):
  tokens = keras.Input((6, 8), name="tokens")
  x = keras.layers.Dense(8, name="embed")(tokens)
  y = keras.layers.MultiHeadAttention(2, 4, dropout=dropout, name="mha")(x, x)
  x = keras.layers.Add(name="residual")([x, y])
  x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
  return keras.Model(tokens, keras.layers.Dense(2, name="logits")(x))


def _data(n=128, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 6, 8)).astype(np.float32)
  return x, (x[:, :3].sum(axis=(1, 2)) > x[:, 3:].sum(axis=(1, 2))).astype(np.int32)


class SplitAttentionTest(absltest.TestCase):

  def test_split_computes_the_same_function(self):
    tf.keras.utils.set_random_seed(0)
    model = _transformer(dropout=0.1)
    graph = _graph.Graph.from_model(model)
    graph.clone_layers()
    attention.split_attention(graph)
    split = graph.build()
    names = [layer.name for layer in split.layers]
    for part in ("mha_query", "mha_query_heads", "mha_key", "mha_value", "mha_scores",
                 "mha_softmax", "mha_dropout", "mha_context", "mha_merge_heads", "mha_output"):
      self.assertIn(part, names)
    self.assertNotIn("mha", names)
    x, _ = _data(16)
    np.testing.assert_allclose(split.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)

  def test_masked_calls_stay_whole(self):
    tokens = keras.Input((6, 8))
    mask = keras.Input((6, 6), dtype="bool")
    out = keras.layers.MultiHeadAttention(2, 4, name="mha")(tokens, tokens,
                                                             attention_mask=mask)
    graph = _graph.Graph.from_model(keras.Model([tokens, mask], out))
    attention.split_attention(graph)
    self.assertEqual([op.layer.name for op in graph.ops], ["mha"])

  def test_einsum_config_round_trip(self):
    layer = attention.Einsum("ab,cb->ac", name="e")
    clone = attention.Einsum.from_config(layer.get_config())
    self.assertEqual(clone.equation, "ab,cb->ac")


class QuantizedAttentionTest(absltest.TestCase):

  def test_qat_attention_exports_to_int8_and_agrees(self):
    tf.keras.utils.set_random_seed(0)
    x, y = _data()
    qat = kslim.quantize(_transformer())
    self.assertIsInstance(qat.get_layer("quant_mha_query"), wrapper.QuantizeWrapper)
    self.assertEqual(qat.get_layer("mha_softmax_quant").range(), (0.0, 255 / 256))
    qat.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=2, batch_size=32, verbose=0)
    content = kslim.convert(qat, "int8", io_dtype="float32", report=True,
                            representative_data=x)
    self.assertEqual(content.report.float_ops, ())
    self.assertIn("BATCH_MATMUL", content.report.ops_by_dtype["int8"])
    for entry in content.report.parity:
      self.assertLessEqual(entry.max_steps, 3.01, entry)
    keras_logits = qat.predict(x, verbose=0)
    tflite_logits = runner_lib.TFLiteRunner(content).predict(x)
    self.assertGreaterEqual((keras_logits.argmax(1) == tflite_logits.argmax(1)).mean(), 0.95)

  def test_einsum_dense_exports_to_int8(self):
    inputs = keras.Input((6, 8))
    x = keras.layers.EinsumDense("abc,cd->abd", (6, 4), bias_axes="d", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    qat = kslim.quantize(model)
    x, _ = _data(64)
    qat.compile("adam", "mse")
    qat.fit(x, np.zeros((64, 2)), epochs=1, verbose=0)
    report = kslim.convert(qat, "int8", io_dtype="float32").report
    self.assertEqual(report.float_ops, ())
    self.assertEqual(report.ops_by_dtype["int8"]["FULLY_CONNECTED"], 2)


if __name__ == "__main__":
  absltest.main()
