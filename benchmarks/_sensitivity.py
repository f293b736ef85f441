"""The pruning benchmarks' shared sensitivity scan, so they read and extend one cache."""

import kslim
from kslim.training import accuracy

__all__ = ["HELD_OUT", "RATIOS", "scan"]

HELD_OUT = 3000  # last training images the scans evaluate on (never the test set)
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def scan(baseline, x_train, y_train, workdir, criterion, reconstruction_images=0):
  """`kslim.pruning.sensitivity` of `baseline` on the held-out images, cached in `workdir`.

  With `reconstruction_images` > 0, each scanned prune is refitted on that many leading
  training images first; that scan has its own cache.
  """
  x_held, y_held = x_train[-HELD_OUT:], y_train[-HELD_OUT:]
  suffix = f"_refit{reconstruction_images}" if reconstruction_images else ""
  return kslim.pruning.sensitivity(
      baseline, lambda m: accuracy(m.predict(x_held, batch_size=1000, verbose=0), y_held),
      RATIOS, criterion, cache=workdir / f"prune_sensitivity_{criterion}{suffix}.json",
      reconstruction_images=x_train[:reconstruction_images] if reconstruction_images else None)
