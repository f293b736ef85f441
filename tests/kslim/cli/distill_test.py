"""Tests for the kslim-distill binary."""

import os

from absl.testing import absltest
import numpy as np

import kslim
from kslim._keras import keras
from tests import fake_fashion_mnist
from tests.binaries import run_binary


def _run(*args):
  return run_binary("kslim.cli.distill", *args, timeout=300)


class DistillBinaryTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = absltest.get_default_test_tmpdir()
    cls.data = fake_fashion_mnist.write_npz(cls.tmp)
    cls.teacher = os.path.join(cls.tmp, "teacher.keras")
    kslim.models.reference_cnn(width=0.5).save(cls.teacher)

  def test_distils_with_every_loss_and_saves_a_plain_student(self):
    student_path = os.path.join(self.tmp, "student_in.keras")
    student = kslim.models.reference_cnn(width=0.25)
    student.save(student_path)
    output = os.path.join(self.tmp, "out", "student.keras")
    proc = _run(f"--teacher={self.teacher}", f"--student={student_path}",
                f"--dataset={self.data}", "--losses=soft_label,fitnet,fsp,logits_l2",
                "--hints=block3_relu,block5_relu", "--fsp_pairs=block2_relu/block3_relu",
                "--loss_weights=soft_label=0.9,fsp=0.1", "--hard_label_weight=0.5",
                "--epochs=1", "--batch_size=32", f"--output={output}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    for row in ("teacher", "student before", "student distilled"):
      self.assertRegex(proc.stdout, rf"{row}\s+[\d,]+\s+\d+\.\d\d%")
    self.assertIn("fitnet_block5_relu_loss", proc.stdout + proc.stderr)
    trained = keras.models.load_model(output)
    self.assertEqual(trained.count_params(), student.count_params())  # no adapters inside
    self.assertFalse(all(np.array_equal(a, b) for a, b in
                         zip(trained.get_weights(), student.get_weights())))
    self.assertFalse(os.path.exists(output + ".backup"), "the backup is removed when done")

  def test_flag_errors_name_the_flag(self):
    base = [f"--teacher={self.teacher}", "--student_reference=reference_cnn",
            f"--dataset={self.data}", "--epochs=1"]
    cases = [
        (["--output=o.tflite"], "--output must end in .keras or .h5"),
        (["--losses=soft_label,attention", "--output=o.keras"], "--losses takes"),
        (["--losses=fitnet", "--output=o.keras"], "--losses=fitnet needs --hints"),
        (["--hints=block3_relu", "--output=o.keras"], "--losses=fitnet needs --hints"),
        (["--losses=fsp", "--fsp_pairs=block2_relu", "--output=o.keras"],
         "--losses=fsp needs --fsp_pairs"),
        (["--loss_weights=fitnet=2", "--output=o.keras"], "--loss_weights takes"),
        (["--loss_weights=soft_label=-1", "--output=o.keras"], "--loss_weights takes"),
        (["--temperature=0", "--output=o.keras"], "--temperature must be > 0"),
    ]
    for extra, message in cases:
      proc = _run(*base, *extra)
      self.assertNotEqual(proc.returncode, 0, extra)
      self.assertIn(message, proc.stderr, extra)

  def test_a_layer_the_teacher_lacks_is_a_usage_error(self):
    proc = _run(f"--teacher={self.teacher}", "--student_reference=reference_cnn",
                f"--dataset={self.data}", "--losses=fitnet", "--hints=block9_relu",
                f"--output={os.path.join(self.tmp, 'x.keras')}")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("has no layer named 'block9_relu'", proc.stderr)
    proc = _run(f"--teacher={os.path.join(self.tmp, 'missing.keras')}",
                "--student_reference=reference_cnn", f"--dataset={self.data}",
                f"--output={os.path.join(self.tmp, 'x.keras')}")
    self.assertIn("--teacher: cannot load", proc.stderr)


if __name__ == "__main__":
  absltest.main()
