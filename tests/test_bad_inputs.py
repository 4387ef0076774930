"""Every bad input the user can choose gets exit status 2 and one line, ``kd-tutorial: error: ...``, that names
the fix; never a traceback, and nothing trains before the input is refused (GitHub issue 10).

Most tests call :func:`kd_tutorial.cli.main` in-process (an uncaught exception would fail them, so status 2
with one error line means no traceback); a few run the console script in a subprocess, end to end.
"""
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kd_tutorial import cli, data, estimates
from kd_tutorial.device import available_devices
from kd_tutorial.errors import SETUP_MIRRORS, UsageError, UserError

def error_line(capsys, *argv) -> str:
    """Run ``kd-tutorial argv`` in-process; assert status 2 and exactly one error line; return that line."""
    status = cli.main(list(argv))
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("kd-tutorial: error:")]
    assert len(lines) == 1, err
    return lines[0]


def socket_file(path):
    """A file that is not a regular file, bound and kept open until the ``with`` ends: a Unix socket, which like
    /dev/null or a pipe is nothing to read or replace (and, unlike a pipe, never blocks a read that should not be)."""
    import socket
    sock, here = socket.socket(socket.AF_UNIX), os.getcwd()
    os.chdir(path.parent)  # bound by its name: a socket's path has a limit (104 bytes on macOS) that tmp_path may pass
    try:
        sock.bind(path.name)
    finally:
        os.chdir(here)
    return sock


def distill_error(capsys, data_dir, tmp_path, *more) -> str:
    """The error line of ``kd-tutorial distill --profile tiny --data-dir data_dir``."""
    return error_line(capsys, "distill", "--profile", "tiny", "--data-dir", str(data_dir),
                      "--out", str(tmp_path / "out"), "--quiet", *more)


def write_parquet(path, n, labels=None, **columns):
    """``n`` reviews, alternately negative and positive, or with the given ``labels``; extra ``columns``."""
    labels = [i % 2 for i in range(n)] if labels is None else labels
    rows = {"text": [f"review {i} was {'good' if y == 1 else 'bad'}" for i, y in enumerate(labels)], "label": labels}
    pq.write_table(pa.table({k: v for k, v in (rows | columns).items() if v is not None}), path)
    return path.parent


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """Each test its own artifact cache: a refused input must leave nothing behind in a shared one."""
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "kd-home"))
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """A bad input let through search or benchmark fails at once, not after minutes of a real study or measurement
    (distill's own refusals of a teacher or data folder come from inside run_distill, which is left real)."""
    for job in ("run_benchmark", "run_search"):
        monkeypatch.setattr(cli, job, lambda *a, _job=job, **k: pytest.fail(f"{_job} started: the input got through"))


# ----------------------------------------------------------------------------- data files


