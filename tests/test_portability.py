"""What learners on Windows and macOS meet that Linux alone would not show, simulated here: a console that encodes
in a Windows code page, platforms without a safe ``fork``."""
import errno
import io
import math
import os
import sys
import tempfile
from pathlib import Path

import pytest

from kd_tutorial import cli, estimates


def _cp1252_stdout(monkeypatch) -> io.BytesIO:
    """sys.stdout as Windows sets it up when the output is redirected (``> log.txt``) or piped (Git Bash): the ANSI
    code page, strict; the bytes written come back in the BytesIO returned."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="cp1252", write_through=True))
    return raw


def test_a_path_the_windows_code_page_cannot_encode_is_printed_escaped_not_a_traceback(tmp_path, monkeypatch):
    """`kd-tutorial env > env.txt` on Windows with a cache under a Chinese folder name ended in UnicodeEncodeError."""
    raw = _cp1252_stdout(monkeypatch)
    home = str(tmp_path / "实验")
    monkeypatch.setenv("KD_TUTORIAL_HOME", home)
    assert cli.main(["env", "--profile", "tiny"]) == 0
    assert home.replace("实验", "\\u5b9e\\u9a8c") in raw.getvalue().decode("cp1252")


def test_a_report_held_open_on_windows_is_named_as_the_cause_before_grading(tmp_path, monkeypatch):
    """Excel locks the grades.csv it shows; Windows then says "permission denied", and the line only said to give
    --out a folder one can write, which the instructor's folder already is."""
    from kd_tutorial.errors import UsageError
    from kd_tutorial.grading import grader

    out = tmp_path / "grades.csv"
    grader.write_reports([], [], out, 0.0)
    real_open = Path.open

    def excel_holds(self, mode="r", *args, **kwargs):
        if self == out and "a" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", excel_holds)
    said = {}
    for platform in ("linux", "win32"):
        monkeypatch.setattr(sys, "platform", platform)
        with pytest.raises(UsageError) as err:
            grader.check_out(out)
        said[platform] = str(err.value)
    assert "close the program" not in said["linux"] and said["linux"].endswith("give --out a file in a folder you "
                                                                              "can write")
    assert "permission denied): close the program that has it open (on Windows a CSV shown in Excel" in said["win32"]


