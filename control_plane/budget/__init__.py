"""The bank: budgets, leases and the usage ledger."""