def test_a_train_parquet_that_is_not_parquet_is_one_line_end_to_end(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.parquet").write_text("text,label\nnot really parquet,1\n")
    proc = subprocess.run([sys.executable, "-m", "kd_tutorial.cli", "distill", "--profile", "tiny", "--data-dir",
                           str(tmp_path / "data"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kd-tutorial: error:")]
    assert len(errors) == 1, proc.stderr
    assert re.search(r"train.parquet is not a readable parquet file \(.*\): write it with pandas "
                     r"DataFrame.to_parquet, columns text and label \(0 negative, 1 positive\), or give a train.csv "
                     r"instead$", errors[0])
    assert not list((tmp_path / "kd-home").rglob("*.pt"))  # refused before the teacher trained


def test_a_train_csv_that_is_not_utf8(tmp_path, capsys):
    (tmp_path / "train.csv").write_bytes("text,label\n".encode() + "très bien,1\n".encode("latin-1"))
    line = distill_error(capsys, tmp_path, tmp_path)
    assert re.search(r"train.csv is not UTF-8 text \(invalid continuation byte at byte \d+\): save it as UTF-8", line)


def test_a_utf8_csv_with_a_byte_order_mark_is_read(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"review {i},{i % 2}\n" for i in range(40)),
                                        encoding="utf-8-sig")
    assert data.load_imdb(str(tmp_path), val_size=4).sizes()["validation"] == 4


@pytest.mark.parametrize("body, says", [
    ('text,label\n"an unclosed quote,1\n', r"is not valid CSV \(line \d+: unexpected end of data\)"),
    ("text,label\nfine, really fine,1\nok,0\n", r"is not valid CSV: line 2 has 3 field\(s\) where the header has 2"),
])
def test_a_train_csv_that_is_not_valid_csv(tmp_path, capsys, body, says):
    (tmp_path / "train.csv").write_text(body)
    line = distill_error(capsys, tmp_path, tmp_path)
    assert re.search(says, line) and "to_csv(index=False)" in line


@pytest.mark.parametrize("name", ["tiny", "hub"])
def test_a_data_dir_that_names_a_source_is_refused_with_the_folder_spelling(tmp_path, capsys, monkeypatch, name):
    """--data-dir tiny with a folder called tiny here: the run read the built-in reviews, as a source's name is
    read, and the folder was ignored without a word."""
    write_parquet((tmp_path / name).mkdir() or tmp_path / name / "train.parquet", 40)
    monkeypatch.chdir(tmp_path)
    line = distill_error(capsys, name, tmp_path)
    assert line.endswith(f"--data-dir {name}: '{name}' names a data source, not a folder: give ./{name} for a "
                         f"folder of that name, or --set data_source={name} for the source")


@pytest.mark.parametrize("name", ["tiny", "hub"])
def test_env_judges_a_data_folder_named_after_a_source_as_distill_does(tmp_path, monkeypatch, name):
    """`kd-tutorial env` said "local folder hub" and exited 0 where distill refused KD_TUTORIAL_DATA_DIR=hub."""
    from kd_tutorial import artifacts
    write_parquet((tmp_path / name).mkdir() or tmp_path / name / "train.parquet", 40)
    monkeypatch.chdir(tmp_path)
    assert artifacts._folder_status(name) == (f"unusable: '{name}' names a data source, not a folder: give ./{name} "
                                              "for a folder of that name")
    assert artifacts._folder_status(f"./{name}") == f"local folder ./{name}"


def test_a_local_teacher_too_shallow_for_the_students_is_refused_before_it_is_fine_tuned(tmp_path, capsys,
                                                                                        monkeypatch):
    """Only the built-in teacher's depth was checked up front: a Hub or folder teacher was fine-tuned (minutes to
    hours) before the refusal, and the cached teacher was of no use after the fix the message asked for."""
    from kd_tutorial import data, models, pipeline
    folder = tmp_path / "shallow"
    models.load_teacher("tiny-bert", config_overrides={"num_hidden_layers": 1}).save_pretrained(folder)
    data.get_tokenizer(None).save_pretrained(folder)
    monkeypatch.setattr(pipeline, "ensure_teacher", lambda *a, **kw: pytest.fail("fine-tuned before the refusal"))
    line = error_line(capsys, "distill", "--profile", "tiny", "--teacher", str(folder), "--out", str(tmp_path / "o"),
                      "--quiet")
    assert line.endswith("student distil-2L maps its layers onto 2 of the teacher's, and the teacher has 1: give a "
                         "teacher with more layers, or students with fewer (at least 2 layers)"), line


def test_an_empty_train_split_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("text,label\n")
    line = distill_error(capsys, tmp_path, tmp_path)
    assert re.search(r"the train split is empty, and it needs reviews of both classes: add labelled reviews", line)


def test_a_train_split_too_small_for_val_size_names_a_val_size_that_fits(tmp_path, capsys):
    write_parquet(tmp_path / "train.parquet", 30)  # 6 held out for testing, 24 left; tiny asks for 200
    line = distill_error(capsys, tmp_path, tmp_path)
    assert re.search(r"val_size=200 does not fit the 24 labelled reviews left after the held-out test slice of 6: "
                     r"give --set val_size=N with 2 <= N <= 20 or more reviews", line)
    most = int(re.search(r"N <= (\d+)", line).group(1))
    assert data.load_imdb(str(tmp_path), val_size=most).sizes()["validation"] == most  # the advice works


def test_a_train_split_too_small_for_any_validation(tmp_path, capsys):
    write_parquet(tmp_path / "train.parquet", 5)
    line = distill_error(capsys, tmp_path, tmp_path)
    assert re.search(r"4 labelled review\(s\) left after the held-out test slice of 1 are too few .* \(at least 6 "
                     r"needed\): give a smaller --set n_test=N or more labelled reviews in the train split", line)


def test_a_train_split_of_one_class(tmp_path, capsys):
    write_parquet(tmp_path / "train.parquet", 50, labels=[1] * 50)
    line = distill_error(capsys, tmp_path, tmp_path)
    assert "the train split has 0 negative and 50 positive review(s), and it needs reviews of both classes" in line


def test_a_split_that_would_end_up_with_one_class_names_the_knob(tmp_path):
    write_parquet(tmp_path / "train.parquet", 60, labels=[0] + [1] * 59)
    with pytest.raises(data.DataSourceError, match=r"split has 0 negative and \d+ positive review\(s\), and it "
                                                   r"needs reviews of both classes: add reviews of the rarer class, "
                                                   r"or change --set (n_train|val_size|n_test)=N"):
        data.load_imdb(str(tmp_path), val_size=10)


def test_a_test_split_copied_from_train_says_so_not_to_add_reviews(tmp_path, capsys):
    """Every test review is also a train review, so each is left out: the refusal said to add reviews of the rarer
    class, or change n_test, neither of which helps."""
    write_parquet(tmp_path / "train.parquet", 400)
    write_parquet(tmp_path / "test.parquet", 400)
    line = distill_error(capsys, tmp_path, tmp_path)
    assert line.endswith("the test split is empty, and it needs reviews of both classes: 400 of its reviews are also "
                         "in the source's training reviews and were left out (a review seen in training tests "
                         "nothing): give a test split of other reviews"), line


def test_a_test_split_of_one_class_with_a_review_from_train_is_told_to_add_the_other_class(tmp_path, capsys):
    write_parquet(tmp_path / "train.parquet", 400)
    pq.write_table(pa.table({"text": [f"a fine film, number {i}" for i in range(50)] + [
        pq.read_table(tmp_path / "train.parquet").column("text")[1].as_py()], "label": [1] * 51}),
        tmp_path / "test.parquet")
    line = distill_error(capsys, tmp_path, tmp_path)
    assert line.endswith("the test split has 0 negative and 51 positive review(s), and it needs reviews of both "
                         "classes: add reviews of the rarer class to it (no --set n_test draws a class it lacks)"), line


def test_a_split_emptied_by_repeated_reviews_says_so(tmp_path, capsys):
    """Repeats are left out after the carve: 20 reviews, each 20 times, emptied validation, and the line named only
    the class balance and val_size, which no value fixes."""
    texts = [f"review number {i}, a film of some kind" for i in range(20)]
    pq.write_table(pa.table({"text": texts * 20, "label": [i % 2 for i in range(20)] * 20}),
                   tmp_path / "train.parquet")
    line = distill_error(capsys, tmp_path, tmp_path)
    assert re.search(r"the validation split (is empty|has \d+ negative and \d+ positive review\(s\)), and it needs "
                     r"reviews of both classes: .*or change --set val_size=N; \d+ of its reviews were left out "
                     r"as repeats \(the source holds their text more than once\): give a source with more distinct "
                     r"reviews$", line), line


def test_a_run_refused_after_the_out_check_leaves_no_empty_out_folder(tmp_path, capsys):
    """--out was created by its writability check, before the data was read: a refused run left it, empty."""
    write_parquet(tmp_path / "train.parquet", 400)
    write_parquet(tmp_path / "test.parquet", 400)  # refused when the data is read, after the --out check
    out = tmp_path / "new" / "deeper"
    line = error_line(capsys, "distill", "--profile", "tiny", "--data-dir", str(tmp_path), "--out", str(out), "--quiet")
    assert "give a test split of other reviews" in line and not (tmp_path / "new").exists()


@pytest.mark.parametrize("labels, shown", [([0, 1, 2, 1] * 10, "2"), (["neg", "pos"] * 20, "'neg'"),
                                           ([0.0, 1.0, None, 1.0] * 10, "None")])
def test_labels_other_than_0_and_1(tmp_path, capsys, labels, shown):
    write_parquet(tmp_path / "train.parquet", len(labels), labels=labels)
    line = distill_error(capsys, tmp_path, tmp_path)
    assert re.search(rf"train.parquet: row \d+ has label {shown}; labels must be 0 \(negative\) or 1 \(positive\): "
                     r"map them to 0/1 \(e.g. neg -> 0, pos -> 1\)", line)


def test_labels_from_csv_text_and_floats_are_read():
    assert data._labels(["0", "1", " 1 ", "1.0", 0, 1, 1.0], "f") == [0, 1, 1, 1, 0, 1, 1]


def test_labels_out_of_range_from_an_in_memory_source():
    raw = {"train": data.Reviews(["a", "b", "c"], [0, 1, 3], None, "train")}
    with pytest.raises(data.DataSourceError, match=r"labels \[3\]; labels must be 0 .*map them to 0/1"):
        data.split_raw(raw, "my reviews")


@pytest.mark.parametrize("drop, renamed", [("text", {"review": ["r"] * 20}), ("label", {"sentiment": [1, 0] * 10})])
def test_a_missing_text_or_label_column(tmp_path, capsys, drop, renamed):
    columns = {"text": [f"review {i}" for i in range(20)], "label": [i % 2 for i in range(20)]} | renamed
    del columns[drop]
    pq.write_table(pa.table(columns), tmp_path / "train.parquet")
    line = distill_error(capsys, tmp_path, tmp_path)
    assert re.search(rf"missing column\(s\) {drop} \(found: .*'{next(iter(renamed))}'.*\); give the file columns "
                     r"text and label", line)


def test_a_data_folder_with_only_a_test_split(tmp_path, capsys):
    write_parquet(tmp_path / "test.parquet", 20)
    line = distill_error(capsys, tmp_path, tmp_path)
    assert re.search(r"holds a test split but no train split: add train.parquet or train.csv", line)


def test_an_aclimdb_copy_with_only_a_test_split(tmp_path, capsys):
    for sub in ("pos", "neg"):
        (tmp_path / "aclImdb" / "test" / sub).mkdir(parents=True)
        (tmp_path / "aclImdb" / "test" / sub / "0_7.txt").write_text("a review")
    line = distill_error(capsys, tmp_path, tmp_path)
    assert "holds a test split but no train split" in line and "train/pos and train/neg" in line


def _acl_copy(root):
    """An aclImdb copy big enough for the tiny profile's carve: 120 train and 40 test reviews per class."""
    for split, n in (("train", 120), ("test", 40)):
        for sub in ("pos", "neg"):
            (root / split / sub).mkdir(parents=True)
            for i in range(n):
                (root / split / sub / f"{i}_{8 if sub == 'pos' else 2}.txt").write_text(f"{split} {sub} review {i}")
    return root


@pytest.mark.parametrize("make, said", [
    (lambda p: p.symlink_to(p.parent / "gone.txt"), "cannot be read (No such file or directory)"),
    (lambda p: p.mkdir(), "cannot be read (Is a directory)"),
    (lambda p: p.write_text("  \n"), "has no text: remove it, or fill it in")])
def test_an_aclimdb_review_file_that_cannot_be_read_is_named_in_one_line(tmp_path, capsys, make, said):
    """A broken link or a folder named like a review ended in a 50-line traceback; a blank review was read."""
    bad = _acl_copy(tmp_path / "aclImdb") / "train" / "pos" / "5001_8.txt"
    make(bad)
    line = distill_error(capsys, tmp_path, tmp_path)
    assert line.endswith(f"{bad} {said}" + ("" if "no text" in said else ": replace it with the review's text file, "
                                                                            "or remove it")), line


def test_macos_appledouble_files_in_an_aclimdb_copy_are_not_reviews(tmp_path):
    root = _acl_copy(tmp_path / "aclImdb")
    (root / "train" / "pos" / "._7_8.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    reviews = data._read_acl(root, "train/pos", 1)
    assert len(reviews) == 120 and all(t.startswith("train pos review") for t in reviews.texts)


def test_a_data_dir_that_is_a_file(tmp_path, capsys):
    path = write_parquet(tmp_path / "train.parquet", 20) / "train.parquet"
    line = distill_error(capsys, path, tmp_path)
    assert re.search(r"train.parquet is a file: give the folder that holds train.parquet", line)


@pytest.mark.parametrize("kind", ["folder", "broken link", "pipe", "device"])
def test_a_train_csv_that_is_no_file_is_named(tmp_path, capsys, kind):
    """The error said "expected train.parquet or train.csv ... found: train.csv" of a folder, a dangling link, a
    named pipe or a link to /dev/zero."""
    data = tmp_path / "data"
    data.mkdir()
    if kind == "folder":
        (data / "train.csv").mkdir()
    elif kind == "pipe":
        os.mkfifo(data / "train.csv")
    else:
        (data / "train.csv").symlink_to(tmp_path / "moved.csv" if kind == "broken link" else "/dev/zero")
    line = distill_error(capsys, data, tmp_path)
    what = {"folder": "a folder", "broken link": "a link to nothing"}.get(kind, "a device or a pipe")
    assert line.endswith(f"{data / 'train.csv'} is {what}, not a file: put the train.csv file itself there "
                         "(or leave --data-dir out for the profile's own data)"), line


def test_a_teacher_that_is_a_file_is_not_called_a_missing_folder(tmp_path, capsys):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    line = error_line(capsys, "distill", "--profile", "tiny", "--teacher", str(tmp_path / "model.safetensors"),
                      "--out", str(tmp_path / "out"))
    assert f"{tmp_path / 'model.safetensors'} is a file: give the folder written by save_pretrained()" in line


def test_a_teacher_folder_whose_weights_were_cut_short_gets_one_line(tmp_path, capsys):
    """A half-copied --teacher folder: safetensors' SafetensorError came out as a traceback."""
    from kd_tutorial import data, models
    folder = tmp_path / "teacher"
    models.load_teacher("tiny-bert").save_pretrained(folder)
    data.get_tokenizer(None).save_pretrained(folder)
    with open(folder / "model.safetensors", "r+b") as fh:
        fh.truncate(1000)
    line = error_line(capsys, "distill", "--profile", "tiny", "--teacher", str(folder), "--out", str(tmp_path / "out"))
    said = f"kd-tutorial: error: {folder} holds no model that transformers can load (SafetensorError: "
    assert line.startswith(said), line
    assert line.endswith("give a folder written by save_pretrained() (config.json and model.safetensors)"), line


def _unreadable_folder(kind, tmp_path):
    """A data folder that cannot hold reviews, of one ``kind``; the error it must give."""
    if kind == "missing":
        return tmp_path / "nowhere", "does not exist"
    if kind == "a file":
        return write_parquet(tmp_path / "train.parquet", 20) / "train.parquet", "is a file"
    (tmp_path / "data").mkdir()
    if kind == "test only":
        write_parquet(tmp_path / "data" / "test.parquet", 20)
        return tmp_path / "data", "holds a test split but no train split"
    (tmp_path / "data" / "notes.txt").write_text("hello")
    return tmp_path / "data", "expected train.parquet or train.csv .*found: notes.txt"


@pytest.mark.parametrize("kind", ["missing", "a file", "test only", "no reviews"])
@pytest.mark.parametrize("how", ["--data-dir", "KD_TUTORIAL_DATA_DIR"])
def test_an_unreadable_data_folder_is_refused_before_anything_loads(tmp_path, capsys, monkeypatch, kind, how):
    """From the folder's file names alone, before the time estimate, a model, a tokenizer or the pipeline."""
    folder, expected = _unreadable_folder(kind, tmp_path)
    for name in ("estimate", "run_distill", "loop_speed", "_benchmark_report"):
        monkeypatch.setattr(cli, name, lambda *a, **k: pytest.fail("work started before the data folder was checked"))
    given = ["--data-dir", str(folder)] if how == "--data-dir" else []
    if how == "KD_TUTORIAL_DATA_DIR":
        monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(folder))
    for command in (["distill", "--out", str(tmp_path / "out")], ["benchmark"]):
        line = error_line(capsys, *command, "--profile", "tiny", *given)
        assert re.search(expected, line) and folder.name in line, line
        # where the folder came from (a stale variable is not in the command) and how to do without it
        way_out = "leave --data-dir out" if how == "--data-dir" else "unset KD_TUTORIAL_DATA_DIR"
        assert how in line and way_out in line and "'hub'" not in line, line


@pytest.mark.parametrize("how", ["--teacher", "--set teacher="])
def test_a_teacher_folder_that_does_not_exist_is_refused_before_anything_loads(tmp_path, capsys, monkeypatch, how):
    """--set teacher= named a missing folder after the estimate, where --teacher named it before anything."""
    for name in ("estimate", "run_distill"):
        monkeypatch.setattr(cli, name, lambda *a, **k: pytest.fail("work started before the teacher was checked"))
    folder = str(tmp_path / "no-such-teacher")
    given = ["--teacher", folder] if how == "--teacher" else ["--set", f"teacher={folder}"]
    line = error_line(capsys, "distill", "--profile", "tiny", *given, "--out", str(tmp_path / "out"))
    assert re.search(r"no-such-teacher: no such folder: give a folder written by save_pretrained\(\) or a Hugging "
                     r"Face Hub name", line)


@pytest.mark.parametrize("teacher", ["a folder without a model", "a Hub name, offline and not cached"])
def test_a_teacher_whose_tokenizer_cannot_load_is_one_line(tmp_path, capsys, teacher):
    """The tokenizer is loaded before the teacher; transformers' OSError (a traceback before) becomes one line."""
    if teacher == "a folder without a model":
        (tmp_path / "empty-teacher").mkdir()
        given, expected = str(tmp_path / "empty-teacher"), r"empty-teacher holds no tokenizer that transformers can"
    else:
        given, expected = "no-such-org/no-such-bert", r"cannot load tokenizer 'no-such-org/no-such-bert' \(offline"
    line = error_line(capsys, "distill", "--profile", "tiny", "--teacher", given, "--out", str(tmp_path / "out"))
    assert re.search(expected, line), line


def test_a_teacher_folder_with_a_broken_config_names_it_and_leaves_no_out_folder(tmp_path, capsys):
    """Its tokenizer files were there, but the line blamed the tokenizer; and the run, refused inside the lock of
    --out, left that new folder holding only its lock file."""
    teacher = tmp_path / "teacher"
    data.get_tokenizer(None).save_pretrained(teacher)
    (teacher / "config.json").write_text("{not json")
    out = tmp_path / "new" / "out"
    line = error_line(capsys, "distill", "--profile", "tiny", "--teacher", str(teacher), "--out", str(out), "--quiet")
    assert re.search(r"teacher: its config.json cannot be read \(.*\): repair it \(save_pretrained\(\) writes it\), or "
                     r"give another folder$", line), line
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- profile values no run can use

@pytest.mark.parametrize("setting, expected", [
    ("max_length=2", r"max_length=2: give a whole number >= 3 \(room for \[CLS\], \[SEP\] and one token\)"),
    ("max_length=200", r"max_length=200: the tiny teacher has 128 positions; give --set max_length=N with N <= 128"),
    ("truncation=middle", r"truncation='middle': give one of head, tail, head\+tail"),
    ("markup=strip", r"markup='strip': give one of keep, space"),
    ("data_source=", r"data_source='': give tiny \(the built-in reviews\), hub, or a data folder \(an empty value "
                     r"read the current one\)"),  # it read the current folder, and listed its files
    ("temperature=0", r"temperature=0.0: give a number from 0.01 to 100 \(1 leaves"),
    ("temperature=1e-300", r"temperature=1e-300: give a number from 0.01 to 100"),  # 1 / T overflows: nan at step 1
    ("temperature=1e300", r"temperature=1e\+300: give a number from 0.01 to 100"),  # T ** 2 overflows
    ("alpha=2", r"alpha=2.0: give a number from 0 \(hard labels only\) to 1 \(soft targets only\)"),
    ("alpha=-0.5", r"alpha=-0.5: give a number from 0"),
    ("student_lr=-1e-3", r"student_lr=-0.001: give a number > 0"),
    ("teacher_epochs=0", r"teacher_epochs=0: give a number > 0"),
    ("student_epochs=0", r"student_epochs=0: give a number > 0"),
    ("warmup_fraction=1.5", r"warmup_fraction=1.5: give a number from 0 to 1"),
    ("weight_decay=-0.01", r"weight_decay=-0.01: give a number >= 0"),
    ("n_transfer=0", r"n_transfer=0: give None \(all\) or a whole number >= 1"),
    ("student_labels=1", r"student_labels=1: give None \(all of train\) or a whole number >= 2"),
    ("evals_per_run=0", r"evals_per_run=0: give a whole number >= 1"),
    ("patience=0", r"patience=0: give None \(no early stop\) or a whole number >= 1"),
    ("attention_dropout=1", r"attention_dropout=1.0: give None \(the model's own\) or a number from 0 to below 1"),
    ("student_hidden_dropout=-0.1", r"student_hidden_dropout=-0.1: give None \(the model's own\) or a number from 0"),
    ("val_size=True", r"val_size=True: give a whole number of validation reviews"),  # read as 1 review (a review)
])
def test_a_profile_value_no_run_can_use_is_refused_before_anything_loads(tmp_path, capsys, monkeypatch, setting,
                                                                          expected):
    """Before, some of these were tracebacks once the data or the teacher was loaded (max_length=2, truncation,
    n_transfer=0), alpha=2 was refused by the loss only after the teacher had trained, and others started training
    (temperature=0 divides by zero, a negative learning rate ascends the loss)."""
    for name in ("estimate", "run_distill"):
        monkeypatch.setattr(cli, name, lambda *a, **k: pytest.fail("work started with a value no run can use"))
    line = error_line(capsys, "distill", "--profile", "tiny", "--set", setting, "--out", str(tmp_path / "out"))
    assert re.search(expected, line), line


@pytest.mark.parametrize("seeds, expected", [((-1,), r"seeds=\(-1,\): give one or more whole numbers from 0 to 4294967295"),
                                             ((), r"seeds=\(\): give one or more whole numbers")])
def test_a_profile_with_seeds_no_run_can_use_is_refused(seeds, expected):
    """The notebooks take their seeds from the profile (the CLI from --seeds: --set seeds is refused, test_cli)."""
    from kd_tutorial.profiles import get_profile, ProfileOverrideError
    with pytest.raises(ProfileOverrideError, match=expected):
        get_profile("tiny").replace(seeds=seeds)


@pytest.mark.parametrize("argv", [["distill", "--seeds", "0", "-1"], ["distill", "--seed", "4294967296"],
                                  ["search", "--seed", "-1"], ["distill", "--seed", "one"],
                                  ["distill", "--seed", "\u0661"], ["distill", "--seed", "1_0"]])  # read as 1 and 10
def test_a_seed_out_of_range_is_refused_with_its_flag(capsys, monkeypatch, argv):
    """Before, torch or numpy refused -1 with a traceback once the run had loaded its data."""
    for name in ("run_distill", "run_search"):
        monkeypatch.setattr(cli, name, lambda *a, **k: pytest.fail("work started with a seed out of range"))
    with pytest.raises(SystemExit) as stop:
        cli.main(argv + ["--profile", "tiny"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"argument --seeds?: '[^']+' is not a seed: give a whole number from 0 to 4294967295", err), err


def test_the_early_checks_let_valid_runs_through(tmp_path, capsys, monkeypatch):
    """A Hub teacher with 512 positions may take max_length=256 on the tiny profile, and the benchmark report, which
    reads synthetic reviews, ignores an unreadable data folder: both get as far as their work."""
    class Reached(Exception):
        pass

    def reached(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(cli, "run_distill", reached)
    monkeypatch.setattr(cli, "_benchmark_report", reached)
    with pytest.raises(Reached):
        cli.main(["distill", "--profile", "tiny", "--teacher", "bert-base-uncased", "--set", "max_length=256",
                  "--out", str(tmp_path / "out"), "--quiet"])
    monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(Reached):
        cli.main(["benchmark", "--profile", "tiny", "--report", str(tmp_path / "bench.md")])


@pytest.mark.parametrize("where", ["under a file", "a folder"])
def test_a_benchmark_report_path_that_cannot_be_written_is_refused_before_measuring(tmp_path, capsys, monkeypatch,
                                                                                      where):
    """Before, every phase was measured and then lost to a FileNotFoundError traceback when the report was written."""
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: pytest.fail("measured before the path was checked"))
    (tmp_path / "notes.txt").write_text("a file")
    path, expected = ((tmp_path / "notes.txt" / "bench.json", r"the folder of --report .*notes.txt/bench.json is not "
                       r"a writable folder \(it is a file\): give a FILE in a folder you can write")
                      if where == "under a file" else (tmp_path, r"--report .* is a folder: give a file name"))
    line = error_line(capsys, "benchmark", "--profile", "tiny", "--report", str(path))
    assert re.search(expected, line), line


def test_a_benchmark_stopped_before_its_report_leaves_no_empty_folder(tmp_path, capsys, monkeypatch):
    """`benchmark --report nd/sub/b.json` stopped by SIGTERM said nothing was written, and left nd/sub behind:
    the path check made the folders, which the report's write makes itself."""
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "run_benchmark", stopped)
    with pytest.raises(KeyboardInterrupt):
        cli.cmd_benchmark(cli.build_parser().parse_args(
            ["benchmark", "--profile", "tiny", "--report", str(tmp_path / "nd" / "sub" / "b.json")]))
    assert not (tmp_path / "nd").exists()


# ----------------------------------------------------------------------------- report, benchmark, device


@pytest.mark.parametrize("content", ['{"accuracy": 0.9}', "[1, 2]", '{"run": {"profile": "tiny"}}'])
def test_report_on_json_that_is_not_a_results_json(tmp_path, capsys, content):
    (tmp_path / "r.json").write_text(content)
    line = error_line(capsys, "report", str(tmp_path / "r.json"))
    assert re.search(r"r.json is JSON but not a results.json \(it has no 'run' and 'models'\): give the "
                     r"results.json that `kd-tutorial distill` wrote", line)


def test_report_on_an_incomplete_results_json(tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps({"run": {"profile": "tiny"}, "models": [{"name": "teacher"}]}))
    line = error_line(capsys, "report", str(tmp_path / "r.json"))
    assert re.search(r"r.json is incomplete or edited \(KeyError: 'accuracy'\): give the results.json", line)


def test_report_into_a_readme_without_markers(tmp_path, capsys):
    results = {"run": {}, "models": [{"name": "teacher"}]}
    (tmp_path / "r.json").write_text(json.dumps(results))
    (tmp_path / "README.md").write_text("# no markers\n")
    line = error_line(capsys, "report", str(tmp_path / "r.json"), "--readme", str(tmp_path / "README.md"))
    assert "has no <!-- results:start --> ... <!-- results:end --> block: add those two lines" in line
    assert (tmp_path / "README.md").read_text() == "# no markers\n"  # nothing lost


@pytest.mark.parametrize("index", ["5", "-1"])
def test_benchmark_student_out_of_range(capsys, index):
    line = error_line(capsys, "benchmark", "--profile", "tiny", "--student", index, "--quiet")
    assert f"--student {index} is not a student of profile tiny: give one of 0 (distil-2L), 1 (compact-1L-H32)" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_names_the_devices_there(tmp_path, capsys):
    line = error_line(capsys, "distill", "--profile", "tiny", "--device", "cuda", "--out", str(tmp_path / "out"))
    assert re.search(r"--device cuda needs a CUDA GPU, and torch \S+ (is built without CUDA|sees none); available "
                     r"here: cpu.*: give one of them, or leave --device out", line)
    assert not (tmp_path / "out").exists()  # refused before anything was made


@pytest.mark.parametrize("command", ["distill", "benchmark"])
def test_an_unknown_device(capsys, command):
    line = error_line(capsys, command, "--profile", "tiny", "--device", "tpu")
    assert re.search(r"--device tpu is not a device the course runs on; available here: cpu", line)


def test_a_teacher_of_three_classes_is_refused_before_the_estimate_and_the_out_folder(tmp_path, capsys):
    """A 3-class sentiment BERT as --teacher printed the profile, the precision and an estimated time before its
    refusal (when the pipeline loaded it): its config says so before any of them. --init random, which loads no
    weight, takes it."""
    from kd_tutorial import models, pipeline, profiles
    models.load_teacher("tiny-bert", num_labels=3).save_pretrained(tmp_path / "three")
    capsys.readouterr()
    assert cli.main(["distill", "--profile", "tiny", "--teacher", str(tmp_path / "three"),
                     "--out", str(tmp_path / "out")]) == 2
    said = capsys.readouterr()
    assert "estimated time" not in said.out and "precision" not in said.out, said.out
    line = said.err.strip()
    assert line.endswith("three has a 3-class head, and the course's teacher needs 2 classes: give a BERT with a "
                         "2-class head, or none (a base checkpoint, such as bert-base-uncased)"), line
    assert not (tmp_path / "out").exists()
    tiny = profiles.get_profile("tiny")
    assert pipeline.check_teacher_shape(tiny, str(tmp_path / "three"), init="random").classes == 3


def test_a_teacher_folder_without_a_tokenizer_is_refused_before_the_estimate(tmp_path, capsys):
    """A model saved without its tokenizer, as --teacher of the tiny profile: the profile, the precision and an
    estimated time printed before the refusal, which came when the pipeline tokenized the built-in reviews."""
    from kd_tutorial import models
    models.load_teacher("tiny-bert").save_pretrained(tmp_path / "bare")  # the weights, no tokenizer
    capsys.readouterr()
    assert cli.main(["distill", "--profile", "tiny", "--teacher", str(tmp_path / "bare"),
                     "--out", str(tmp_path / "out")]) == 2
    said = capsys.readouterr()
    assert "estimated time" not in said.out, said.out
    assert said.err.strip().endswith("holds no tokenizer that transformers can load (it loads with only the 5 special "
                                     "tokens, so every word would be [UNK]): give a folder written by "
                                     "save_pretrained() (vocab.txt or tokenizer.json)"), said.err
    assert not (tmp_path / "out").exists()


def test_check_device_accepts_what_this_machine_has():
    for device in available_devices():
        assert cli.check_device(device) == device
    with pytest.raises(UsageError, match="available here"):
        cli.check_device("cuda:99")


def test_a_cpu_index_is_refused_and_cpu_0_is_the_cpu():
    # torch takes "cpu:1"; the pipeline compares the name with "cpu", so "cpu:0" ran as a GPU's would
    assert cli.check_device("cpu:0") == "cpu"
    with pytest.raises(UsageError, match=r"^--device cpu:1: the CPU is one device, with no index: give --device cpu$"):
        cli.check_device("cpu:1")


@pytest.mark.parametrize("command", ["distill", "benchmark", "search"])
def test_a_cpu_index_on_the_command_line(capsys, command):
    line = error_line(capsys, command, "--profile", "tiny", "--device", "cpu:2")
    assert line.endswith("--device cpu:2: the CPU is one device, with no index: give --device cpu")


# ----------------------------------------------------------------------------- the artifact root


def test_kd_tutorial_home_that_is_a_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    for home in (tmp_path / "a-file", tmp_path / "a-file" / "cache"):
        monkeypatch.setenv("KD_TUTORIAL_HOME", str(home))
        line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "out"))
        assert re.search(rf"KD_TUTORIAL_HOME={re.escape(str(home))} is not a writable folder \((it is a file|not a "
                         r"directory)\): point KD_TUTORIAL_HOME to a folder you can write, e.g. export "
                         r"KD_TUTORIAL_HOME=", line)
    assert (tmp_path / "a-file").read_text() == "not a folder"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_kd_tutorial_home_that_is_read_only(tmp_path, capsys, monkeypatch):
    """Guards against a read-only KD_TUTORIAL_HOME getting past the writability check (or its message losing the
    variable to change). Root writes into read-only folders, and CI runs as root: the check's probe file meets the
    folder's permission bits as a user's would, so the test runs there too."""
    import errno
    import stat
    import tempfile
    real = tempfile.TemporaryFile

    def as_a_user(*args, dir=None, **kwargs):
        if dir is not None and not os.stat(dir).st_mode & stat.S_IWUSR:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", as_a_user)
    (tmp_path / "ro").mkdir(mode=0o555)
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "ro"))
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "out"))
    assert "is not a writable folder (permission denied): point KD_TUTORIAL_HOME" in line
    assert not any((tmp_path / "ro").iterdir()) and not (tmp_path / "out").exists()  # refused before any write


