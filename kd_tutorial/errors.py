"""The one error type that ``kd-tutorial`` turns into one line: input the user chose, which cannot work.

A leaf module: it imports no other module of the package, so every module can raise these.

Every error the user can fix derives from :class:`UserError`, and its message is
one line that says what is wrong and then what to do (a flag, a file, an
environment variable). The command line (:func:`kd_tutorial.cli.main`) prints it
as ``kd-tutorial: error: <message>`` and exits with status 2, never with a
traceback; code that calls the package directly can catch the same type.
"""
import os


class UserError(Exception):
    """Input the user chose cannot work; the message is one line: what is wrong, then how to fix it."""


class UsageError(UserError, ValueError):
    """A command-line argument that cannot work; the message says which and what to give instead."""


class ModelSourceError(UserError, RuntimeError):
    """A model or tokenizer could not be loaded (offline with nothing cached, a bad path...)."""


def looks_like_a_folder(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names a local folder rather than a Hub model: it exists, or it is absolute or
    starts with ``.`` or ``~`` (a Hub name is ``name`` or ``owner/name``)."""
    return os.path.exists(os.path.expanduser(name_or_path)) or name_or_path.startswith((os.sep, ".", "~"))


def model_source_error(name_or_path: str, what: str = "model", hint: str = "") -> ModelSourceError:
    """The one-line error for a ``what`` that cannot be loaded from ``name_or_path``: a missing folder, a folder
    without the files, or a Hub name that is not cached while offline (or does not exist); ``hint`` is appended to
    the advice for a Hub name."""
    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        return ModelSourceError(f"{name_or_path} holds no {what} that transformers can load: give a folder written "
                                "by save_pretrained() (config.json, and vocab.txt or tokenizer.json)")
    if looks_like_a_folder(name_or_path):
        return ModelSourceError(f"{name_or_path}: no such folder: give a folder written by save_pretrained() or a "
                                "Hugging Face Hub name")
    return ModelSourceError(f"cannot load {what} {name_or_path!r} (offline or not cached): load it once on a machine "
                            f"with internet (`kd-tutorial prefetch --profile P` does, for a profile's models){hint}, "
                            "or check the name")
