"""Thin absl command-line binaries over kslim's library functions."""
