"""`Distiller`: a student trained with `fit` to follow a frozen teacher.

The distiller is a `keras.Model` whose `train_step` runs the teacher in inference mode (no
gradient, no batch-norm statistics update), the student in training mode, and minimises the
hard-label loss plus each weighted distillation term (see `kslim.distill.losses`) over the
student's weights and the terms' adapters only. Everything Keras offers around `fit` works:
callbacks, checkpoints, `evaluate`, `tf.distribute` strategies. ``distiller.student`` is the
user's own student model, trained in place: save it, quantize it or prune it as any model.
"""

import tensorflow as tf

from kslim._keras import check_model, keras
from kslim.distill import _objective
from kslim.distill.losses import DistillationLoss, Features
from kslim.training import fit_compiled

__all__ = ["Distiller", "fit_distiller"]


def feature_model(model, layer_names, role):
  """A model sharing `model`'s layers that returns its logits and the named layers' outputs.

  Raises:
    ValueError: `model` has several outputs, no graph (an unbuilt subclassed or Sequential
      model), or lacks a named layer (the message lists its layers).
  """
  if not getattr(model, "_is_graph_network", False):
    raise ValueError(f"Distiller: the {role} {model.name!r} is not a functional model with "
                     "known inputs; build it (keras.Input, or Sequential.build) first")
  if len(model.outputs) != 1:
    raise ValueError(f"Distiller: the {role} {model.name!r} has {len(model.outputs)} outputs; "
                     "it must return one logits tensor")
  known = [layer.name for layer in model.layers]
  missing = [n for n in layer_names if n not in known]
  if missing:
    raise ValueError(f"Distiller: the {role} {model.name!r} has no layer named "
                     f"{', '.join(map(repr, missing))}; its layers are {known}")
  outputs = []
  for name in layer_names:
    try:
      outputs.append(model.get_layer(name).output)
    except AttributeError as error:  # a layer called at several places has no single output
      raise ValueError(f"Distiller: {role} layer {name!r} has no single output ({error})") \
          from None
  return keras.Model(model.inputs, [model.outputs[0], *outputs], name=f"{model.name}_features")


def _features(feature_net, layer_names, x, training):
  outputs = tf.nest.flatten(feature_net(x, training=training))  # one output comes unlisted
  return Features(outputs[0], dict(zip(layer_names, outputs[1:])))


def _shapes(feature_net, layer_names):
  shapes = [t.shape for t in feature_net.outputs]
  return {None: shapes[0], **dict(zip(layer_names, shapes[1:]))}


