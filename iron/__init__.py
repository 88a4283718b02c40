"""Iron Cage: what the control plane, the sidecar and the CLI share."""

__version__ = "0.1.0"
