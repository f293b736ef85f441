"""Job config validation: every error names the file, line and key; defaults; overrides."""

import os
import textwrap

from absl.testing import absltest

from kslim.pipeline import config as config_lib

_GOOD = """\
model: {reference: reference_cnn, train_epochs: 2}
dataset: fashion_mnist
strategies:
  - prune:
      criterion: fpgm
      ratio: 0.3
  - quantize: {epochs: 1}
  - export: {modes: [int8]}
"""


class ConfigTest(absltest.TestCase):

  def _load(self, text, overrides=()):
    path = os.path.join(self.create_tempdir().full_path, "job.yaml")
    with open(path, "w") as f:
      f.write(textwrap.dedent(text))
    return config_lib.load(path, overrides), path

  def _error(self, text, pattern, overrides=()):
    with self.assertRaisesRegex(config_lib.ConfigError, pattern):
      self._load(text, overrides)

  def test_defaults_are_filled_in(self):
    config, _ = self._load(_GOOD)
    prune = config["strategies"][0]["prune"]
    self.assertEqual(prune["criterion"], "fpgm")
    self.assertEqual(prune["fine_tune_epochs"], 1)
    self.assertIsNone(prune["distill"])
    self.assertEqual(config["strategies"][1]["quantize"]["weight_bits"], 8)
    self.assertEqual(config["training"]["batch_size"], 128)
    self.assertEqual(config["model"]["train_epochs"], 2)

  def test_every_reference_model_is_accepted(self):
    from kslim import models  # pylint: disable=import-outside-toplevel (imports TensorFlow)
    for name in models.REFERENCE_MODELS:
      config, _ = self._load(_GOOD.replace("reference_cnn", name))
      self.assertEqual(config["model"]["reference"], name)

  def test_errors_name_the_line_and_key(self):
    self._error(_GOOD.replace("criterion: fpgm", "criterion: l3"),
                r"job.yaml:5: strategies\[0\].prune.criterion: 'l3' is not one of l1, ")
    self._error(_GOOD.replace("ratio: 0.3", "ratio: 0.3\n      speed: 2"),
                r"job.yaml:7: strategies\[0\].prune.speed: unknown key; known keys here: "
                r"criterion, ratio")
    self._error(_GOOD.replace("{epochs: 1}", "{epochs: one}"),
                r"job.yaml:7: strategies\[1\].quantize.epochs: expected an integer, got 'one'")
    self._error(_GOOD.replace("train_epochs: 2", "train_epochs: 0"),
                r"job.yaml:1: model.train_epochs: 0 is below the minimum 1")
    self._error(_GOOD.replace("- export", "- quantise"),
                r"job.yaml:8: strategies\[2\].quantise: unknown strategy; known: prune, ")
    self._error(_GOOD.replace("[int8]", "[int4]"),
                r"job.yaml:8: strategies\[2\].export.modes\[0\]: 'int4' is not one of ")
    self._error(_GOOD.replace("ratio: 0.3", "ratio: 0.3\n      flops_reduction: 0.5"),
                r"job.yaml:4: strategies\[0\].prune: give exactly one of ratio, flops_reduction")
    self._error(_GOOD.replace("ratio: 0.3", "ratio: 0.3\n      sensitivity_refit: true"),
                r"job.yaml:\d+: strategies\[0\].prune.sensitivity_refit: needs sensitive: true "
                r"and reconstruction_images > 0")
    self._error("model: {reference: reference_cnn}\nstrategies: []\n",
                r"job.yaml:2: strategies: needs at least one strategy")
    self._error("model: {reference: reference_cnn}\n", r"strategies: is required")
    self._error("model: {reference: reference_cnn}\nstrategies: [prune]\n",
                r"strategies\[0\]: each strategy is one of prune, .* got 'prune'")
    self._error("strategies: [{quantize: {}}]\nmodel:\n  reference: reference_cnn\n  bad: 1\n",
                r"job.yaml:4: model.bad: unknown key")
    self._error("strategies: [{quantize: {}}]\nmodel: {}\n",
                r"job.yaml:2: model: give exactly one of reference and file")
    self._error(": [\n", r"not valid YAML")

  def test_impossible_order_names_the_strategy(self):
    self._error(_GOOD.replace("  - export: {modes: [int8]}", "  - prune: {ratio: 0.2}"),
                r"job.yaml:8: strategies\[2\].prune: cannot follow 'quantize' \(its result is a "
                r"QAT model\); only export, benchmark can")
    self._error("model: {reference: reference_cnn}\nstrategies:\n  - ptq: {}\n"
                "  - benchmark: {}\n  - distill: {}\n",
                r"job.yaml:5: strategies\[2\].distill: cannot follow 'ptq'")

  def test_missing_files_are_named(self):
    self._error(_GOOD.replace("{reference: reference_cnn, train_epochs: 2}",
                              "{file: /no/such/model.keras}"),
                r"job.yaml:1: model.file: no such file: '/no/such/model.keras'")
    self._error(_GOOD.replace("dataset: fashion_mnist", "dataset: /no/data.npz"),
                r"job.yaml:2: dataset: expected 'fashion_mnist' or an existing .npz file")
    self._error(_GOOD.replace("ratio: 0.3", "ratio: 0.3\n      distill: {teacher: t.keras}"),
                r"strategies\[0\].prune.distill.teacher: no such file: 't.keras' \(or 'baseline'\)")
    self._error(_GOOD.replace("ratio: 0.3", "ratio: 0.3\n      distill: {losses: [fsp]}"),
                r"strategies\[0\].prune.distill.losses\[0\]: 'fsp' is not one of soft_label, "
                r"fitnet, logits_l2")
    self._error(_GOOD.replace("ratio: 0.3", "ratio: 0.3\n      distill: {losses: [fitnet]}"),
                r"job.yaml:7: strategies\[0\].prune.distill.losses: fitnet needs hint_layer")
    self._error(_GOOD.replace("quantize: {epochs: 1}", "quantize:\n      distill: "
                              "{losses: [fitnet], hint_layer: conv1}"),
                r"job.yaml:8: strategies\[1\].quantize.distill.losses: fitnet cannot follow a "
                r"hint layer through QAT")
    with self.assertRaisesRegex(config_lib.ConfigError, "cannot read config '/no/job.yaml'"):
      config_lib.load("/no/job.yaml")

  def test_shipped_example_configs_are_valid(self):
    names = sorted(os.listdir("examples"))
    self.assertContainsSubset({"demo.yaml", "qat.yaml", "ptq.yaml", "prune_qat.yaml",
                               "distill_prune_ptq.yaml"}, names)
    for name in names:
      config = config_lib.load(os.path.join("examples", name))
      self.assertEqual(config["dataset"], "fashion_mnist", name)

  def test_overrides_set_keys_before_validation(self):
    config, _ = self._load(_GOOD, ["strategies.0.prune.ratio=0.5", "training.seed=3",
                                   "strategies.1.quantize.learning_rate=1e-4"])
    self.assertEqual(config["strategies"][0]["prune"]["ratio"], 0.5)
    self.assertEqual(config["training"]["seed"], 3)
    self.assertEqual(config["strategies"][1]["quantize"]["learning_rate"], 1e-4)  # "1e-4" str
    self._error(_GOOD, r"strategies\[0\].prune.ratio: 'big' is not|expected a number, got 'big'",
                ["strategies.0.prune.ratio=big"])
    self._error(_GOOD, r"override 'strategies.7.prune.ratio=1': strategies\[7\] does not exist",
                ["strategies.7.prune.ratio=1"])
    self._error(_GOOD, r"override 'training': expected key.path=value", ["training"])


if __name__ == "__main__":
  absltest.main()