def test_a_checkpoint_windows_will_not_replace_says_to_close_what_holds_it(tmp_path, monkeypatch):
    """os.replace onto a file another program holds open is "Access is denied" on Windows (a notebook that loaded a
    checkpoint keeps its weights mapped): the StorageError names that, and what was there stays."""
    from kd_tutorial.store import atomic_write_text, StorageError

    path = tmp_path / "results.json"
    path.write_text("before", encoding="utf-8")

    def held(src, dst):
        raise PermissionError(errno.EACCES, "Access is denied", str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", held)
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(StorageError, match=r"permission denied; close the program that has it open .*, or point "):
        atomic_write_text(path, "after")
    assert path.read_text(encoding="utf-8") == "before" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("name", ["q?x", "a%20b"])
def test_the_study_database_goes_inside_an_out_whose_name_holds_url_characters(tmp_path, name):
    """Put in a SQLite URL as it was, --out "q?x" kept the study in a file q beside it ("?" starts the URL's query),
    and --out a%20b was refused as an unreadable database (its "%20" read as a space)."""
    pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")
    from kd_tutorial.search import _create_study

    (tmp_path / name).mkdir()
    _create_study(tmp_path / name / "search.db")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [name, f"{name}/search.db"]


def test_reports_windows_will_not_replace_after_grading_are_set_aside_with_the_cause(tmp_path, monkeypatch):
    """A grades.csv opened in Excel while a class was graded: the reports go to a temporary folder, and the line
    says to copy them back once Excel lets go, not merely "once it can be written"."""
    from kd_tutorial.grading import grader

    out = tmp_path / "grades.csv"
    grader.write_reports([], [], out, 0.0)
    real_replace = os.replace

    def excel_holds(src, dst):
        if Path(dst) == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(src), None, str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", excel_holds)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the folder set aside, not in the real /tmp
    (tmp_path / "tmp").mkdir()
    row = {"learner": "a", "notebook": "n", "exercise": "q1", "status": "passed"}
    aside, json_path, said = grader.write_or_set_aside([row], [], out, 1.0)
    assert said.endswith(f"copy them to {out} once no program has it open (on Windows, Excel locks the CSV it shows) "
                         "(what was there is untouched)")
    assert aside.parent.parent == tmp_path / "tmp" and '"learner": "a"' in json_path.read_text(encoding="utf-8")


def test_a_relative_artifact_cache_on_windows_is_fixed_by_a_command_powershell_and_cmd_run(monkeypatch):
    """`set KD_TUTORIAL_HOME=kd cache` in cmd was answered with `export KD_TUTORIAL_HOME="$PWD/kd cache"`, which
    neither PowerShell nor cmd has."""
    from kd_tutorial import store

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("KD_TUTORIAL_HOME", "kd cache")
    with pytest.raises(store.ArtifactError) as caught:
        store.home()
    assert str(caught.value).endswith("give an absolute one, e.g. $env:KD_TUTORIAL_HOME = Join-Path $PWD 'kd cache' "
                                      '(PowerShell) or set "KD_TUTORIAL_HOME=%CD%\\kd cache" (cmd)')


def test_a_curly_apostrophe_is_doubled_in_powershells_single_quotes(monkeypatch):
    """PowerShell reads ‘ and ’ as single quotes: `$env:X = 'O’Brien'` ended the string at the apostrophe.
    Each quote mark, straight or curly, is doubled inside the quotes, as PowerShell's quoting rules ask."""
    from kd_tutorial import errors

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.delenv("MSYSTEM", raising=False)
    command = errors.set_env_command("KD_TUTORIAL_HOME", "O’Brien's ‘kd’")
    assert command.startswith("$env:KD_TUTORIAL_HOME = 'O’’Brien''s ‘‘kd’’' (PowerShell)")


def test_git_bash_on_windows_is_told_the_bash_commands(monkeypatch, capsys):
    """Git Bash (MSYS2) is bash on Windows: it was told `$env:KD_TUTORIAL_HOME = Join-Path $PWD 'kd' (PowerShell) or
    set "KD_TUTORIAL_HOME=%CD%\\kd" (cmd)` and `Remove-Item Env:HF_HUB_OFFLINE`, which it has not, where before
    it got the `export` and `unset` it runs."""
    from kd_tutorial import store

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("MSYSTEM", "MINGW64")  # set by Git Bash
    monkeypatch.setenv("KD_TUTORIAL_HOME", "kd")
    with pytest.raises(store.ArtifactError) as caught:
        store.home()
    assert str(caught.value).endswith('e.g. export KD_TUTORIAL_HOME="$PWD/kd"')
    monkeypatch.delenv("KD_TUTORIAL_HOME")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert cli.main(["prefetch", "--profile", "cpu"]) == 2
    assert capsys.readouterr().err.strip().endswith("run `unset HF_HUB_OFFLINE`, then prefetch again")


def test_the_export_printed_for_a_relative_cache_sets_the_folder_whatever_its_name_holds(tmp_path, monkeypatch):
    """A name holding a double quote, a $ or a backquote broke the printed `export NAME="$PWD/..."` (or ran what the
    backquotes held): the command, run by bash, now sets the absolute path of that name."""
    import subprocess
    from kd_tutorial import store

    name = 'kd "runs" $HOME `true`'
    monkeypatch.setenv("KD_TUTORIAL_HOME", name)
    with pytest.raises(store.ArtifactError) as caught:
        store.home()
    command = str(caught.value).partition("e.g. ")[2]
    done = subprocess.run(["bash", "-c", f'{command} && printf %s "$KD_TUTORIAL_HOME"'], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.stdout == f"{tmp_path}/{name}"


def test_the_export_printed_for_a_relative_cache_with_a_bang_runs_in_an_interactive_shell(tmp_path, monkeypatch):
    """`KD_TUTORIAL_HOME=wow!cache` was answered with `export KD_TUTORIAL_HOME="$PWD/wow!cache"`: pasted at a bash
    prompt, whose history expansion reads `!` inside double quotes, it failed with "!cache: event not found"."""
    import subprocess
    from kd_tutorial import store

    name = "wow!cache it's"
    monkeypatch.setenv("KD_TUTORIAL_HOME", name)
    with pytest.raises(store.ArtifactError) as caught:
        store.home()
    command = str(caught.value).partition("e.g. ")[2]
    script = f'set -o history -H\n{command}\nprintf %s "$KD_TUTORIAL_HOME"\n'  # history expansion on, as typed
    done = subprocess.run(["bash", "--norc", "--noprofile"], input=script, cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.stdout == f"{tmp_path}/{name}", done.stderr


@pytest.mark.parametrize("typed", ['"{path}"', "'{path}'", '{path}"'])
def test_an_artifact_cache_with_the_quotes_cmd_keeps_is_refused_naming_them(tmp_path, monkeypatch, typed):
    """`set KD_TUTORIAL_HOME="C:\\kd cache"` keeps its quotes in cmd; the line said the path was relative, and told
    the learner to export "$PWD/"C:\\kd cache"", a folder inside the current one. A trailing backslash before the
    closing quote (`"C:\\kd cache\\"`) leaves one quote at the end."""
    from kd_tutorial import store

    monkeypatch.setattr(sys, "platform", "win32")
    path = str(tmp_path / "kd cache")
    monkeypatch.setenv("KD_TUTORIAL_HOME", typed.format(path=path))
    with pytest.raises(store.ArtifactError, match="holds the quote marks typed around the path") as caught:
        store.home()
    assert str(caught.value).endswith(f"e.g. $env:KD_TUTORIAL_HOME = '{path}' (PowerShell) or set "
                                      f'"KD_TUTORIAL_HOME={path}" (cmd)')


def test_a_data_folder_given_with_quotes_kept_is_refused_naming_them(tmp_path):
    """`--data-dir 'C:\\imdb'` in cmd (no single quotes there) or `set KD_TUTORIAL_DATA_DIR="C:\\imdb"`: the line
    said the folder did not exist, showing quotes a learner reads as the message's own."""
    from kd_tutorial.data import check_data_source, DataSourceError

    (tmp_path / "imdb").mkdir()
    (tmp_path / "imdb" / "train.csv").write_text("text,label\ngood,1\n", encoding="utf-8")
    check_data_source(str(tmp_path / "imdb"))
    with pytest.raises(DataSourceError, match=f"holds the quote marks .*: give the path alone: {tmp_path}/imdb$"):
        check_data_source(f"'{tmp_path / 'imdb'}'")


def test_an_unwritable_cache_on_windows_is_fixed_by_a_command_powershell_and_cmd_run(tmp_path, monkeypatch):
    """A KD_TUTORIAL_HOME that is a file was answered with `export KD_TUTORIAL_HOME=$HOME/kd-tutorial-cache`."""
    from kd_tutorial.errors import UsageError

    (tmp_path / "file").write_text("", encoding="utf-8")
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "file"))
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(UsageError) as caught:
        cli.check_writable_home()
    assert str(caught.value).endswith("e.g. $env:KD_TUTORIAL_HOME = Join-Path $HOME 'kd-tutorial-cache' (PowerShell) "
                                      'or set "KD_TUTORIAL_HOME=%USERPROFILE%\\kd-tutorial-cache" (cmd)')


class _ClosedWindowsPipe(io.RawIOBase):
    """A pipe whose reader has left, as Windows reports it: every write fails with EINVAL, not EPIPE."""

    def writable(self):
        return True

    def write(self, data):
        raise OSError(errno.EINVAL, "Invalid argument")


def test_a_reader_that_leaves_the_pipe_on_windows_ends_the_command_quietly(monkeypatch, capsys):
    """`kd-tutorial report tiny.json | more`, quit early: Windows fails the write with OSError EINVAL, which only a
    BrokenPipeError was caught as, so the learner got a traceback ending in "[Errno 22] Invalid argument"."""
    results = os.path.join(os.path.dirname(__file__), "..", "docs", "results", "tiny.json")
    monkeypatch.setattr(sys, "platform", "win32")
    stdout = io.TextIOWrapper(io.BufferedWriter(_ClosedWindowsPipe()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "__stdout__", stdout)
    assert cli.main(["report", results]) == 141
    assert capsys.readouterr().err == ""


def test_an_invalid_argument_that_is_not_the_pipe_is_not_taken_for_a_reader_that_left(monkeypatch):
    """EINVAL is also Windows' answer to a file name holding ":": that error is not hidden as a closed pipe."""
    monkeypatch.setattr(sys, "platform", "win32")
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # a reader that stays
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "__stdout__", stdout)
    print("some output")
    assert not cli._reader_left(OSError(errno.EINVAL, "Invalid argument", "a:b"))
    assert cli._reader_left(BrokenPipeError(errno.EPIPE, "Broken pipe"))


def _pip_command_cmd_can_run(message: str) -> list[str]:
    """The pip command at the end of ``message`` as bash splits it, after checking that cmd (Windows' shell, and the
    Anaconda Prompt's) would pass it on alike: outside double quotes it reads ``'`` as a letter and ``>`` ``<`` ``|``
    ``&`` as redirections."""
    import re
    import shlex

    command = "pip install" + message.partition("pip install")[2].partition(", ")[0]
    assert not re.search(r"""['<>|&^%]""", re.sub(r'"[^"]*"', "", command)), command
    return shlex.split(command)


def test_the_pip_commands_in_error_lines_run_in_cmd_as_in_bash(monkeypatch, tmp_path):
    """`pip install -U 'torch>=2.3'` in cmd (or %pip in a notebook on Windows) sent the output to a file named
    `=2.3'` and asked pip for the requirement `'torch`; double quotes mean the same in every shell."""
    from kd_tutorial import data, env
    from kd_tutorial.errors import UserError

    with pytest.raises(UserError) as old:
        env.check_versions({"torch": "2.1.0", "transformers": "4.46.0"})
    assert _pip_command_cmd_can_run(str(old.value)) == ["pip", "install", "-U", "torch>=2.6", "transformers>=5.5.4"]
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else object())
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path))
    with pytest.raises(UserError) as no_optuna:
        cli.cmd_search(cli.build_parser().parse_args(["search", "--profile", "tiny", "--out", str(tmp_path / "s")]))
    assert _pip_command_cmd_can_run(str(no_optuna.value)) == ["pip", "install", "optuna>=3.5"]
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError) as missing:
        data._hub_raw()
    assert _pip_command_cmd_can_run(str(missing.value)) == ["pip", "install", "datasets>=2.19"]


