"""irl_lm: fine-tune language models by inverse reinforcement learning (JAX/Flax)."""
import pathlib

import setuptools

README = pathlib.Path(__file__).with_name("README.md")

# Versions verified to install and work together on Python 3.11 (see shared NOTES).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "clu==0.0.12",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",
    "gin-config==0.5.0",
    "sentencepiece==0.2.3",
    "rouge-score==0.1.2",
    "sacrebleu==2.6.0",
    "absl-py==2.5.1",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "numpy==2.4.6",
    "scipy==1.17.1",
]

setuptools.setup(
    name="irl_lm",
    version="0.1.0",
    description="Imitating language via scalable inverse RL (IQLearn) in JAX/Flax.",
    long_description=README.read_text() if README.exists() else "",
    long_description_content_type="text/markdown",
    # gin/ is installed as the data package irl_lm.gin_files (irl_lm.config finds the shipped
    # gin files there when there is no source checkout), so --gin_file=gin/... works anywhere.
    packages=setuptools.find_packages(include=["irl_lm", "irl_lm.*"]) + ["irl_lm.gin_files"],
    package_dir={"irl_lm.gin_files": "gin"},
    package_data={"irl_lm": ["data/vocabularies/*.model", "data/vocabularies/*.vocab"],
                  "irl_lm.gin_files": ["*.gin", "*/*.gin"]},
    include_package_data=True,
    python_requires=">=3.11,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0"],
        # Only for comparing against / exporting to transformers (an optional test uses them).
        "hf": ["torch==2.13.0", "transformers==5.24.0"],
        # Figures and the reproduction notebook (irl_lm.experiments, notebooks/; its test).
        "experiments": ["matplotlib==3.11.2", "nbclient==0.11.0", "nbformat==5.11.1",
                        "ipykernel==7.4.0"],
    },
    license="Apache-2.0",
)
