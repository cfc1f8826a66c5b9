"""pbnb's optional C speedups; everything else about the package is in pyproject.toml.

``pbnb/core/_speedups.c`` holds C twins of the codec's hot loops, and
``pbnb/core/_receiving.c`` those of the receive path's hot steps. The build skips
them when ``PBNB_PURE_PYTHON=1`` (a pure-Python wheel, as Pyodide needs) and
goes on without one when the compiler fails: pbnb then runs its Python twins.
"""

import os

from setuptools import Extension, setup

speedups = [
    Extension(f"pbnb.core.{name}", [f"pbnb/core/{name}.c"], optional=True)
    for name in ("_speedups", "_receiving")
]
setup(ext_modules=[] if os.environ.get("PBNB_PURE_PYTHON") == "1" else speedups)