@pytest.mark.parametrize("argv, field", [(["distill", "--out=~/runs/kd"], "out"),
                                         (["search", "--out=~/runs/kd"], "out"),
                                         (["distill", "--data-dir=~/runs/kd"], "data_dir"),
                                         (["benchmark", "--report=~/runs/kd"], "report"),
                                         (["report", "~/runs/kd", "--summary=~/runs/kd"], "summary")])
def test_a_path_flag_given_with_a_tilde_the_shell_left_means_the_home_folder(monkeypatch, tmp_path, argv, field):
    """bash leaves `--out=~/runs/kd` as typed, and PowerShell `--out ~\\runs\\kd`: the run wrote into a folder named
    "~" in the current one, which `rm -rf ~` would then be typed to remove."""
    monkeypatch.setenv("HOME", str(tmp_path))
    args = cli.build_parser().parse_args(argv)
    assert getattr(args, field) == str(tmp_path / "runs" / "kd")
    assert argv[0] != "report" or args.results == [str(tmp_path / "runs" / "kd")]


def test_the_grade_report_given_with_a_tilde_the_shell_left_goes_to_the_home_folder(monkeypatch, tmp_path):
    import argparse
    from kd_tutorial.grading import grader

    monkeypatch.setenv("HOME", str(tmp_path))
    assert grader._parser(argparse.ArgumentParser).parse_args(["a.ipynb", "--out=~/grades.csv"]).out == \
        tmp_path / "grades.csv"


