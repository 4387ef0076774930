"""The one error type that ``kd-tutorial`` turns into one line: input the user chose, which cannot work.

A leaf module: it imports nothing, so every module of the package can raise these.

Every error the user can fix derives from :class:`UserError`, and its message is
one line that says what is wrong and then what to do (a flag, a file, an
environment variable). The command line (:func:`kd_tutorial.cli.main`) prints it
as ``kd-tutorial: error: <message>`` and exits with status 2, never with a
traceback; code that calls the package directly can catch the same type.
"""


class UserError(Exception):
    """Input the user chose cannot work; the message is one line: what is wrong, then how to fix it."""


class UsageError(UserError, ValueError):
    """A command-line argument that cannot work; the message says which and what to give instead."""
