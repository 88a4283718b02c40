"""Projects: groups of agents, with their budget and spend totals."""
