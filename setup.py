"""pbnb's optional C speedups; everything else about the package is in pyproject.toml.

``pbnb/core/_speedups.c`` holds C twins of the codec's two walks. The build
skips it when ``PBNB_PURE_PYTHON=1`` (a pure-Python wheel, as Pyodide needs)
and goes on without it when the compiler fails: pbnb then runs its Python twins.
"""

import os

from setuptools import Extension, setup

speedups = Extension("pbnb.core._speedups", ["pbnb/core/_speedups.c"], optional=True)
setup(ext_modules=[] if os.environ.get("PBNB_PURE_PYTHON") == "1" else [speedups])
