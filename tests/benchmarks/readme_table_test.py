"""The README's results table must be exactly what the benchmark JSON says."""

import importlib.util
import json
import pathlib

from absl.testing import absltest

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("readme_table",
                                               _ROOT / "benchmarks" / "readme_table.py")
readme_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_table)


class ReadmeTableTest(absltest.TestCase):

  def test_readme_matches_benchmark_json(self):
    readme = (_ROOT / "README.md").read_text()
    self.assertEqual(readme_table.readme_block(readme), readme_table.render(),
                     "README results are stale: run `python benchmarks/readme_table.py`")

  def test_render_formats_a_row(self):
    results = pathlib.Path(self.create_tempdir().full_path)
    (results / "x.json").write_text(json.dumps({
        "benchmark": "x", "recipe": "r",
        "results": [{"stage": "m_float32", "tflite_accuracy": 0.91234, "params": 70746,
                     "macs": 5532544, "tflite_kb": 277.94, "latency_ms": {"1": 0.1234}}]}))
    table = readme_table.render(results)
    self.assertIn("| m_float32 | 91.23% | 70,746 | 5,532,544 | 277.9 | 0.123 |", table)
    self.assertIn("| ms @1 thread |", table)


if __name__ == "__main__":
  absltest.main()
