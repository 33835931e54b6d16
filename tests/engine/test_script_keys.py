"""Both ends of every script call name its keys alike: each script binds KEYS to a ``K``
table at its top, Python builds them from ``SCRIPT_KEYS`` by name, and the two lists agree
name for name and place for place. No server needed: the Lua is read as text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.allotments import RESERVE, TransferRecord
from engine.scripts import (
    LIBRARY,
    LINE_KEYS,
    LUA_DIR,
    ORDER_KEYS,
    SCRIPT_KEYS,
    order_keys,
    script_keys,
)

K_TABLE = re.compile(r"^local K = \{(.*?)\}", re.MULTILINE | re.DOTALL)
BINDING = re.compile(r"(\w+) = KEYS\[(\d+)\]")


def scripts() -> dict[str, str]:
    """Every script's source by name, the library left out."""
    return {path.stem: path.read_text() for path in Path(str(LUA_DIR)).glob("*.lua")
            if path.name != LIBRARY}


def k_table(source: str) -> list[str]:
    """The names a script's ``K`` table binds, checked to take KEYS[1], KEYS[2]... in turn."""
    table = K_TABLE.search(source)
    assert table is not None, "no `local K = {...}` table"
    bound = BINDING.findall(table.group(1))
    assert [int(index) for _, index in bound] == list(range(1, len(bound) + 1))
    return [name for name, _ in bound]


def names_of(source: str, table: str) -> list[str]:
    """The strings of a ``local <table> = {'a', 'b'}`` list."""
    found = re.search(rf"^local {table} = \{{(.*?)\}}", source, re.MULTILINE | re.DOTALL)
    assert found is not None, f"no {table} list"
    return re.findall(r"'(\w+)'", found.group(1))


def code(source: str) -> str:
    """The source without its comments and without its ``K`` table."""
    lines = [line.split("--", 1)[0] for line in source.splitlines()]
    return K_TABLE.sub("", "\n".join(lines))


def test_every_script_has_its_keys_named_on_the_python_side() -> None:
    assert sorted(scripts()) == sorted(SCRIPT_KEYS)


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_a_scripts_k_table_and_script_keys_name_the_same_keys_in_the_same_order(
    name: str,
) -> None:
    assert k_table(scripts()[name]) == list(SCRIPT_KEYS[name])


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_a_script_reads_no_key_by_number_past_its_k_table(name: str) -> None:
    assert not re.search(r"KEYS\[\d+\]", code(scripts()[name]))


def test_place_orders_names_each_orders_and_each_lines_keys_alike_at_both_ends() -> None:
    source = scripts()["place_orders"]
    assert names_of(source, "ORDER_K") == list(ORDER_KEYS)
    assert names_of(source, "LINE_K") == list(LINE_KEYS)


def test_keys_come_out_in_the_scripts_order_whatever_order_they_are_named_in() -> None:
    assert script_keys("get_order", floor="f", order="o", live="l") == ["l", "o", "f"]
    named = {name: name.upper() for name in ORDER_KEYS}
    assert order_keys(**named) == [name.upper() for name in ORDER_KEYS]


@pytest.mark.parametrize("named", [
    {"live": "l", "order": "o"},  # floor missing
    {"live": "l", "order": "o", "floor": "f", "balance": "b"},  # one too many
])
def test_a_missing_or_unknown_key_name_fails_before_any_call(named: dict[str, str]) -> None:
    with pytest.raises(TypeError, match="get_order"):
        script_keys("get_order", **named)


def test_a_transfer_record_reads_back_as_transfer_record_in_the_library_writes_it() -> None:
    library = (Path(str(LUA_DIR)) / LIBRARY).read_text()
    assert "return head .. ' ' .. units .. ' ' .. at_ms" in library
    assert TransferRecord.parse(b"c 12 -1 3 1765000000000") == TransferRecord(
        kind="c", thing_id=12, dest=RESERVE, units=3, at_ms=1765000000000)
