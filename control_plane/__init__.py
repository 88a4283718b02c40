"""The Iron Cage control plane: the bank and the admin surface."""
