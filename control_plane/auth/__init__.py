"""Who is calling: users (JWT), and agents (IC tokens)."""
