"""Issue 25, secrets: nothing serves with a secret anyone can sign with, `rushorder token`
signs only what the API would honour, and no printed URL shows a password."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from rushorder import stack
from rushorder.cli import main
from rushorder.settings import DEV_JWT_SECRET, Settings, UnsafeSetting, is_loopback, redact
from rushorder.tokens import MAX_TTL_S

OWN_SECRET = "an-operator-secret-of-32-bytes-or-more"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No RUSHORDER_* of the caller's: the defaults, in a data dir of our own."""
    for name in ("RUSHORDER_JWT_SECRET", "RUSHORDER_HTTP_HOST", "RUSHORDER_REDIS_URL",
                 "RUSHORDER_DATABASE_URL", "RUSHORDER_RQ_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUSHORDER_DATA_DIR", str(tmp_path))
    return monkeypatch


@pytest.mark.parametrize("command", ["api", "up"])
@pytest.mark.parametrize("host", ["0.0.0.0", "", "192.168.1.10", "example.com"])
def test_the_published_dev_secret_is_refused_off_loopback(
        command: str, host: str, clean_env: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("RUSHORDER_HTTP_HOST", host)
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rushorder {command}: RUSHORDER_JWT_SECRET is not set")
    assert err.count("\n") == 1 and "loopback" in err


@pytest.mark.parametrize("command", ["api", "up", "token"])
@pytest.mark.parametrize("secret", ["x", "a" * 31, "é" * 15])
def test_a_secret_under_32_bytes_is_refused_in_one_line(
        command: str, secret: str, clean_env: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("RUSHORDER_JWT_SECRET", secret)
    clean_env.setenv("RUSHORDER_HTTP_HOST", "127.0.0.1")
    args = [command, "--user", "1"] if command == "token" else [command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rushorder {command}: RUSHORDER_JWT_SECRET is ")
    assert "at least 32" in err and err.count("\n") == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_the_dev_secret_serves_on_loopback_and_an_own_secret_anywhere(host: str) -> None:
    assert is_loopback(host)
    Settings(http_host=host).check_servable()
    Settings(http_host="0.0.0.0", jwt_secret=OWN_SECRET).check_servable()
    with pytest.raises(UnsafeSetting):
        Settings(http_host="0.0.0.0").check_servable()


@pytest.mark.parametrize(("args", "why"), [
    (["--user", "0"], "--user 0: a user id is 1 to 99999999999999"),
    (["--user", "-3"], "--user -3: a user id is 1 to 99999999999999"),
    (["--user", str(10**14)], f"--user {10**14}: a user id is 1 to 99999999999999"),
    (["--user", "1", "--ttl-s", "0"], "--ttl-s 0: a token lives 1 to 2592000 seconds"),
    (["--user", "1", "--ttl-s", "-60"], "--ttl-s -60: a token lives 1 to 2592000 seconds"),
    (["--user", "1", "--ttl-s", str(MAX_TTL_S + 1)],
     f"--ttl-s {MAX_TTL_S + 1}: a token lives 1 to 2592000 seconds"),
    (["--user", "1", "--ttl-s", str(10**12)], f"--ttl-s {10**12}: a token lives"),
])
def test_token_refuses_ids_outside_the_contract_and_absurd_lifetimes(
        args: list[str], why: str, clean_env: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"rushorder token: {why}")
    assert captured.err.count("\n") == 1


def test_token_signs_the_contract_s_extremes(
        clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("RUSHORDER_JWT_SECRET", OWN_SECRET)
    for user, ttl in ((1, 1), (10**14 - 1, MAX_TTL_S)):
        assert main(["token", "--user", str(user), "--ttl-s", str(ttl), "--admin"]) == 0
        claims = jwt.decode(capsys.readouterr().out.strip(), OWN_SECRET, algorithms=["HS256"])
        assert (claims["sub"], claims["role"]) == (str(user), "admin")


def test_redact_hides_every_url_password_and_nothing_else() -> None:
    text = ("redis://:s3cr3t-_x@127.0.0.1:6380/0 postgresql://rushorder:pa%40ss@h:5/db "
            "rediss://user:pw@h http://127.0.0.1:8000/ops")
    assert redact(text) == ("redis://:***@127.0.0.1:6380/0 postgresql://rushorder:***@h:5/db "
                            "rediss://user:***@h http://127.0.0.1:8000/ops")


# -- `up`'s banner ---------------------------------------------------------------------------

REDIS = "redis://:redis-password-1234@127.0.0.1:6380/0"
POSTGRES = "postgresql://rushorder:pg-password-5678@127.0.0.1:5433/rushorder"


def _banner(capsys: pytest.CaptureFixture[str], **settings: object) -> str:
    """What `up` prints once the stack is up, with external servers of these URLs."""
    resolved = Settings(redis_url=REDIS, database_url=POSTGRES, rq_redis_url=REDIS,
                        data_platform_url="http://user:platform-password@10.0.0.9:8100",
                        **settings)  # type: ignore[arg-type]
    stack.print_banner(stack.Stack(resolved), resolved, ready=True)
    return capsys.readouterr().out


def test_the_banner_prints_tokens_only_for_the_dev_secret_on_loopback(
        capsys: pytest.CaptureFixture[str]) -> None:
    dev = _banner(capsys)
    assert "admin token (user 1000): ey" in dev and "loopback only" in dev
    own = _banner(capsys, jwt_secret=OWN_SECRET, http_host="0.0.0.0")
    assert "token (user" not in own and "Bearer ey" not in own
    assert "rushorder token --user 1" in own


@pytest.mark.parametrize("secret", [DEV_JWT_SECRET, OWN_SECRET])
def test_the_banner_shows_no_password(secret: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _banner(capsys, jwt_secret=secret)
    assert "127.0.0.1:6380" in out and "127.0.0.1:5433" in out
    assert not any(word in out for word in ("redis-password", "pg-password",
                                            "platform-password"))


def test_up_lines_from_children_show_no_password(capsys: pytest.CaptureFixture[str]) -> None:
    stack.say("worker-1", f"connecting to {REDIS} and {POSTGRES}")
    out = capsys.readouterr().out
    assert "redis://:***@127.0.0.1:6380/0" in out and "password" not in out


def test_serving_the_api_directly_refuses_the_dev_secret_off_loopback() -> None:
    from api.server import serve

    with pytest.raises(UnsafeSetting, match="RUSHORDER_JWT_SECRET"):
        serve(Settings(http_host="0.0.0.0"))  # refused before anything listens
