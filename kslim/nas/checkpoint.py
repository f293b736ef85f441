"""`EpochCheckpoint`: resumability for the custom training loops of DARTS and OFA.

Keras' ``BackupAndRestore`` only serves ``fit``; the supernet searches run their own loops.
After each finished epoch the loop saves its variables, optimizer slots included, with the
number of finished epochs; a restarted loop restores them and skips those epochs. Each epoch
draws its randomness from ``(seed, epoch)``, so a resumed run repeats exactly the epochs the
killed one had left.
"""

import tensorflow as tf

__all__ = ["EpochCheckpoint"]


class EpochCheckpoint:
  """Saves `trackables` and a finished-epoch counter in `directory` after every epoch.

  Args:
    directory: where the checkpoint lives; None keeps nothing (epochs start from 0).
    **trackables: what to save (models, optimizers: anything `tf.train.Checkpoint` takes).
      Optimizers must be built (``optimizer.build(variables)``) before this is created, so
      their slots are restored rather than created empty on the first step.
  """

  def __init__(self, directory, **trackables):
    self.finished = tf.Variable(0, dtype=tf.int64, trainable=False)
    self._manager = None
    if directory is not None:
      checkpoint = tf.train.Checkpoint(finished_epochs=self.finished, **trackables)
      self._manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=1)
      if self._manager.latest_checkpoint:
        checkpoint.restore(self._manager.latest_checkpoint).assert_existing_objects_matched()

  @property
  def epochs_done(self):
    """Epochs finished, by this run or the ones it resumes."""
    return int(self.finished.numpy())

  def epoch_finished(self):
    """Counts one more finished epoch and saves."""
    self.finished.assign_add(1)
    if self._manager is not None:
      self._manager.save()
