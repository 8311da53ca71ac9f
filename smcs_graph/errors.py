"""Exceptions raised by smcs-graph. Every message says what is wrong and what to do."""

from __future__ import annotations


class SMCSError(RuntimeError):
    """A run of the SMCS graph could not produce an answer (each failure is named)."""


class ConfigError(ValueError):
    """A configuration value or a pool/bank configuration file is invalid."""


class InvalidQuestionError(ValueError):
    """The input question is empty, malformed or not text; raised before any model is called."""


class BankError(RuntimeError):
    """The question bank cannot be opened, read or written."""


class EmbedderMismatchError(BankError):
    """The bank was built with a different embedder (id or dimension) than the one given."""
