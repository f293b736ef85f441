"""representative_data.examples: every accepted form, and every bad input's error."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from kslim.conversion.representative_data import examples

_SHAPE = (4, 4, 1)
_X = (np.arange(40 * 16) % 250).astype(np.float32).reshape((40,) + _SHAPE)  # uint8-exact


class ExamplesTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("array", lambda: _X),
      ("uint8_array", lambda: _X.astype(np.uint8)),
      ("dataset_of_examples", lambda: tf.data.Dataset.from_tensor_slices(_X)),
      ("dataset_of_batches", lambda: tf.data.Dataset.from_tensor_slices(_X).batch(7)),
      ("dataset_of_pairs", lambda: tf.data.Dataset.from_tensor_slices((_X, np.zeros(40)))),
      ("generator_of_tflite_lists", lambda: ([x[None]] for x in _X)),
      ("callable", lambda: lambda: iter(_X)),
  )
  def test_every_form_gives_the_same_examples(self, make):
    got = examples(make(), _SHAPE, num_samples=33, min_samples=8)
    self.assertEqual(got.dtype, np.float32)
    self.assertEqual(got.shape, (33,) + _SHAPE)
    np.testing.assert_array_equal(got, _X[:33])

  def test_values_are_preserved(self):
    got = examples(tf.data.Dataset.from_tensor_slices(_X).batch(7), _SHAPE, 40, min_samples=8)
    np.testing.assert_array_equal(got, _X)

  def test_errors_name_the_problem(self):
    with self.assertRaisesRegex(ValueError, "representative_data is required"):
      examples(None, _SHAPE, 10)
    with self.assertRaisesRegex(ValueError, "representative_data is empty"):
      examples(np.zeros((0,) + _SHAPE), _SHAPE, 10)
    with self.assertRaisesRegex(ValueError, "representative_data is empty"):
      examples(iter([]), _SHAPE, 10)
    with self.assertRaisesRegex(ValueError, r"has 5 example\(s\); at least 32 are needed"):
      examples(_X[:5], _SHAPE, 100)
    with self.assertRaisesRegex(ValueError, r"has shape \(40, 4, 4\); the model's input takes "
                                r"examples of shape \(4, 4, 1\)"):
      examples(_X[..., 0], _SHAPE, 100)
    with self.assertRaisesRegex(TypeError, "dtype <U1; expected numbers"):
      examples(np.full((40,) + _SHAPE, "a"), _SHAPE, 100)
    with self.assertRaisesRegex(TypeError, "yielded a dict"):
      examples(iter([{"image": _X[0]}]), _SHAPE, 100)
    with self.assertRaisesRegex(TypeError, "must be a numpy array, a tf.data.Dataset or a "
                                "generator, got int"):
      examples(3, _SHAPE, 100)


if __name__ == "__main__":
  absltest.main()
