"""IC tokens: the credential of one agent for the budget protocol."""
