"""kslim-distill: trains a student model towards a trained teacher, saves the student.

Prints the teacher's and the student's test accuracy before and after. An interrupted run
resumes from the last finished epoch (Keras BackupAndRestore in --backup_dir).

Examples:
  kslim-distill --teacher=teacher.keras --student_reference=reference_cnn --student_width=0.5 \\
      --losses=soft_label --temperature=4 --epochs=5 --output=student.keras
  kslim-distill --teacher=teacher.keras --student=pruned.keras \\
      --losses=soft_label,fitnet,fsp --hints=block3_relu \\
      --fsp_pairs=block2_relu/block3_relu,block4_relu/block5_relu \\
      --loss_weights=soft_label=0.9,fitnet=0.5,fsp=0.1 --hard_label_weight=0.1 \\
      --output=student.keras
"""

import os
import pathlib

from absl import app, flags, logging

from kslim import distill
from kslim import models
from kslim._enum import Choice
from kslim._keras import keras
from kslim._table import format_table
from kslim.cli._common import define_dataset_flag, load_model, start
from kslim.training import finetune_schedule, model_accuracy


class Loss(Choice):
  """The distillation terms the binary can combine."""
  SOFT_LABEL = "soft_label"
  FITNET = "fitnet"
  FSP = "fsp"
  LOGITS_L2 = "logits_l2"


_TEACHER = flags.DEFINE_string("teacher", None, "The trained teacher tf_keras model (.keras, "
                               ".h5 or SavedModel folder).", required=True)
_STUDENT = flags.DEFINE_string("student", None, "The student model file (e.g. a pruned "
                               "model); trained further.")
_STUDENT_REFERENCE = flags.DEFINE_enum("student_reference", None, sorted(models.REFERENCE_MODELS),
                                       "Train a fresh reference model as the student instead.")
flags.mark_flags_as_mutual_exclusive(["student", "student_reference"], required=True)
_STUDENT_WIDTH = flags.DEFINE_float("student_width", 0.5, "Width multiplier of "
                                    "--student_reference.", lower_bound=0.0)
_load_data = define_dataset_flag()
_LOSSES = flags.DEFINE_list("losses", ["soft_label"], f"Distillation terms, of "
                            f"{[m.value for m in Loss]}.")
_LOSS_WEIGHTS = flags.DEFINE_list("loss_weights", [], "Weights as loss=weight (default 1 each), "
                                  "e.g. soft_label=0.9,fsp=0.1.")
_HARD_LABEL_WEIGHT = flags.DEFINE_float("hard_label_weight", 1.0, "Weight of the hard-label "
                                        "cross-entropy.", lower_bound=0.0)
_TEMPERATURE = flags.DEFINE_float("temperature", 4.0, "Softening temperature of soft_label.")
_HINTS = flags.DEFINE_list("hints", [], "FitNet hints as teacher_layer[:student_layer] "
                           "(one fitnet term each).")
_FSP_PAIRS = flags.DEFINE_list("fsp_pairs", [], "FSP layer pairs as first/second"
                               "[:student_first/student_second].")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Training epochs.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 2e-3, "Peak learning rate (cosine decay "
                                    "to 0).", lower_bound=0.0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the student's initialization and shuffling.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to save the student (.keras or .h5).",
                              required=True)
_BACKUP_DIR = flags.DEFINE_string("backup_dir", None, "Where per-epoch backups go so an "
                                  "interrupted run resumes (default: <output>.backup; removed "
                                  "when training ends).")


@flags.validator("output", message="--output must end in .keras or .h5")
def _keras_suffix(value):
  return value is None or value.endswith((".keras", ".h5"))


@flags.validator("losses", message=f"--losses takes {[m.value for m in Loss]}, at least one")
def _known_losses(values):
  return bool(values) and all(v in {m.value for m in Loss} for v in values)


@flags.validator("temperature", message="--temperature must be > 0")
def _positive_temperature(value):
  return value > 0


@flags.multi_flags_validator(["losses", "hints"], message="--losses=fitnet needs --hints, and "
                             "--hints needs fitnet in --losses")
def _hints_match(values):
  return (Loss.FITNET.value in values["losses"]) == bool(values["hints"])


@flags.multi_flags_validator(["losses", "fsp_pairs"], message="--losses=fsp needs --fsp_pairs "
                             "(first/second[:first/second] each), and --fsp_pairs needs fsp in "
                             "--losses")
