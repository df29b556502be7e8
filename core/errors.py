"""Errors the engine raises for the user to fix; the CLI prints them as one line and the app as a message."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input or environment; printed without a traceback."""
