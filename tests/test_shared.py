"""The shared helpers: money, ids, time format, IP tokens."""

import math
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iron import ids
from iron.crypto import decrypt_ip_token, encrypt_ip_token
from iron.money import charge_micros, grant_micros, usd
from iron.timefmt import iso


@pytest.mark.parametrize(
    ("amount", "charged", "granted"),
    [
        (0.015, 15_000, 15_000),  # exact despite 0.015 * 1e6 == 15000.000000000002 in floats
        (0.1 + 0.2, 300_001, 300_000),  # 0.30000000000000004: a charge rounds up, a grant down
        (0.0000001, 1, 0),
        (1000, 1_000_000_000, 1_000_000_000),
        (0, 0, 0),
        ("12.3456789", 12_345_679, 12_345_678),
    ],
)
def test_charges_round_up_and_grants_round_down(amount: float, charged: int, granted: int) -> None:
    assert charge_micros(amount) == charged
    assert grant_micros(amount) == granted


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_money_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        charge_micros(bad)


@given(st.integers(min_value=0, max_value=10**15))
def test_micros_to_usd_with_six_places_is_exact(micros: int) -> None:
    assert charge_micros(usd(micros, 6)) == micros


def _by_decimal(amount: float, rounding: str) -> int:
    """The definition: the float's shortest decimal form, rounded to a microdollar."""
    return int(Decimal(repr(amount)).quantize(Decimal("0.000001"), rounding=rounding) * 1_000_000)


@given(
    st.one_of(
        st.floats(min_value=0, max_value=1e9),
        st.integers(min_value=0, max_value=10**15).map(lambda m: m / 1_000_000),
        st.integers(min_value=0, max_value=10**9).map(lambda m: m / 1_000),
    )
)
def test_float_conversions_agree_with_the_decimal_definition(amount: float) -> None:
    assert charge_micros(amount) == _by_decimal(amount, ROUND_CEILING)
    assert grant_micros(amount) == _by_decimal(amount, ROUND_FLOOR)


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_usd_with_six_places_is_the_decimal_quotient(micros: int) -> None:
    assert usd(micros, 6) == float(Decimal(micros) / 1_000_000)


def test_usd_takes_the_decimals_postgresql_sums_return() -> None:
    for places in (2, 6):
        value = usd(Decimal(1_500_000), places)  # type: ignore[arg-type]
        assert (value, type(value)) == (1.5, float)


def test_usd_rounds_to_two_places_for_budgets() -> None:
    assert usd(12_345_678) == 12.35
    assert usd(-1_000_000) == -1.0


def test_ids_have_a_prefix_and_a_uuid4() -> None:
    agent = ids.new_id(ids.AGENT)
    assert ids.is_valid(ids.AGENT, agent)
    assert not ids.is_valid(ids.USER, agent)
    assert not ids.is_valid(ids.AGENT, "agent_123")
    assert not ids.is_valid(ids.AGENT, agent + "x")


def test_time_is_iso_utc_with_milliseconds_and_z() -> None:
    assert iso(datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)) == "2026-11-24T10:00:00.123Z"


def test_an_ip_token_opens_only_with_its_ic_token_and_resists_tampering() -> None:
    token = encrypt_ip_token("ic_one", "sk-secret")
    assert token.startswith("AES256:")
    assert token.count(":") == 3
    assert decrypt_ip_token("ic_one", token) == "sk-secret"
    assert encrypt_ip_token("ic_one", "sk-secret") != token  # a fresh IV each time
    for bad in ("ic_two", "ic_one "):
        with pytest.raises(ValueError, match="does not open"):
            decrypt_ip_token(bad, token)
    scheme, iv, ciphertext, tag = token.split(":")
    flipped = ciphertext[:-2] + ("A" if ciphertext[-2] != "A" else "B") + ciphertext[-1]
    with pytest.raises(ValueError, match="does not open"):
        decrypt_ip_token("ic_one", ":".join((scheme, iv, flipped, tag)))
    with pytest.raises(ValueError, match="not an AES256"):
        decrypt_ip_token("ic_one", "sk-plain")