def test_submissions_and_exercise_folders_given_with_a_tilde_the_shell_left_are_in_the_home_folder(monkeypatch,
                                                                                                    tmp_path):
    """PowerShell passes `kd-tutorial grade ~\\subs` and `make-exercises --solutions ~\\sol` on as typed, and bash
    `--solutions=~/sol`: grade said "no such file or folder: ~/subs", make-exercises "no solution notebooks in
    ~/sol"."""
    import argparse
    from kd_tutorial.grading import authoring, grader

    monkeypatch.setenv("HOME", str(tmp_path))
    assert grader._parser(argparse.ArgumentParser).parse_args(["~/subs", "b.ipynb"]).submissions == \
        [str(tmp_path / "subs"), "b.ipynb"]
    args = authoring._parser(argparse.ArgumentParser).parse_args(["--solutions=~/sol", "--exercises=~/ex"])
    assert (args.solutions, args.exercises) == (tmp_path / "sol", tmp_path / "ex")


def test_the_estimate_on_a_mac_says_it_is_a_cpu_figure_not_a_measure_of_mps(tmp_path, monkeypatch, capsys):
    """On Apple's GPU, distill printed "device: mps; estimated time: about 1 minute(s) on 2 CPU cores": the CPU's
    measured time, given as if it were the MPS run's, where no profile was timed."""
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli, "pick_device", lambda: "mps")
    monkeypatch.setattr(cli, "run_distill", lambda profile, **kwargs: {"plots": []})
    assert cli.main(["distill", "--profile", "tiny", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("device: "))
    cpu = estimates.estimate(cli.resolve_profile("tiny"), "cpu")
    assert line == f"device: mps; estimated time: not measured on MPS (Apple's GPU); for comparison: {cpu}"


def test_a_torch_without_autocast_for_the_device_trains_and_predicts_in_fp32(monkeypatch):
    """torch before 2.5 has no autocast on Apple's MPS and refuses even a disabled one ("User specified an
    unsupported autocast device_type 'mps'"), while the course allows torch 2.3 and transformers 5.0 torch 2.2: on
    such a Mac every step and every prediction raised, in fp32 too. Simulated on the CPU, with a torch.autocast that
    refuses the device; a values-relation term (autocast turned off inside the step) included."""
    import torch
    from test_train import small_model
    from kd_tutorial import data, recipes
    from kd_tutorial.evaluate import predict_logits
    from kd_tutorial.models import DistillationStudent
    from kd_tutorial.train import freeze, TrainConfig, train

    def refuses(device_type, *args, **kwargs):
        raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}'")

    imdb = data.load_imdb("tiny", n_train=64, n_transfer=0, val_size=16, n_test=16, seed=0)
    rows = data.encode(imdb.train, data.get_tokenizer(), 32, "head+tail")
    teacher = freeze(small_model(1))
    cached = predict_logits(teacher, rows, progress=False, precision="fp32")  # auto is bf16 on a CPU with bf16 units
    monkeypatch.setattr(torch, "autocast", refuses)
    student = DistillationStudent(small_model(2), teacher.config.hidden_size)
    config = TrainConfig(mode="kd", max_steps=2, batch_size=16, lr=1e-3, precision="fp32",
                         intermediate=recipes.get_recipe("kd+transfer+values").intermediate)
    history = train(student, rows, config=config, teacher_logits=cached, teacher=teacher, device="cpu",
                    progress=False)
    assert len(history.steps) == 2 and all(math.isfinite(s["value_relation"]) for s in history.steps)
    assert torch.equal(predict_logits(teacher, rows, progress=False, precision="fp32"), cached)


