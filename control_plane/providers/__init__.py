"""LLM providers and their keys (encrypted at rest, never returned)."""
