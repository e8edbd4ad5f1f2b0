"""One exception root for Docstreams.

Whether an error is worth retrying is an attribute, not a class tree: the runtime
asks ``err.retryable`` and never matches on subclasses.
"""

from __future__ import annotations


class DocstreamsError(Exception):
    """Root of every error Docstreams raises on purpose.

    ``reason`` is a short, stable, machine-readable code (``encrypted``,
    ``zero_pages``, ``broker_unavailable`` ...) that ends up in dead letters and
    outputs; the message is for people.
    """

    def __init__(self, message: str, *, reason: str = "error", retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


class ConfigError(DocstreamsError):
    """The user's configuration or environment is wrong; the message says how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="config", retryable=False)
