"""Edges of the one-line error advice (kd_tutorial/errors.py), called directly on tiny made-up inputs, nothing
loaded or trained: which names are taken for folders rather than Hub models, the message for a missing folder
and one given with a tilde, the first line of a cause quoted and cut to length, the refusal of a
device or a pipe, the fixes printed for bash, PowerShell and cmd (Windows stood in for by ``sys.platform``), the
quote marks or spaces left around a path, and the argparse types of the path flags."""
import argparse
import os
import sys

import pytest

from kd_tutorial import errors
from kd_tutorial.errors import UsageError


@pytest.fixture
def windows(monkeypatch):
    """Windows with PowerShell or cmd as the shell (no Git Bash)."""
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.delenv("MSYSTEM", raising=False)


# ------------------------------------------------------------------------------- folders and Hub names

@pytest.mark.parametrize("name", ["bert-base-uncased", "google/bert_uncased_L-2_H-128_A-2"])
def test_a_hub_name_is_not_taken_for_a_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not errors.looks_like_a_folder(name)


@pytest.mark.parametrize("name", ["runs/teacher/final", "~/teacher", "./teacher", "../teacher", "C:\\teacher",
                                  "/teacher", "~no-such-user-kd/teacher"])
def test_a_path_that_names_no_hub_model_is_taken_for_a_folder(name, tmp_path, monkeypatch):
    """Two slashes, a home or relative start, a backslash or an absolute path: never a Hub name."""
    monkeypatch.chdir(tmp_path)
    assert errors.looks_like_a_folder(name)


def test_an_existing_folder_named_like_a_hub_model_is_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert errors.looks_like_a_folder("org/model") and errors.looks_like_a_folder("org")


def test_a_missing_folder_is_said_to_be_missing_not_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("runs/teacher/final", "~/no-such-teacher-here", "C:\\teacher"):
        said = str(errors.model_source_error(name, "teacher"))
        assert said == (f"{name}: no such folder: give a folder written by save_pretrained() or a Hugging Face Hub "
                        "name"), said


def test_a_folder_given_with_a_tilde_is_found_in_the_home_folder(tmp_path, monkeypatch):
    """``~/teacher`` is the home folder's teacher, not a folder named ``~``: it is said to hold no model."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "teacher").mkdir()
    assert str(errors.model_source_error("~/teacher", "teacher")).startswith("~/teacher holds no teacher that ")
    (tmp_path / "weights.bin").write_bytes(b"")
    assert str(errors.model_source_error("~/weights.bin", "teacher")).startswith("~/weights.bin is a file: ")


# ------------------------------------------------------------------------------------ causes quoted

def test_the_cause_quoted_is_the_first_line_of_its_message_cut_to_the_limit():
    assert errors.error_cause(OSError("\n  first line\nsecond line")) == "OSError: first line"
    assert errors.error_cause(KeyboardInterrupt()) == "KeyboardInterrupt"
    exact = ValueError("x" * (20 - len("ValueError: ")))
    assert errors.error_cause(exact, limit=20) == f"ValueError: {'x' * 8}"  # exactly the limit: kept whole
    longer = errors.error_cause(ValueError("y" * 50), limit=20)
    assert longer == "ValueError: yyyyy..." and len(longer) == 20


# ----------------------------------------------------------------------------- devices and pipes

def test_a_device_is_refused_naming_the_fix_and_a_folder_or_a_missing_path_passes(tmp_path):
    with pytest.raises(UsageError) as refused:
        errors.refuse_not_regular(os.devnull, "--out /dev/null", "give --out a file path")
    assert str(refused.value) == "--out /dev/null, which is not a regular file (a device or a pipe): give --out a " \
                                 "file path"
    errors.refuse_not_regular(tmp_path, "a folder", "never said")
    errors.refuse_not_regular(tmp_path / "missing", "a new file", "never said")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_is_read_where_pipes_are_taken_and_refused_elsewhere(tmp_path):
    pipe = tmp_path / "results.fifo"
    os.mkfifo(pipe)
    errors.refuse_not_regular(pipe, "results file", "fix", pipes=True)  # `report <(cat r.json)`
    with pytest.raises(UsageError, match="not a regular file"):
        errors.refuse_not_regular(pipe, "--summary", "fix")
    with pytest.raises(UsageError, match="not a regular file"):
        errors.refuse_not_regular(os.devnull, "results file", "fix", pipes=True)  # /dev/zero would read for ever


# --------------------------------------------------------------------------- the commands printed per shell

def test_only_a_permission_error_on_windows_is_blamed_on_a_program_holding_the_file(windows):
    assert errors.held_open_fix(PermissionError(13, "denied")).startswith("close the program that has it open")
    assert errors.held_open_fix(OSError(28, "No space left on device")) == ""


def test_git_bash_is_bash_and_powershell_and_cmd_are_windows_shells(windows, monkeypatch):
    assert errors.windows_shell()
    assert errors.unset_env_command(["A", "B"]) == '`Remove-Item Env:A, Env:B` (PowerShell) or `set "A=" & set "B="` ' \
                                                   "(cmd)"
    monkeypatch.setenv("MSYSTEM", "MINGW64")
    assert not errors.windows_shell()
    assert errors.unset_env_command(["A", "B"]) == "`unset A B`"


def test_one_percent_sign_is_kept_by_cmd_and_two_are_expanded(windows):
    assert not errors.cmd_expands("C:\\50% off") and errors.cmd_expands("C:\\%OS%")
    assert errors.set_env_command("X", "C:\\50% off") == \
        "$env:X = 'C:\\50% off' (PowerShell) or set \"X=C:\\50% off\" (cmd)"
    assert errors.shell_arg("C:\\50%") == '"C:\\50%"'  # a % alone: one form both shells keep


def test_the_windows_commands_set_the_folder_under_the_home_or_the_current_one(windows):
    assert errors.set_env_command("X", "kd", base="HOME") == \
        "$env:X = Join-Path $HOME 'kd' (PowerShell) or set \"X=%USERPROFILE%\\kd\" (cmd)"
    assert errors.set_env_command("X", "kd", base="PWD") == \
        "$env:X = Join-Path $PWD 'kd' (PowerShell) or set \"X=%CD%\\kd\" (cmd)"
    assert errors.set_env_command("X", "kd %OS%", base="HOME") == \
        "$env:X = Join-Path $HOME 'kd %OS%' (PowerShell; cmd's set would expand the %...% in this path)"


def test_the_bash_commands_quote_only_what_needs_quoting(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert errors.set_env_command("X", "kd", base="HOME") == 'export X="$HOME/kd"'
    assert errors.set_env_command("X", "kd cache!", base="PWD") == "export X=\"$PWD\"/'kd cache!'"
    assert errors.set_env_command("X", "/a b") == "export X='/a b'"
    assert errors.unset_env_command(["A", "B"]) == "`unset A B`"


def test_a_path_with_a_dollar_and_two_percent_signs_gets_powershells_form_only(windows):
    """cmd expands the %...%, PowerShell keeps all in single quotes: the PowerShell form, cmd's left out."""
    assert errors.shell_arg("C:\\$x %OS%") == "'C:\\$x %OS%' in PowerShell (cmd would expand the %...% in it)"
    assert errors.shell_arg("C:\\plain\\g.csv") == "C:\\plain\\g.csv"


