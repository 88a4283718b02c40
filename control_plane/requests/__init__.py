"""Budget-change requests: a user asks for more budget for an agent, an admin decides."""