def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "results").write_text("keep me")
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "results"))
    assert "--out " in line and "is not a writable folder (it is a file): give --out a folder you can write" in line
    assert (tmp_path / "results").read_text() == "keep me"


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="a system without /dev/null")
def test_out_that_is_a_device_says_so(capsys):
    """A review: --out /dev/null was "not a writable folder (file exists)", the errno of mkdir, which names no cause."""
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", "/dev/null")
    assert line.endswith("--out /dev/null is not a writable folder (it is a device or other special file, not a "
                         "folder): give --out a folder you can write")


# ----------------------------------------------------------------------------- the cache and checkpoints


def teacher_folder():
    """The tiny profile's artifact folder as ``kd-tutorial distill --profile tiny`` finds it."""
    from kd_tutorial.artifacts import prepare
    from kd_tutorial.profiles import get_profile
    return prepare(get_profile("tiny")).directory


def test_resume_from_a_checkpoint_of_another_configuration(tmp_path, capsys):
    checkpoint = teacher_folder() / "teacher-checkpoint" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"config": {"lr": 1.0}}, checkpoint)  # e.g. written by an older version of the course
    line = error_line(capsys, "distill", "--profile", "tiny", "--resume", "--out", str(tmp_path / "out"), "--quiet")
    assert re.search(r"last.pt.*different configuration.*delete", line)
    assert checkpoint.exists()  # nothing lost: the user decides


