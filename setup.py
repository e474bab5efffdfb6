"""irl_lm: fine-tune language models by inverse reinforcement learning (JAX/Flax)."""
import pathlib

import setuptools

README = pathlib.Path(__file__).with_name("README.md")

# Lower bounds: the oldest versions the suite runs against (constraints/py311.txt). The exact sets
# CI verified are in constraints/py311.txt and constraints/py313.txt; install with `-c` for those.
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    # flax <= 0.12.8 subclasses jax's MutableHiType, which jax 0.11.1 removed, and flax >= 0.12.9
    # needs Python >= 3.12 and jax >= 0.11.1. Python 3.11 stops at jax 0.10.2 with flax 0.12.8 (a
    # working pair); on newer Pythons require the flax that works with the newer jax.
    'flax>=0.12.8; python_version < "3.12"',
    'flax>=0.12.9; python_version >= "3.12"',
    'jax>=0.11.1; python_version >= "3.12"',
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "gin-config>=0.5.0",
    "sentencepiece>=0.2.0",
    "rouge-score>=0.1.2",
    "sacrebleu>=2.4",
    "absl-py>=2.1",
    "safetensors>=0.4",
    "tokenizers>=0.20",
    "numpy>=2.0",
    "scipy>=1.13",
    # Imported directly (orbax-checkpoint and jax bring them too).
    "etils[epath]>=1.5",
    "tensorstore>=0.1.60",
    "ml_dtypes>=0.4",
    "tqdm>=4.60",
]

EXTRAS_REQUIRE = {
    # The TFDS-backed tasks (XSUM, TL;DR, WMT), seqio-registered tasks and clu's metric writers.
    "seqio": ["seqio>=0.0.20", "tensorflow>=2.21", "tensorflow-text>=2.21",
              "tensorflow-datasets>=4.9.10", "clu>=0.0.12", "tensorboard>=2.21"],
    "test": ["pytest>=8", "pytest-xdist>=3.5"],
    # Only for comparing against / exporting to transformers (an optional test uses them).
    "hf": ["torch>=2.5", "transformers>=5.0"],
    # Figures and the reproduction notebook (irl_lm.experiments, notebooks/; its test).
    "experiments": ["matplotlib>=3.9", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
    # jax with its CUDA plugin and NVIDIA's CUDA libraries from pip. CUDA 12 wheels need an NVIDIA
    # driver >= 525, CUDA 13 wheels a driver >= 580.
    "cuda": ["jax[cuda12]"],
    "cuda12": ["jax[cuda12]"],
    "cuda13": ["jax[cuda13]"],
}

# gin/ is installed as the data package irl_lm.gin_files (irl_lm.config finds the shipped gin files
# there when there is no source checkout), so --gin_file=gin/... works anywhere. Its folders hold
# only data files, listed as packages so setuptools installs them as such.
GIN_FOLDERS = sorted(p.name for p in pathlib.Path(__file__).with_name("gin").iterdir()
                     if p.is_dir() and any(p.glob("*.gin")))

setuptools.setup(
    name="irl_lm",
    version="0.1.0",
    description="Imitating language via scalable inverse RL (IQLearn) in JAX/Flax.",
    long_description=README.read_text() if README.exists() else "",
    long_description_content_type="text/markdown",
    packages=(setuptools.find_namespace_packages(include=["irl_lm", "irl_lm.*"],
                                                 exclude=["*.__pycache__"])
              + ["irl_lm.gin_files"] + [f"irl_lm.gin_files.{d}" for d in GIN_FOLDERS]),
    package_dir={"irl_lm.gin_files": "gin"},
    package_data={"irl_lm.data.vocabularies": ["*.model", "*.vocab"],
                  "irl_lm.gin_files": ["*.gin"],
                  **{f"irl_lm.gin_files.{d}": ["*.gin"] for d in GIN_FOLDERS}},
    include_package_data=True,
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license="Apache-2.0",
)
