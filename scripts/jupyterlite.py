"""A JupyterLite site with pbnb in its Pyodide kernel, built with nothing fetched at run time.

    python scripts/jupyterlite.py fetch        # online, once: the wheels the site ships
    python scripts/jupyterlite.py build OUT    # offline: the site, from this checkout, into OUT

``fetch`` (run by scripts/setup.sh) fills ``js/lite-wheels/`` from the package
index: micropip (which the kernel loads first, from Pyodide's own package
list), the pure-Python packages the kernel installs when it starts (IPython,
jedi, comm and theirs, at the versions Pyodide lists), pbnb's dependencies
(msgpack built as its pure-Python fallback, scramp, asn1crypto, ipywidgets and
the widget manager at the versions installed here), and setuptools to build
pbnb's own wheel without an index. Each step is skipped when its wheel is there.

``build`` makes pbnb's wheel from this checkout, lays out Pyodide from the npm
package (``js/node_modules/pyodide``, installed by scripts/setup.sh) with a
package list naming only the files shipped beside it, and runs ``jupyter lite
build`` with the kernel's PyPI fallback switched off: the site loads nothing
from a CDN or PyPI. ``--contents`` adds notebooks (default: ``lite/``).
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "js" / "lite-wheels"
PYODIDE = ROOT / "js" / "node_modules" / "pyodide"
PYTHON_VERSION = "3.14"  # Pyodide 314's Python

#: What the Pyodide kernel installs when it starts (its worker asks for these by name).
KERNEL_NEEDS = ("ipython", "jedi", "comm")
#: At the versions installed here: the widget manager's kernel side must match the one the
#: site is built with, and msgpack is the codec the CPython side runs.
FROM_HERE = ("jupyterlab_widgets", "ipywidgets", "msgpack")
#: How Pyodide answers environment markers (``sys_platform != 'emscripten'`` leaves out ipykernel).
PYODIDE_MARKERS = {
    "sys_platform": "emscripten",
    "platform_system": "Emscripten",
    "platform_machine": "wasm32",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": PYTHON_VERSION,
    "python_full_version": f"{PYTHON_VERSION}.0",
    "extra": "",
}
#: Pyodide's files the site serves (the rest of the npm package is docs and types).
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "package.json")
KERNEL_PLUGIN = "@jupyterlite/pyodide-kernel-extension:kernel"
KERNEL_WHEELS = (
    Path(sys.prefix) / "share/jupyter/labextensions/@jupyterlite/pyodide-kernel-extension/static/pypi"
)


def pyodide_lock() -> dict:
    return json.loads((PYODIDE / "pyodide-lock.json").read_text())


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, env=env)


def download_pure(requirement: str, into: Path) -> None:
    """One pure-Python wheel (no dependencies) for Pyodide's Python."""
    pip(
        "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
        "--implementation", "py", "--abi", "none", "--platform", "any", "-d", str(into), requirement,
    )  # fmt: skip


def wheel_of(folder: Path, name: str) -> Path | None:
    """The wheel of ``name`` in ``folder`` (wheel names spell every separator "_"), if any."""
    for path in folder.glob("*.whl"):
        if _normal(path.name.split("-")[0]) == _normal(name):
            return path
    return None


def requirements_of(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [item for item in archive.namelist() if item.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    return [Requirement(text) for text in metadata.get_all("Requires-Dist") or ()]


def pure_msgpack(version: str, into: Path) -> None:
    """msgpack built without its C extension: its pure-Python fallback, which Pyodide can install."""
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "-q", "--no-deps", "--no-binary=:all:", "-d", tmp, f"msgpack=={version}")
        (sdist,) = Path(tmp).glob("msgpack-*.tar.gz")
        env = {**os.environ, "MSGPACK_PUREPYTHON": "1"}
        pip("wheel", "-q", "--no-deps", "--no-cache-dir", "-w", str(into), str(sdist), env=env)


def fetch(wheels: Path) -> None:
    """Download what ``build`` needs into ``wheels`` (skipping what is there already).

    Follows the wheels' own dependencies, as micropip will in the page; a version is
    Pyodide's where it lists the package, else the one installed here, else pip's choice.
    """
    locked = {_normal(name): entry["version"] for name, entry in pyodide_lock()["packages"].items()}
    shipped_by_kernel = {_normal(name) for name in json.loads((KERNEL_WHEELS / "all.json").read_text())}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(text) for text in (*KERNEL_NEEDS, *project["dependencies"])]
    site = wheels / "site"
    site.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = _normal(requirement.name)
        if name in seen or name in shipped_by_kernel:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate(PYODIDE_MARKERS):
            continue
        seen.add(name)
        wheel = wheel_of(site, name)
        if wheel is None:
            version = _installed(name) or locked.get(name)
            if name == "msgpack":
                pure_msgpack(importlib.metadata.version("msgpack"), site)
            else:
                download_pure(f"{name}=={version}" if version else str(requirement), site)
            wheel = wheel_of(site, name)
            assert wheel is not None, name
        todo.extend(requirements_of(wheel))
    micropip = locked["micropip"]
    if wheel_of(wheels, "micropip") is None:
        download_pure(f"micropip=={micropip}", wheels)
    if wheel_of(wheels / "build", "setuptools") is None:
        pip(
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(wheels / "build"),
            "setuptools>=77",
        )
    for wheel in site.glob("*.whl"):
        if not wheel.name.endswith("-none-any.whl"):
            raise SystemExit(f"{wheel.name} is not a pure-Python wheel: Pyodide cannot install it")