def test_prefetch_with_the_hub_turned_off_on_windows_says_how_powershell_and_cmd_turn_it_on(monkeypatch, capsys):
    """A workshop's Windows machine with HF_HUB_OFFLINE set: the line said to run `unset HF_HUB_OFFLINE`, which
    neither PowerShell nor cmd has."""
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert cli.main(["prefetch", "--profile", "cpu"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "turn it off in this shell: run `Remove-Item Env:HF_HUB_OFFLINE, Env:HF_DATASETS_OFFLINE` (PowerShell) or "
        '`set "HF_HUB_OFFLINE=" & set "HF_DATASETS_OFFLINE="` (cmd), then prefetch again')


def test_a_reader_that_leaves_the_summary_of_grade_leaves_its_status_and_no_error_at_exit(monkeypatch, tmp_path):
    """`kd-tutorial grade ... | head`: grade's own lines swallow the closed pipe, but what they left in stdout's
    buffer failed again at exit: "Exception ignored ... BrokenPipeError" on stderr and status 120, the reports
    written all the same."""
    read, write = os.pipe()
    os.close(read)  # the reader has left
    stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write, "w")), encoding="utf-8")  # as Python sets it up
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "__stdout__", stdout)
    notebook = Path(__file__).parent / "fixtures" / "grading" / "not_a_notebook.ipynb"
    try:
        # 1: its one file is no valid notebook, so nothing was graded (the status of such a class, not the pipe's)
        assert cli.main(["grade", str(notebook), "--out", str(tmp_path / "grades.csv")]) == 1
        assert (tmp_path / "grades.csv").exists()
        stdout.flush()  # what the interpreter does at exit
    finally:
        stdout.close()


def test_the_grade_report_suggested_for_a_folder_with_a_space_is_one_argument_when_pasted(tmp_path, monkeypatch):
    """`--out "kd tutorial"` (a folder) was answered with "e.g. --out .../kd tutorial/grades.csv": pasted, the shell
    gave --out ".../kd" and a submission "tutorial/grades.csv"."""
    import shlex
    from kd_tutorial.errors import UsageError
    from kd_tutorial.grading import grader

    folder = tmp_path / "kd tutorial"
    folder.mkdir()
    with pytest.raises(UsageError) as caught:
        grader.check_out(folder)
    assert shlex.split(str(caught.value).partition("e.g. ")[2]) == ["--out", str(folder / "grades.csv")]
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(UsageError) as caught:
        grader.check_out(folder)
    assert str(caught.value).endswith(f'e.g. --out "{folder / "grades.csv"}"')


def test_a_windows_path_that_swallowed_its_closing_quote_is_refused_naming_the_backslash(monkeypatch, capsys):
    """`--out "C:\\my runs\\" --profile tiny` in PowerShell or cmd reaches Python as one argument
    `C:\\my runs" --profile tiny` (a backslash before a closing quote escapes it): the run was then refused as
    "not a writable folder (invalid argument)", with the flags after it lost in the path."""
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(SystemExit) as caught:
        cli.build_parser().parse_args(["distill", "--out", 'C:\\my runs" --profile tiny'])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a backslash before a closing double quote escapes it" in err
    assert err.endswith('with no backslash at the end, e.g. "C:\\my runs" (see kd-tutorial distill --help)')
    assert cli.build_parser().parse_args(["distill", "--out", "C:\\Users\\José Pérez\\kd tutorial"]).out == \
        "C:\\Users\\José Pérez\\kd tutorial"


def test_a_windows_path_in_single_quotes_that_cmd_split_at_a_space_is_not_shortened_in_the_fix(monkeypatch, capsys):
    """cmd has no single quotes: `--out 'C:\\my runs'` reaches Python as `'C:\\my` and `runs'`, and the line
    suggested "e.g. C:\\my", another folder than the one meant."""
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["distill", "--out", "'C:\\my", "runs'"])
    err = capsys.readouterr().err.strip()
    assert 'e.g. "C:\\my ..." with the rest of the path' in err and not err.endswith("e.g. C:\\my")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["distill", "--out", "'C:\\runs'"])  # no space: the path whole
    assert "with no backslash at the end, e.g. C:\\runs (see" in capsys.readouterr().err


def test_a_kept_quote_in_a_path_with_a_dollar_is_told_to_quote_it_as_the_example_shows(monkeypatch, capsys):
    """The line said "give it in double quotes", then showed PowerShell's single-quoted form for a path with `$`
    (PowerShell expands `$name` in double quotes): the example is now what the words say."""
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["distill", "--out", "'C:\\kd$runs'"])
    err = capsys.readouterr().err
    assert "give it quoted as below with no backslash at the end, e.g. 'C:\\kd$runs' in PowerShell" in err
    assert "double quotes, or none" not in err


@pytest.mark.parametrize("argv", [["grade", "C:\\subs\" --out g.csv"], ["grade", "n.ipynb", "--out", "'C:\\g.csv'"],
                                  ["make-exercises", "--solutions", "C:\\sol\" --check"]])
