"""The one error type that ``kd-tutorial`` turns into one line: input the user chose, which cannot work.

A leaf module: it imports no other module of the package, so every module can raise these.

Every error the user can fix derives from :class:`UserError`, and its message is
one line that says what is wrong and then what to do (a flag, a file, an
environment variable). The command line (:func:`kd_tutorial.cli.main`) prints it
as ``kd-tutorial: error: <message>`` and exits with status 2, never with a
traceback; code that calls the package directly can catch the same type.
"""
import argparse
import errno
import os
import re
import shlex
import stat
import sys

# what json.loads raises on text that is not JSON: a ValueError, or a RecursionError for arrays nested too deep
JSON_ERRORS = (ValueError, RecursionError)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # the errnos of a write that freeing space on the disk fixes
# the guide to mirrors and local copies, named in advice by its address: an install from pip or git has no docs/
SETUP_MIRRORS = "https://github.com/kd-tutorial/kd-tutorial/blob/main/docs/setup-mirrors.md"


class UserError(Exception):
    """Input the user chose cannot work; the message is one line: what is wrong, then how to fix it."""


class UsageError(UserError, ValueError):
    """A command-line argument that cannot work; the message says which and what to give instead."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``, a preemption), which ``kd-tutorial distill``, ``search``, ``prefetch`` and
    ``benchmark`` take as Ctrl-C (:func:`kd_tutorial.cli.sigterm_as_ctrl_c`): caught as a KeyboardInterrupt, so a
    run saves as on Ctrl-C, and told apart where a message names the signal that stopped the run."""


class ModelSourceError(UserError, RuntimeError):
    """A model or tokenizer could not be loaded (offline with nothing cached, a bad path...)."""