def test_a_corrupt_checkpoint(tmp_path, capsys):
    checkpoint = teacher_folder() / "teacher-checkpoint" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"half a checkpoint")
    line = error_line(capsys, "distill", "--profile", "tiny", "--resume", "--out", str(tmp_path / "out"), "--quiet")
    assert re.search(r"cannot read the checkpoint .*last.pt.*delete", line)


def test_a_corrupt_cached_teacher(tmp_path, capsys):
    folder = teacher_folder()
    (folder / "teacher").mkdir(parents=True)
    (folder / "teacher" / "config.json").write_text("{half a config")
    (folder / "teacher.json").write_text("{}")
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "out"), "--quiet")
    # the advice deletes the teacher only: its folder also holds the students, logits and layers cached from it,
    # and teacher.json, whose weights hash tells whether the retrained teacher is the same one
    assert f"cannot read the cached teacher in {folder} (OSError: " in line, line  # the class and its first line
    assert line.endswith(f"): delete {folder / 'teacher'} and "
                         "run again (the teacher is retrained; what was cached from the old one is kept if the new "
                         "one has the same weights, and set aside if not)"), line


def test_a_corrupt_teacher_record(tmp_path, capsys):
    folder = teacher_folder()
    (folder / "teacher").mkdir(parents=True)
    (folder / "teacher.json").write_text("{half a record")
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "out"), "--quiet")
    assert f"cannot read {folder / 'teacher.json'} (JSONDecodeError: Expecting property name" in line, line
    assert line.endswith("): delete it and run again (the "
                         "teacher is trained again; what was cached from the old one is kept if the new one has the "
                         "same weights, and set aside if not)"), line  # it said the teacher was kept: it is not
    assert (folder / "teacher").exists()


def test_an_artifact_error_is_one_line(monkeypatch, capsys):
    from kd_tutorial.store import ArtifactError

    def corrupt(args):
        raise ArtifactError("cannot read cached logits x.pt (EOFError): delete the file and run again")
    monkeypatch.setattr(cli, "cmd_distill", corrupt)
    assert error_line(capsys, "distill", "--profile", "tiny").endswith("x.pt (EOFError): delete the file and run again")


# ----------------------------------------------------------------------------- the error type


def test_every_package_error_the_cli_knows_is_a_user_error():
    from kd_tutorial.errors import ModelSourceError
    from kd_tutorial.models import VocabularyMismatchError
    from kd_tutorial.profiles import ProfileOverrideError, UnknownProfileError
    from kd_tutorial.recipes import UnknownRecipeError
    for error in (data.DataSourceError, UsageError, cli.UsageError, ModelSourceError, VocabularyMismatchError,
                  ProfileOverrideError, UnknownProfileError, UnknownRecipeError):
        assert issubclass(error, UserError), error
    assert issubclass(UnknownProfileError, ValueError) and issubclass(ModelSourceError, RuntimeError)  # as before


def test_artifact_and_divergence_errors_are_user_errors():
    from kd_tutorial.store import ArtifactError
    from kd_tutorial.train import TrainingDivergedError
    assert issubclass(ArtifactError, UserError) and issubclass(TrainingDivergedError, UserError)


def test_a_user_error_from_any_command_is_one_line_with_status_2(monkeypatch, capsys):
    def boom(args):
        raise UserError("something the user chose\nwith a second line")
    monkeypatch.setattr(cli, "cmd_report", boom)
    assert error_line(capsys, "report", "x.json") == "kd-tutorial: error: something the user chose"


@pytest.mark.parametrize("command, argv, says", [
    ("distill", ["--profile", "tiny"], "checkpoints are kept: run the same command with --resume to continue"),
    ("search", ["--profile", "tiny"], "finished trials are kept in --out's search.db: run the same command again to continue"),
    ("benchmark", ["--profile", "tiny"], "nothing was written: run the same command again")])
def test_interrupt_says_how_to_go_on_for_its_own_command(monkeypatch, capsys, command, argv, says):
    """Before, every command said "rerun with --resume", which search and benchmark do not take."""
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, f"cmd_{command}", interrupted)
    assert cli.main([command, *argv]) == 130
    err = capsys.readouterr().err
    assert err.startswith("kd-tutorial: interrupted; ") and err.strip().endswith(says), err


def test_an_interrupt_while_the_command_line_loads_is_one_line_too(monkeypatch, capsys):
    """Loading the command line (PyTorch) takes seconds, and Ctrl-C then printed a traceback."""
    import sys
    from kd_tutorial import console
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine: the thread policy stays

    class InterruptedImport:  # Ctrl-C lands while kd_tutorial.cli is being imported
        def find_spec(self, name, path=None, target=None):
            if name == "kd_tutorial.cli":
                raise KeyboardInterrupt
    with pytest.MonkeyPatch.context() as loading:
        loading.delitem(sys.modules, "kd_tutorial.cli")
        loading.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
        assert console.main() == 130
    assert capsys.readouterr().err == "kd-tutorial: interrupted while starting; nothing was written\n"
    monkeypatch.setattr(sys, "argv", ["kd-tutorial", "report", "missing.json"])  # loaded: the command runs
    assert console.main() == 2 and capsys.readouterr().err.startswith("kd-tutorial: error: ")


def test_a_busy_machine_gets_threads_that_wait_passively_and_is_told(monkeypatch, capsys, tmp_path):
    """OpenMP's spinning threads took the tiny teacher 2.6 times as long beside one busy process; passive waiting
    costs about 15 % on idle cores. So from a load of 1 on, unless the user chose a policy."""
    from kd_tutorial import benchmark, threads
    env = {}
    assert threads.quiet_threads_when_busy(env, load=0.9) is None and env == {}
    assert threads.quiet_threads_when_busy(env, load=1.6) == 1.6 and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    chosen = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.quiet_threads_when_busy(chosen, load=5.0) is None and chosen == {"OMP_WAIT_POLICY": "ACTIVE"}
    monkeypatch.delattr(os, "getloadavg")  # Windows has none
    assert threads.quiet_threads_when_busy({}) is None
    monkeypatch.setattr(threads, "busy_at", 1.6)
    said = ("threads: this machine was busy as the command started (load 1.6), so PyTorch's threads sleep while they "
            "wait instead of spinning (OMP_WAIT_POLICY=PASSIVE; set OMP_WAIT_POLICY=ACTIVE to keep them spinning)")
    for command in (["distill", "--profile", "tiny", "--data-dir", "/no/such"], ["search", "--profile", "tiny",
                    "--trials", "0"], ["benchmark", "--profile", "tiny", "--quick"], ["report", "/no/such.json"]):
        assert cli.main(command) == 2  # refused: nothing trained, so not told (it was, before the refusal)
        assert said not in capsys.readouterr().err, command
    started = []
    for name in ("run_distill", "run_search", "loop_speed", "run_benchmark"):  # the work, once the input passed
        monkeypatch.setattr(cli, name, lambda *a, **k: started.append(True) or (_ for _ in ()).throw(KeyboardInterrupt))
    for command in (["distill", "--profile", "tiny", "--out", str(tmp_path / "run")], ["search", "--profile", "tiny",
                    "--out", str(tmp_path / "study")], ["benchmark", "--profile", "tiny"],
                    ["benchmark", "--profile", "tiny", "--report", str(tmp_path / "b.json")]):
        assert cli.main(command) == 130 and started.pop(), command
        assert said in capsys.readouterr().err, command
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # and a benchmark report keeps it with its times
    assert benchmark.environment("cpu")["omp_wait_policy"] == "PASSIVE"


def test_a_benchmark_report_onto_a_file_that_is_not_one_is_refused_before_measuring(tmp_path, capsys, monkeypatch):
    """Before, --report results.json replaced a distill run's results with the benchmark's, exit 0."""
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: pytest.fail("measured before the path was checked"))
    for name, text in (("results.json", '{"run": {}, "models": []}'), ("NOTES.md", "# my notes\n")):
        (tmp_path / name).write_text(text)
        line = error_line(capsys, "benchmark", "--profile", "tiny", "--report", str(tmp_path / name))
        assert line.endswith(f"--report {tmp_path / name} exists and is not a benchmark report, so writing it would "
                             "lose it: give a new file name, or move that file away first"), line
        assert (tmp_path / name).read_text() == text
    (tmp_path / "old.json").write_text('{"kind": "benchmark"}')  # an earlier report of its kind may be replaced
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli.main(["benchmark", "--profile", "tiny", "--report", str(tmp_path / "old.json")]) == 130


@pytest.mark.parametrize("flag, field", [("--batch-size", "batch_size"), ("--grad-accum", "grad_accum")])
def test_a_setting_given_by_its_flag_and_by_set_is_refused(capsys, flag, field):
    """Before, --set batch_size=8 --batch-size 16 trained at 16 without a word."""
    line = error_line(capsys, "distill", "--profile", "tiny", "--set", f"{field}=8", flag, "16")
    assert line == f"kd-tutorial: error: {flag} and --set {field}= both set {field}: give one of them"


@pytest.mark.parametrize("setting, says", [("teacher_epochs=1e999", "teacher_epochs=inf: give a finite number"),
                                           ("budget_evaluation=(1,0)", "budget_evaluation=(1, 0): give None or"),
                                           ("time_budget_s=0",
                                            "time_budget_s=0: give None (not measured) or a number of seconds > 0")])
def test_set_values_that_crashed_later_are_refused_at_once(capsys, setting, says):
    """Before: an OverflowError and a ZeroDivisionError traceback in the time estimate."""
    assert says in error_line(capsys, "distill", "--profile", "cpu", "--set", setting)


@pytest.mark.parametrize("setting, line", [
    ("temperature=nan", "temperature=nan: give a finite number from 0.01 to 100 (1 leaves the teacher's"),
    ("temperature=inf", "temperature=inf: give a finite number from 0.01 to 100 (1 leaves the teacher's"),
    ("temperature=1e999", "temperature=inf: give a finite number from 0.01 to 100 (1 leaves the teacher's"),
    ("students=1", "--set 'students=1': --set cannot change students: choose them with --profile, or in Python "
                   "profile.replace(students=profile.students[:1]) (a tuple of StudentSpec)"),
    ("name=mine", "--set 'name=mine': --set cannot change name: --profile NAME picks a profile")])
