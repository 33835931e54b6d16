"""The atomic engine: rushorder's live state in Redis, changed only by Lua scripts."""

from engine.engine import Engine
from engine.policy import Idempotency, Policy

__all__ = ["Engine", "Idempotency", "Policy"]
