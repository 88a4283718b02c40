"""The live feed: ``/ws``, fanned out through Redis pub/sub so any replica serves any client."""
