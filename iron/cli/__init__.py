"""The ``iron`` command line: one command per user-facing endpoint of the control plane.

The commands are generated from the table in :mod:`iron.cli.operations`, their body options
from the server's own msgspec request types, so the CLI cannot drift from the API unnoticed.
"""
