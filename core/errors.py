"""One exception family so the CLI can turn any failure into one stderr line and an exit code.

Exit codes follow the issue contract: 2 for usage/input problems (the user must change what they
passed), 1 for a compile that worked but failed validation (the artifact is numerically off).
"""
from __future__ import annotations


class EdgecError(Exception):
    """An error whose message is fit to show a user as-is: it names the thing and the fix."""

    exit_code = 2


class InputError(EdgecError):
    """A model, data file, option or path the user gave is unusable."""


class BackendError(EdgecError):
    """A backend is unknown, unavailable here, or cannot do what was asked."""


class UnsupportedError(BackendError):
    """The model uses something (op, precision, dtype) the chosen backend cannot lower."""


class ValidationFailed(EdgecError):
    """The artifact ran but its outputs are too far from the FP32 reference."""

    exit_code = 1