def test_set_of_nan_inf_or_a_field_set_cannot_change_names_the_fix(capsys, setting, line):
    """A bad-input sweep: temperature=nan was told "takes float, not 'nan'" (nan is a float), 1e999 "a finite number"
    without the range every other temperature hears, and students=1 got the 37 fields --set takes, students not among
    them, as if it were misspelt."""
    said = error_line(capsys, "distill", "--profile", "tiny", "--set", setting)
    assert said.startswith(f"kd-tutorial: error: {line}"), said


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_workers_below_one_are_refused_with_the_flag(capsys, monkeypatch, value):
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("work started with --workers " + value))
    with pytest.raises(SystemExit) as stop:
        cli.main(["distill", "--profile", "tiny", "--workers", value])
    assert stop.value.code == 2
    assert f"argument --workers: '{value}' is not a whole number >= 1" in capsys.readouterr().err


def test_workers_reach_the_pipeline(tmp_path, monkeypatch):
    from kd_tutorial import parallel
    seen = {}
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: seen.update(k) or {"plots": []})
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    assert cli.main(["distill", "--profile", "tiny", "--workers", "3", "--out", str(tmp_path), "--quiet"]) == 0
    assert seen["workers"] == 3
    assert cli.main(["distill", "--profile", "tiny", "--out", str(tmp_path), "--quiet"]) == 0
    assert seen["workers"] is None  # the pipeline picks: kd_tutorial.parallel.default_workers


def test_workers_where_runs_cannot_go_side_by_side_are_refused_before_any_work(capsys, monkeypatch):
    from kd_tutorial import parallel
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr(parallel, "can_fork", lambda: False)
    line = error_line(capsys, "distill", "--profile", "tiny", "--workers", "2", "--device", "cpu")
    assert "--workers 2: runs train side by side only on a CPU under Linux, not on" in line
    assert line.endswith("(no safe fork); leave --workers out")
    monkeypatch.setattr(cli, "check_device", lambda name: name)  # as if this machine had the GPU
    line = error_line(capsys, "distill", "--profile", "tiny", "--workers", "2", "--device", "cuda:0")
    assert line.endswith("--workers 2: runs train side by side only on a CPU under Linux, not on cuda:0; leave "
                         "--workers out")


def test_more_workers_than_cores_are_refused_before_any_work(capsys, monkeypatch):
    """A review: --workers 99 on 2 cores was accepted, up to 8 forked workers of one thread each (one per run), every
    run slower and each holding a run's memory. Refused in one line naming the most the cores take."""
    from kd_tutorial import parallel
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    line = error_line(capsys, "distill", "--profile", "tiny", "--workers", "99", "--device", "cpu")
    assert line == ("kd-tutorial: error: --workers 99: this process may use 2 CPU core(s) and each worker computes in "
                    "one thread, so more workers than cores slow every run, and each holds a run's memory; give "
                    "--workers N with N <= 2")
    with pytest.raises(parallel.SideBySideError, match=r"^workers=3: .* give workers=N with N <= 2$"):
        parallel.check_workers(3, "cpu", setting="workers=3", fix="give workers=1")
    parallel.check_workers(2, "cpu", setting="workers=2", fix="give workers=1")  # as many as the cores: taken
    monkeypatch.setattr(parallel, "usable_cores", lambda: 1)
    assert error_line(capsys, "distill", "--profile", "tiny", "--workers", "2", "--device", "cpu").endswith(
        "each holds a run's memory; leave --workers out")


def test_a_hub_error_wrapped_in_an_oserror_is_one_line(monkeypatch, capsys):
    """transformers raises a plain OSError from huggingface_hub's LocalEntryNotFoundError (`prefetch` offline)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(args):
        try:
            raise LocalEntryNotFoundError("no connection and nothing cached")
        except LocalEntryNotFoundError as err:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files") from err

    monkeypatch.setattr(cli, "cmd_prefetch", offline)
    line = error_line(capsys, "prefetch", "--profile", "cpu")
    # prefetch is the command that failed: it is not its own fix; a mirror and the offline extra are
    assert line == ("kd-tutorial: error: cannot reach the Hugging Face Hub and nothing is cached: run it again where "
                    f"there is internet, or set HF_ENDPOINT to a mirror ({SETUP_MIRRORS}); the cpu teacher also "
                    "comes with the kd-tutorial[offline] extra, and IMDB from a folder in KD_TUTORIAL_DATA_DIR")
    monkeypatch.setattr(cli, "cmd_distill", offline)
    assert "run `kd-tutorial prefetch --profile full` where there is internet" in error_line(
        capsys, "distill", "--profile", "full")
    monkeypatch.setattr(cli, "cmd_prefetch", lambda args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):  # an OSError with no Hub error behind it is not hidden
        cli.main(["prefetch", "--profile", "cpu"])


@pytest.mark.parametrize("config", ["{'hidden_size': -5}", "{'hidden_size': 30}", "{'num_attention_heads': 3}",
                                    "{'bogus_key': 3}", "{'hidden_dropout_prob': 1.5}", "{'num_hidden_layers': 2.5}"])
def test_a_tiny_teacher_config_that_builds_no_bert_is_one_line(tmp_path, capsys, config):
    """Before: a negative width or one its heads do not divide was a transformers traceback; an unknown key ran."""
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "out"),
                      "--set", f"teacher_config={config}")
    assert line.startswith("kd-tutorial: error: teacher_config=") and "hidden_size a multiple of" in line, line
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_teacher_shallower_than_a_layer_copied_student_is_one_line(tmp_path, capsys):
    """Before: the student's layer mapping raised a ValueError traceback, after the teacher had trained."""
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "out"),
                      "--set", "teacher_config={'num_hidden_layers': 1}")
    assert line == ("kd-tutorial: error: student distil-2L maps its layers onto 2 of the teacher's, and the teacher "
                    "has 1: give --set \"teacher_config={'num_hidden_layers': N}\" (at least 2 layers)")


def test_check_depths_counts_layer_maps_and_intermediate_recipes():
    """A layer map reaches its deepest teacher layer; a compact student maps only with an intermediate recipe."""
    from kd_tutorial.errors import UsageError
    from kd_tutorial.pipeline import check_depths
    from kd_tutorial.profiles import get_profile
    full = get_profile("full")  # distil-4L copies teacher layers (2, 5, 8, 11): it needs 12
    check_depths(full, 12, 12)
    with pytest.raises(UsageError, match="student distil-4L maps its layers onto 12 of the teacher's, and the "
                                         "teacher has 11"):
        check_depths(full, 11, 12)
    compact = full.replace(students=tuple(s for s in full.students if s.kind == "compact"))
    spec = compact.students[0]
    layers = spec.num_layers
    check_depths(compact, layers - 1, 12, runs=("baseline", "kd+transfer"))  # logits only: no layer to map
    with pytest.raises(UsageError, match=f"onto {layers} of the teacher's"):
        check_depths(compact, layers - 1, 12, runs=("kd+transfer+hidden",))
    # +attn needs the teacher's head count: with other heads the pipeline skips it, so it maps no layer
    assert spec.num_heads != 12
    check_depths(compact, layers - 1, 12, runs=("baseline", "kd+transfer+attn"))
    with pytest.raises(UsageError, match=f"onto {layers} of the teacher's"):
        check_depths(compact, layers - 1, spec.num_heads, runs=("kd+transfer+attn",))


def test_relation_heads_that_do_not_divide_the_teachers_width_are_one_line(tmp_path, capsys):
    """Before: a teacher 63 wide (3 heads) trained, its layers were cached, then compact-1L-H32's kd+transfer+values
    run raised "ValueError: value_relation_kl: width 63 is not divisible by relation_heads=2" as a traceback."""
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "out"),
                      "--set", "teacher_config={'hidden_size': 63, 'num_attention_heads': 3}")
    assert line == ("kd-tutorial: error: student compact-1L-H32's recipe kd+transfer+values splits the widths into "
                    "relation_heads=2, which does not divide the teacher's width 63: give --set "
                    "\"teacher_config={'hidden_size': N}\" with N a multiple of relation_heads and of "
                    "num_attention_heads, or leave kd+transfer+values out with --recipes NAME [NAME ...]")
    assert not (tmp_path / "out").exists()


def test_check_relation_heads_reads_only_the_value_recipes_that_run():
    """Logits-only recipes split nothing; a student's own width counts as the teacher's does."""
    from kd_tutorial.pipeline import check_relation_heads
    from kd_tutorial.profiles import get_profile
    tiny = get_profile("tiny")
    check_relation_heads(tiny, 64, 4)
    check_relation_heads(tiny, 63, 3, runs=("baseline", "kd+transfer", "kd+transfer+pkd"))
    with pytest.raises(UsageError, match=r"student distil-2L's recipe kd\+transfer\+values .* teacher's width 63"):
        check_relation_heads(tiny, 63, 3, runs=("kd+transfer+values",))
    odd = tiny.replace(students=(dataclasses.replace(tiny.students[1], hidden_size=30, relation_heads=4),))
    with pytest.raises(UsageError, match="does not divide the student compact-1L-H32's width 30"):
        check_relation_heads(odd, 64, 4)


def test_a_grad_accum_beyond_an_epoch_is_one_line():
    """Before: --set grad_accum=1000 on tiny (32 micro-batches an epoch) trained the teacher one 1000-row step an
    epoch and each student one step, while results.json recorded batches of 32 x 1000."""
    from kd_tutorial.pipeline import check_grad_accum
    from kd_tutorial.profiles import get_profile
    tiny = get_profile("tiny")
    check_grad_accum(tiny.replace(grad_accum=32), 1000)  # 32 micro-batches of 32 (the last of 8): one step
    with pytest.raises(UsageError) as err:
        check_grad_accum(tiny.replace(grad_accum=33), 1000)
    assert str(err.value) == ("grad_accum=33: an epoch of the teacher's 1000 training reviews holds 32 micro-batch(es) "
                              "of batch_size=32, so no step could gather 33: give --set grad_accum=N with N <= 32 "
                              "(--grad-accum N)")


def _fake_prep(train: int, transfer: int):
    """A prepared data set of ``train`` labelled and ``transfer`` unlabelled one-token reviews, no spare ones."""
    from types import SimpleNamespace

    from kd_tutorial.data import Encoded
    encoded = {"train": Encoded([[1]] * train, torch.arange(train) % 2, "train"),
               "transfer": Encoded([[1]] * transfer, torch.full((transfer,), -1), "transfer")}
    return SimpleNamespace(encoded=encoded, spare_rows=lambda: 0, data=SimpleNamespace(notes=[]), tokenizer=None)


def test_a_grad_accum_beyond_an_epoch_of_a_students_labelled_reviews_is_one_line(monkeypatch):
    """Before: --set grad_accum=12 on tiny passed the teacher's check (1000 reviews, 32 micro-batches), while the
    students' baseline trains on their 300 labelled reviews (10 micro-batches): each of its steps was a whole epoch
    of 300 rows, not the 32 x 12 that results.json records. The line names the largest grad_accum every run fits."""
    from kd_tutorial import pipeline
    from kd_tutorial.profiles import get_profile
    tiny, prep = get_profile("tiny"), _fake_prep(1000, 3000)
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **kw: prep)
    where = dict(data_dir=None, teacher=None, init="pretrained", seed=0)
    with pytest.raises(UsageError) as err:
        pipeline._before_the_teacher(tiny.replace(grad_accum=11), runs=None, **where)
    assert str(err.value) == ("grad_accum=11: an epoch of the 300 labelled reviews that student distil-2L's baseline "
                              "trains on holds 10 micro-batch(es) of batch_size=32, so no step could gather 11: give "
                              "--set grad_accum=N with N <= 10 (--grad-accum N)")
    pipeline.check_grad_accum(tiny.replace(grad_accum=10), 1000, pipeline.students_rows(tiny, prep))
    transfer_only = pipeline.students_rows(tiny, prep, runs=("kd+transfer",))  # 300 + 3000 rows: the teacher's bind
    assert transfer_only == {f"the 3300 labelled and transfer reviews that student {s.name}'s runs train on": 3300
                             for s in tiny.students}
    pipeline.check_grad_accum(tiny.replace(grad_accum=32), 1000, transfer_only)
    with pytest.raises(UsageError, match="an epoch of the teacher's 1000 training reviews holds 32 micro-batch"):
        pipeline.check_grad_accum(tiny.replace(grad_accum=33), 1000, transfer_only)