def test_grade_and_make_exercises_refuse_a_windows_path_that_kept_a_quote_as_the_other_commands_do(
        monkeypatch, capsys, argv):
    """Their path arguments expanded `~` beside the other commands' flags but took a kept quote mark into the path:
    `grade "C:\\subs\\" --out g.csv` graded nothing in a folder named `C:\\subs" --out g.csv`."""
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "a quote mark stayed in the path" in err and "e.g. C:\\" in err


class _MacOS13Tensor:
    """A tensor on Apple's MPS under macOS 13, where torch refuses every bf16 tensor ("MPS BFloat16 is only supported
    on MacOS 14 or newer"); ``.cpu()`` gives the real tensor back."""

    def __init__(self, x):
        import torch
        self.x, self.device, self.dtype, self.shape = x, torch.device("mps"), x.dtype, x.shape

    def detach(self):
        return self

    def to(self, *args, **kwargs):
        import torch
        if torch.bfloat16 in args or kwargs.get("dtype") is torch.bfloat16:
            raise TypeError("MPS BFloat16 is only supported on MacOS 14 or newer")
        raise AssertionError(f"not simulated: .to{args}")

    def cpu(self):
        return self.x


def test_the_layer_cache_is_written_from_apples_gpu_under_macos_13_narrowed_on_the_cpu(tmp_path):
    """The layer pass narrowed the teacher's states to bf16 where they lay: on a Mac under macOS 13 an intermediate
    recipe's first run ended in "TypeError: MPS BFloat16 is only supported on MacOS 14 or newer"."""
    import numpy as np
    import torch
    from kd_tutorial.layer_cache import LayerWriter

    states = torch.randn(2, 3, 4)
    writer = LayerWriter({("hidden", 1): tmp_path / "h.npy"}, rows=2, length=3, width=4)
    writer.write(("hidden", 1), torch.tensor([1, 0]), _MacOS13Tensor(states))
    writer.close()
    bits = torch.from_numpy(np.load(tmp_path / "h.npy")).view(torch.bfloat16)
    assert torch.equal(bits, states[[1, 0]].to(torch.bfloat16))


def test_cached_layers_reach_apples_gpu_as_float32_never_as_bf16(monkeypatch):
    """A step that read cached layers moved them to the device in bf16 and widened them there: under macOS 13 MPS
    refuses the bf16 tensor. Simulated with a Tensor.to that records what each move to "mps" carries (and keeps the
    tensor on the CPU); the cached states arrive in float32, equal to the cache's bf16 values."""
    import types
    import torch
    from kd_tutorial.recipes import get_recipe
    from kd_tutorial.train import _cached_layers

    moved, real_to = [], torch.Tensor.to

    def to(self, *args, **kwargs):
        target = next((a for a in args if isinstance(a, (str, torch.device))), kwargs.get("device"))
        if target is not None and torch.device(target).type == "mps":
            moved.append(self.dtype)
            if self.dtype is torch.bfloat16:
                raise TypeError("MPS BFloat16 is only supported on MacOS 14 or newer")
            return self
        return real_to(self, *args, **kwargs)

    spec = get_recipe("kd+transfer+values").intermediate
    keys = spec.layer_keys([2])
    cached = {key: torch.randn(2, 3, 4).to(torch.bfloat16) for key in keys}
    batch = {"input_ids": types.SimpleNamespace(device=torch.device("mps"), shape=(2, 3)),
             "index": torch.tensor([0, 1]), "teacher_layers": cached}
    monkeypatch.setattr(torch.Tensor, "to", to)
    out = _cached_layers(batch, spec, torch.randn(2, 2), types.SimpleNamespace(depth=2), [2])
    assert moved and torch.bfloat16 not in moved
    assert torch.equal(out.values[1], cached[("values", 2)].float())


def test_the_benchmarks_bf16_batch_on_apples_gpu_under_macos_13_is_skipped_with_the_reason(monkeypatch):
    """MPS refuses bf16 before macOS 14 with a TypeError, which the worst-batch loop did not catch (only a
    RuntimeError, the out-of-memory or unsupported-dtype error of other devices): `kd-tutorial benchmark` on such a
    Mac ended in a traceback after its timings, where the bf16 row is now skipped naming the cause."""
    import types
    import torch
    from kd_tutorial import benchmark

    def one_worst_batch(model, dtype):
        if dtype is torch.bfloat16:
            raise TypeError("MPS BFloat16 is only supported on MacOS 14 or newer")
        return {"seconds": 1.0}

    bench = types.SimpleNamespace(device="mps", one_worst_batch=one_worst_batch)
    out = benchmark._Bench.worst_batch(bench, torch.nn.Linear(1, 1))
    assert out["bf16"] == {"skipped": "TypeError: MPS BFloat16 is only supported on MacOS 14 or newer"}
    assert out["fp16"] == {"seconds": 1.0}
    bench.device = "cpu"  # anywhere else a TypeError is a bug in the batch, not a row to skip
    with pytest.raises(TypeError):
        benchmark._Bench.worst_batch(bench, torch.nn.Linear(1, 1))


