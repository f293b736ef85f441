"""The on-target half of tflite_tools: time and run .tflite models with LiteRT where they live.

This module needs only the standard library, numpy and `ai_edge_litert`, so `targets` can ship
its source to any Python that has LiteRT (a board over ``ssh``, an emulated aarch64 Python) and
drive it there: the request is one JSON object on stdin, the reply one JSON object on stdout.
Locally the same functions run in process, so every target measures the same way.

Request: ``{"models": [{"name", "content" (base64)}], "threads": [1, 2], "xnnpack": [true],
"warmup": 20, "runs": 100, "min_ms": 0, "seed": 0, "skip_errors": false,
"inputs": [npy base64, ...] | null,
"predict": [npy base64, ...] | null}``. Reply: ``{"machine", "litert", "results": [...],
"outputs": {name: [npy base64, ...]}}``; with ``skip_errors`` a model LiteRT cannot run
gets a result row with its ``error`` instead of failing the request.
"""

import base64
import io
import json
import pathlib
import platform
import sys
import time

import numpy as np
from ai_edge_litert import interpreter as litert

__all__ = ["make_interpreter", "fixed_batch", "pad_batch", "quantize", "dequantize", "random_inputs", "measure", "predict",
           "serve", "encode_array", "decode_array"]


def make_interpreter(content, threads=None, use_xnnpack=True, preserve_all_tensors=False):
  """A LiteRT interpreter over flatbuffer bytes, tensors allocated.

  Args:
    content: the .tflite bytes.
    threads: interpreter threads (None: LiteRT's default).
    use_xnnpack: False runs the builtin kernels without the default XNNPACK delegate.
    preserve_all_tensors: keep intermediate tensors readable (implies the builtin kernels, as a
      delegate hides its tensors).
  """
  resolver = (litert.OpResolverType.AUTO if use_xnnpack and not preserve_all_tensors
              else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  interpreter = litert.Interpreter(model_content=content, num_threads=threads,
                                   experimental_op_resolver_type=resolver,
                                   experimental_preserve_all_tensors=preserve_all_tensors)
  interpreter.allocate_tensors()
  return interpreter


def fixed_batch(interpreter):
  """The batch a file was converted with, or None when it takes any: a fused LSTM's state
  tensors have that batch and do not resize, so such a file runs in batches of it."""
  signature = interpreter.get_input_details()[0]["shape_signature"]
  return int(signature[0]) if len(signature) and signature[0] > 0 else None


def pad_batch(x, batch):
  """`x` with zero examples appended up to `batch` (the last batch of a fixed-batch file)."""
  return np.concatenate([x, np.zeros((batch - len(x),) + x.shape[1:], x.dtype)])


def quantize(x, detail):
  """Float `x` to the dtype of the tensor described by `detail` (affine, per tensor)."""
  dtype = detail["dtype"]
  scale, zero_point = detail["quantization"]
  if np.issubdtype(dtype, np.integer) and scale:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
  return np.asarray(x, dtype)


def dequantize(y, detail):
  """The float value of tensor data `y` described by `detail`."""
  scale, zero_point = detail["quantization"]
  if np.issubdtype(y.dtype, np.integer) and scale:
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
  return np.asarray(y, np.float32)


def random_inputs(input_details, seed=0, batch=1):
  """Inputs matching a model's signature, in each input tensor's own dtype.

  Integer (int8/uint8/int16) inputs cover their whole range; float inputs are uniform in [0, 1).
  """
  rng = np.random.default_rng(seed)
  arrays = []
  for detail in input_details:
    shape = [int(d) for d in detail["shape"]]
    shape = [batch] + shape[1:] if shape else []  # a scalar input has no batch axis
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
      info = np.iinfo(dtype)
      arrays.append(rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype))
    else:
      arrays.append(rng.random(shape, dtype=np.float32).astype(dtype))
  return arrays


