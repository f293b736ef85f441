"""Knowledge distillation: a student trained with `fit` towards a frozen teacher, and peers
that teach each other (deep mutual learning).

Example:
  >>> from kslim import distill
  >>> d = distill.Distiller(student, teacher, [distill.SoftLabel(temperature=4.0),
  ...                                          distill.FitNet("block3_relu", weight=0.5)])
  >>> d.compile("adam", metrics=["accuracy"]); d.fit(x, y, epochs=5)
  >>> d.student.save("student.keras")
"""

from kslim.distill.distiller import Distiller
from kslim.distill.distiller import fit_distiller
from kslim.distill.dml import DML
from kslim.distill.losses import DistillationLoss
from kslim.distill.losses import FitNet
from kslim.distill.losses import FSP
from kslim.distill.losses import L2
from kslim.distill.losses import SoftLabel

__all__ = ["DML", "DistillationLoss", "Distiller", "FSP", "FitNet", "L2", "SoftLabel",
           "fit_distiller"]