def test_student_labels_beyond_the_training_reviews_is_refused_in_one_line_before_the_teacher(monkeypatch):
    """Before: --set student_labels=100000 on tiny was quietly capped to the 1000 training reviews (labelled_subset
    keeps all rows), so the runs grew to 375 steps while results.json's settings and the run keys recorded 100000.
    The line names the largest value that fits; the value itself, and None, pass."""
    from kd_tutorial import pipeline, plan
    from kd_tutorial.profiles import get_profile
    tiny, prep = get_profile("tiny"), _fake_prep(1000, 3000)
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **kw: prep)
    where = dict(data_dir=None, teacher=None, init="pretrained", seed=0, runs=None)
    with pytest.raises(UsageError) as err:
        pipeline._before_the_teacher(tiny.replace(student_labels=100000), **where)
    assert str(err.value) == ("student_labels=100000 is more than the 1000 labelled training reviews there are: give "
                              "--set student_labels=N with 2 <= N <= 1000 or --set student_labels=None (all of them)")
    with pytest.raises(UsageError, match=r"student_labels=300 is more than the 200 .* or a larger --set n_train=N "
                                         r"\(it keeps 200\)$"):
        plan.check_student_labels(tiny.replace(n_train=200), 200)
    for fits in (1000, None):
        pipeline._before_the_teacher(tiny.replace(student_labels=fits), **where)


def test_the_grad_accum_check_leaves_out_a_students_runs_that_cannot_run_under_the_teacher(monkeypatch):
    """A student whose only recipe maps attention with another head count than the teacher's trains nothing (the
    run says so and leaves it out), so its reviews must not bind grad_accum. Before, students_rows counted them."""
    import dataclasses

    from kd_tutorial import pipeline
    from kd_tutorial.profiles import get_profile
    tiny, prep = get_profile("tiny"), _fake_prep(1000, 3000)
    distil, compact = tiny.students  # compact-1L-H32 has 2 heads, the tiny teacher 4
    only_attn = tiny.replace(students=(dataclasses.replace(distil, recipes=("kd+transfer+attn",)),
                                       dataclasses.replace(compact, recipes=("kd+transfer+attn",))))
    both = "the 3300 labelled and transfer reviews that student {}'s runs train on"
    assert pipeline.students_rows(only_attn, prep) == {both.format(s.name): 3300 for s in tiny.students}
    assert pipeline.students_rows(only_attn, prep, teacher_heads=4) == {both.format(distil.name): 3300}
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **kw: prep)
    told = []
    monkeypatch.setattr(pipeline, "check_grad_accum", lambda profile, rows, sets: told.append(sets))
    pipeline._before_the_teacher(only_attn, data_dir=None, teacher=None, init="pretrained", seed=0, runs=None)
    assert told == [{both.format(distil.name): 3300}]  # the tiny teacher's heads, read from its config


def test_fewer_validation_passes_than_evals_per_run_asks_are_said_and_recorded(capsys):
    """Before: --set evals_per_run=1000 on tiny validated each 310-step run after every step (310 passes) without a
    word, and results.json's plan recorded nothing of it; 10 steps at evals_per_run=7 validated every 2nd: 5 passes.
    The student's line says how often and how many times, and the plan records it, only where they are fewer."""
    from kd_tutorial import pipeline, plan
    from kd_tutorial.profiles import get_profile
    tiny = get_profile("tiny")
    assert plan.validation_passes(tiny, 310) == (104, 3) and pipeline._evals_plan(tiny, 310) == {}
    assert plan.validation_passes(tiny.replace(evals_per_run=7), 10) == (2, 5)
    assert plan.run_config(tiny.replace(evals_per_run=7), tiny.students[0], "baseline", 10, 0).eval_every == 2
    recorded = {"steps": 310, "recipes": {"baseline": {}}} | pipeline._evals_plan(tiny.replace(evals_per_run=1000), 310)
    assert recorded["validation_passes"] == 310 and recorded["validation_every"] == 1
    pipeline._announce("distil-2L", recorded)
    pipeline._announce("s", {"steps": 10, "recipes": {}} | pipeline._evals_plan(tiny.replace(evals_per_run=7), 10))
    assert capsys.readouterr().out.splitlines() == [
        "distil-2L: 310 steps per run; recipes baseline; validated after every step: 310 passes per run, fewer than "
        "evals_per_run asks (at most one a step)",
        "s: 10 steps per run; recipes ; validated every 2 steps and after the last: 5 passes per run, fewer than "
        "evals_per_run asks (passes are a whole number of steps apart)"]


def test_a_students_own_evals_per_run_sets_its_validation_grid_and_keys_as_the_profiles_would(capsys):
    """e34: compact-2L-H128's baseline, validated 3 times in its 2,785 steps, never saw its best pass (steps 279 to
    651), so the cpu profile gives that student 30 passes of its own. Its runs validate on that grid, say so, count
    the passes in the time estimate, and key as the same grid asked by the profile would (the runs e34 cached with
    --set evals_per_run=30 are the preset's); a bad number is refused in one line, and --set evals_per_run where every
    student sets its own would change nothing."""
    from kd_tutorial import pipeline, plan, profiles
    from kd_tutorial.profiles import get_profile, ProfileOverrideError, StudentSpec
    cpu = get_profile("cpu")
    distil, compact = cpu.students
    assert (cpu.evals_per_run, distil.evals_per_run, compact.evals_per_run) == (3, None, 30)
    config = plan.run_config(cpu, compact, "baseline", 2785, 0)
    assert plan.validation_passes(cpu, 2785, compact) == (93, 30) and config.eval_every == 93
    assert plan.run_config(cpu, distil, "baseline", 562, 0).eval_every == 188  # the profile's 3
    asked, plain = cpu.replace(evals_per_run=30), dataclasses.replace(compact, evals_per_run=None)
    key = plan.run_key(cpu, compact, config, "pretrained")
    assert key == plan.run_key(asked, plain, plan.run_config(asked, plain, "baseline", 2785, 0), "pretrained")
    assert key != plan.run_key(cpu, plain, plan.run_config(cpu, plain, "baseline", 2785, 0), "pretrained")
    recorded = pipeline._evals_plan(cpu, 2785, compact)
    assert recorded == {"evals_per_run": 30} and pipeline._evals_plan(cpu, 562, distil) == {}
    pipeline._announce("compact-2L-H128", {"steps": 2785, "recipes": {"baseline": {}}} | recorded)
    assert capsys.readouterr().out == ("compact-2L-H128: 2785 steps per run; recipes baseline; validated 30 times a "
                                       "run (its own evals_per_run)\n")
    # the budget's seed was timed with the 30 passes (6f66fe0): 3 passes would be 27 fewer in each of 4 runs
    folder, three = dict(profiles.BUDGET_SOURCE["cpu"]), cpu.replace(students=(distil, plain))
    assert estimates.work_ratio(cpu, source=folder) == 1.0 and 0.9 < estimates.work_ratio(three, source=folder) < 0.99
    with pytest.raises(ProfileOverrideError) as err:
        StudentSpec("c", "compact", 1, hidden_size=8, num_heads=2, intermediate_size=16, evals_per_run=0)
    assert str(err.value) == "student c: evals_per_run=0: give a whole number >= 1, or None for the profile's"
    both = cpu.replace(students=(dataclasses.replace(distil, evals_per_run=5), compact))
    with pytest.raises(ProfileOverrideError, match="every student of the cpu profile sets its own evals_per_run, so "
                                                   "evals_per_run would change nothing"):
        both.with_overrides(["evals_per_run=4"])


@pytest.mark.parametrize("own, shown, give", [
    ({"lr": 0}, "lr=0", "a number > 0"),
    ({"epochs": "1"}, "epochs='1'", "a number > 0"),
    ({"lr": float("inf")}, "lr=inf", "a finite number > 0"),
    ({"epochs": float("nan")}, "epochs=nan", "a finite number > 0"),
    ({"recipes": ()}, "recipes=()", "a tuple of one or more recipe names, ('kd+transfer',) say"),
    ({"recipes": ["kd"]}, "recipes=['kd']", "a tuple of one or more recipe names, ('kd+transfer',) say"),
])
def test_a_students_own_default_is_refused_where_the_profiles_would_be(own, shown, give):
    """A student's own lr, epochs, recipes or evals_per_run stands in for the profile's field (Profile.for_student),
    so it is held to that field's rule. Before, ``lr=0`` and ``recipes=()`` fell back to the profile's value without a
    word (``spec.lr or profile.student_lr``), and ``epochs='1'`` failed deep in the step budget."""
    from kd_tutorial.profiles import ProfileOverrideError, StudentSpec
    with pytest.raises(ProfileOverrideError) as err:
        StudentSpec("s", "distil", 2, **own)
    assert str(err.value) == f"student s: {shown}: give {give}, or None for the profile's"


def test_a_student_default_is_the_students_own_else_the_profiles():
    """One rule, Profile.for_student, gives every run its epochs, lr, recipes and validation passes."""
    from kd_tutorial import plan
    from kd_tutorial.profiles import get_profile
    cpu = get_profile("cpu")
    distil, compact = cpu.students
    assert [cpu.for_student("student_lr", s) for s in (distil, compact, None)] == [1e-4, 5e-4, cpu.student_lr]
    assert cpu.for_student("evals_per_run", distil) == 3 and cpu.for_student("evals_per_run", compact) == 30
    plain = dataclasses.replace(distil, lr=None, epochs=None, recipes=None)
    assert plan.run_config(cpu.replace(student_lr=3e-4), plain, "baseline", 10, 0).lr == 3e-4
    assert plan.step_budget(cpu.replace(student_epochs=2), plain, 160) == 20
    assert [r.name for r in plan.student_recipes(cpu, plain)] == list(cpu.recipes)


def test_a_set_student_default_names_who_keeps_their_own_and_patience_waits_alike_for_every_student(capsys):
    """A review of the per-student evals_per_run found `--set evals_per_run=10` on cpu silently changing distil-3L
    alone (compact-2L-H128 keeps its own 30), and `--set patience=2` stopping compact-2L-H128 after 186 steps without
    a gain but distil-3L after 376: patience counted each student's own passes. The command line now names the
    students that keep their own value, and patience counts passes of the profile's grid."""
    import argparse
    from kd_tutorial import plan
    from kd_tutorial.profiles import get_profile
    cpu = get_profile("cpu")
    changed = cli._profile(argparse.Namespace(profile="cpu", set=["evals_per_run=10", "temperature=3"]))
    assert capsys.readouterr().out.splitlines()[0] == (
        "--set evals_per_run=10 applies to the students that set no evals_per_run of their own; compact-2L-H128 "
        "(evals_per_run=30) keeps its own (its StudentSpec in kd_tutorial/profiles.py)")
    distil, compact = changed.students
    assert plan.validation_passes(changed, 562, distil) == (57, 10)
    assert plan.validation_passes(changed, 2785, compact) == (93, 30)
    waits = {}
    for spec, steps in ((distil, 562), (compact, 2785)):
        config = plan.run_config(cpu.replace(patience=2), spec, "baseline", steps, 0)
        waits[spec.name] = (config.patience, config.patience * config.eval_every / steps)
    assert waits["distil-3L"][0] == 2 and waits["compact-2L-H128"][0] == 20  # 2 of 3 passes: 20 of 30
    assert waits["distil-3L"][1] == pytest.approx(waits["compact-2L-H128"][1], abs=0.01)  # 2/3 of the run
    assert plan.run_config(cpu, compact, "baseline", 2785, 0).patience is None