@keras.utils.register_keras_serializable(package="kslim")
class Distiller(_objective.ObjectiveModel):
  """Trains `student` with `fit` towards `teacher` through distillation losses.

  The total loss per batch is ``hard_label_weight * compile's loss(y, student logits) +
  sum(term.weight * term)`` plus the student's regularization losses; the progress bar and
  history show it as ``loss``, and each part as ``hard_label_loss`` and ``<term name>_loss``.

  Args:
    student: the tf_keras model to train (logits out). It is trained in place and stays a
      plain Keras model.
    teacher: the trained tf_keras model to follow (logits out, same input). Never changed.
    losses: `DistillationLoss` terms (SoftLabel, L2/FitNet, FSP), with distinct names.
    hard_label_weight: weight of the hard-label loss; 0 trains on the teacher alone.

  Raises:
    ValueError: no losses, duplicate term names, a layer name missing in a network, shapes
      that cannot match, or different input shapes.

  Example:
    >>> distiller = Distiller(student, teacher, [SoftLabel(temperature=4.0)])
    >>> distiller.compile(keras.optimizers.Adam(2e-3), metrics=["accuracy"])
    >>> distiller.fit(x, y, epochs=5)
    >>> distiller.student.save("student.keras")
  """

  def __init__(self, student, teacher, losses, hard_label_weight=1.0, name="distiller",
               **kwargs):
    super().__init__(name=name, **kwargs)
    check_model(student, "kslim.distill.Distiller (student)")
    check_model(teacher, "kslim.distill.Distiller (teacher)")
    losses = list(losses)
    if not losses:
      raise ValueError("Distiller: give at least one distillation loss (e.g. SoftLabel())")
    for term in losses:
      if not isinstance(term, DistillationLoss):
        raise TypeError(f"Distiller: {term!r} is not a kslim.distill loss (SoftLabel, L2, "
                        "FitNet, FSP)")
    names = [term.name for term in losses]
    if len(set(names)) != len(names):
      raise ValueError(f"Distiller: loss names {names} repeat; give each term its own name=")
    if not hard_label_weight >= 0:
      raise ValueError(f"Distiller: hard_label_weight must be >= 0, got {hard_label_weight!r}")
    if student.input_shape != teacher.input_shape:
      raise ValueError(f"Distiller: the student takes {student.input_shape} but the teacher "
                       f"{teacher.input_shape}; both must read the same inputs")
    self.student = student
    self.teacher = teacher
    self.distillation_losses = losses
    self.hard_label_weight = float(hard_label_weight)
    self._teacher_layers = list(dict.fromkeys(n for t in losses for n in t.teacher_layers))
    self._student_layers = list(dict.fromkeys(n for t in losses for n in t.student_layers))
    self._teacher_net = feature_model(teacher, self._teacher_layers, "teacher")
    self._student_net = feature_model(student, self._student_layers, "student")
    teacher_shapes = _shapes(self._teacher_net, self._teacher_layers)
    student_shapes = _shapes(self._student_net, self._student_layers)
    for term in losses:
      term.build_for(teacher_shapes, student_shapes)
    self.track(["loss", "hard_label_loss", *(f"{name}_loss" for name in names)])
    self.built = True  # every part is built; BackupAndRestore and load_weights need to know

  def call(self, inputs, training=None):
    """The student's logits: `predict` and `evaluate` see the student."""
    return self.student(inputs, training=training)

  def weights_to_train(self):
    """The student's trainable weights and the losses' adapters."""
    return self.student.trainable_weights + [
        w for term in self.distillation_losses for w in term.trainable_weights]

  def targets(self, x):
    """The teacher's `Features`, in inference mode (no batch-norm statistics update)."""
    teacher = _features(self._teacher_net, self._teacher_layers, x, training=False)
    return tf.nest.map_structure(tf.stop_gradient, teacher)

  def objective(self, x, y, sample_weight, targets, training):
    teacher = targets
    student = _features(self._student_net, self._student_layers, x, training=training)
    hard = _objective.per_example_mean(self.hard_label_loss, y, student.logits, sample_weight)
    parts = {"hard_label_loss": hard}
    total = self.hard_label_weight * hard
    for term in self.distillation_losses:
      value = term.compute(teacher, student)
      parts[f"{term.name}_loss"] = value
      total += term.weight * value
    if self.student.losses:
      total += tf.add_n(self.student.losses)
    parts["loss"] = total
    return total, parts, student.logits

  def get_config(self):
    serialize = keras.saving.serialize_keras_object
    return {"name": self.name, "student": serialize(self.student),
            "teacher": serialize(self.teacher),
            "losses": [serialize(term) for term in self.distillation_losses],
            "hard_label_weight": self.hard_label_weight}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    deserialize = keras.saving.deserialize_keras_object
    config = dict(config)
    for key in ("student", "teacher"):
      config[key] = deserialize(config[key], custom_objects=custom_objects)
    config["losses"] = [deserialize(t, custom_objects=custom_objects) for t in config["losses"]]
    return cls(**config)


def fit_distiller(distiller, x, y, epochs, batch_size=128, learning_rate=2e-3,
                  validation_data=None, callbacks=None, verbose=None):
  """Compiles `distiller` with kslim's training recipe (Adam, sparse cross-entropy on logits
  as the hard-label loss, accuracy) and fits it on shuffled batches; returns the History.

  Args:
    distiller: a `Distiller`; seed (`keras.utils.set_random_seed`) before building it to fix
      the adapters' initialization and the shuffling.
    x, y: training images and integer labels.
    epochs, batch_size: as in `fit`.
    learning_rate: a float or a schedule (e.g. `kslim.training.finetune_schedule`).
    validation_data, callbacks, verbose: passed to `fit`.
  """
  distiller.compile(keras.optimizers.Adam(learning_rate),
                    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
  return fit_compiled(distiller, x, y, epochs, batch_size, validation_data, callbacks, verbose)
