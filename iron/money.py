"""Money as integer microdollars inside; USD numbers only at the API edge.

Floats never take part in arithmetic. A USD amount arriving as a JSON number is
converted through its shortest decimal representation, so ``0.015`` is exactly
15,000 microdollars. Charges round up (a provider never bills less than it
said), grants round down (we never hand out budget we do not have).
"""

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

MICROS_PER_USD = 1_000_000
_MICRO = Decimal("0.000001")


def _to_decimal(usd: float | int | str | Decimal) -> Decimal:
    value = usd if isinstance(usd, Decimal) else Decimal(repr(usd) if isinstance(usd, float) else usd)
    if not value.is_finite():
        raise ValueError("money must be a finite number")
    return value


def _whole_micros(value: float) -> int | None:
    """The exact microdollars of a float whose shortest form is plain with at most 6 decimals
    (no rounding either way), or None. The sidecar converts two amounts per LLM call; this is
    several times faster than going through Decimal, and gives the same answer."""
    whole, dot, frac = repr(value).partition(".")
    if not dot or len(frac) > 6 or not whole.isdigit() or not frac.isdigit():
        return None
    return int(whole) * MICROS_PER_USD + int(frac.ljust(6, "0"))


def charge_micros(usd: float | int | str | Decimal) -> int:
    """USD to microdollars for a cost: rounds up to the next microdollar."""
    if type(usd) is float and (micros := _whole_micros(usd)) is not None:
        return micros
    return int(_to_decimal(usd).quantize(_MICRO, rounding=ROUND_CEILING) * MICROS_PER_USD)


def grant_micros(usd: float | int | str | Decimal) -> int:
    """USD to microdollars for budget we give out: rounds down."""
    if type(usd) is float and (micros := _whole_micros(usd)) is not None:
        return micros
    return int(_to_decimal(usd).quantize(_MICRO, rounding=ROUND_FLOOR) * MICROS_PER_USD)


def usd(micros: int, places: int = 2) -> float:
    """Microdollars to a USD JSON number: 2 places for budgets and totals, 6 for per-call costs."""
    if places == 6 and type(micros) is int:  # int division and float(Decimal) both round correctly
        return micros / MICROS_PER_USD
    return float((Decimal(micros) / MICROS_PER_USD).quantize(Decimal(1).scaleb(-places)))
