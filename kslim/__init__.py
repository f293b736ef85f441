"""kslim: model compression for tf_keras models with TFLite deployment.

The public API is re-exported here and imported on first use, so ``import kslim`` stays fast
(TensorFlow loads only when a function that needs it is touched) and sets nothing global.

Example:
  >>> import kslim
  >>> print(kslim.profile(kslim.models.reference_cnn()))
"""

import importlib

from kslim.version import __version__

# Public name -> (module, attribute); attribute None re-exports the module itself.
_EXPORTS = {
    "Profile": ("kslim.profiling", "Profile"),
    "profile": ("kslim.profiling", "profile"),
    "prune": ("kslim.pruning", "prune"),
    "pruning": ("kslim.pruning", None),
    "QuantConfig": ("kslim.quantization", "QuantConfig"),
    "convert": ("kslim.conversion", "convert"),
    "datasets": ("kslim.datasets", None),
    "distill": ("kslim.distill", None),
    "models": ("kslim.models", None),
    "nas": ("kslim.nas", None),
    "pipeline": ("kslim.pipeline", None),
    "quantization": ("kslim.quantization", None),
    "quantize": ("kslim.quantization", "quantize"),
    "quantize_embeddings": ("kslim.conversion", "quantize_embeddings"),
}

__all__ = ["__version__"] + sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'kslim' has no attribute {name!r}")
  module_name, attribute = _EXPORTS[name]
  module = importlib.import_module(module_name)
  value = module if attribute is None else getattr(module, attribute)
  globals()[name] = value
  return value


def __dir__():
  return __all__