def _fsp_pairs_match(values):
  pairs = values["fsp_pairs"]
  return ((Loss.FSP.value in values["losses"]) == bool(pairs)
          and all(_parse_fsp_pair(p) is not None for p in pairs))


@flags.multi_flags_validator(["losses", "loss_weights"], message="--loss_weights takes "
                             "loss=weight for losses in --losses, weights >= 0")
def _weights_match(values):
  weights = _parse_weights(values["loss_weights"])
  return weights is not None and set(weights) <= set(values["losses"])


def _parse_weights(entries):
  """``["soft_label=0.9", ...]`` as a dict, or None if malformed."""
  weights = {}
  for entry in entries:
    name, _, value = entry.partition("=")
    try:
      weights[name] = float(value)
    except ValueError:
      return None
    if weights[name] < 0:
      return None
  return weights


def _parse_fsp_pair(entry):
  """``"a/b"`` or ``"a/b:c/d"`` as ((a, b), (c, d)), or None if malformed."""
  sides = entry.split(":")
  pairs = [tuple(side.split("/")) for side in sides]
  if len(sides) > 2 or any(len(p) != 2 or not all(p) for p in pairs):
    return None
  return pairs[0], pairs[-1]


def _losses():
  """The `kslim.distill` terms the flags ask for."""
  weights = _parse_weights(_LOSS_WEIGHTS.value)
  terms = []
  for name in map(Loss, _LOSSES.value):
    weight = weights.get(name.value, 1.0)
    if name is Loss.SOFT_LABEL:
      terms.append(distill.SoftLabel(_TEMPERATURE.value, weight))
    elif name is Loss.LOGITS_L2:
      terms.append(distill.L2(weight=weight))
    elif name is Loss.FSP:
      pairs = [_parse_fsp_pair(p) for p in _FSP_PAIRS.value]
      terms.append(distill.FSP([t for t, _ in pairs], [s for _, s in pairs], weight))
    else:
      for hint in _HINTS.value:
        teacher_layer, _, student_layer = hint.partition(":")
        student_layer = student_layer or teacher_layer
        name = "fitnet" if len(_HINTS.value) == 1 else f"fitnet_{student_layer}"
        terms.append(distill.FitNet(teacher_layer, student_layer, weight, name=name))
  return terms


def main(argv):
  start(argv)
  teacher = load_model(_TEACHER.value, "teacher")
  student = (load_model(_STUDENT.value, "student") if _STUDENT.value else
             models.get(_STUDENT_REFERENCE.value, width=_STUDENT_WIDTH.value))
  (x_train, y_train), (x_test, y_test) = _load_data()

  def test_accuracy(model):
    return model_accuracy(model, x_test, y_test)

  rows = [["teacher", f"{teacher.count_params():,}", f"{test_accuracy(teacher):.2%}"],
          ["student before", f"{student.count_params():,}", f"{test_accuracy(student):.2%}"]]
  keras.utils.set_random_seed(_SEED.value)
  try:
    distiller = distill.Distiller(student, teacher, _losses(), _HARD_LABEL_WEIGHT.value)
  except ValueError as error:  # a layer name or shape the two models cannot match
    raise app.UsageError(str(error)) from error
  schedule = finetune_schedule(_LEARNING_RATE.value, _EPOCHS.value, len(x_train),
                               _BATCH_SIZE.value)
  backup = _BACKUP_DIR.value or _OUTPUT.value + ".backup"
  distill.fit_distiller(distiller, x_train, y_train, _EPOCHS.value, _BATCH_SIZE.value, schedule,
                        callbacks=[keras.callbacks.BackupAndRestore(backup)])
  if os.path.isdir(backup) and not os.listdir(backup):
    os.rmdir(backup)  # Keras empties it once training has finished
  logging.info("distilled with %s", [t.get_config() for t in distiller.distillation_losses])
  pathlib.Path(_OUTPUT.value).parent.mkdir(parents=True, exist_ok=True)
  student.save(_OUTPUT.value)
  rows.append(["student distilled", f"{student.count_params():,}",
               f"{test_accuracy(student):.2%}"])
  print(format_table(["model", "params", "test acc"], rows))
  print(f"saved {_OUTPUT.value}")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
