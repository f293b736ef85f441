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

  def _results(self, files):
    results = pathlib.Path(self.create_tempdir().full_path)
    (results / "x.json").write_text(json.dumps({
        "benchmark": "x", "recipe": "r",
        "results": [{"stage": "m_float32", "tflite_accuracy": 0.91234, "params": 70746,
                     "macs": 5532544, "tflite_kb": 1.0, "latency_ms": {"1": 9.9},
                     "tflite_file": "runs/m.tflite"}]}))
    records = [{"path": path, "threads": threads, "xnnpack": xnnpack, "size_bytes": 284604,
                "median_ms": median} for path, threads, xnnpack, median in files]
    (results / readme_table.MEASUREMENTS).write_text(json.dumps({"results": records}))
    return results

  def test_size_and_latency_come_from_the_tflite_benchmark(self):
    table = readme_table.render(self._results([("runs/m.tflite", 1, True, 0.1234),
                                               ("runs/m.tflite", 2, True, 0.0871),
                                               ("runs/m.tflite", 1, False, 0.5)]))
    # 284604 bytes = 277.9 KB from the benchmark record, not the row's own 1.0 KB / 9.9 ms.
    self.assertIn("| m_float32 | 91.23% | 70,746 | 5,532,544 | 277.9 | 0.123 | 0.087 |", table)
    self.assertIn("| ms @1 thread | ms @2 threads |", table)

  def test_an_unmeasured_file_is_an_error(self):
    with self.assertRaisesRegex(KeyError, r"runs/m.tflite \(of x.json\) is not in "
                                r"tflite_benchmark.json"):
      readme_table.render(self._results([("runs/other.tflite", 1, True, 0.1)]))


if __name__ == "__main__":
  absltest.main()
