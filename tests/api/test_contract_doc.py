"""docs/api.md, the living contract, lists every error code the API answers with the
status it answers it with: the problems table of the file and ``api.problems.STATUS`` are
the same table."""

from __future__ import annotations

import re

from api.problems import STATUS
from tests.api.support import REPO

ROW = re.compile(r"^\| `(?P<code>[A-Z_]+)` \| (?P<status>\d{3}) \|", re.M)


def test_the_contracts_problem_table_is_the_apis() -> None:
    text = (REPO / "docs" / "api.md").read_text()
    documented = {m["code"]: int(m["status"]) for m in ROW.finditer(text)}
    assert documented == STATUS
