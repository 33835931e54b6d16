"""The benchmark and load scripts still run: each answers --help (imports included), so a
moved function breaks a test rather than the next `make bench`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LOAD = Path(__file__).resolve().parent.parent / "load"
SCRIPTS = sorted(p.name for p in LOAD.glob("*.py") if p.name.startswith("bench_")
                 or p.name in ("run_load.py", "console_screenshot.py", "limiter_cost.py",
                               "idempotency_bytes.py"))


def test_there_are_scripts_to_check() -> None:
    assert {"bench_api.py", "bench_stack.py", "bench_memory.py", "run_load.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_load_script_answers_help(script: str) -> None:
    done = subprocess.run([sys.executable, str(LOAD / script), "--help"], cwd=LOAD,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
