"""TFLite conversion of Keras models (float and QAT), with a report of what was produced."""

from kslim.conversion.convert import IoDtype, Mode, convert
from kslim.conversion.parity import LayerParity, parity
from kslim.conversion.report import ConversionReport, TFLiteModel

__all__ = ["IoDtype", "Mode", "convert", "LayerParity", "parity", "ConversionReport",
           "TFLiteModel"]
