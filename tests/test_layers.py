"""The layers as a contract: which of our packages each module may import.

Every import counts: at the top of a module, inside a function (the CLI imports lazily
on purpose), under ``TYPE_CHECKING``, and by name through ``importlib.import_module``,
``__import__`` or the CLI's ``load("module", "name")``. Only direct imports are held:
``workers`` importing ``engine.outbox`` is fine even though Python then runs
``engine/__init__.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "persistence", "api", "workers", "rushorder")

# rushorder's modules that import nothing of ours (the layers below may use some of them).
LEAVES = ("rushorder", "rushorder.settings", "rushorder.tokens", "rushorder.servers",
          "rushorder.progress")

# What each layer may import of our packages, its own package aside. The rest of
# `rushorder` (the CLI, stack, stackfile, rebuild, audit, seed) is the top: it wires the others,
# and no layer may import it.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "engine": (),
    "persistence": (),
    # persistence.archive: the durable record's reads of what Redis settled (the engine
    # takes it as an engine.archive.Archive; the app factory makes it).
    "api": ("engine", "persistence.archive", "rushorder.settings", "rushorder.tokens"),
    # The workers drain the outbox (its streams, events and settle records) into Postgres
    # over the key layout and the live-state marker; engine.ops.heartbeat and
    # engine.ops.replays are the console's side channel, whose key layout and wire format
    # the workers (writers) share with the engine (the reader). WORKERS_USE pins the names.
    "workers": ("persistence", "engine.keys", "engine.state", "engine.models", "engine.outbox",
                "engine.ops.heartbeat", "engine.ops.replays", "rushorder.settings"),
    "rushorder leaf": (),
    "rushorder top": PACKAGES,
}
DYNAMIC = {"import_module", "__import__", "load"}  # called with a module's name

# The names the workers take of the engine, module by module (a module imported whole,
# as ``from engine import keys``, is named by its own entry, empty): a new one is a
# decision to make here, not a line that slips in.
WORKERS_USE: dict[str, frozenset[str]] = {
    "engine.keys": frozenset({"Group", "Layout"}),
    "engine.state": frozenset(),
    "engine.models": frozenset({"HistoryLine", "Order"}),
    "engine.outbox": frozenset({"DeadLetters", "Entry", "CONSUMER_GROUPS", "Outbox", "OutboxGone",
                                "Outboxes", "PLATFORM", "POSTGRES", "entry_number",
                                "split_key"}),
    "engine.outbox.events": frozenset({"AnyEvent", "BalanceCharged", "CouponCreated",
                                       "CouponIssued", "OrderCancelled", "OrderPaid",
                                       "ProductCreated", "ProductUpdated", "decode",
                                       "OptionCreated", "OptionUpdated", "OptionState",
                                       "ProductState",
                                       "CartUpdated",  # issue 28: durable carts
                                       "OrderPending", "OrderExpired"}),  # deferred payment
    "engine.outbox.settle": frozenset({"Settler", "record"}),
    "engine.ops.heartbeat": frozenset({"Heartbeat"}),
    "engine.ops.replays": frozenset({"ReplayState"}),
}


@dataclass(frozen=True)
class Import:
    """One import of one of our modules, and where it is written."""

    module: str
    path: str
    line: int
    target: str


def module_name(path: Path) -> str:
    """``api/auth.py`` -> ``api.auth``; ``engine/__init__.py`` -> ``engine``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ours(name: str) -> bool:
    """A module of one of our packages."""
    return name.split(".")[0] in PACKAGES


def is_module(name: str) -> bool:
    """``name`` is a module or package of ours (not a name defined inside one)."""
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from .{name} import`` (``level`` dots) written in ``module``."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[:len(package) - level + 1]
    return ".".join([*base, name] if name else base)