@pytest.mark.parametrize("precision, torch_version, mac, fix", [
    ("fp16", "2.4.1", "14.5", 'needs torch 2.8 or newer (this is torch 2.4.1): pip install -U "torch>=2.8", or set'),
    ("fp16", "2.5.1", "14.5", 'needs torch 2.8 or newer (this is torch 2.5.1): pip install -U "torch>=2.8", or set'),
    ("bf16", "2.5.1", "14.5", 'needs torch 2.6 or newer (this is torch 2.5.1): pip install -U "torch>=2.6", or set'),
    ("bf16", "2.13.0", "13.6.1", "needs macOS 14 or newer (this is macOS 13.6.1): use precision=fp16 (torch 2.8 or")],
    ids=["fp16-torch-2.4", "fp16-torch-2.5", "bf16-torch-2.5", "bf16-macos-13"])
def test_a_16_bit_precision_apples_gpu_cannot_run_here_is_refused_in_one_line_before_the_run(
        tmp_path, monkeypatch, capsys, precision, torch_version, mac, fix):
    """`distill --set precision=fp16` on a Mac with torch 2.3 or 2.4 (the course allows 2.3) ran into a traceback at
    the first step: torch.autocast has no MPS there ("User specified an unsupported autocast device_type 'mps'"); on
    torch 2.5 to 2.7 the GradScaler's unscale_ raised instead (MPS has no float64); bf16 has no autocast on MPS before
    torch 2.6, and no tensor at all before macOS 14. Refused before anything runs, naming the fix."""
    import platform
    import torch

    ran = []
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli, "pick_device", lambda: "mps")
    monkeypatch.setattr(cli, "run_distill", lambda profile, **kwargs: ran.append(profile) or {"plots": []})
    monkeypatch.setattr(torch, "__version__", torch_version)
    monkeypatch.setattr(platform, "mac_ver", lambda *a: (mac, ("", "", ""), "arm64"))
    argv = ["distill", "--profile", "tiny", "--out", str(tmp_path / "out"), "--quiet", "--set"]
    assert cli.main(argv + [f"precision={precision}"]) == 2 and not ran
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"error: precision={precision} on Apple's GPU (MPS) {fix}" in err
    assert err.endswith("set precision to fp32 or auto (--set precision=auto), which runs fp32 on MPS")
    assert cli.main(argv + ["precision=auto"]) == 0 and len(ran) == 1  # fp32 on MPS: any torch, any macOS


def test_the_16_bit_precisions_apples_gpu_runs_are_not_refused(monkeypatch):
    import platform
    import torch
    from kd_tutorial import device

    monkeypatch.setattr(platform, "mac_ver", lambda *a: ("14.0", ("", "", ""), "arm64"))
    monkeypatch.setattr(torch, "__version__", "2.8.0")
    assert device.resolve_precision("mps", "fp16") == "fp16" and device.resolve_precision("mps", "bf16") == "bf16"
    monkeypatch.setattr(torch, "__version__", "2.3.1")
    assert device.resolve_precision("cpu", "fp16") == "fp16" and device.resolve_precision("mps", "fp32") == "fp32"


def test_a_windows_cpu_with_bf16_units_is_told_apart_from_one_without(monkeypatch):
    """bf16_supported("cpu") read Linux's /proc/cpuinfo only: on Windows every CPU counted as one without bf16 units
    (a Ryzen 7040 laptop's AVX-512 BF16 included), so "auto" trained in fp32 and the estimate said "this CPU has no
    bf16 units". There torch's cpuinfo probe (CPUID) decides; AVX-512 without BF16 stays emulation."""
    import torch
    from kd_tutorial import device

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    for units in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: units, raising=False)
        assert device.bf16_supported("cpu") is units
        assert device.precision_for("cpu") == ("bf16" if units else "fp32")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert device.bf16_supported("cpu") is False  # a torch without the probes: fp32, as before


