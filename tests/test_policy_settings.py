"""The business policy's settings are range- and cross-checked at start (issue 28, point 5).

A unit of 0 would refuse every charge, a minimum of 0 take 0-won charges, and a minimum
above the maximum refuse them all: each is refused when the settings are read, with one
line naming the variable, and the CLI stops with exit code 2 before starting anything.
"""

from __future__ import annotations

import pytest

from rushorder import cli
from rushorder.settings import BadSetting, Settings

# Each assignment document's charge policy (../shared/seeds/; the README's table says the
# same): it must be accepted as written.
SEED_POLICIES = {
    "000": {"RUSHORDER_BALANCE_MAX": "1000000"},
    "001": {"RUSHORDER_CHARGE_MIN": "500", "RUSHORDER_CHARGE_MAX": "100000",
            "RUSHORDER_CHARGE_UNIT": "10"},
    "004": {"RUSHORDER_CHARGE_MIN": "1", "RUSHORDER_CHARGE_UNIT": "1"},
}


@pytest.mark.parametrize("seed", sorted(SEED_POLICIES))
def test_each_seeds_policy_is_accepted(seed: str) -> None:
    settings = Settings.from_env(SEED_POLICIES[seed])
    for name, value in SEED_POLICIES[seed].items():
        assert getattr(settings, name.removeprefix("RUSHORDER_").lower()) == int(value)


@pytest.mark.parametrize(("env", "named"), [
    ({"RUSHORDER_CHARGE_UNIT": "0"}, "RUSHORDER_CHARGE_UNIT"),
    ({"RUSHORDER_CHARGE_MIN": "0"}, "RUSHORDER_CHARGE_MIN"),
    ({"RUSHORDER_CHARGE_MAX": "-10"}, "RUSHORDER_CHARGE_MAX"),
    ({"RUSHORDER_BALANCE_MAX": "0"}, "RUSHORDER_BALANCE_MAX"),
    ({"RUSHORDER_BALANCE_MAX": str(10**16)}, "RUSHORDER_BALANCE_MAX"),
    ({"RUSHORDER_TOP_WINDOW_HOURS": "0"}, "RUSHORDER_TOP_WINDOW_HOURS"),
    ({"RUSHORDER_IDEMPOTENCY_TTL_S": "0"}, "RUSHORDER_IDEMPOTENCY_TTL_S"),
    ({"RUSHORDER_HTTP_PORT": "70000"}, "RUSHORDER_HTTP_PORT"),
    ({"RUSHORDER_WORKERS": "0"}, "RUSHORDER_WORKERS"),
    ({"RUSHORDER_OUTBOX_BATCH": "0"}, "RUSHORDER_OUTBOX_BATCH"),
    ({"RUSHORDER_REDIS_TIMEOUT_S": "0"}, "RUSHORDER_REDIS_TIMEOUT_S"),
    ({"RUSHORDER_CHARGE_MAX": "ten"}, "RUSHORDER_CHARGE_MAX"),
    ({"RUSHORDER_PAYMENT_TIMEOUT_S": "9"}, "RUSHORDER_PAYMENT_TIMEOUT_S"),  # issue 28
    ({"RUSHORDER_PAYMENT_TIMEOUT_S": "86401"}, "RUSHORDER_PAYMENT_TIMEOUT_S"),
])
def test_a_value_out_of_its_range_is_refused_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(BadSetting) as refused:
        Settings.from_env(env)
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"{named}=")


@pytest.mark.parametrize(("env", "named"), [
    ({"RUSHORDER_CHARGE_MIN": "5000", "RUSHORDER_CHARGE_MAX": "1000"},
     ("RUSHORDER_CHARGE_MIN", "RUSHORDER_CHARGE_MAX")),
    ({"RUSHORDER_BALANCE_MAX": "100000"}, ("RUSHORDER_CHARGE_MAX", "RUSHORDER_BALANCE_MAX")),
    ({"RUSHORDER_CHARGE_MIN": "1005"}, ("RUSHORDER_CHARGE_MIN", "RUSHORDER_CHARGE_UNIT")),
    ({"RUSHORDER_CHARGE_MAX": "99995"}, ("RUSHORDER_CHARGE_MAX", "RUSHORDER_CHARGE_UNIT")),
])
def test_a_policy_that_contradicts_itself_is_refused(env: dict[str, str],
                                                     named: tuple[str, ...]) -> None:
    with pytest.raises(BadSetting) as refused:
        Settings.from_env(env)
    line = str(refused.value)
    assert "\n" not in line and all(variable in line for variable in named)


def test_a_changed_copy_is_checked_too() -> None:
    with pytest.raises(ValueError, match="RUSHORDER_CHARGE_UNIT"):
        Settings().replace(charge_unit=7)


def test_the_cli_stops_before_starting_anything(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RUSHORDER_CHARGE_UNIT", "0")
    assert cli.main(["token", "--user", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RUSHORDER_CHARGE_UNIT='0'" in err


def test_the_payment_timeout_is_ten_seconds_to_a_day_and_reaches_the_engine() -> None:
    from api.app import policy_of
    for seconds in (10, 86_400):
        settings = Settings.from_env({"RUSHORDER_PAYMENT_TIMEOUT_S": str(seconds)})
        assert policy_of(settings).payment_timeout_s == seconds
    assert Settings().payment_timeout_s == 600
