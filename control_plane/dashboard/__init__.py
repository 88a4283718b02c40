"""The dashboard: one page and plain JavaScript, served by the control plane at ``/``."""