def test_a_model_folder_without_tokenizer_files_is_named_as_such(tmp_path):
    """transformers loads such a folder's tokenizer with its 5 special tokens only; the error used to be a
    "tokenizer mismatch" telling the user to give the student the teacher's tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    from kd_tutorial.data import get_tokenizer
    from kd_tutorial.errors import ModelSourceError
    BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=8, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=8)).save_pretrained(tmp_path)
    with pytest.raises(ModelSourceError) as err:
        get_tokenizer(str(tmp_path))
    assert str(err.value) == (f"{tmp_path} holds no tokenizer that transformers can load (it loads with only the 5 "
                              "special tokens, so every word would be [UNK]): give a folder written by "
                              "save_pretrained() (vocab.txt or tokenizer.json)")


@pytest.mark.parametrize("saved, wrong", [
    ({"a": 1}, "hold dict, not a table of 4 rows"),
    (torch.zeros(4), "hold Tensor(4,), not a table of 4 rows"),
    (torch.zeros(3, 2), "have 3 rows for 4 reviews"),
    (torch.zeros(4, 5), "have 5 columns for 2 classes"),
    (torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [1.0, 0.0], [0.0, 0.0]]), "hold NaN or infinite values")])
def test_cached_logits_that_no_run_can_use_name_the_file(tmp_path, saved, wrong):
    """Before: a dict was an AttributeError traceback, 5 columns a size mismatch in the loss, and NaN logits were
    used, ending in "the loss became nan: lower the learning rate", which pointed away from the cache file."""
    from kd_tutorial import teachers
    from kd_tutorial.store import ArtifactError
    path = tmp_path / "train.logits.pt"
    torch.save(saved, path)
    with pytest.raises(ArtifactError) as err:
        teachers.load_cached_logits(path, 4, width=2)
    assert str(err.value) == f"cached logits {path} {wrong}: delete the file and run again"
    assert path.exists()  # the user deletes it: nothing is removed behind their back
    if wrong.endswith("classes"):  # [CLS] states (no width given) are (rows, layers, hidden): a table is refused
        with pytest.raises(ArtifactError, match=r"hold Tensor\(4, 5\), not \(rows, layers, hidden\)"):
            teachers.load_cached_logits(path, 4)


@pytest.mark.parametrize("kwargs, expected", [
    ({"seed": -1}, r"setup\(seed=-1\): give a whole number from 0 to 4294967295"),
    ({"seed": "0"}, r"setup\(seed='0'\): give a whole number"),
    ({"seed": 1.5}, r"setup\(seed=1.5\): give a whole number"),
    ({"offline": "no"}, r"setup\(offline='no'\): give True, False, or None"),
    ({"profile": ""}, r"setup\(profile=''\): give a profile name \(tiny, cpu, full\), or None")])
def test_setup_refuses_what_it_cannot_use_in_one_line(kwargs, expected):
    """Before: numpy's ValueError/TypeError tracebacks for seeds, "no" taken as offline, "" as the default profile."""
    from kd_tutorial import env
    from kd_tutorial.errors import UsageError
    with pytest.raises(UsageError, match=expected):
        env.setup(**kwargs)


@pytest.mark.parametrize("argv, expected", [
    (["--quick"], "--quick shortens the --report measurement: give --report FILE too, or leave --quick out"),
    (["--report", "r.json", "--student", "1"], "--report measures every student with random weights on synthetic "
                                               "reviews, so --student would change nothing: leave it out"),
    (["--report", "r.json", "--init", "random"], "so --init would change nothing")])
def test_benchmark_options_its_mode_would_drop_are_refused(capsys, argv, expected):
    """Before: each ran (exit 0) without the option, and said nothing."""
    line = error_line(capsys, "benchmark", "--profile", "tiny", *argv)
    assert expected in line, line


def test_a_results_file_with_no_models_is_refused(tmp_path, capsys):
    """Before: an empty table, exit 0."""
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"run": {}, "models": []}))
    line = error_line(capsys, "report", str(path))
    assert line.startswith(f"kd-tutorial: error: results file {path} lists no models: give the results.json that")


def test_a_repeated_option_keeps_every_value():
    """`--set temperature=4 --set alpha=0.9` trained with alpha alone, and `--seeds 0 --seeds 1` with seed 1: the
    last occurrence replaced the others without a word."""
    args = cli.build_parser().parse_args(["distill", "--set", "temperature=4", "--set", "alpha=0.9", "--seeds", "0",
                                          "--seeds", "1", "--recipes", "kd", "--recipes", "baseline"])
    assert (args.set, args.seeds, args.recipes) == (["temperature=4", "alpha=0.9"], [0, 1], ["kd", "baseline"])
    profile = cli._profile(args)
    assert (profile.temperature, profile.alpha) == (4.0, 0.9)


@pytest.mark.parametrize("argv, says", [
    (["--set", "alpha=0.5", "--set", "alpha=0.9"], "--set sets alpha twice ('alpha=0.9' after an earlier alpha=)"),
    (["--set", "alpha=0.5", "alpha=0.9"], "--set sets alpha twice"),
    (["--seeds", "0", "--seeds", "0"], "--seeds 0 0 repeats a seed"),
    (["--recipes", "kd", "--recipes", "kd"], "--recipes names kd more than once")])
def test_a_value_given_twice_is_refused_not_overwritten(tmp_path, capsys, monkeypatch, argv, says):
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("work started with a value given twice"))
    assert says in error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "out"), *argv)


def test_spaces_around_the_equals_sign_of_set_are_named(tmp_path, capsys, monkeypatch):
    """``--set temperature = 4`` reached the profile as three items, and the line listed every field."""
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("work started"))
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "out"), "--set", "temperature",
                      "=", "4")
    assert line.endswith("--set 'temperature': expected FIELD=VALUE with no spaces around '=': "
                         "--set temperature=VALUE"), line


@pytest.mark.parametrize("command", ["distill", "benchmark", "search", "env"])
def test_an_unknown_flag_points_to_the_help_of_its_own_command(capsys, command):
    """The top-level help lists no sub-command's flags; the error pointed there."""
    with pytest.raises(SystemExit) as stop:  # argparse's exit, with its one line
        cli.main([command, "--batch-sise", "8"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (f"kd-tutorial: error: unrecognized arguments: --batch-sise 8 (see kd-tutorial "
                                       f"{command} --help)\n")


def test_tiny_turns_the_hub_off_only_where_the_run_needs_nothing_from_it(tmp_path, monkeypatch):
    """`distill --profile tiny --teacher prajjwal1/bert-mini` set HF_HUB_OFFLINE=1, and then could not download the
    teacher it was asked for, on a machine with internet."""
    seen = {}
    def run_distill(*args, **kwargs):
        seen["hub"] = os.environ.get("HF_HUB_OFFLINE")
        return {"plots": []}
    monkeypatch.setattr(cli, "run_distill", run_distill)
    monkeypatch.setattr(cli, "estimate", lambda *a, **k: "")
    monkeypatch.setattr(cli, "hub_reachable", lambda: True)  # a machine with internet (this one has none)
    data.get_tokenizer(None).save_pretrained(tmp_path / "teacher")  # a teacher folder: its tokenizer is read first
    for teacher, offline in ((None, "1"), (str(tmp_path / "teacher"), "1"), ("prajjwal1/bert-mini", None)):
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            monkeypatch.delenv(name, raising=False)  # restored after the test
        cli.main(["distill", "--profile", "tiny", "--out", str(tmp_path / "out"), "--quiet"] +
                 (["--teacher", teacher] if teacher else []))
        assert seen.pop("hub") == offline, teacher
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cli.main(["distill", "--profile", "tiny", "--set", "data_source='hub'", "--out", str(tmp_path / "out")])
    assert seen.pop("hub") is None  # the Hub's IMDB


def test_prefetch_with_the_hub_turned_off_says_how_to_turn_it_on(capsys, monkeypatch):
    """The README's workshop block exports HF_HUB_OFFLINE=1; a later prefetch in that shell failed with "run
    `kd-tutorial prefetch` where there is internet", the command just run."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    line = error_line(capsys, "prefetch", "--profile", "cpu")
    assert line.endswith("HF_HUB_OFFLINE turns it off in this shell: run `unset HF_HUB_OFFLINE`, then prefetch again")
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")  # any spelling the Hugging Face libraries read as on
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert "run `unset HF_HUB_OFFLINE HF_DATASETS_OFFLINE`" in error_line(capsys, "prefetch", "--profile", "cpu")
    # --models-only downloads no dataset, so the datasets' flag does not stop it
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert cli.offline_flags(models_only=True) == [] and cli.offline_flags() == ["HF_DATASETS_OFFLINE"]
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    assert cli.offline_flags(models_only=True) == ["TRANSFORMERS_OFFLINE"]


def test_max_length_beyond_a_hub_teachers_positions_is_refused_before_training(tmp_path, monkeypatch):
    """Only the built-in teacher's positions were checked: `--set max_length=1024` with a Hub teacher of 512
    positions loaded the data and the teacher, then stopped with a tensor-size traceback in the first step."""
    from kd_tutorial import models, teachers
    from kd_tutorial.profiles import get_profile
    monkeypatch.setattr(teachers, "train", lambda *a, **k: pytest.fail("trained with too long reviews"))
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path))
    small = get_profile("tiny").replace(teacher_config={"max_position_embeddings": 32}, max_length=48)
    with pytest.raises(UsageError, match=r"^max_length=48: the teacher has 32 positions; give --set max_length=N "
                                         r"with N <= 32$"):
        teachers.ensure_teacher(small, progress=False)
    models.check_positions(teachers.teacher_for_profile(small).config.max_position_embeddings, 32)  # what fits


def test_recipes_all_stands_alone_and_seed_with_seeds_is_refused(tmp_path, capsys, monkeypatch):
    """`--recipes all --recipes kd` (now one list) said 'all' was an unknown recipe; `--seed 0 --seeds 1` ran seed 1
    alone: argparse took --seed 0 for its default and saw no conflict."""
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("work started"))
    out = ["--out", str(tmp_path / "out")]
    assert "'all' stands alone" in error_line(capsys, "distill", "--profile", "tiny", "--recipes", "all", "kd", *out)
    with pytest.raises(SystemExit):
        cli.main(["distill", "--profile", "tiny", "--seed", "0", "--seeds", "1", *out])
    assert "argument --seeds: not allowed with argument --seed" in capsys.readouterr().err


def test_a_bad_data_dir_with_the_variable_also_set_says_to_drop_both(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(tmp_path / "elsewhere"))
    line = error_line(capsys, "distill", "--profile", "tiny", "--data-dir", str(tmp_path / "nowhere"))
    assert "(or leave --data-dir out and unset KD_TUTORIAL_DATA_DIR for the profile's own data)" in line


def test_distill_does_not_replace_a_results_json_it_did_not_write(tmp_path, capsys, monkeypatch):
    """--out's results.json was deleted before the run whatever it held: a user's own file of that name was lost."""
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "results.json").write_text('{"my": "own experiment log"}')
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path))
    assert line.endswith("results.json exists and is not a kd-tutorial results.json, so writing it would lose it: "
                         "give another --out, or move that file away first"), line
    assert (tmp_path / "results.json").read_text() == '{"my": "own experiment log"}'


def test_an_out_folder_with_a_stray_space_is_refused_before_a_folder_is_made(tmp_path, capsys, monkeypatch):
    """A review: `--out 'o8 '` ran into a new folder named "o8 ", where --data-dir refuses a stray space."""
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("work started"))
    out = f"{tmp_path / 'o8'} "
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", out)
    assert line == f"kd-tutorial: error: --out {out!r} starts or ends with a space: give the path alone: {out.strip()}"
    assert not os.path.exists(out)


def test_distill_does_not_replace_a_plot_it_did_not_write(tmp_path, capsys, monkeypatch):
    """A review: --out's results.json was protected, but a user's own training_curves.png there was replaced by the
    run's plot. A folder holding a plot's name is written only when it is a kd-tutorial run's (its results.json, or
    the file a run cut short leaves)."""
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "training_curves.png").write_bytes(b"my own plot")
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path))
    assert line == (f"kd-tutorial: error: --out {tmp_path} holds training_curves.png, which no kd-tutorial run there "
                    "wrote, and the run would replace it: move it away, or give another --out")
    assert (tmp_path / "training_curves.png").read_bytes() == b"my own plot"
    (tmp_path / "results.json").write_text('{"run": {}, "models": []}')  # an earlier run's folder: its plots go
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: (_ for _ in ()).throw(UsageError("the run started")))
    assert error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path)).endswith("the run started")


@pytest.mark.parametrize("command", ["distill", "report"])
def test_a_folder_where_a_file_goes_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command):
    """A folder named results.json (or --summary) passed every check and failed with a traceback when the file was
    written, after the whole run."""
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("work started"))
    summary = os.path.join(os.path.dirname(__file__), "..", "docs", "results", "tiny.json")
    target = tmp_path / ("results.json" if command == "distill" else "summary.json")
    target.mkdir()
    args = (["distill", "--profile", "tiny", "--out", str(tmp_path)] if command == "distill"
            else ["report", summary, "--summary", str(target)])
    line = error_line(capsys, *args)
    assert f"{target} is a folder, where {'--out' if command == 'distill' else '--summary'} writes a file" in line
    assert target.is_dir() and not any(target.iterdir())


def test_prefetch_where_the_hub_does_not_answer_or_its_cache_is_not_writable_is_one_line_before_any_download(
        capsys, monkeypatch, tmp_path):
    """Without internet, prefetch printed a minute of the clients' "Retrying" lines before its advice; with a Hugging
    Face cache it could not write, transformers' PermissionError (wrapped in a plain OSError) was a traceback."""
    import huggingface_hub.constants as hf_constants
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli, "_download", lambda *a, **k: pytest.fail("downloaded"))
    monkeypatch.setattr(cli, "hub_reachable", lambda: False)
    assert error_line(capsys, "prefetch", "--profile", "cpu") == (
        "kd-tutorial: error: prefetch downloads from the Hub, which does not answer from here: run it where there is "
        "internet (or set HF_ENDPOINT to a mirror), then copy the Hugging Face cache over")
    monkeypatch.setattr(cli, "hub_reachable", lambda: True)
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "file" / "hub"))
    line = error_line(capsys, "prefetch", "--profile", "cpu")
    assert line.startswith(f"kd-tutorial: error: the Hugging Face cache {tmp_path / 'file' / 'hub'} is not a "
                           "writable folder (") and line.endswith("): set HF_HOME to a folder you can write (and to "
                                                                  "the same folder where the course runs)")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "file" / "hub"))  # it wins over HF_HOME: name it
    assert error_line(capsys, "prefetch", "--profile", "cpu").endswith("): set HF_HUB_CACHE to a folder you can write "
                                                                       "(and to the same folder where the course runs)")


