"""Embedding quantization: per-row int8 tables, accuracy bound, save/load, int8 in TFLite."""

import os

import numpy as np
from ai_edge_litert import interpreter as litert
from absl.testing import absltest, parameterized

import kslim
from kslim._keras import keras
from kslim.conversion.embedding import QuantizedEmbedding, quantize_rows
from tflite_tools.runner import TFLiteRunner


def _model():
  ids = keras.Input((6,), dtype="int32", name="ids")
  shared = keras.layers.Embedding(500, 32, name="emb")
  x = keras.layers.GlobalAveragePooling1D()(shared(ids))
  y = keras.layers.GlobalAveragePooling1D()(shared(keras.layers.Lambda(lambda t: 499 - t)(ids)))
  outputs = keras.layers.Dense(3, name="head")(keras.layers.Concatenate()([x, y]))
  return keras.Model(ids, outputs)


class QuantizeRowsTest(parameterized.TestCase):

  @parameterized.parameters(8, 4, 2)
  def test_rows_match_a_numpy_reference(self, bits):
    table = np.random.default_rng(0).normal(size=(20, 7)) * np.arange(1, 21)[:, None]
    table[3] = 0.0
    values, scales = quantize_rows(table, bits)
    top = 2 ** (bits - 1) - 1
    want_scales = np.abs(table).max(axis=1) / top
    want_scales[3] = 1.0
    np.testing.assert_allclose(scales, want_scales, rtol=1e-6)
    np.testing.assert_array_equal(values, np.round(table / want_scales[:, None]))
    self.assertEqual(values.dtype, np.int8)
    self.assertLessEqual(np.abs(values).max(), top)
    # Each value is within half a step of its row's scale.
    self.assertTrue(np.all(np.abs(values * scales[:, None] - table)
                           <= scales[:, None] / 2 + 1e-6))


class QuantizeEmbeddingsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = _model()
    cls.small = kslim.quantize_embeddings(cls.model, bits=8)
    cls.ids = np.random.default_rng(1).integers(0, 500, (64, 6)).astype(np.int32)

  def test_table_is_int8_with_row_scales_and_outputs_stay_close(self):
    layer = self.small.get_layer("emb")
    self.assertIsInstance(layer, QuantizedEmbedding)
    self.assertEqual(layer.table.dtype, "int8")
    self.assertLen([l for l in self.small.layers if isinstance(l, QuantizedEmbedding)], 1)
    table = self.model.get_layer("emb").get_weights()[0]
    np.testing.assert_array_equal(layer.get_weights()[0], quantize_rows(table)[0])
    # Stated tolerance: every looked-up value is within half a step (max |row| / 254), so the
    # pooled features are too, and the Dense head scales that by at most its column L1 norm.
    step = np.abs(table).max() / 127
    head = np.abs(self.model.get_layer("head").get_weights()[0]).sum(axis=0).max()
    error = np.abs(self.small.predict(self.ids, verbose=0) - self.model.predict(self.ids,
                                                                                verbose=0))
    self.assertLessEqual(error.max(), step / 2 * head + 1e-6)
    self.assertGreater(error.max(), 0.0)
    for before, after in zip(self.model.get_layer("head").get_weights(),
                             self.small.get_layer("head").get_weights()):
      np.testing.assert_array_equal(before, after)

  def test_save_and_load(self):
    want = self.small.predict(self.ids, verbose=0)
    for filename in ("model.keras", "model.h5"):
      path = os.path.join(self.create_tempdir().full_path, filename)
      self.small.save(path)
      with kslim.quantization.scope():
        loaded = keras.models.load_model(path, safe_mode=False)
      np.testing.assert_array_equal(loaded.predict(self.ids, verbose=0), want, filename)

  def test_tflite_keeps_the_table_in_int8_and_is_smaller(self):
    content = kslim.convert(self.small, "float32")
    self.assertLess(len(content), 0.35 * len(kslim.convert(self.model, "float32")))
    interpreter = litert.Interpreter(model_content=bytes(content))
    shapes = {(np.dtype(t["dtype"]).name, tuple(t["shape"]))
              for t in interpreter.get_tensor_details()}
    self.assertIn(("int8", (500, 32)), shapes)
    self.assertNotIn(("float32", (500, 32)), shapes)
    np.testing.assert_allclose(TFLiteRunner(content).predict(self.ids),
                               self.small.predict(self.ids, verbose=0), atol=1e-5)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "model 'plain' has no Embedding layer"):
      inputs = keras.Input((3,))
      kslim.quantize_embeddings(keras.Model(inputs, keras.layers.Dense(1)(inputs),
                                            name="plain"))
    with self.assertRaisesRegex(ValueError, "num_bits must be an integer from 2 to 8"):
      kslim.quantize_embeddings(self.model, bits=16)

  def test_config_round_trip(self):
    layer = self.small.get_layer("emb")
    clone = QuantizedEmbedding.from_config(layer.get_config())
    self.assertEqual((clone.input_dim, clone.output_dim, clone.bits, clone.mask_zero),
                     (500, 32, 8, False))


if __name__ == "__main__":
  absltest.main()
