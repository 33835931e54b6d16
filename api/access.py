"""Who may call what: every route sits in one of three routers, and the router decides.

Public routes need no token; user routes run ``Authenticator.user`` before anything else
(so a bad token wins over a bad body); admin routes run ``Authenticator.admin``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from litestar import Router
from litestar.handlers import HTTPRouteHandler

from api.auth import Authenticator
from api.docs import SECURED

PREFIX = "/api/v1"


class Routes(NamedTuple):
    """One module's handlers, by who may call them."""

    public: list[HTTPRouteHandler] = []
    user: list[HTTPRouteHandler] = []
    admin: list[HTTPRouteHandler] = []


def routers(groups: Iterable[Routes], auth: Authenticator) -> list[Router]:
    """The public, user (``/api/v1``) and admin (``/api/v1/admin``) routers."""
    groups = list(groups)
    return [
        Router(PREFIX, route_handlers=[h for g in groups for h in g.public]),
        Router(PREFIX, route_handlers=[h for g in groups for h in g.user],
               before_request=auth.user, security=SECURED),
        Router(f"{PREFIX}/admin", route_handlers=[h for g in groups for h in g.admin],
               before_request=auth.admin, security=SECURED),
    ]
