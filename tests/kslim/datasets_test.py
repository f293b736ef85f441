"""Tests for kslim.datasets: the IDX loader, its errors, and the tf.data helper."""

import gzip
import os
import pathlib
from unittest import mock

import numpy as np
from absl.testing import absltest, parameterized

from kslim import datasets
from tests import fake_fashion_mnist


class LoadFashionMnistTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = pathlib.Path(self.create_tempdir().full_path)
    self.enter_context(mock.patch.dict(os.environ, {"KSLIM_DATA_DIR": str(self.dir)}))

  @parameterized.parameters(True, False)
  def test_round_trip_of_gzipped_and_raw_files(self, compress):
    (x_train, y_train), (x_test, y_test) = fake_fashion_mnist.write_dataset(
        self.dir, n_train=50, n_test=20, compress=compress)
    (a, b), (c, d) = datasets.load_fashion_mnist()
    for got, want in ((a, x_train), (b, y_train), (c, x_test), (d, y_test)):
      self.assertEqual(got.dtype, np.uint8)
      np.testing.assert_array_equal(got, want)
    self.assertEqual(a.shape, (50, 28, 28))
    self.assertEqual(d.shape, (20,))

  def test_missing_file_names_it_and_says_how_to_install(self):
    fake_fashion_mnist.write_dataset(self.dir)
    (self.dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with self.assertRaisesRegex(FileNotFoundError,
                                r"t10k-labels-idx1-ubyte\.gz not found.*apt-get install "
                                r"dataset-fashion-mnist"):
      datasets.load_fashion_mnist()

  def _corrupt(self, stem, data):
    fake_fashion_mnist.write_dataset(self.dir)
    (self.dir / (stem + ".gz")).write_bytes(gzip.compress(data))

  def test_bad_magic_number(self):
    self._corrupt("train-images-idx3-ubyte", b"\x00\x00\x0d\x03" + bytes(12 + 784))
    with self.assertRaisesRegex(ValueError, r"train-images-idx3-ubyte\.gz is corrupt: bad IDX "
                                r"magic number 00000d03"):
      datasets.load_fashion_mnist()

  def test_truncated_payload(self):
    images, _ = fake_fashion_mnist.make_split(10, 0)
    self._corrupt("train-images-idx3-ubyte", fake_fashion_mnist.idx_bytes(images)[:-5])
    with self.assertRaisesRegex(ValueError, r"7835 data bytes, expected 7840 \(truncated\?\)"):
      datasets.load_fashion_mnist()

  def test_wrong_image_size(self):
    self._corrupt("t10k-images-idx3-ubyte", fake_fashion_mnist.idx_bytes(np.zeros((3, 32, 32))))
    with self.assertRaisesRegex(ValueError, r"t10k-images.*images of shape \(32, 32\)"):
      datasets.load_fashion_mnist()

  def test_label_count_must_match_images(self):
    self._corrupt("train-labels-idx1-ubyte", fake_fashion_mnist.idx_bytes(np.zeros(7)))
    with self.assertRaisesRegex(ValueError, r"7 labels for 256 images"):
      datasets.load_fashion_mnist()

  def test_label_out_of_range(self):
    self._corrupt("train-labels-idx1-ubyte", fake_fashion_mnist.idx_bytes(np.full(256, 12)))
    with self.assertRaisesRegex(ValueError, r"label 12 out of range"):
      datasets.load_fashion_mnist()

  def test_broken_gzip_stream(self):
    fake_fashion_mnist.write_dataset(self.dir)
    path = self.dir / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with self.assertRaisesRegex(ValueError, r"train-labels-idx1-ubyte\.gz is corrupt"):
      datasets.load_fashion_mnist()


class RealDataTest(absltest.TestCase):
  """The Debian package's files, which scripts/setup.sh installs."""

  def test_shapes_match_keras_load_data(self):
    with mock.patch.dict(os.environ, {"KSLIM_DATA_DIR": ""}):
      (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist()
    self.assertEqual((x_train.shape, y_train.shape), ((60000, 28, 28), (60000,)))
    self.assertEqual((x_test.shape, y_test.shape), ((10000, 28, 28), (10000,)))
    self.assertEqual(x_train.dtype, np.uint8)
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)


class PreprocessingTest(absltest.TestCase):

  def test_normalize(self):
    x = np.array([[[0, 255], [51, 102]]], np.uint8)
    got = datasets.normalize(x)
    self.assertEqual(got.shape, (1, 2, 2, 1))
    self.assertEqual(got.dtype, np.float32)
    np.testing.assert_allclose(got[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)

  def test_to_dataset_batches_and_normalizes(self):
    images, labels = fake_fashion_mnist.make_split(10, 3)
    batches = list(datasets.to_dataset(images, labels, batch_size=4))
    self.assertEqual([b[0].shape[0] for b in batches], [4, 4, 2])
    self.assertEqual(tuple(batches[0][0].shape[1:]), (28, 28, 1))
    np.testing.assert_allclose(batches[0][0].numpy(), datasets.normalize(images[:4]))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)


if __name__ == "__main__":
  absltest.main()
