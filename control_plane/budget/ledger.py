"""The ledger's rules, as plain functions of integer microdollars.

Per agent: ``available = budget - spent - outstanding``, where ``outstanding``
is the unused part of the agent's open leases: the sum over open leases of
``max(granted - spent, 0)``. These functions decide amounts; the repository
applies them under a lock on the agent's row.
"""


def available(budget: int, spent: int, outstanding: int) -> int:
    """May be negative: usage beyond a grant is charged, never dropped, and then blocks grants."""
    return budget - spent - outstanding


def grant(requested: int, budget: int, spent: int, outstanding: int) -> int:
    """What a handshake or refresh may move from available to outstanding: partial grants are normal."""
    return max(0, min(requested, available(budget, spent, outstanding)))


def unused(granted: int, lease_spent: int) -> int:
    """A lease's share of ``outstanding``."""
    return max(granted - lease_spent, 0)


def released_by_charge(granted: int, lease_spent: int, cost: int) -> int:
    """How much of ``cost`` the lease's grant covered, and so leaves ``outstanding``.

    The rest, if any, is an overdraw: charged to ``spent`` without a grant behind it.
    """
    return unused(granted, lease_spent) - unused(granted, lease_spent + cost)


def added_by_top_up(granted: int, lease_spent: int, extra: int) -> int:
    """How much a top-up of ``extra`` adds to ``outstanding``.

    On an overdrawn lease part of the top-up only covers usage already charged,
    so it never becomes unused grant.
    """
    return unused(granted + extra, lease_spent) - unused(granted, lease_spent)


def may_set_budget(new_budget: int, spent: int, outstanding: int) -> bool:
    """A budget may not drop below what is already spent or lent out to leases."""
    return new_budget >= spent + outstanding


def percent_used(spent: int, budget: int) -> float:
    """Spent as a percentage of the budget, to 2 places: what the bars and the cost alerts go by."""
    return round(100.0 * spent / budget, 2) if budget else 0.0
