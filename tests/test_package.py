"""The package installs whole: a built wheel carries every Lua script, migration and file of
the console's page, and an engine loaded from the wheel alone (no source tree on the path)
finds its scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel, as ``pip install .`` would build it, from a clean copy
    of the tree (a ``build/`` or ``*.egg-info`` left by an earlier build would hide files
    the package data misses)."""
    source, out = tmp_path_factory.mktemp("source") / "rushorder", tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".rushorder", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
        ".hypothesis", "load"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=300)
    (built,) = out.glob("rushorder-*.whl")
    return built


def test_the_wheel_carries_every_lua_script_migration_and_console_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {f"engine/lua/{p.name}" for p in (ROOT / "engine" / "lua").glob("*.lua")}
    migrations = {f"persistence/migrations/versions/{p.name}"
                  for p in (ROOT / "persistence" / "migrations" / "versions").glob("*.py")}
    assert "engine/lua/_lib.lua" in scripts and "engine/lua/place_orders.lua" in scripts
    assert scripts <= names
    assert migrations <= names and "persistence/migrations/env.py" in names
    page = {f"api/static/{p.name}" for p in (ROOT / "api" / "static").iterdir()}
    assert "api/static/ops.js" in page and page <= names


def test_an_engine_from_the_wheel_alone_loads_every_script(
        wheel: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = ("import sys, engine.scripts as s; assert s.__file__.startswith(sys.argv[1]), "
             "s.__file__; print(sorted(s.load_scripts()))")
    # -I: no current directory, no PYTHONPATH, no user site: only the wheel's files and
    # the venv's dependencies.
    site = [p for p in sys.path if p.endswith("site-packages")]
    code = f"import sys; sys.path[:0] = {[str(unpacked), *site]!r}; " + probe
    done = subprocess.run([sys.executable, "-I", "-c", code, str(unpacked)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = sorted(p.stem for p in (ROOT / "engine" / "lua").glob("*.lua")
                      if p.name != "_lib.lua")
    assert done.stdout.strip() == repr(expected)
