"""kslim-prune: structured pruning of a saved model, fine-tuned, saved as a smaller .keras.

Prints params, MACs and test accuracy before and after (via `kslim.profile`).

Examples:
  kslim-prune --model=model.keras --criterion=fpgm --ratio=0.3 --output=pruned.keras
  kslim-prune --model=model.keras --flops_reduction=0.5 --sensitivity_cache=sens.json \\
      --fine_tune_epochs=2 --reconstruction_images=2000 --output=pruned.keras
"""

import pathlib

from absl import app, flags, logging

from kslim import profiling
from kslim import pruning
from kslim._table import format_table
from kslim.cli._common import define_dataset_flag, define_model_flags, start
from kslim.pruning.criteria import Criterion
from kslim.training import finetune_schedule, fit_classifier, model_accuracy

_load_model = define_model_flags("The trained tf_keras model", "Prune")
_load_data = define_dataset_flag()
_CRITERION = flags.DEFINE_enum("criterion", "l1", [c.value for c in Criterion],
                               "Channel importance criterion.")
_RATIO = flags.DEFINE_float("ratio", None, "Uniform share of channels to remove per group.")
_FLOPS_REDUCTION = flags.DEFINE_float("flops_reduction", None, "Share of MACs to remove: "
                                      "uniform ratios, or sensitivity-derived ones with "
                                      "--sensitivity_cache.")
flags.mark_flags_as_mutual_exclusive(["ratio", "flops_reduction"], required=True)
_SENSITIVITY_CACHE = flags.DEFINE_string("sensitivity_cache", None, "JSON cache of a "
                                         "sensitivity scan on held-out training images "
                                         "(resumed if it exists; a .png plot goes beside it).")
_ALIGN = flags.DEFINE_integer("align", 1, "Keep channel counts multiples of this.",
                              lower_bound=1)
_FINE_TUNE_EPOCHS = flags.DEFINE_integer("fine_tune_epochs", 1, "Fine-tuning epochs.",
                                         lower_bound=0)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate (cosine decay "
                                    "to 0).", lower_bound=0.0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
_RECONSTRUCTION = flags.DEFINE_integer(
    "reconstruction_images", 0, "When > 0, refit the layers that lose input channels by least "
    "squares on this many training images before fine-tuning (0: off).", lower_bound=0)
_SENSITIVITY_REFIT = flags.DEFINE_bool(
    "sensitivity_refit", False, "Refit every pruned model of the sensitivity scan by least "
    "squares (on the --reconstruction_images images) before evaluating it, so the ratios "
    "follow what prune + refit loses.")
_HELD_OUT = flags.DEFINE_integer("held_out", 3000, "Training images the sensitivity scan "
                                 "evaluates on.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "Where to save the pruned model (.keras or .h5).",
                              required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Training seed.")


@flags.validator("output", message="--output must end in .keras or .h5")
def _keras_suffix(value):
  return value is None or value.endswith((".keras", ".h5"))


@flags.multi_flags_validator(["ratio", "flops_reduction"],
                             message="--ratio must be in [0, 1) and --flops_reduction in (0, 1)")
def _shares(values):
  ratio, reduction = values["ratio"], values["flops_reduction"]
  return ((ratio is None or 0.0 <= ratio < 1.0)
          and (reduction is None or 0.0 < reduction < 1.0))


@flags.multi_flags_validator(["sensitivity_cache", "flops_reduction"],
                             message="--sensitivity_cache needs --flops_reduction")
def _cache_needs_target(values):
  return values["sensitivity_cache"] is None or values["flops_reduction"] is not None


@flags.multi_flags_validator(
    ["sensitivity_refit", "sensitivity_cache", "reconstruction_images"],
    message="--sensitivity_refit needs --sensitivity_cache and --reconstruction_images")
def _refit_needs_scan(values):
  return not values["sensitivity_refit"] or (values["sensitivity_cache"] is not None
                                             and values["reconstruction_images"] > 0)


def _ratios(model, x_train, x_held, y_held):
  """What to prune: the uniform --ratio, or ratios that reach --flops_reduction."""
  if _RATIO.value is not None:
    return _RATIO.value
  if _SENSITIVITY_CACHE.value is None:
    graph = pruning.DependencyGraph(model)
    return pruning.uniform_ratio_for_flops(graph, _FLOPS_REDUCTION.value, _CRITERION.value,
                                           _ALIGN.value)
  sens = pruning.sensitivity(
      model, lambda m: model_accuracy(m, x_held, y_held),
      criterion=_CRITERION.value, cache=_SENSITIVITY_CACHE.value,
      reconstruction_images=(x_train[:_RECONSTRUCTION.value] if _SENSITIVITY_REFIT.value
                             else None))
  return pruning.ratios_for_flops(sens, _FLOPS_REDUCTION.value, align=_ALIGN.value)


def main(argv):
  start(argv)
  (x_train, y_train), (x_test, y_test) = _load_data()
  model = _load_model(x_train)
  held = min(_HELD_OUT.value, len(x_train))
  ratios = _ratios(model, x_train, x_train[-held:], y_train[-held:])
  pruned = pruning.prune(model, ratios, _CRITERION.value, _ALIGN.value,
                         reconstruction_images=(x_train[:_RECONSTRUCTION.value]
                                                if _RECONSTRUCTION.value else None))
  logging.info("pruned with %s ratios %s", _CRITERION.value, ratios)
  if _FINE_TUNE_EPOCHS.value:
    schedule = finetune_schedule(_LEARNING_RATE.value, _FINE_TUNE_EPOCHS.value, len(x_train),
                                 _BATCH_SIZE.value)
    fit_classifier(pruned, x_train, y_train, _FINE_TUNE_EPOCHS.value, _BATCH_SIZE.value,
                   schedule, _SEED.value)
  pathlib.Path(_OUTPUT.value).parent.mkdir(parents=True, exist_ok=True)
  pruned.save(_OUTPUT.value)
  rows = []
  for label, m in (("original", model), (f"pruned ({_CRITERION.value})", pruned)):
    prof = profiling.profile(m)
    acc = model_accuracy(m, x_test, y_test)
    rows.append([label, f"{prof.total_params:,}", f"{prof.total_macs:,}", f"{100 * acc:.2f}%"])
  print(format_table(["model", "params", "MACs", "test acc"], rows))
  print(f"saved {_OUTPUT.value}")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