def _installed(name: str) -> str | None:
    if name not in {_normal(item) for item in FROM_HERE}:
        return None
    return importlib.metadata.version(name)


def pbnb_wheel(wheels: Path, into: Path) -> Path:
    """pbnb's wheel from this checkout, built without an index (setuptools from ``wheels/build``)."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(
            ROOT / "pbnb", Path(tmp) / "pbnb", ignore=shutil.ignore_patterns("__pycache__", "*.so")
        )
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy(ROOT / name, Path(tmp) / name)
        pip(
            "wheel",
            "-q",
            "--no-deps",
            "--no-index",
            "--find-links",
            str(wheels / "build"),
            "-w",
            str(into),
            tmp,
        )
    (wheel,) = into.glob("pbnb-*.whl")
    return wheel


def pyodide_folder(wheels: Path, target: Path) -> None:
    """Pyodide from the npm package, its package list cut down to the micropip shipped beside it."""
    target.mkdir(parents=True)
    for name in PYODIDE_FILES:
        shutil.copy(PYODIDE / name, target / name)
    lock = pyodide_lock()
    entry = lock["packages"]["micropip"]
    (wheel,) = wheels.glob(f"micropip-{entry['version']}-*.whl")
    shutil.copy(wheel, target / wheel.name)
    # PyPI's build of the same release: its own hash. Every other package is left out, so a
    # cell's `import numpy` says "not found" at once instead of waiting on an unreachable CDN.
    entry.update(file_name=wheel.name, sha256=hashlib.sha256(wheel.read_bytes()).hexdigest())
    lock["packages"] = {"micropip": entry}
    (target / "pyodide-lock.json").write_text(json.dumps(lock, indent=1))


def build(out: Path, wheels: Path, contents: list[Path]) -> None:
    missing = [path for path in (wheels / "site", wheels / "build", PYODIDE) if not path.is_dir()]
    if missing:
        raise SystemExit(f"missing {', '.join(map(str, missing))}: run scripts/setup.sh first")
    with tempfile.TemporaryDirectory() as tmp:
        lite = Path(tmp)
        pyodide_folder(wheels, lite / "static" / "pyodide")
        shipped = lite / "wheels"
        shutil.copytree(wheels / "site", shipped)
        pbnb_wheel(wheels, shipped)
        config = {
            "jupyter-config-data": {"litePluginSettings": {KERNEL_PLUGIN: {"disablePyPIFallback": True}}}
        }
        (lite / "jupyter-lite.json").write_text(json.dumps(config, indent=1))
        if out.exists():
            shutil.rmtree(out)
        command = [
            str(Path(sys.executable).parent / "jupyter-lite"), "build", "--lite-dir", str(lite),
            "--output-dir", str(out.resolve()), "--piplite-wheels", str(shipped),
        ]  # fmt: skip
        for folder in contents:
            command += ["--contents", str(folder.resolve())]
        subprocess.run(command, check=True, cwd=lite)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, default=WHEELS, help=f"the wheel folder ({WHEELS})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="download the wheels the site ships (online)")
    building = commands.add_parser("build", help="build the site (offline)")
    building.add_argument("out", type=Path, help="the site's folder (replaced)")
    building.add_argument(
        "--contents", type=Path, action="append", help="notebooks to include (default: lite/)"
    )
    args = parser.parse_args()
    if args.command == "fetch":
        fetch(args.wheels)
    else:
        build(args.out, args.wheels, args.contents or [ROOT / "lite"])


if __name__ == "__main__":
    main()
