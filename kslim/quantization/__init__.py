"""Quantization-aware training: quantizers, their configuration, and kslim.quantize.

Example:
  >>> qat = kslim.quantize(model, kslim.QuantConfig(weight_bits=8))
  >>> qat.compile(...); qat.fit(...)
  >>> tflite_bytes = kslim.convert(qat, mode="int8")
"""

from kslim.quantization import quantizers
from kslim.quantization.config import LayerOverride
from kslim.quantization.config import QuantConfig
from kslim.quantization.config import Unsupported
from kslim.quantization.quantize import activation_quantizers
from kslim.quantization.quantize import custom_objects
from kslim.quantization.quantize import is_quantized
from kslim.quantization.quantize import quantize
from kslim.quantization.quantize import scope

__all__ = ["quantizers", "LayerOverride", "QuantConfig", "Unsupported", "activation_quantizers",
           "custom_objects", "is_quantized", "quantize", "scope"]
