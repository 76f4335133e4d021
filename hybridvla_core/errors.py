"""The one error type for a user's mistake (a file, a parameter, an option): its message is the single line to
print, naming what is wrong and what to do. Every entry point (`hybridvla ...`, each node) prints
it and exits non-zero; a traceback is shown only with --debug, or for a real bug (any other exception)."""
from __future__ import annotations


class UserError(ValueError):
    """A user's mistake; str(error) is one line: the file or parameter, what is wrong, what to do."""
