"""Agents: who spends, with which budget and providers."""
