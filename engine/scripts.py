"""The Lua scripts of ``engine/lua/``, found by globbing, each linked with its helpers.

The scripts are package data of ``engine`` and read with :mod:`importlib.resources`, so a
plain (non-editable) ``pip install`` ships a working engine.

``_lib.lua`` holds the helpers as top-level ``local function`` blocks. Redis runs a
script's whole chunk on every call, so each helper costs a closure allocation per call
whether it is used or not (about 2 µs for all of them, a twentieth of an order); a script
therefore gets only the helpers its body names, and the ones those name in turn.

SHA1s are computed locally, so every call is an EVALSHA; a NOSCRIPT reply (a restarted or
failed-over Redis) loads the script and retries the same call once.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from engine.connection import Connection, ReplyError

LUA_DIR: Traversable = resources.files("engine") / "lua"
LIBRARY = "_lib.lua"
_HELPER = re.compile(r"^local function (\w+)\(", re.MULTILINE)


class Script:
    """One script: its full source (helpers + body) and SHA1."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def evalsha(self, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """The EVALSHA command calling this script with ``keys`` and ``args``."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    async def __call__(self, conn: Connection, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script first if Redis does not know it."""
        command = self.evalsha(keys, args)
        try:
            return await conn.execute(*command)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await conn.execute("SCRIPT", "LOAD", self.source)
        return await conn.execute(*command)


def helpers(library: str) -> list[tuple[str, str]]:
    """The library's ``(name, block)`` pairs in file order; a block is the function with the
    comment lines just above it."""
    lines = library.splitlines(keepends=True)
    starts = []
    for match in _HELPER.finditer(library):
        first = library.count("\n", 0, match.start())
        while first > 0 and lines[first - 1].startswith("--"):
            first -= 1
        starts.append((match.group(1), first))
    ends = [first for _, first in starts[1:]] + [len(lines)]
    return [(name, "".join(lines[first:end])) for (name, first), end in zip(starts, ends,
                                                                           strict=True)]


def link(library: str, body: str) -> str:
    """The helpers ``body`` needs, directly or through other helpers, then ``body``.

    A helper can only call helpers defined above it, so one pass from the last helper up
    finds every one that is needed.
    """
    blocks = helpers(library)
    needed: list[str] = []
    text = body
    for name, block in reversed(blocks):
        if re.search(rf"\b{name}\b", text):
            needed.append(block)
            text += block
    return "".join(reversed(needed)) + body


def load_scripts(lua_dir: Traversable = LUA_DIR) -> dict[str, Script]:
    """Every ``*.lua`` of the folder but the library, by file stem."""
    library = (lua_dir / LIBRARY).read_text()
    scripts = {}
    for path in sorted(lua_dir.iterdir(), key=lambda entry: entry.name):
        if path.name.endswith(".lua") and path.name != LIBRARY:
            name = path.name.removesuffix(".lua")
            scripts[name] = Script(name, link(library, f"-- {path.name}\n{path.read_text()}"))
    return scripts