def _status_mb(field):
  """A ``VmRSS``/``VmHWM`` line of /proc/self/status in MB, or None off Linux."""
  try:
    with open("/proc/self/status") as status:
      for line in status:
        if line.startswith(field + ":"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def _reset_peak_rss():
  """Resets the process's peak RSS (Linux: writing 5 to clear_refs); False where impossible."""
  try:
    with open("/proc/self/clear_refs", "w") as refs:
      refs.write("5")
    return True
  except OSError:
    return False


def _set_inputs(interpreter, arrays):
  details = interpreter.get_input_details()
  if len(arrays) != len(details):
    raise ValueError(f"the model has {len(details)} inputs, got {len(arrays)} input arrays")
  for array, detail in zip(arrays, details):
    want = tuple(int(d) for d in detail["shape"][1:])
    if tuple(array.shape[1:]) != want:
      raise ValueError(f"input {detail['name']!r} expects examples of shape {want}, got "
                       f"{tuple(array.shape[1:])}")
    if list(detail["shape"]) != list(array.shape):
      interpreter.resize_tensor_input(detail["index"], list(array.shape), strict=False)
  interpreter.allocate_tensors()
  for array, detail in zip(arrays, interpreter.get_input_details()):
    interpreter.set_tensor(detail["index"], array.astype(detail["dtype"], copy=False))


def measure(content, threads=1, use_xnnpack=True, warmup=20, runs=100, inputs=None, seed=0,
            min_ms=0.0):
  """Times single-example inference of one model.

  Args:
    content: the .tflite bytes.
    threads: interpreter thread count.
    use_xnnpack: False disables LiteRT's default XNNPACK delegate.
    warmup: untimed runs first (caches, XNNPACK weight packing).
    runs: timed runs.
    inputs: one array per model input (batch 1, the input's own dtype); None generates them
      from the model's signature with `seed`.
    seed: for generated inputs.
    min_ms: keep warming up, then keep timing, until each phase also lasted this long (for
      microsecond ops, whose first hundreds of runs are still warming caches and clocks).

  Returns:
    A dict: ``init_ms`` (interpreter creation and tensor allocation), ``min_ms``,
    ``median_ms``, ``p90_ms``, ``mean_ms``, ``std_ms``, ``runs``, and ``peak_memory_mb``: how
    far the process's peak RSS rose above its RSS before the interpreter was made (None where the
    peak cannot be reset, i.e. off Linux).
  """
  peak_known = _reset_peak_rss()
  base_mb = _status_mb("VmRSS")
  start = time.perf_counter()
  interpreter = make_interpreter(content, threads, use_xnnpack)
  init_ms = (time.perf_counter() - start) * 1e3
  arrays = inputs if inputs is not None else random_inputs(interpreter.get_input_details(), seed)
  _set_inputs(interpreter, arrays)
  count, start = 0, time.perf_counter()
  while count < warmup or (time.perf_counter() - start) * 1e3 < min_ms:
    interpreter.invoke()
    count += 1
  times, total = [], 0.0
  while len(times) < runs or total < min_ms:
    start = time.perf_counter()
    interpreter.invoke()
    times.append((time.perf_counter() - start) * 1e3)
    total += times[-1]
  times = np.asarray(times)
  peak_mb = _status_mb("VmHWM") if peak_known else None
  return {"init_ms": init_ms, "min_ms": float(times.min()), "median_ms": float(np.median(times)),
          "p90_ms": float(np.percentile(times, 90)), "mean_ms": float(times.mean()),
          "std_ms": float(times.std()), "runs": len(times),
          "peak_memory_mb": None if peak_mb is None or base_mb is None else peak_mb - base_mb}


def predict(content, inputs, threads=None, use_xnnpack=True):
  """Runs one model on float `inputs` (one array per model input, any batch).

  Integer inputs are quantized with the input tensor's scale and zero point and integer outputs
  dequantized, so the result is comparable across models and machines.

  Returns:
    One float32 array per model output.
  """
  interpreter = make_interpreter(content, threads, use_xnnpack)
  count = len(inputs[0])
  batch = fixed_batch(interpreter) or count
  outputs = []
  for start in range(0, count, batch):
    chunk = [pad_batch(x[start:start + batch], batch) for x in inputs]
    _set_inputs(interpreter, [quantize(x, d) for x, d in
                              zip(chunk, interpreter.get_input_details())])
    interpreter.reset_all_variables()  # an LSTM's state starts at zero, as in Keras
    interpreter.invoke()
    outputs.append([dequantize(interpreter.get_tensor(d["index"]), d)
                    for d in interpreter.get_output_details()])
  return [np.concatenate(parts)[:count] for parts in zip(*outputs)]


def encode_array(array):
  """An array as base64 .npy text (the JSON protocol's array format)."""
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array), allow_pickle=False)
  return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_array(text):
  """The inverse of `encode_array`."""
  return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


def serve(request):
  """Answers one request (see the module docstring): timings and, if asked, outputs."""
  results, outputs = [], {}
  inputs = ([decode_array(a) for a in request["inputs"]] if request.get("inputs") else None)
  examples = ([decode_array(a) for a in request["predict"]] if request.get("predict") else None)
  for model in request["models"]:
    content = base64.b64decode(model["content"])
    for threads in request.get("threads", [1]):
      for use_xnnpack in request.get("xnnpack", [True]):
        row = {"model": model["name"], "threads": threads, "xnnpack": use_xnnpack}
        try:
          row.update(measure(content, threads, use_xnnpack, request.get("warmup", 20),
                             request.get("runs", 100), inputs, request.get("seed", 0),
                             request.get("min_ms", 0.0)))
        except (RuntimeError, ValueError) as e:
          if not request.get("skip_errors"):
            raise
          row["error"] = str(e).strip().splitlines()[-1]
        results.append(row)
    if examples is not None:
      outputs[model["name"]] = [encode_array(y) for y in predict(content, examples, threads=1)]
  return {"machine": platform.machine(), "cpu": cpu_name(), "python": platform.python_version(),
          "litert": _litert_version(), "results": results, "outputs": outputs}


# CPU features that decide how fast int8 kernels run (dot-product and matrix instructions):
# on an x86 CPU without VNNI, XNNPACK's int8 convolutions can be slower than float32 ones.
_INT8_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "sve2")


def cpu_name(cpuinfo="/proc/cpuinfo"):
  """The CPU's model name and its int8 dot-product features, e.g. ``"Intel(R) Xeon(R)
  Processor (avx512_vnni, avx_vnni, amx_int8)"``; the architecture where /proc/cpuinfo is
  unreadable. Latencies, int8 ones above all, only compare on equal CPUs."""
  try:
    text = pathlib.Path(cpuinfo).read_text()
  except OSError:
    return platform.machine()
  fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
  fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
  name = fields.get("model name") or fields.get("hardware") or platform.machine()
  flags = set((fields.get("flags") or fields.get("features") or "").split())
  features = [f for f in _INT8_FEATURES if f in flags]
  return f"{name} ({', '.join(features)})" if features else f"{name} (no int8 dot product)"


def _litert_version():
  try:
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    return metadata.version("ai-edge-litert")
  except Exception:  # pylint: disable=broad-except  # a sys.path install without metadata
    return "unknown"


def main():
  json.dump(serve(json.load(sys.stdin)), sys.stdout)


if __name__ == "__main__":
  main()
