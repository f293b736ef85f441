"""Tests for kslim.convert's float modes."""

import numpy as np
from absl.testing import absltest, parameterized

import kslim
from kslim import models
from tflite_tools.runner import TFLiteRunner


class ConvertTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = models.reference_cnn()
    cls.x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    cls.want = cls.model.predict(cls.x, verbose=0)

  @parameterized.parameters(("float32", 1e-5), ("float16", 2e-2), ("dynamic", 5e-2))
  def test_modes_match_keras(self, mode, tolerance):
    path = self.create_tempfile().full_path
    content = kslim.convert(self.model, mode, output_path=path)
    self.assertEqual(open(path, "rb").read(), content)
    got = TFLiteRunner(content).predict(self.x)
    np.testing.assert_allclose(got, self.want, atol=tolerance)

  def test_quantized_modes_are_smaller(self):
    sizes = {m: len(kslim.convert(self.model, m)) for m in ("float32", "float16", "dynamic")}
    # 70K float32 weights ~ 280 KB; float16 halves them and int8 quarters them.
    self.assertLess(sizes["float16"], 0.6 * sizes["float32"])
    self.assertLess(sizes["dynamic"], 0.35 * sizes["float32"])

  def test_unknown_mode(self):
    with self.assertRaisesRegex(ValueError, r"unknown conversion mode 'int4'; choose one of "
                                r"\['float32', 'float16', 'dynamic', 'int8'\]"):
      kslim.convert(self.model, "int4")


if __name__ == "__main__":
  absltest.main()
