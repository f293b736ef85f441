"""Packaging for kslim and tflite_tools.

TensorFlow itself is not in `install_requires`, following tensorflow-model-optimization:
users install `tensorflow` or `tensorflow-cpu` (>= 2.21) themselves, so kslim never pulls in
a second copy. The tested versions are pinned in requirements.txt.
"""

import pathlib
import re

import setuptools

_ROOT = pathlib.Path(__file__).parent
_VERSION = re.search(
    r'__version__ = "([^"]+)"', (_ROOT / "kslim" / "version.py").read_text()
).group(1)

setuptools.setup(
    name="kslim",
    version=_VERSION,
    description=(
        "Model compression for TensorFlow/Keras with TFLite deployment: quantization-aware "
        "training, post-training quantization, structured pruning, distillation and NAS."
    ),
    long_description=(_ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    author="kslim authors",
    license="Apache 2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["kslim", "kslim.*", "tflite_tools", "tflite_tools.*"]),
    install_requires=[
        "numpy>=1.26",
        "absl-py>=1.4",
        "tf-keras>=2.21",
        "tensorflow-model-optimization>=0.8.1",
        "ai-edge-litert>=2.0",
        "PyYAML>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "tensorflow": ["tensorflow>=2.21"],
        "tensorflow-cpu": ["tensorflow-cpu>=2.21"],
        "distributed": ["optuna>=4"],  # kslim.nas.OptunaExecutor / OptunaWorker
        "test": ["pytest>=8", "pytest-xdist>=3", "optuna>=4"],
    },
    entry_points={
        "console_scripts": [
            "kslim-compress=kslim.cli.compress:run",
            "kslim-convert=kslim.cli.convert:run",
            "kslim-distill=kslim.cli.distill:run",
            "kslim-nas=kslim.cli.nas:run",
            "kslim-profile=kslim.cli.profile:run",
            "kslim-prune=kslim.cli.prune:run",
            "kslim-quantize=kslim.cli.quantize:run",
            "tflite-analyze=tflite_tools.analyze:run",
            "tflite-benchmark=tflite_tools.benchmark:run",
            "tflite-compare=tflite_tools.compare:run",
            "tflite-latency-table=tflite_tools.latency_table:run",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "License :: OSI Approved :: Apache Software License",
    ],
)
