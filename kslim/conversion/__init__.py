"""TFLite conversion of Keras models (float, QAT, post-training quantized), with a report."""

from kslim.conversion.calibration import Calibration
from kslim.conversion.convert import IoDtype, Mode, convert
from kslim.conversion.embedding import QuantizedEmbedding, quantize_embeddings
from kslim.conversion.parity import LayerParity, parity
from kslim.conversion.report import ConversionReport, TFLiteModel

__all__ = ["Calibration", "IoDtype", "Mode", "convert", "QuantizedEmbedding",
           "quantize_embeddings", "LayerParity", "parity", "ConversionReport", "TFLiteModel"]
