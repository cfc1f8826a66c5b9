"""The package as a user gets it from PyPI.

``python -m build`` makes an sdist and, from that sdist, a wheel with the C
speedups compiled in; ``twine check`` accepts both; the wheel, installed with its
dependencies into a fresh virtualenv, runs the README's example (on the C
speedups) and the quickstart notebook. ``PBNB_PURE_PYTHON=1`` makes the
pure-Python wheel Pyodide installs. A file missing from the package, or a
dependency missing from pyproject.toml, fails here.
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from showcase_helpers import REPO

import pbnb

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

README_EXAMPLE = re.search(
    r"## A short example\n\n```python\n(.*?)```", (REPO / "README.md").read_text(), re.S
)


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=900, cwd=cwd, env=env
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


# Folders of our own rather than pytest's tmp_path: these live for minutes, and pytest prunes
# old tmp_path folders, including those of other pytest runs on the same machine.
@pytest.fixture(scope="module")
def dist() -> Iterator[Path]:
    """An sdist and a wheel built from it, as ``python -m build`` makes them for PyPI."""
    with tempfile.TemporaryDirectory(prefix="pbnb-dist-") as out:
        run(sys.executable, "-m", "build", "--outdir", out, REPO)
        yield Path(out)


@pytest.fixture(scope="module")
def venv(dist: Path) -> Iterator[Path]:
    """A fresh virtualenv with the wheel and its dependencies, and nbclient to run a notebook."""
    with tempfile.TemporaryDirectory(prefix="pbnb-venv-") as folder:
        venv = Path(folder)
        run(sys.executable, "-m", "venv", venv)
        [wheel] = dist.glob("*.whl")
        # Without our PYTHONPATH: pip would take the checkout (and the pbnb.egg-info that building
        # leaves in it) for an installed pbnb, and skip the wheel.
        pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, "nbclient"]
        run(*pip, env=clean_env(Path(os.environ.get("HOME", folder))))
        yield venv


def clean_env(home: Path) -> dict[str, str]:
    """No PYTHONPATH or virtualenv of ours: only what the fresh virtualenv holds is importable."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PBNB_DEMO"}
    return {**{key: value for key, value in os.environ.items() if key not in drop}, "HOME": str(home)}


def test_twine_accepts_the_sdist_and_the_wheel(dist: Path) -> None:
    wheel, sdist = sorted(path.name for path in dist.iterdir())
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert wheel.startswith(f"pbnb-{pbnb.__version__}-{tag}-{tag}-") and wheel.endswith(".whl")
    assert sdist == f"pbnb-{pbnb.__version__}.tar.gz"
    output = run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert output.count("PASSED") == 2


def test_the_wheel_carries_the_compiled_speedups_and_the_pure_wheel_none(dist: Path, tmp_path: Path) -> None:
    [wheel] = dist.glob("*.whl")
    stubs = {"pbnb/core/_speedups.pyi", "pbnb/core/_receiving.pyi"}
    with zipfile.ZipFile(wheel) as archive:
        speedups = {
            name
            for name in archive.namelist()
            if name.startswith(("pbnb/core/_speedups", "pbnb/core/_receiving"))
        }
    compiled = speedups - stubs
    assert len(compiled) == 2 and all(name.endswith(".so") for name in compiled)  # no C source beside them
    [sdist] = dist.glob("*.tar.gz")
    env = {**os.environ, "PBNB_PURE_PYTHON": "1"}
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path, sdist, env=env)
    [pure] = tmp_path.glob("pbnb-*.whl")
    assert pure.name == f"pbnb-{pbnb.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(pure) as archive:
        assert {name for name in archive.namelist() if "_speedups" in name or "_receiving" in name} == stubs


def test_the_wheel_carries_the_metadata_license_and_type_marker(dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        info = f"pbnb-{pbnb.__version__}.dist-info"
        metadata = email.message_from_string(archive.read(f"{info}/METADATA").decode())
    assert "pbnb/py.typed" in files and f"{info}/licenses/LICENSE" in files
    assert {"pbnb/cred/__init__.py", "pbnb/notebook/__init__.py", "pbnb/__main__.py"} <= files
    assert not [name for name in files if name.startswith(("tests/", "docs/", "notebooks/"))]
    assert metadata["Version"] == pbnb.__version__  # the one version, from pbnb.__version__
    assert metadata["License-Expression"] == "MIT"
    classifiers = metadata.get_all("Classifier")
    assert {"Framework :: Jupyter", "Framework :: AsyncIO", "Typing :: Typed"} <= set(classifiers)
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert {"Documentation", "Source", "Issues"} <= set(urls)
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_the_sdist_carries_what_the_wheel_is_built_from(dist: Path) -> None:
    [sdist] = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "README.md", "pyproject.toml", "pbnb/__init__.py", "pbnb/py.typed"} <= names
    assert {"setup.py", "pbnb/core/_speedups.c", "pbnb/core/_speedups.pyi", "pbnb/core/_receiving.c"} <= names


def test_the_readme_example_runs_against_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    assert README_EXAMPLE is not None
    script = tmp_path / "example.py"
    script.write_text(
        "import pbnb\nfrom pbnb.core import serialize, wire\n"
        "print('FROM', pbnb.__file__, serialize._speedups is not None, type(wire._read_frames).__name__)\n"
        + README_EXAMPLE[1]
    )
    output = run(venv / "bin" / "python", script, cwd=tmp_path, env=clean_env(tmp_path))
    assert f"FROM {venv}" in output  # the installed copy, not this checkout
    assert "True FrameLoop" in output.split("FROM", 1)[1].splitlines()[0]  # on its C speedups
    assert "hello ada" in output and "42" in output


def test_the_quickstart_notebook_runs_against_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    """The quickstart, in a kernel of the fresh virtualenv, run by the function the docs build uses."""
    runner = f"""
import sys
sys.path.insert(0, {str(REPO / "docs" / "_ext")!r})
from notebook_run import execute_notebook, fresh_machine_env, stderr_of
import nbformat
notebook = nbformat.read({str(REPO / "notebooks" / "01-quickstart.ipynb")!r}, as_version=4)
notebook.cells.append(nbformat.v4.new_code_cell("import pbnb; print('FROM', pbnb.__file__)"))
executed = execute_notebook({str(REPO / "notebooks" / "01-quickstart.ipynb")!r}, notebook,
                            env=fresh_machine_env({str(tmp_path)!r}))
assert not stderr_of(executed), stderr_of(executed)
print(executed.cells[-1].outputs[0].text)
"""
    output = run(venv / "bin" / "python", "-c", runner, cwd=tmp_path, env=clean_env(tmp_path))
    assert f"FROM {venv}" in output