def test_prefetch_for_the_full_profile_fetches_notebook_09s_teacher_too(capsys, monkeypatch):
    """After the README's workshop prefetch, notebook 09 on the full profile could not load gpt2 offline."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    fetched = []
    monkeypatch.setattr(cli, "hub_reachable", lambda: True)  # a machine with internet (this one has none)
    monkeypatch.setattr(cli, "_download", lambda name, generative=False: fetched.append((name, generative)))
    assert cli.main(["prefetch", "--profile", "full", "--models-only"]) == 0
    assert fetched == [("bert-base-uncased", False), ("google/bert_uncased_L-2_H-128_A-2", False), ("gpt2", True)]
    assert "downloading gpt2 (notebook 09) ..." in capsys.readouterr().out
    fetched.clear()
    assert cli.main(["prefetch", "--profile", "cpu", "--models-only"]) == 0
    assert fetched and not any(generative for _, generative in fetched)  # notebook 09 trains its own GPT there


def _hub_download_errors() -> dict:
    """The errors a download that breaks off half-way reaches prefetch with, as the libraries raise them: the Hub's
    HTTP client's own (huggingface_hub re-raises it once its retries are spent), a 503 that transformers wraps in a
    plain OSError, and the short file huggingface_hub refuses."""
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import httpx  # the client huggingface_hub uses (httpx, or its successor)
    request = httpx.Request("GET", "https://huggingface.co/org/m/resolve/main/model.safetensors")
    try:
        try:
            raise HfHubHTTPError("503 Server Error: Service Unavailable", response=httpx.Response(503, request=request))
        except HfHubHTTPError as err:
            raise OSError("There was a specific connection error when trying to load org/m:\n503 Server Error") from err
    except OSError as err:
        wrapped = err
    return {"ReadTimeout: The read operation timed out": httpx.ReadTimeout("The read operation timed out",
                                                                            request=request),
            "HfHubHTTPError: 503 Server Error: Service Unavailable": wrapped,
            "OSError: Consistency check failed: file should be of size 9 but has size 3 (model.safetensors).":
                OSError("Consistency check failed: file should be of size 9 but has size 3 (model.safetensors).\n"
                        "This is usually due to network issues while downloading the file.")}


@pytest.mark.parametrize("cause", list(_hub_download_errors()))
def test_a_prefetch_cut_half_way_is_one_line_and_running_it_again_finishes(capsys, monkeypatch, cause):
    """Flaky Wi-Fi: a read timeout, a 503 or a short file in the middle of `prefetch` was a traceback."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    fetched, drops = [], [_hub_download_errors()[cause]]

    def download(name, generative=False):
        if len(fetched) == 1 and drops:  # the connection drops on the second model, once
            raise drops.pop()
        fetched.append(name)
    monkeypatch.setattr(cli, "hub_reachable", lambda: True)  # a machine with internet (this one has none)
    monkeypatch.setattr(cli, "_download", download)
    line = error_line(capsys, "prefetch", "--profile", "full", "--models-only")
    assert line == (f"kd-tutorial: error: a download from the Hugging Face Hub broke off ({cause}); what was "
                    "downloaded is kept: run `kd-tutorial prefetch --profile full` again to fetch the rest")
    assert fetched == ["bert-base-uncased"]
    assert cli.main(["prefetch", "--profile", "full", "--models-only"]) == 0
    assert fetched == ["bert-base-uncased", "bert-base-uncased", "google/bert_uncased_L-2_H-128_A-2", "gpt2"]
    assert "done:" in capsys.readouterr().out


def test_a_download_cut_while_distilling_names_the_same_command_and_prefetch(capsys, monkeypatch):
    error = _hub_download_errors()["ReadTimeout: The read operation timed out"]
    monkeypatch.setattr(cli, "cmd_distill", lambda args: (_ for _ in ()).throw(error))
    assert error_line(capsys, "distill", "--profile", "cpu").endswith(
        "what was downloaded is kept: run the same command again, or `kd-tutorial prefetch --profile cpu` first "
        "where the connection is steady")


def test_a_hub_answer_that_a_second_try_would_not_change_is_not_a_cut_download():
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import httpx
    request = httpx.Request("GET", "https://huggingface.co/org/m/resolve/main/config.json")
    assert cli._download_cut(HfHubHTTPError("404 Client Error", response=httpx.Response(404, request=request))) is None
    assert cli._download_cut(OSError("disk full")) is None
    assert cli._download_cut(HfHubHTTPError("429 Too Many Requests", response=httpx.Response(429, request=request)))


def test_a_full_disk_in_a_download_is_one_line_that_names_the_cache(monkeypatch, capsys):
    """Before: a full disk while prefetch downloaded (huggingface_hub's write raises OSError ENOSPC, which transformers
    re-raises as it is) was a traceback; now one line names the Hugging Face cache's disk and says what is kept."""
    import errno
    import transformers.utils.hub as hub

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/hf/hub/models--x/blobs/abc.incomplete")
    monkeypatch.setattr(hub, "hf_hub_download", full)
    monkeypatch.setattr(cli, "offline_flags", lambda **kwargs: [])
    monkeypatch.setattr(cli, "hub_reachable", lambda: True)
    line = error_line(capsys, "prefetch", "--profile", "cpu", "--models-only")
    assert line == ("kd-tutorial: error: cannot write /hf/hub/models--x/blobs/abc.incomplete (No space left on "
                    "device): free some space on the disk of the Hugging Face cache, or set HF_HOME to a folder on a "
                    "disk with room; what was downloaded is kept: run the same command again to fetch the rest")


def test_a_setting_the_built_in_reviews_cannot_meet_is_refused_before_any_folder_is_made(tmp_path, capsys,
                                                                                      monkeypatch):
    """The built-in reviews were read inside the pipeline's lock on --out: the refusal came after the time estimate
    and left a new, empty --out folder holding only .lock."""
    monkeypatch.setattr(cli, "estimate", lambda *a, **k: pytest.fail("an estimate printed for a run that cannot start"))
    line = error_line(capsys, "distill", "--profile", "tiny", "--out", str(tmp_path / "new" / "deep"),
                      "--set", "val_size=0")
    assert line.endswith("val_size=0 does not fit the 1200 labelled reviews: give --set val_size=N with 2 <= N <= "
                         "1198 or more reviews"), line
    assert not (tmp_path / "new").exists()


def test_a_hub_teacher_whose_cached_weights_were_cut_short_falls_back_or_says_what_to_delete(tmp_path, monkeypatch):
    """A cached Hub teacher whose model.safetensors a cut download or copy left short: safetensors' error blocked the
    [offline] package's copy (only an OSError fell back), and the line said "offline or not cached" and to prefetch
    again, which does not mend a cached file (a review)."""
    from kd_tutorial import data, models
    from kd_tutorial.errors import ModelSourceError
    hub = tmp_path / "hub"
    models.load_teacher("tiny-bert").save_pretrained(hub)
    data.get_tokenizer(None).save_pretrained(hub)
    with open(hub / "model.safetensors", "r+b") as fh:
        fh.truncate(1000)
    package = tmp_path / "package"
    models.load_teacher("tiny-bert").save_pretrained(package)
    monkeypatch.setattr(models, "resolve_source", lambda name, fallback=None, prefer_local=False:
                        str(hub) if name == "org/teacher" else name)  # the Hub's cached copy
    monkeypatch.setattr(models, "fallback_path", lambda fallback: package if fallback else None)
    model = models.load_teacher("org/teacher", fallback="some-package")  # the package's copy loads instead
    assert model.config.num_hidden_layers == models.tiny_bert_config().num_hidden_layers
    with pytest.raises(ModelSourceError) as refused:
        models.load_teacher("org/teacher", hint=", here --profile cpu")
    said = str(refused.value)
    assert said.startswith("cannot load model 'org/teacher': its cached weights file is damaged (SafetensorError"), said
    assert said.endswith("delete its folder in the Hugging Face cache (models--ORG--NAME under $HF_HOME/hub) and load "
                         "it again on a machine with internet (`kd-tutorial prefetch --profile P`, here --profile cpu)")


def test_distill_into_an_out_holding_an_earlier_runs_results_says_which_run_it_replaces(tmp_path, monkeypatch,
                                                                                         capsys):
    """A bad-input sweep: `--recipes baseline --out a_copy` replaced a copy of an eight-model run's results.json with
    a three-model one, and said nothing: the earlier record (its timings, its run) was gone unawares."""
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: {"plots": []})
    earlier = tmp_path / "results.json"
    earlier.write_text(json.dumps({"run": {"profile": "cpu"}, "models": [{"name": f"m{i}"} for i in range(9)]}))
    os.utime(earlier, (1_800_000_000, 1_800_000_000))
    assert cli.main(["distill", "--profile", "tiny", "--out", str(tmp_path), "--quiet"]) == 0
    written = time.strftime("%Y-%m-%d %H:%M", time.localtime(1_800_000_000))
    assert (f"{earlier} holds an earlier run's results (cpu profile, 9 models, written {written}): this run replaces "
            "them as it ends (copy the file to keep it); its trained models stay in the artifact cache\n"
            ) in capsys.readouterr().out
    earlier.unlink()
    assert cli.main(["distill", "--profile", "tiny", "--out", str(tmp_path), "--quiet"]) == 0
    assert "holds an earlier run's results" not in capsys.readouterr().out
