"""Quantization-aware training: fake-quant math (quant_ops); quantizers and wrappers follow."""
