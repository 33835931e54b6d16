"""The pipelining connection: replies matched to callers, NOSCRIPT recovery, reconnection,
and failing fast: a reply deadline, error replies classified, URLs it cannot speak refused,
TCP keepalive."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
import redis

from engine import Engine, state
from engine.connection import KEEPALIVE_IDLE_S, Connection, ReplyError
from engine.errors import EngineUnavailable
from rushorder.servers import RedisServer, free_port


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
    assert int(await r.get(engine.layout.of(user).balance(user))) == 2_000


async def test_unreachable_redis_is_engine_unavailable() -> None:
    nowhere = Engine(f"redis://127.0.0.1:{free_port()}/1")
    with pytest.raises(EngineUnavailable):
        await nowhere.balance(1)
    await nowhere.close()


# -- failing fast ---------------------------------------------------------------------------


class FakeRedis:
    """A TCP server that speaks just enough RESP to misbehave: it answers every command
    with ``reply`` (raw bytes), or never answers at all when ``reply`` is None."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                if self.reply is not None:
                    writer.write(self.reply * data.count(b"*"))  # one reply per command
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def test_a_silent_redis_fails_every_pending_call_within_the_deadline() -> None:
    fake = FakeRedis(reply=None)
    async with fake as url:
        conn = Connection(url, reply_timeout_s=0.3)
        started = time.monotonic()
        answers = await asyncio.gather(*(conn.execute("PING") for _ in range(20)),
                                       return_exceptions=True)
        waited = time.monotonic() - started
        assert all(isinstance(a, EngineUnavailable) for a in answers), answers
        assert "no reply within 0.3s" in str(answers[0])
        assert 0.3 <= waited < 1.0  # the deadline, plus a margin; nobody hangs
        fake.reply = b"+PONG\r\n"
        assert await conn.execute("PING") == b"PONG"  # a new connection, which answers
        assert fake.connections == 2
        await conn.close()


async def test_the_deadline_counts_from_each_call_not_from_the_connection() -> None:
    async with FakeRedis(reply=b"+PONG\r\n") as url:
        conn = Connection(url, reply_timeout_s=0.2)
        for _ in range(5):  # idle gaps longer than the deadline are fine
            assert await conn.execute("PING") == b"PONG"
            await asyncio.sleep(0.25)
        await conn.close()


@pytest.mark.parametrize("reply", [
    "LOADING Redis is loading the dataset in memory",
    "BUSY Redis is busy running a script",
    "OOM command not allowed when used memory > 'maxmemory'.",
    "READONLY You can't write against a read only replica.",
    "MASTERDOWN Link with MASTER is down",
    "CLUSTERDOWN The cluster is down",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "NOREPLICAS Not enough good replicas to write.",
    "MISCONF Redis is configured to save RDB snapshots, but it's unable to persist",
])
async def test_replies_that_mean_not_now_are_engine_unavailable(reply: str) -> None:
    async with FakeRedis(reply=f"-{reply}\r\n".encode()) as url:
        engine = Engine(url)
        with pytest.raises(EngineUnavailable, match="cannot serve right now"):
            await engine.charge(1, 1_000)  # a script call
        with pytest.raises(EngineUnavailable, match="cannot serve right now"):
            await engine.place_order(1, [(1, 1)])  # a batched call
        with pytest.raises(EngineUnavailable, match="cannot serve right now"):
            await engine.balance(1)  # a plain command
        await engine.close()


async def test_any_other_error_reply_is_a_bug_not_unavailability() -> None:
    async with FakeRedis(reply=b"-ERR unknown command 'EVALSHA'\r\n") as url:
        engine = Engine(url)
        with pytest.raises(ReplyError, match="unknown command"):
            await engine.charge(1, 1_000)
        await engine.close()


async def test_a_redis_out_of_memory_answers_orders_and_charges_engine_unavailable(
    tmp_path: Path, redis_cluster: bool,
) -> None:
    server = RedisServer(tmp_path / "redis", free_port(), fsync_always=False,
                         cluster=redis_cluster).start()
    try:
        with redis.Redis.from_url(server.url) as client:
            state.mark(client, "tests")
            engine = Engine(server.url)
            product = await engine.create_product("widget", 10, 100)
            await engine.charge(1, 10_000)
            client.config_set("maxmemory", 1)  # every write is now over the limit
            with pytest.raises(EngineUnavailable, match="OOM"):
                await engine.place_order(1, [(product.id, 1)])
            with pytest.raises(EngineUnavailable, match="OOM"):
                await engine.charge(1, 1_000)
            client.config_set("maxmemory", 0)
            assert (await engine.place_order(1, [(product.id, 1)])).paid_amount == 10
            await engine.close()
    finally:
        server.stop()


@pytest.mark.parametrize("url", ["rediss://127.0.0.1:6379/0", "unix:///tmp/redis.sock",
                                 "http://127.0.0.1:6379", "127.0.0.1:6379",
                                 "redis://127.0.0.1:6379/zero"])
def test_urls_the_client_cannot_speak_are_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        Connection(url)


async def test_the_socket_has_tcp_keepalive(engine: Engine) -> None:
    await engine.balance(1)
    protocol = engine.conn._protocol
    assert protocol is not None and protocol._transport is not None
    sock = protocol._transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