# --------------------------------------------------------------------------- quotes and spaces left in a path

def test_quote_marks_typed_around_a_path_are_taken_off_unless_the_path_exists_as_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert errors.stray_quotes('"C:\\my data"') == "C:\\my data"
    assert errors.stray_quotes("C:\\my data\"") == "C:\\my data"  # a backslash escaped the closing quote
    assert errors.stray_quotes("  'kd'  ") == "kd"
    assert errors.stray_quotes("''") is None and errors.stray_quotes("plain") is None
    (tmp_path / "it's").mkdir()
    assert errors.stray_quotes("it's") is None and errors.stray_quotes("'") is None
    (tmp_path / "o'").mkdir()
    assert errors.stray_quotes("o'") is None  # a folder that ends in a quote mark is meant as typed


def test_a_space_around_a_path_is_taken_off_unless_the_path_exists_as_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert errors.stray_space("kd ") == "kd" and errors.stray_space("  ") is None and errors.stray_space("kd") is None
    (tmp_path / "kd ").mkdir()
    assert errors.stray_space("kd ") is None


def test_bytes_that_are_not_utf8_are_shown_escaped():
    assert errors.not_utf8(os.fsdecode(b"runs-\xff")) == "runs-\\xff"
    assert errors.not_utf8("runs-é") is None


# ------------------------------------------------------------------------------- argparse types of paths

def test_a_file_flag_ending_in_a_separator_is_refused_with_a_file_in_that_folder():
    parse = errors.file_argument("grades.csv")
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        parse("out/")
    assert str(refused.value) == "out/ ends in a separator, so it names a folder: give a file in it, e.g. " \
                                 "out/grades.csv"
    assert parse("out/g.csv") == "out/g.csv" and parse("/") == "/"


def test_a_path_flag_expands_a_tilde_and_refuses_bytes_that_are_not_utf8(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert errors.path_argument("~/runs") == str(tmp_path / "runs")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^runs-\\xff holds bytes that are not UTF-8"):
        errors.path_argument(os.fsdecode(b"runs-\xff"))


def _windows_refusal(text):
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        errors.path_argument(text)
    return str(refused.value)


def test_a_windows_path_that_kept_a_quote_names_the_path_meant(windows):
    said = _windows_refusal('C:\\my runs" --profile cpu')  # "C:\my runs\" --profile cpu: the quote was escaped
    assert said.startswith('C:\\my runs" --profile cpu: a quote mark stayed in the path')
    assert said.endswith('give it in double quotes, or none, with no backslash at the end, e.g. "C:\\my runs"')
    assert _windows_refusal('C:" --out x').endswith('e.g. C:\\')  # "C:\" came as C:", C: alone is the drive's cwd
    assert _windows_refusal("'C:\\my").endswith('e.g. "C:\\my ..." with the rest of the path')  # cmd split it
    assert _windows_refusal("'C:\\$x'").endswith("give it quoted as below with no backslash at the end, e.g. "
                                                 "'C:\\$x' in PowerShell, \"C:\\$x\" in cmd")
