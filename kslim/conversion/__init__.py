"""TFLite conversion of Keras models."""

from kslim.conversion.convert import Mode, convert

__all__ = ["Mode", "convert"]
