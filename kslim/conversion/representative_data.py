"""Representative data for calibration: numpy arrays, tf.data datasets and generators, checked.

Whatever form the data comes in, `examples` returns one float32 array of single examples
shaped like the model's input, or raises an error that says what is wrong before any
conversion work starts.
"""

import numpy as np
import tensorflow as tf

__all__ = ["MIN_SAMPLES", "examples"]

# Fewer examples than this give unstable histograms tails (percentile, KL) and bias estimates.
MIN_SAMPLES = 32


def examples(data, input_shape, num_samples, min_samples=MIN_SAMPLES, what="representative_data"):
  """Up to `num_samples` examples of `data`, as one float32 array ``(n,) + input_shape``.

  Args:
    data: a numpy array (or nested list) of examples; a `tf.data.Dataset` of examples or of
      batches, optionally ``(x, y)`` pairs; or a generator, iterable or a callable returning
      one (as TFLite's ``representative_dataset``), yielding arrays or ``[array]`` lists.
    input_shape: the model input's shape without the batch axis (None for any size).
    num_samples: how many examples to take at most.
    min_samples: fewer examples than this is an error.
    what: the argument's name, for error messages.

  Returns:
    A float32 numpy array.

  Raises:
    ValueError: no data, too few examples, or examples of the wrong shape.
    TypeError: examples that are not numbers, or a source of an unknown kind.
  """
  if data is None:
    raise ValueError(f"{what} is required: pass a few hundred input examples (a numpy array, "
                     "a tf.data.Dataset or a generator)")
  if isinstance(data, tf.data.Dataset):
    data = data.as_numpy_iterator()
  elif callable(data):
    data = data()
  if isinstance(data, (np.ndarray, list)) and not _is_list_of_arrays(data):
    batches = [_batched(_as_array(data, what), input_shape, what)]
  elif hasattr(data, "__iter__"):
    batches = _collect(data, input_shape, num_samples, what)
  else:
    raise TypeError(f"{what} must be a numpy array, a tf.data.Dataset or a generator, got "
                    f"{type(data).__name__}")
  result = np.concatenate(batches)[:num_samples] if batches else np.zeros((0,))
  if len(result) == 0:
    raise ValueError(f"{what} is empty")
  if len(result) < min_samples:
    raise ValueError(f"{what} has {len(result)} example(s); at least {min_samples} are needed")
  return result.astype(np.float32)


def _is_list_of_arrays(data):
  return isinstance(data, list) and bool(data) and isinstance(data[0], np.ndarray)


def _collect(iterator, input_shape, num_samples, what):
  """Batches from `iterator` until they hold `num_samples` examples (or it ends)."""
  chunks, count = [], 0
  for element in iterator:
    if isinstance(element, (tuple, list)):  # (x, y) pairs or TFLite's [x] lists
      if not element:
        raise ValueError(f"{what} yielded an empty element")
      element = element[0]
    if isinstance(element, dict):
      raise TypeError(f"{what} yielded a dict; kslim.convert takes single-input models: yield "
                      "the input array")
    chunk = _batched(_as_array(element, what), input_shape, what)
    chunks.append(chunk)
    count += len(chunk)
    if count >= num_samples:
      break
  return chunks


def _as_array(value, what):
  array = np.asarray(value)
  if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
    raise TypeError(f"{what} holds values of dtype {array.dtype}; expected numbers (the "
                    "model's float inputs)")
  return array


def _batched(array, input_shape, what):
  """`array` as a batch: a single example gets a batch axis; the shape must match."""
  expected = tuple(input_shape)
  batch = array[None] if array.ndim == len(expected) else array
  if batch.ndim != len(expected) + 1 or any(
      e is not None and e != d for e, d in zip(expected, batch.shape[1:])):
    raise ValueError(f"{what} has shape {array.shape}; the model's input takes examples of "
                     f"shape {expected} (batches of shape (n,) + {expected})")
  return batch
