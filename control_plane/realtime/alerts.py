"""Cost alerts: which thresholds of the budget a charge crossed.

Decided inside the report's transaction from the agent's spent before and after
the charge, both read under the agent's row lock: charges of one agent are
serialised across every replica, so exactly one of them crosses each threshold.
A budget raise moves the thresholds above spent again, which re-arms them.
"""

from iron.realtime import AlertLevel

THRESHOLDS: tuple[tuple[int, AlertLevel], ...] = ((80, "warning"), (95, "critical"), (100, "exhausted"))

Crossing = tuple[int, AlertLevel]


def crossed(budget: int, spent_before: int, spent_after: int) -> list[Crossing]:
    """Every threshold with ``spent_before < threshold <= spent_after``, in integer arithmetic."""
    return [
        (percent, level)
        for percent, level in THRESHOLDS
        if budget > 0 and spent_before * 100 < budget * percent <= spent_after * 100
    ]
