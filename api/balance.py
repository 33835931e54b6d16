"""Balance endpoints: the caller's balance, charges and history."""

from __future__ import annotations

from litestar import get, post

from api.access import Routes
from api.auth import UserRequest
from api.docs import charge_schema, operation, problems
from api.idempotency import answered, idempotency_of
from api.inbound import read_body
from api.requests import ChargeIn, Cursor, Limit, parse
from engine import Engine
from engine.models import Balance, Charge, HistoryLine, Page


def routes(engine: Engine) -> Routes:
    """The balance endpoints over ``engine``."""

    @get("/balance", responses=problems(401))
    async def get_balance(request: UserRequest) -> Balance:
        """The caller's balance (0 for a user never seen)."""
        return await engine.balance(request.user.user_id)

    @post("/balance/charge", status_code=200,
          operation_class=operation(ChargeIn, idempotent=True,
                                    schema=charge_schema(engine.policy)),
          responses=problems(400, 401, 409, 413, 422, 429))
    async def charge(request: UserRequest) -> Charge:
        """Add money to the caller's balance; honours Idempotency-Key."""
        body = await read_body(request)
        data = parse(ChargeIn, body)
        idem = idempotency_of(request, body)
        return await answered(idem, engine.charge(request.user.user_id, data.amount, idem), 200)

    @get("/balance/history", responses=problems(400, 401))
    async def history(
        request: UserRequest, limit: Limit = 20, cursor: Cursor = None
    ) -> Page[HistoryLine]:
        """The caller's balance movements, newest first."""
        return await engine.history(request.user.user_id, limit, cursor or None)

    return Routes(user=[get_balance, charge, history])
