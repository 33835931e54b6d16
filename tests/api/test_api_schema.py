"""Schemathesis over /schema: generated and mutated requests to every operation find no
5xx, and every answer matches the documented status, content type, headers and schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ServerProcess

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,negative_data_rejection")


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    api_servers: list[ServerProcess], new_user, tmp_path: Path
) -> None:
    token = new_user(admin=True).token  # an admin is also a user: every route is reachable
    st = Path(sys.executable).with_name("st")
    run = subprocess.run(
        [str(st), "run", f"{api_servers[0].url}/schema", "--checks", CHECKS,
         "--phases", "examples,coverage,fuzzing", "--max-examples", "15", "--seed", "20261122",
         "--workers", "2", "--header", f"Authorization: Bearer {token}",
         "--request-timeout", "10", "--no-color"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "generated" in run.stdout
