"""The one place that drives matplotlib: headless figures written as PNGs.

matplotlib loads only when a plot is made, on the file-only Agg backend, so kslim works on
machines without a display and imports fast.
"""

__all__ = ["subplots", "save"]


def subplots(*args, **kwargs):
  """``matplotlib.pyplot.subplots`` on the Agg backend: ``(figure, axes)``."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  return pyplot.subplots(*args, **kwargs)


def save(figure, path):
  """Writes `figure` as a PNG at `path` and frees it."""
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)