def looks_like_a_folder(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names a local folder rather than a Hub model (``name`` or ``owner/name``): it exists,
    is absolute, starts with ``.`` or ``~``, holds a backslash, or has more than one ``/``."""
    expanded = os.path.expanduser(name_or_path)
    return (os.path.exists(expanded) or os.path.isabs(expanded) or name_or_path.startswith((".", "~"))
            or "\\" in name_or_path or name_or_path.count("/") > 1)


def model_source_error(name_or_path: str, what: str = "model", hint: str = "", cause: str = "") -> ModelSourceError:
    """The one-line error for a ``what`` that cannot be loaded from ``name_or_path``: a missing folder, a folder
    without the files, or a Hub name that is not cached while offline (or does not exist); ``hint`` is appended to
    the advice for a Hub name, and ``cause`` (the library's own first line) is quoted."""
    path = os.path.expanduser(name_or_path)
    said = f" ({cause})" if cause else ""
    files = "vocab.txt or tokenizer.json" if what == "tokenizer" else "config.json and model.safetensors"
    if os.path.isdir(path) and "config.json" in cause:  # read for a tokenizer too: its files may well be there
        return ModelSourceError(f"{name_or_path}: its config.json cannot be read{said}: repair it (save_pretrained() "
                                f"writes it), or give another folder")
    if os.path.isdir(path):
        return ModelSourceError(f"{name_or_path} holds no {what} that transformers can load{said}: give a folder "
                                f"written by save_pretrained() ({files})")
    if os.path.isfile(path):  # the library's complaint about a file it was never meant to read says nothing
        return ModelSourceError(f"{name_or_path} is a file: give the folder written by save_pretrained() that holds "
                                f"the {what}'s files ({files}), or a Hugging Face Hub name")
    if looks_like_a_folder(name_or_path):
        return ModelSourceError(f"{name_or_path}: no such folder: give a folder written by save_pretrained() or a "
                                "Hugging Face Hub name")
    return ModelSourceError(f"cannot load {what} {name_or_path!r} (offline or not cached){said}: load it once on a "
                            f"machine with internet (`kd-tutorial prefetch --profile P` does, for a profile's "
                            f"models){hint}, or check the name")


def damaged_weights_error(name_or_path: str, what: str, cause: str, hint: str = "") -> ModelSourceError:
    """The one-line error for a ``what`` whose cached weights cannot be read (safetensors' own error, ``cause``): a
    download or a copy that stopped early. Prefetching again does not mend it (the Hub's client hands back a cached
    file as it is): the cached folder must go first."""
    if os.path.isdir(os.path.expanduser(name_or_path)):  # a folder of the user's: said as any folder that cannot load
        return model_source_error(name_or_path, what, cause=cause)
    return ModelSourceError(f"cannot load {what} {name_or_path!r}: its cached weights file is damaged ({cause}), cut "
                            "short by a download or a copy that stopped early: delete its folder in the Hugging Face "
                            "cache (models--ORG--NAME under $HF_HOME/hub) and load it again on a machine with internet "
                            f"(`kd-tutorial prefetch --profile P`{hint})")


def error_chain(err: BaseException | None):
    """``err``, then each error it was raised from or during (``__cause__``, else ``__context__``), each once: where a
    library's plain OSError or AssertionError hides the error that says what happened."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def error_cause(err: BaseException, limit: int = 160) -> str:
    """``"ClassName: first line of its message"`` (cut to ``limit`` characters), to quote an error in one line."""
    lines = str(err).strip().splitlines()
    text = f"{err.__class__.__name__}: {lines[0]}" if lines else err.__class__.__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def refuse_not_regular(path, said: str, fix: str, pipes: bool = False) -> None:
    """A :class:`UsageError` ``"{said}, which is not a regular file (a device or a pipe): {fix}"`` when ``path``
    exists and is neither a file nor a folder: writing would replace a device such as /dev/null by a file, and
    reading a pipe nobody writes never ends. ``pipes``: a pipe is read (``report <(cat r.json)``), a device still
    refused (``/dev/zero`` reads for ever)."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        if not (pipes and stat.S_ISFIFO(os.stat(path).st_mode)):
            raise UsageError(f"{said}, which is not a regular file (a device or a pipe): {fix}")


def held_open_fix(err: BaseException) -> str:
    """The first words of the fix when ``err`` may be Windows refusing a file that another program holds open (a
    CSV shown in Excel, a checkpoint a notebook loaded): Windows says only "permission denied" (a PermissionError)
    then, which elsewhere means the folder's permissions. "" for any other error, and off Windows."""
    if sys.platform == "win32" and isinstance(err, PermissionError):
        return ("close the program that has it open (on Windows a CSV shown in Excel, or a model a notebook loaded, "
                "cannot be replaced), or ")
    return ""


def windows_shell() -> bool:
    """Whether the user's shell is PowerShell or cmd: Windows, unless Git Bash (MSYS2, which sets ``MSYSTEM``) runs
    the command, whose shell is bash and takes bash's ``export`` and ``unset``."""
    return sys.platform == "win32" and not os.environ.get("MSYSTEM")


def powershell_literal(text: str) -> str:
    """``text`` in PowerShell's single quotes, which expand nothing (double quotes expand ``$name`` and read a
    backquote as an escape: ``"C:\\a$b"`` is ``C:\\a``); it takes the curly single quotes for quotes too, so each
    quote mark, straight or curly, is doubled inside."""
    return "'" + re.sub("(['\u2018\u2019\u201a\u201b])", r"\1\1", text) + "'"


def cmd_expands(text: str) -> bool:
    """Whether cmd may read part of ``text`` as a variable: two ``%`` marks (``%OS%``) expand even inside double
    quotes, and at cmd's prompt no quoting or escape keeps them inside a quoted word."""
    return text.count("%") >= 2


def set_env_command(name: str, path: str, base: str = "") -> str:
    """The command that sets environment variable ``name`` to ``path`` in the user's shell, ``path`` quoted for it:
    under ``base`` ("PWD": the folder the shell is in, "HOME": the home folder; "": ``path`` alone). bash and zsh's
    ``export``; on Windows, where ``export`` is no command, PowerShell's and cmd's (Git Bash's is bash): cmd's only
    where it keeps ``path`` as it is (:func:`cmd_expands`)."""
    if windows_shell():
        folder = {"PWD": ("$PWD", "%CD%\\"), "HOME": ("$HOME", "%USERPROFILE%\\")}.get(base, ("", ""))
        power = f"Join-Path {folder[0]} {powershell_literal(path)}" if base else powershell_literal(path)
        if cmd_expands(path):
            return f"$env:{name} = {power} (PowerShell; cmd's set would expand the %...% in this path)"
        return f'$env:{name} = {power} (PowerShell) or set "{name}={folder[1]}{path}" (cmd)'
    if base:  # $base expands in double quotes; a name that needs quoting goes in single quotes after it, where
        quoted = shlex.quote(path)  # an interactive bash or zsh expands no `!` from its history ("event not found")
        return f'export {name}="${base}/{path}"' if quoted == path else f'export {name}="${base}"/{quoted}'
    return f"export {name}={shlex.quote(path)}"


def shell_arg(path) -> str:
    """``path`` as an argument to type in the user's shell: quoted where it holds a space or another character the
    shell reads (``shlex.quote`` for bash and zsh; on Windows double quotes, which PowerShell and cmd both take,
    unless PowerShell would expand a ``$`` or a backquote in them or cmd a ``%...%``: then one form for each shell,
    PowerShell's in single quotes, cmd's left out where no quoting keeps the path)."""
    text = str(path)
    if sys.platform != "win32":
        return shlex.quote(text)
    if not re.search(r"[\s&|<>^%;,'`$()@{}\u2018-\u201e]", text):
        return text
    if not re.search(r"[`$\u201c-\u201e]", text) and not cmd_expands(text):
        return f'"{text}"'
    if cmd_expands(text):
        return f"{powershell_literal(text)} in PowerShell (cmd would expand the %...% in it)"
    return f'{powershell_literal(text)} in PowerShell, "{text}" in cmd'


def unset_env_command(names: list[str]) -> str:
    """The command, in backquotes, that removes the environment variables ``names`` in the user's shell: ``unset``
    for bash and zsh; on Windows, where ``unset`` is no command, PowerShell's and cmd's (Git Bash's is bash)."""
    if windows_shell():
        cmd = " & ".join(f'set "{name}="' for name in names)
        return f"`Remove-Item {', '.join(f'Env:{name}' for name in names)}` (PowerShell) or `{cmd}` (cmd)"
    return f"`unset {' '.join(names)}`"


def stray_quotes(path: str) -> str | None:
    """The path meant when ``path`` (from a flag or an environment variable) starts or ends with a quote mark and
    names nothing as typed: cmd's ``set NAME="C:\\x"`` keeps the quotes, as does a flag given ``'C:\\x'`` in cmd,
    and a backslash before a closing quote escapes it (``"C:\\my data\\"`` reads as ``C:\\my data"``). None for
    any other path."""
    text = str(path).strip()
    if text[:1] in ("'", '"') or text[-1:] in ("'", '"'):
        if not os.path.exists(os.path.expanduser(text)):
            return text.strip("'\"") or None
    return None


def stray_space(path: str) -> str | None:
    """The path meant when ``path`` starts or ends with white space and names nothing as typed (a space left after
    ``KD_TUTORIAL_HOME=/path `` in a script or a .env file cannot be seen in a message); None otherwise."""
    text = str(path)
    if text != text.strip() and text.strip() and not os.path.exists(os.path.expanduser(text)):
        return text.strip()
    return None


def not_utf8(path) -> str | None:
    """``path`` as it can be shown (its stray bytes as ``\\xff``) when it holds bytes that are not UTF-8, which
    Python keeps as lone surrogates and the libraries underneath cannot write (transformers' tokenizer files, a
    sqlite URL); None for a path that is all UTF-8."""
    text = os.fsdecode(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None


NOT_UTF8_FIX = "holds bytes that are not UTF-8, which the libraries underneath cannot write: rename it (convmv does) " \
               "or give another path"


def file_argument(example: str):
    """An argparse type, :func:`path_argument` for a flag that names a file to write: a path ending in a separator
    names a folder (``--out grades/`` wrote a file called ``grades``), so it is refused, with ``example`` in that
    folder as the file to give."""
    def parse(text: str) -> str:
        path = path_argument(text)
        if path.endswith(("/", os.sep)) and path.strip("/" + os.sep):
            raise argparse.ArgumentTypeError(f"{text} ends in a separator, so it names a folder: give a file in it, "
                                             f"e.g. {path}{example}")
        return path
    return parse


def path_argument(text: str) -> str:
    """An argparse type for every path flag of the command line: ``~`` expanded. The shell leaves ``--out=~/runs`` as
    typed (bash expands ``~`` only at a word's start), and PowerShell leaves ``--out ~\\runs``: the run went to a
    folder named ``~`` in the current one, which ``rm -rf ~`` would then be typed to remove. On Windows, where no
    path holds a quote mark, one that does is refused: cmd passes ``'C:\\x'`` on with its quotes, and
    ``"C:\\my runs\\"`` reaches Python as ``C:\\my runs"``, the arguments after it run into the path."""
    if sys.platform == "win32" and (stray_quotes(text) or '"' in text):
        meant = stray_quotes(text) or text.partition('"')[0] or "."
        meant += "\\" if len(meant) == 2 and meant[1] == ":" else ""  # "C:\" came as C:" (C: alone: a drive's cwd)
        cut = text[:1] == "'" and text[-1:] != "'"  # cmd split 'C:\my runs' at its space: `runs'` came apart
        example = f'"{meant} ..." with the rest of the path' if cut else shell_arg(meant)
        quoting = "in double quotes, or none," if example[:1] != "'" else "quoted as below"  # PowerShell: '...'
        raise argparse.ArgumentTypeError(f"{text}: a quote mark stayed in the path (cmd keeps single quotes, and a "
                                         f"backslash before a closing double quote escapes it): give it {quoting} "
                                         f"with no backslash at the end, e.g. {example}")
    shown = not_utf8(text)
    if shown:
        raise argparse.ArgumentTypeError(f"{shown} {NOT_UTF8_FIX}")
    return os.path.expanduser(text)
