"""The README's pytest-plugin example passes as written in a fresh project.

The example is written as ``test_example.py`` into an empty directory (no conftest, no
configuration) and run by ``python -m pytest`` in a virtual environment where plumio is
installed from a wheel, not in editable mode: the plugin is found through its installed entry
point, as in a user's project. That environment uses this one's packages for pytest, anyio and
trio, so nothing is downloaded.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Variables that would let the outer environment leak into the user's project.
_OUTER = ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PIP_REQUIRE_VIRTUALENV")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OUTER}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _run(args: list[str | Path], cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _plugin_example() -> str:
    text = README.read_text()
    section = text[text.index("### In your tests: the pytest plugin") :]
    section = section[: section.index("\n## ")]
    [block] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return str(block)


def _can_build_wheels() -> bool:
    """Whether setuptools here builds wheels without downloading anything (it needs the
    ``wheel`` package before setuptools 70.1)."""
    if importlib.util.find_spec("wheel") is not None:
        return True
    major, minor = (int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _assemble_wheel(dest: Path) -> Path:
    """The wheel setuptools would build, assembled from what ``pyproject.toml`` declares
    (its packages, package data, version and entry points)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, setuptools_config = config["project"], config["tool"]["setuptools"]
    name, version = project["name"], project["version"]
    files: dict[str, bytes] = {}
    for package in setuptools_config["packages"]:
        folder = package.replace(".", "/")
        patterns = ["*.py", *setuptools_config.get("package-data", {}).get(package, [])]
        for pattern in patterns:
            for path in sorted((ROOT / folder).glob(pattern)):
                files[f"{folder}/{path.name}"] = path.read_bytes()
    groups = {"console_scripts": project.get("scripts", {}), **project.get("entry-points", {})}
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items()) + "\n"
        for group, entries in groups.items()
    )
    info = f"{name}-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = entry_points.encode()
    record = [_record_line(path, data) for path, data in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,", ""]).encode()
    wheel = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def _build_wheel(dest: Path, scratch: Path) -> Path:
    """plumio's wheel: built by pip from a copy of the sources (so that building writes
    nothing into the repository) when setuptools can do it offline, else assembled."""
    if not _can_build_wheels():
        return _assemble_wheel(dest)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, scratch / name)
    for package in ("broker", "corelib"):
        shutil.copytree(
            ROOT / package, scratch / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip_wheel = ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    _run([sys.executable, *pip_wheel, "-w", dest, scratch], cwd=dest)
    [wheel] = dest.glob("plumio-*.whl")
    return wheel


@pytest.fixture(scope="module")
def user_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a venv with plumio installed from a wheel, which also sees this
    environment's packages (pytest, anyio, trio...) but not its editable plumio."""
    wheel = _build_wheel(tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("source"))
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    # This environment's site directories, listed in a .pth file: they come after the venv's
    # own, and the .pth files in them (the editable install's among them) are not processed.
    # (system_site_packages=True would give the base interpreter's, not those of a venv that
    # runs these tests.)
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env_dir
    )
    outer = [*site.getsitepackages()]
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        outer.append(site.getusersitepackages())
    (Path(purelib.strip()) / "_outer_environment.pth").write_text("\n".join(outer) + "\n")
    # --ignore-installed: the editable plumio seen through that file is not "already there".
    pip_install = ["-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed"]
    _run([python, *pip_install, wheel], cwd=env_dir)
    return python


def test_the_plugin_example_passes_in_a_fresh_project(user_python: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_example.py").write_text(_plugin_example())

    # plumio comes from the wheel in the venv, not from this repository.
    where = _run(
        [
            user_python,
            "-c",
            "import corelib.testing.pytest_plugin as p, sys; print(p.__file__, sys.prefix)",
        ],
        cwd=project,
    ).split()
    plugin_file, prefix = Path(where[0]), Path(where[1])
    assert plugin_file.is_relative_to(prefix), where
    assert not plugin_file.is_relative_to(ROOT), where

    out = _run([user_python, "-m", "pytest", "-p", "no:cacheprovider", "-rA"], cwd=project)
    assert f"rootdir: {project}" in out
    assert "configfile" not in out  # nothing of ours configures the run
    passed = re.findall(r"^PASSED test_example\.py::(\S+)$", out, flags=re.MULTILINE)
    assert sorted(passed) == ["test_pause_then_kill[asyncio]", "test_pause_then_kill[trio]"]
    assert re.search(r"^=+ 2 passed in [\d.]+s =+$", out, flags=re.MULTILINE), out
