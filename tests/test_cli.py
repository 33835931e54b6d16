"""The rushorder command: every subcommand has help, and missing parts fail clearly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from rushorder.cli import SUBCOMMANDS, main
from rushorder.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

NAMES = [name for name, *_ in SUBCOMMANDS]


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(f"    {name} " in out for name in NAMES)
    assert NAMES == ["up", "api", "worker", "platform", "migrate", "seed", "token",
                     "rebuild", "audit", "outbox", "replay"]


@pytest.mark.parametrize("name", NAMES)
def test_each_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: rushorder {name}")


# Runs `rushorder token` as the console script does, then lists what got imported.
TOKEN_AND_MODULES = """
import json, sys
from rushorder.cli import main
code = main(["token", "--user", "1"])
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def test_token_mints_without_loading_the_api() -> None:
    env = {**os.environ, "RUSHORDER_JWT_SECRET": "a-test-secret-of-at-least-32-bytes!"}
    done = subprocess.run([sys.executable, "-c", TOKEN_AND_MODULES], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    claims = jwt.decode(done.stdout.strip(), env["RUSHORDER_JWT_SECRET"], algorithms=["HS256"])
    assert (claims["sub"], claims["role"]) == ("1", "user")
    modules = json.loads(done.stderr)
    assert "rushorder.tokens" in modules
    assert [m for m in modules if m.split(".")[0] in ("litestar", "api")] == []


def test_a_bad_setting_exits_2(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RUSHORDER_HTTP_PORT", "eighty")
    assert main(["audit"]) == 2
    assert "RUSHORDER_HTTP_PORT='eighty'" in capsys.readouterr().err


def test_readme_documents_every_setting_and_command() -> None:
    readme = README.read_text()
    missing = [f for f in Settings.__struct_fields__ if f"`RUSHORDER_{f.upper()}`" not in readme]
    assert missing == []
    assert all(f"`rushorder {name}" in readme for name in NAMES)


def test_readme_settings_table_shows_the_real_defaults() -> None:
    rows = dict(re.findall(r"^\| `RUSHORDER_(\w+)` \| ([^|]+) \|", README.read_text(), re.M))
    defaults = Settings()
    for field in Settings.__struct_fields__:
        value = getattr(defaults, field)
        shown = "unset" if value is None else f"`{value}`"
        assert rows[field.upper()].strip() == shown, field


@pytest.mark.parametrize("command", ["api", "seed"])
def test_a_redis_url_the_engine_cannot_speak_is_one_line(
        command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RUSHORDER_REDIS_URL", "rediss://127.0.0.1:6379/0")
    monkeypatch.setenv("RUSHORDER_DATABASE_URL", "postgresql://u@127.0.0.1:1/d")
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rushorder {command}: RUSHORDER_REDIS_URL: Redis URL") and \
        "TLS" in err and err.count("\n") == 1
