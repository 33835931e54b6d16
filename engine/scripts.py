"""The Lua scripts of ``lua/``, found by globbing, each prefixed with ``lua/_lib.lua``.

SHA1s are computed locally, so every call is an EVALSHA; a NOSCRIPT reply (a restarted or
failed-over Redis) loads the script and retries the same call once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from engine.connection import Connection, ReplyError

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
LIBRARY = "_lib.lua"


class Script:
    """One script: its full source (library + body) and SHA1."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, conn: Connection, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script first if Redis does not know it."""
        try:
            return await conn.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await conn.execute("SCRIPT", "LOAD", self.source)
        return await conn.execute("EVALSHA", self.sha, len(keys), *keys, *args)


def load_scripts(lua_dir: Path = LUA_DIR) -> dict[str, Script]:
    """Every ``*.lua`` of the folder but the library, by file stem."""
    library = (lua_dir / LIBRARY).read_text()
    return {
        path.stem: Script(path.stem, f"{library}\n-- {path.name}\n{path.read_text()}")
        for path in sorted(lua_dir.glob("*.lua"))
        if path.name != LIBRARY
    }
