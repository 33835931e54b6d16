"""The pipelining connection: replies matched to callers, NOSCRIPT recovery, reconnection."""

from __future__ import annotations

import asyncio

import pytest

from engine import Engine
from engine.errors import EngineUnavailable
from rushorder.servers import free_port


async def test_concurrent_calls_each_get_their_own_reply(engine: Engine, new_user) -> None:
    users = [await new_user() for _ in range(300)]
    answers = await asyncio.gather(
        *(engine.charge(u, 1_000 + 10 * i) for i, u in enumerate(users)))
    assert [(a.user_id, a.balance) for a in answers] == [
        (u, 1_000 + 10 * i) for i, u in enumerate(users)]


async def test_calls_still_work_after_script_flush(engine, new_user, new_product, r) -> None:
    user, made = await new_user(), await new_product()
    await r.script_flush()
    assert not await engine.ready()
    assert (await engine.charge(user, 5_000)).balance == 5_000
    assert (await engine.place_order(user, [(made.id, 1)])).paid_amount == 1_000


async def test_concurrent_calls_after_script_flush_all_recover(engine, new_user, r) -> None:
    users = [await new_user() for _ in range(50)]
    await r.script_flush()
    answers = await asyncio.gather(*(engine.charge(u, 1_000) for u in users))
    assert [a.user_id for a in answers] == users
    assert all(a.balance == 1_000 for a in answers)


async def test_ready_turns_true_once_scripts_are_loaded(engine, r) -> None:
    await r.script_flush()
    assert not await engine.ready()
    await engine.load()
    assert await engine.ready()


async def test_killed_connection_fails_the_in_flight_call_and_the_next_call_reconnects(
    engine, new_user, r
) -> None:
    user = await new_user()
    await engine.charge(user, 1_000)
    client_id = await engine.conn.execute("CLIENT", "ID")
    await r.execute_command("CLIENT", "PAUSE", 5_000, "WRITE")  # hold the next write in Redis
    try:
        in_flight = asyncio.create_task(engine.charge(user, 2_000))
        await asyncio.sleep(0.2)
        assert not in_flight.done()
        await r.execute_command("CLIENT", "KILL", "ID", client_id)
        with pytest.raises(EngineUnavailable):
            await in_flight
    finally:
        await r.execute_command("CLIENT", "UNPAUSE")
    assert (await engine.charge(user, 3_000)).balance == 4_000  # the killed charge never ran
    assert await engine.conn.execute("CLIENT", "ID") != client_id


async def test_call_after_an_idle_connection_was_killed_reconnects_to_the_same_db(
    engine, new_user, r
) -> None:
    user = await new_user()
    await engine.charge(user, 1_000)
    await r.execute_command("CLIENT", "KILL", "ID", await engine.conn.execute("CLIENT", "ID"))
    await asyncio.sleep(0.1)  # let the loop notice the close
    assert (await engine.charge(user, 1_000)).balance == 2_000
    assert int(await r.get(f"{{ro}}:bal:{user}")) == 2_000


async def test_unreachable_redis_is_engine_unavailable() -> None:
    nowhere = Engine(f"redis://127.0.0.1:{free_port()}/1")
    with pytest.raises(EngineUnavailable):
        await nowhere.balance(1)
    await nowhere.close()
