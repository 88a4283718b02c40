"""API tokens: long-lived credentials with their user's rights, for scripts and CI."""
