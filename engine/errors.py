"""Domain errors: every stable error ``code`` of the contract, one class each.

Scripts answer with a code; :func:`raise_for` turns it into one of these in one place, and
the API maps each class to its HTTP status in one table.
"""

from __future__ import annotations

from typing import Any, ClassVar


class EngineError(Exception):
    """Base of every refusal the engine gives; ``code`` is the contract's stable code."""

    code: ClassVar[str] = "ENGINE_ERROR"
    # Seconds after which a retry may succeed (a Retry-After header), for the errors that
    # have one.
    retry_after_s: int | None = None

    def __init__(self, detail: str = "", **context: Any) -> None:
        super().__init__(detail or self.code)
        self.detail = detail or self.code.replace("_", " ").lower()
        self.context = context


class ValidationFailed(EngineError):
    """Raised when a command is malformed in a way the API's types could not see."""

    code = "VALIDATION_ERROR"


class InvalidAmount(EngineError):
    """Raised when a charge amount breaks the amount policy."""

    code = "INVALID_AMOUNT"


class BalanceLimitExceeded(EngineError):
    """Raised when a charge would lift the balance over its cap."""

    code = "BALANCE_LIMIT_EXCEEDED"


class ProductNotFound(EngineError):
    """Raised when a product id is unknown."""

    code = "PRODUCT_NOT_FOUND"


class OutOfStock(EngineError):
    """Raised when a product has fewer units than asked (or a restock would go below 0)."""

    code = "OUT_OF_STOCK"


class OptionNotFound(EngineError):
    """Raised when an option id is unknown, or is another product's option."""

    code = "OPTION_NOT_FOUND"


class ProductNotOnSale(EngineError):
    """Raised when a product is suspended or outside its sale window (Redis' clock)."""

    code = "PRODUCT_NOT_ON_SALE"


class PurchaseLimitExceeded(EngineError):
    """Raised when an order would take a user past a product's ``max_per_user``."""

    code = "PURCHASE_LIMIT_EXCEEDED"


class CouponNotFound(EngineError):
    """Raised when a coupon id is unknown."""

    code = "COUPON_NOT_FOUND"


class CouponNotActive(EngineError):
    """Raised when a coupon is issued outside its validity window."""

    code = "COUPON_NOT_ACTIVE"


class CouponAlreadyIssued(EngineError):
    """Raised when a user asks a second time for the same coupon."""

    code = "COUPON_ALREADY_ISSUED"


class CouponSoldOut(EngineError):
    """Raised when every unit of a coupon is gone."""

    code = "COUPON_SOLD_OUT"


class CouponNotUsable(EngineError):
    """Raised when an order names an issued coupon that is unknown, another's, used or expired."""

    code = "COUPON_NOT_USABLE"


class InsufficientBalance(EngineError):
    """Raised when the balance does not cover the amount to pay."""

    code = "INSUFFICIENT_BALANCE"


class OrderNotFound(EngineError):
    """Raised when an order is unknown or belongs to someone else."""

    code = "ORDER_NOT_FOUND"


class OrderNotCancellable(EngineError):
    """Raised when an order is cancelled a second time."""

    code = "ORDER_NOT_CANCELLABLE"


class OrderNotPayable(EngineError):
    """Raised when an order is paid that does not await payment (cancelled, expired, or
    past its due time) (issue 28)."""

    code = "ORDER_NOT_PAYABLE"


class CartEmpty(EngineError):
    """Raised when checking out an empty cart."""

    code = "CART_EMPTY"


class IdempotencyKeyReused(EngineError):
    """Raised when a key comes back with another method, path or body."""

    code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyKeyInFlight(EngineError):
    """Raised when a key's first request is still running (never, while every write is one
    atomic script: a duplicate queues behind the first inside Redis and gets its replay)."""

    code = "IDEMPOTENCY_KEY_IN_FLIGHT"


class TooManyRequests(EngineError):
    """Raised when a user writes faster than its rate limit, or brings a new
    Idempotency-Key while it holds as many live records as it may; nothing changed, and
    ``retry_after_s`` says when to try again."""

    code = "TOO_MANY_REQUESTS"

    def __init__(self, detail: str = "", **context: Any) -> None:
        super().__init__(detail, **context)
        self.retry_after_s = max(1, int(context.get("retry_after_s") or 1))


class EngineUnavailable(EngineError):
    """Raised when Redis cannot serve: unreachable, silent past the reply deadline, or
    refusing for a while (loading, busy, out of memory, a replica, a cluster without
    quorum); the outcome of an in-flight write is unknown, so only a retry under the same
    Idempotency-Key is safe."""

    code = "SERVICE_UNAVAILABLE"
    retry_after_s = 1


class StateMissing(EngineUnavailable):
    """Raised when Redis holds no live rushorder state (no marker, ``engine/state.py``): it
    lost its data or was never loaded, and nothing is served from it until ``rushorder
    rebuild`` restores it from Postgres. Scripts answer it as ``STATE_MISSING``."""

    script_code = "STATE_MISSING"


ERRORS: dict[str, type[EngineError]] = {
    **{cls.code: cls for cls in EngineError.__subclasses__()},
    StateMissing.script_code: StateMissing,
}


def raise_for(code: str, detail: str, context: dict[str, Any]) -> None:
    """Raise the domain error a script answered with."""
    raise ERRORS.get(code, EngineError)(detail, **context)