def test_a_path_that_powershell_or_cmd_would_expand_is_quoted_for_each_shell_or_left_to_the_one_that_keeps_it(
        tmp_path, monkeypatch):
    """The fixes printed for Windows put the path in double quotes, where PowerShell expands `$name` and reads a
    backquote as an escape (`--out "C:\\kd $HOME`bak\\grades.csv"` wrote to "C:\\kd C:\\Users\\me<backspace>ak"), and
    cmd expands `%name%` inside `set "X=..."` too (`kd %OS% cache` became `kd Windows_NT cache`): pasted, the line
    set or wrote another path. PowerShell now gets single quotes where it needs them, and cmd no line where no
    quoting keeps the path."""
    from kd_tutorial import errors, store
    from kd_tutorial.errors import UsageError
    from kd_tutorial.grading import grader

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.delenv("MSYSTEM", raising=False)
    monkeypatch.setenv("KD_TUTORIAL_HOME", "kd %OS% cache")
    with pytest.raises(store.ArtifactError) as caught:
        store.home()
    assert str(caught.value).endswith("e.g. $env:KD_TUTORIAL_HOME = Join-Path $PWD 'kd %OS% cache' (PowerShell; "
                                      "cmd's set would expand the %...% in this path)")
    folder = tmp_path / "kd $HOME`bak"
    folder.mkdir()
    with pytest.raises(UsageError) as caught:
        grader.check_out(folder)
    csv = folder / "grades.csv"
    assert str(caught.value).endswith(f"e.g. --out '{csv}' in PowerShell, \"{csv}\" in cmd")
    assert errors.shell_arg("C:\\kd %OS%\\g.csv") == \
        "'C:\\kd %OS%\\g.csv' in PowerShell (cmd would expand the %...% in it)"
    assert errors.shell_arg("C:\\O’Brien's & co\\g.csv") == '"C:\\O’Brien\'s & co\\g.csv"'  # both shells keep it
    assert errors.shell_arg("C:\\“kd”\\g.csv") == \
        "'C:\\“kd”\\g.csv' in PowerShell, \"C:\\“kd”\\g.csv\" in cmd"  # PowerShell ends a string at “
    assert errors.set_env_command("KD_TUTORIAL_HOME", "C:\\50% & $x`'") == (
        "$env:KD_TUTORIAL_HOME = 'C:\\50% & $x`''' (PowerShell) or set \"KD_TUTORIAL_HOME=C:\\50% & $x`'\" (cmd)")


def test_the_bash_commands_printed_keep_a_path_with_every_character_a_shell_reads(tmp_path):
    """The same characters in bash (macOS, Linux, Git Bash): `export` and an argument, run as printed."""
    import subprocess
    from kd_tutorial import errors

    path = str(tmp_path / "a %OS% $HOME `true` it's \"q\" & b")
    script = f'{errors.set_env_command("X", path)}\nprintf "%s\\n" "$X" {errors.shell_arg(path)}\n'
    done = subprocess.run(["bash", "--norc", "--noprofile"], input=script, capture_output=True, text=True)
    assert done.stdout == f"{path}\n{path}\n", done.stderr


def test_paths_holding_bytes_that_are_not_utf8_are_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    """A folder named with a byte that is not UTF-8 (b"old\\xffrun", as Python reads it: "old\\udcffrun"): --out
    trained the whole run, then transformers could not write the tokenizer there, a traceback, and the folder's
    earlier results.json was gone; as the artifact cache, every cached model was called unreadable."""
    from kd_tutorial import cli, store
    from kd_tutorial.data import check_data_source, DataSourceError

    odd = str(tmp_path / "old\udcffrun")
    os.makedirs(odd)
    (tmp_path / "old\udcffrun" / "results.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit) as stopped:  # argparse's error: status 2
        cli.main(["distill", "--profile", "tiny", "--out", odd])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert "Traceback" not in err and (
        f"{tmp_path}/old\\xffrun holds bytes that are not UTF-8, which the libraries underneath cannot write: rename "
        "it (convmv does) or give another path") in err.strip().splitlines()[-1], err
    assert os.listdir(odd) == ["results.json"]  # nothing written, nothing removed
    monkeypatch.setenv("KD_TUTORIAL_HOME", odd)
    with pytest.raises(store.ArtifactError, match=r"^KD_TUTORIAL_HOME=.*old\\xffrun holds bytes that are not UTF-8"):
        store.home()
    with pytest.raises(DataSourceError, match=r"^data folder .*old\\xffrun holds bytes that are not UTF-8"):
        check_data_source(odd)


def test_a_path_with_a_space_left_at_its_end_is_refused_naming_the_path_meant(tmp_path, monkeypatch):
    """`KD_TUTORIAL_DATA_DIR=/data/imdb ` (a space after it, in a script or a .env file): "does not exist", of a
    folder that does, the space unseen; as the artifact cache, a new empty cache, so every model trained again."""
    from kd_tutorial import store
    from kd_tutorial.data import check_data_source, DataSourceError

    (tmp_path / "imdb").mkdir()
    with pytest.raises(DataSourceError, match=f"^data folder '{tmp_path}/imdb ' starts or ends with a space, and "
                                              f"names no folder: give the path alone: {tmp_path}/imdb$"):
        check_data_source(f"{tmp_path / 'imdb'} ")
    monkeypatch.setenv("KD_TUTORIAL_HOME", f"{tmp_path / 'cache'} ")
    with pytest.raises(store.ArtifactError, match=f"^KD_TUTORIAL_HOME='{tmp_path}/cache ' starts or ends with a "
                                                  f"space, and names no folder: set it to the path alone, e.g. "):
        store.home()
    (tmp_path / "cache ").mkdir()  # a folder that really ends with a space is taken as it is
    monkeypatch.setenv("KD_TUTORIAL_HOME", f"{tmp_path / 'cache'} ")
    assert str(store.home()) == f"{tmp_path / 'cache'} "