def targets(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """The modules an AST node imports (nothing for nodes that import nothing)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        source = absolute(module, is_package, node.level, node.module) if node.level \
            else node.module or ""
        for alias in node.names:
            yield f"{source}.{alias.name}" if is_module(f"{source}.{alias.name}") else source
    elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        called = node.func.id if isinstance(node.func, ast.Name) else \
            node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if called in DYNAMIC and isinstance(node.args[0].value, str):
            yield node.args[0].value


def imports(module: str, source: str, path: str = "<test>", is_package: bool = False,
            ) -> Iterator[Import]:
    """Every import of our modules in ``source``, wherever in the file it is written."""
    for node in ast.walk(ast.parse(source)):
        for target in targets(node, module, is_package):
            if ours(target):
                yield Import(module, path, getattr(node, "lineno", 0), target)


def layer_of(module: str) -> str:
    """The layer a module belongs to."""
    package = module.split(".")[0]
    if package != "rushorder":
        return package
    return "rushorder leaf" if module in LEAVES else "rushorder top"


def allowed(imp: Import) -> bool:
    """The import is within the importing module's own package or its layer's list."""
    layer = layer_of(imp.module)
    own = () if layer == "rushorder leaf" else (imp.module.split(".")[0],)
    return any(imp.target == p or imp.target.startswith(p + ".")
               for p in (*own, *MAY_IMPORT[layer]))


def complaint(imp: Import) -> str:
    """What is wrong with a forbidden import, naming the module, the line and the target."""
    layer = layer_of(imp.module)
    own = [] if layer == "rushorder leaf" else [f"{imp.module.split('.')[0]}.*"]
    may = ", ".join([*own, *MAY_IMPORT[layer]])
    return (f"{imp.module} ({imp.path}:{imp.line}) imports {imp.target}: "
            f"{layer} may import {'only ' + may if may else 'nothing of ours'}")


def violations(module: str, source: str, path: str = "<test>",
               is_package: bool = False) -> list[str]:
    """Complaints about every forbidden import in one module's source."""
    return [complaint(imp) for imp in imports(module, source, path, is_package)
            if not allowed(imp)]


def every_module() -> Iterator[tuple[str, Path]]:
    """Each module of the installed packages, with its file."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield module_name(path), path


def scan() -> Iterator[Import]:
    """Every import of our modules by our modules."""
    for module, path in every_module():
        yield from imports(module, path.read_text(), str(path.relative_to(ROOT)),
                           path.name == "__init__.py")


def test_every_module_imports_only_what_its_layer_may() -> None:
    broken = [complaint(imp) for imp in scan() if not allowed(imp)]
    assert not broken, "imports across the layers:\n" + "\n".join(broken)


def test_the_scan_reads_every_package_and_sees_lazy_and_named_imports() -> None:
    found = {(imp.module, imp.target) for imp in scan()}
    modules = {module for module, _ in every_module()}
    assert all(any(m.split(".")[0] == p for m in modules) for p in PACKAGES)
    assert {("rushorder.cli", "api.server"),  # load("api.server", "serve") in a function
            ("rushorder.rebuild", "persistence.database"),
            ("workers.postgres", "persistence.outbox"), ("api.app", "engine"),
            ("persistence.migrations.env", "persistence.models")} <= found


@pytest.mark.parametrize(("module", "source", "named"), [
    ("engine.x", "import api.app\n", "engine.x (<test>:1) imports api.app"),
    ("engine.x", "def f():\n    from workers import postgres\n",
     "engine.x (<test>:2) imports workers.postgres"),
    ("persistence.x", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from engine.models import Order\n", "imports engine.models"),
    ("api.x", "import importlib\nimportlib.import_module('persistence.orders')\n",
     "imports persistence.orders"),
    ("api.x", "from rushorder import stack\n", "api.x (<test>:1) imports rushorder.stack"),
    ("workers.x", "from engine import Engine\n", "workers.x (<test>:1) imports engine:"),
    ("workers.x", "from engine import restore\n", "imports engine.restore"),
    ("rushorder.settings", "def f():\n    return load('rushorder.cli', 'main')\n",
     "imports rushorder.cli: rushorder leaf may import nothing of ours"),
    ("api.sub.x", "from ...workers import main\n", "imports workers.main"),
])
def test_a_forbidden_import_is_named(module: str, source: str, named: str) -> None:
    (found,) = violations(module, source)
    assert named in found


@pytest.mark.parametrize(("module", "source"), [
    ("api.x", "from engine.models import Order\nfrom rushorder.tokens import ALGORITHM\n"),
    ("workers.x", "from engine.outbox import Outbox\nfrom persistence import models\n"),
    ("rushorder.cli", "def f():\n    load('workers.main', 'run')\n"),
    ("engine.x", "from . import keys\nfrom engine.errors import EngineError\n"),
])
def test_an_allowed_import_passes(module: str, source: str) -> None:
    assert violations(module, source) == []


def engine_names(source: str) -> Iterator[tuple[str, str]]:
    """Each ``(module, name)`` a module's source imports from the engine; a module imported
    whole is ``(module, "")``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((alias.name, "") for alias in node.names
                        if alias.name.split(".")[0] == "engine")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "engine":
            for alias in node.names:
                whole = f"{node.module}.{alias.name}"
                yield (whole, "") if is_module(whole) else (node.module or "", alias.name)


def test_the_workers_import_only_the_engine_names_they_use() -> None:
    extra = sorted(f"{path.relative_to(ROOT)}: {module} {name}".strip()
                   for path in sorted((ROOT / "workers").rglob("*.py"))
                   for module, name in engine_names(path.read_text())
                   if module not in WORKERS_USE
                   or name and name not in WORKERS_USE[module])
    assert not extra, "engine names the workers import beyond WORKERS_USE:\n" + "\n".join(extra)


def test_workers_use_names_no_more_than_the_layers_allow() -> None:
    assert all(any(m == p or m.startswith(p + ".") for p in MAY_IMPORT["workers"])
               for m in WORKERS_USE)
