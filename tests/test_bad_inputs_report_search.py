"""Bad input to ``kd-tutorial report`` and ``kd-tutorial search`` gets exit status 2 and one line that names the
fix, and loses nothing: a report never writes over a file it reads, a README's markers are checked before the
splice, and a ``search.db`` that is not a study is left as it is."""
import contextlib
import json
import os
import re
from pathlib import Path

import pytest

from kd_tutorial import cli, report
from kd_tutorial.errors import UsageError
from test_bad_inputs import error_line, socket_file

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "tiny.json"
START, END = report.README_START, report.README_END


@pytest.fixture
def run(tmp_path):
    """A folder ``run`` with a renderable results.json (the committed tiny run); returns the file."""
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "results.json"
    path.write_text(RESULTS.read_text())
    return path


# ----------------------------------------------------------------------------- report: writing over an input


def _spellings(path: Path) -> dict:
    """Other names of ``path``: a roundabout path, a symlink, a hard link."""
    (path.parent / "link.json").symlink_to(path)
    os.link(path, path.parent / "hard.json")
    return {"same": path, "roundabout": path.parent / ".." / path.parent.name / "." / path.name,
            "symlink": path.parent / "link.json", "hard link": path.parent / "hard.json"}


def test_a_file_that_would_overwrite_an_input_is_refused_under_any_spelling(run):
    before = run.read_bytes()
    for how, target in _spellings(run).items():
        with pytest.raises(UsageError) as caught:
            report.check_summary_target(target, [str(run)])
        assert str(caught.value) == (f"--summary {target} would overwrite the input {run}: give --summary another "
                                     "file, e.g. docs/results/<run>.json"), how
    report.check_summary_target(run.parent / "summary.json", [run])  # a new file is fine
    assert run.read_bytes() == before


def test_a_summary_onto_the_readme_is_refused(run):
    readme = run.parent / "README.md"
    with pytest.raises(UsageError, match=f"--summary {readme} would overwrite the input {readme}: give --summary"):
        report.check_summary_target(readme, [run], readme)
    with pytest.raises(UsageError, match="would overwrite the input .*: give --out a file of its own$"):
        report.refuse_overwrite(run, "--out", [None, run])


@pytest.mark.parametrize("onto", ["the results file", "the readme"])
def test_report_summary_onto_an_input_is_refused(run, capsys, onto):
    """Before: ``report run/results.json --summary run/./results.json`` replaced the per-step logs by the summary."""
    readme = run.parent / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\n")
    target = run.parent / "." / run.name if onto == "the results file" else readme
    kept = {p: p.read_bytes() for p in (run, readme)}
    line = error_line(capsys, "report", str(run), "--summary", str(target))  # with --readme too: one or the other
    if onto == "the results file":
        assert line == (f"kd-tutorial: error: --summary {target} would overwrite the input {run}: give --summary "
                        "another file, e.g. docs/results/<run>.json")
    else:
        assert line.endswith(f"--summary {target} exists and is not a results summary, so writing it would lose it: "
                             "give a new file name, or move that file away first"), line
    assert {p: p.read_bytes() for p in kept} == kept


def test_report_into_a_readme_that_is_the_results_file_is_refused(run, capsys):
    """A results.json that happens to hold both markers passed the marker check and was overwritten by the splice."""
    results = json.loads(run.read_text()) | {"note": f"{START} {END}"}
    run.write_text(json.dumps(results))
    before = run.read_bytes()
    line = error_line(capsys, "report", str(run), "--readme", str(run.parent / "." / run.name))
    assert line == (f"kd-tutorial: error: --readme {run.parent / '.' / run.name} would overwrite the input {run}: "
                    f"give --readme the README.md that holds the {START} marker")
    assert run.read_bytes() == before


# ----------------------------------------------------------------------------- report: the README's markers


@pytest.mark.parametrize("text, said", [
    (f"intro\n{END}\nold\n{START}\nrest\n",
     f"has {END} above {START}: put the start marker first, on the line above the results tables, and the end "
     "marker after them"),
    (f"intro\n{START}\nkept\n{START}\nold\n{END}\nrest\n",
     f"holds {START} more than once: keep one {START} ... {END} block and delete the other markers"),
    (f"intro\n{START}\nold\n{END}\nmid\n{START}\nold\n{END}\n",
     f"holds {START} and {END} more than once: keep one {START} ... {END} block and delete the other markers"),
])
def test_report_into_a_readme_with_misplaced_markers_is_refused(run, capsys, tmp_path, text, said):
    """Before: the end marker above the start one was an IndexError traceback, and a second start marker was
    silently replaced along with the text after it."""
    readme = tmp_path / "README.md"
    readme.write_text(text)
    line = error_line(capsys, "report", str(run), "--readme", str(readme))
    assert line == f"kd-tutorial: error: {readme} {said}"
    assert readme.read_text() == text


def test_report_into_a_readme_with_one_block_still_splices(run, capsys, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\nrest\n")
    from kd_tutorial import cli
    assert cli.main(["report", str(run), "--readme", str(readme)]) == 0
    table = report.results_markdown(json.loads(run.read_text()))
    assert readme.read_text() == f"intro\n{START}\n{table}{END}\nrest\n"


def test_report_from_a_pipe_into_a_readme_splices_what_it_read(run, tmp_path):
    """`report <(cat results.json) --readme README.md` gave a JSONDecodeError traceback: the README's splice read
    each results file a second time, and a pipe is empty the second time."""
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\nrest\n")
    import threading
    r, w = os.pipe()  # what <(cat results.json) hands over: /dev/fd/N, whose second read finds the pipe empty

    def write():
        with os.fdopen(w, "wb") as pipe:
            pipe.write(run.read_bytes())
    writer = threading.Thread(target=write)
    writer.start()
    from kd_tutorial import cli
    try:
        assert cli.main(["report", f"/dev/fd/{r}", "--readme", str(readme)]) == 0
    finally:
        writer.join()
        os.close(r)
    table = report.results_markdown(json.loads(run.read_text()))
    assert readme.read_text() == f"intro\n{START}\n{table}{END}\nrest\n"


def test_report_into_a_readme_through_a_link_keeps_the_link_its_endings_and_its_mode(run, tmp_path):
    """The splice replaced a linked README with a plain file (the real one untouched), rewrote CRLF as LF, and made
    a read-only file writable. (It also read the README in the locale's encoding; it reads UTF-8 now.)"""
    readme = tmp_path / "README.md"
    readme.write_bytes(f"intro \u00b1\r\n{START}\r\nold\r\n{END}\r\nrest\r\n".encode())
    readme.chmod(0o444)
    (tmp_path / "LINK.md").symlink_to(readme)
    assert cli.main(["report", str(run), "--readme", str(tmp_path / "LINK.md")]) == 0
    assert (tmp_path / "LINK.md").is_symlink() and readme.stat().st_mode & 0o777 == 0o444
    table = report.results_markdown(json.loads(run.read_text()))
    block = f"{START}\n{table}{END}".replace("\n", "\r\n")
    assert readme.read_bytes().decode() == f"intro \u00b1\r\n{block}\r\nrest\r\n"


# ----------------------------------------------------------------------------- search: a search.db that is not one


def _not_a_study(out: Path, kind: str) -> None:
    """Put a ``search.db`` in ``out`` that Optuna cannot open as a study."""
    out.mkdir()
    if kind == "garbage":
        (out / "search.db").write_text("garbage\n")
    else:
        (out / "search.db").mkdir()


def test_search_into_an_out_whose_search_db_is_garbage_is_one_line(tmp_path, capsys):
    """Before: an 83-line sqlalchemy DatabaseError traceback from optuna.create_study."""
    pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")
    out = tmp_path / "out"
    _not_a_study(out, "garbage")
    line = error_line(capsys, "search", "--profile", "tiny", "--trials", "2", "--steps", "2", "--out", str(out),
                      "--quiet")
    db = out / "search.db"
    assert line == (f"kd-tutorial: error: {db} cannot be opened as a study database (file is not a database): "
                    f"give another --out, or move {db} (with the trials/ and search.json beside it) away to start a "
                    "new study there")
    assert db.read_text() == "garbage\n"


@pytest.mark.parametrize("kind, cause", [("garbage", "file is not a database"),
                                         ("folder", "unable to open database file")])
def test_open_study_refuses_a_search_db_it_cannot_open_and_keeps_it(tmp_path, kind, cause):
    pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")
    from kd_tutorial.profiles import get_profile
    from kd_tutorial.search import open_study
    out = tmp_path / "out"
    _not_a_study(out, kind)
    with pytest.raises(UsageError) as caught:
        open_study(out, get_profile("tiny"), 2)
    db = out / "search.db"
    assert str(caught.value) == (f"{db} cannot be opened as a study database ({cause}): give another --out, or "
                                 f"move {db} (with the trials/ and search.json beside it) away to start a new study "
                                 "there")


@pytest.mark.parametrize("tables", [("studies",), ("users", "orders", "items", "notes")])
def test_open_study_refuses_another_programs_database_and_leaves_it_byte_for_byte(tmp_path, tables):
    """Optuna adds its tables to any SQLite file it is given: another program's search.db (a users table) came
    back with 25 more, though the docstring said such a file is left as it is."""
    pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")
    import hashlib
    import sqlite3

    from kd_tutorial.profiles import get_profile
    from kd_tutorial.search import open_study
    out = tmp_path / "out"
    out.mkdir()
    db = out / "search.db"
    with contextlib.closing(sqlite3.connect(db)) as con:
        for name in tables:
            con.execute(f"create table {name} (x integer)")
        con.commit()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(UsageError) as caught:
        open_study(out, get_profile("tiny"), 2)
    shown = ", ".join(sorted(tables)[:3]) + (", ..." if len(tables) > 3 else "")
    assert str(caught.value) == (f"{db} is another program's database (tables {shown}), not a study's: give another "
                                 "--out, or move it away")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_a_study_is_continued_only_with_the_settings_it_was_made_with(tmp_path):
    """Before, only the profile's name and --steps were kept: a study resumed with another --seed, device, --set or
    data folder mixed their trials in one Pareto front (a 0.9 ms trial beside a 12 ms one of another device)."""
    pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")
    from kd_tutorial.profiles import get_profile
    from kd_tutorial.search import open_study
    out, tiny = tmp_path / "out", get_profile("tiny")
    out.mkdir()
    study = open_study(out, tiny, 2, 0, device="cpu", data="tiny")
    study.tell(study.ask(), [0.5, 1.0])  # one trial: from now on the settings are the study's
    open_study(out, tiny, 2, 0, device="cpu", data="tiny")  # the same settings: continued
    for changed, args, kwargs in (("--seed 0 (now 3)", (tiny, 2, 3), {"device": "cpu", "data": "tiny"}),
                                  ("--device 'cpu' (now 'cuda')", (tiny, 2, 0), {"device": "cuda", "data": "tiny"}),
                                  ("data ($KD_TUTORIAL_DATA_DIR) 'tiny' (now '/d')", (tiny, 2, 0),
                                   {"device": "cpu", "data": "/d"}),
                                  ("the profile's settings (a hash", (tiny.replace(temperature=4.0), 2, 0),
                                   {"device": "cpu", "data": "tiny"})):
        with pytest.raises(UsageError) as caught:
            open_study(out, *args, **kwargs)
        assert f"search.db holds a study made with {changed}" in str(caught.value), str(caught.value)
        assert str(caught.value).endswith("continue it with the same settings, or give another --out for a new "
                                          "study")
        assert "--set" not in str(caught.value)  # search takes no --set
    # a GPU's memory fit splits the batch (search fits it as distill does): the same effective batch continues it
    split = tiny.replace(batch_size=tiny.batch_size // 2, grad_accum=2)
    open_study(out, split, 2, 0, device="cpu", data="tiny")
    with pytest.raises(UsageError, match="the profile's settings"):  # another effective batch is another study
        open_study(out, tiny.replace(batch_size=tiny.batch_size // 2), 2, 0, device="cpu", data="tiny")


def test_a_study_whose_trials_followed_an_earlier_rule_is_not_continued(tmp_path):
    """Trials of an earlier kd-tutorial trained for their share of the transfer set and were timed one by one: no
    setting differed, so a resumed study mixed them with today's on one front."""
    pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")
    from kd_tutorial.profiles import get_profile
    from kd_tutorial.search import TRIAL_RULE, open_study
    out, tiny = tmp_path / "out", get_profile("tiny")
    out.mkdir()
    study = open_study(out, tiny, 2, 0, device="cpu", data="tiny")
    study.tell(study.ask(), [0.5, 1.0])
    assert open_study(out, tiny, 2, 0, device="cpu", data="tiny").user_attrs["trial rule"] == TRIAL_RULE
    study.set_user_attr("trial rule", TRIAL_RULE - 1)
    with pytest.raises(UsageError, match="an earlier kd-tutorial trained and timed another way.*another --out"):
        open_study(out, tiny, 2, 0, device="cpu", data="tiny")


def test_a_study_without_a_trial_takes_the_settings_given_now(tmp_path, capsys, monkeypatch):
    """A mistyped $KD_TUTORIAL_DATA_DIR was written into search.db before the data was read; the corrected run was
    then refused as another study, and the only way on the message offered was to give the typo again."""
    pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")
    from kd_tutorial.profiles import get_profile
    from kd_tutorial.search import open_study
    out, tiny = tmp_path / "out", get_profile("tiny")
    out.mkdir()
    open_study(out, tiny, 2, 0, device="cpu", data=str(tmp_path / "typo"))
    assert open_study(out, tiny, 2, 0, device="cpu", data="tiny").user_attrs["data"] == "tiny"
    monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(tmp_path / "typo"))  # and the CLI now refuses the typo first
    line = error_line(capsys, "search", "--profile", "tiny", "--trials", "1", "--out", str(tmp_path / "other"))
    assert f"$KD_TUTORIAL_DATA_DIR {tmp_path / 'typo'}:" in line and not (tmp_path / "other").exists()


def test_a_new_study_does_not_write_over_an_earlier_studys_trials(tmp_path):
    """search.db moved away (as the message said) left trials/0000/model and search.json, which trial 0 of the new
    study then replaced."""
    pytest.importorskip("optuna", reason="optuna is not installed: pip install -e '.[search]'")
    from kd_tutorial.profiles import get_profile
    from kd_tutorial.search import open_study
    out = tmp_path / "out"
    (out / "trials" / "0000" / "model").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"holds trials of an earlier study, which a new study there would "
                                         r"overwrite: give another --out, or move trials away$"):
        open_study(out, get_profile("tiny"), 2)
    assert (out / "trials" / "0000" / "model").is_dir() and not (out / "search.db").exists()  # none left behind


def test_a_summary_onto_an_existing_file_that_is_not_a_summary_is_refused(run, capsys):
    """Before, --summary README.md replaced the README with JSON, exit 0."""
    readme = run.parent / "README.md"
    readme.write_text("# my course notes\n")
    line = error_line(capsys, "report", str(run), "--summary", str(readme))
    assert line.endswith(f"--summary {readme} exists and is not a results summary, so writing it would lose it: give a "
                         "new file name, or move that file away first"), line
    assert readme.read_text() == "# my course notes\n"
    older = run.parent / "older.json"
    older.write_text(json.dumps(report.summary(json.loads(run.read_text()))))  # an earlier summary may be replaced
    assert cli.main(["report", str(run), "--summary", str(older)]) == 0


def test_a_summary_onto_another_runs_whole_results_file_is_refused(run, capsys):
    """A whole results.json has a run and models too, so it passed for a summary: another run's record was replaced
    by this one's summary, its per-step logs lost, exit 0."""
    whole = json.loads(run.read_text())
    name = next(n for n, h in whole["histories"].items() if h)
    whole["histories"][name]["steps"] = [{"step": 1, "loss": 0.69, "lr": 1e-4, "grad_norm": 1.0}]
    other = run.parent.parent / "other_run" / "results.json"
    other.parent.mkdir()
    other.write_text(json.dumps(whole))
    line = error_line(capsys, "report", str(run), "--summary", str(other))
    assert line.endswith(f"--summary {other} exists and is not a results summary, so writing it would lose it: give "
                         "a new file name, or move that file away first"), line
    assert json.loads(other.read_text()) == whole


def test_a_summary_onto_another_profiles_summary_is_refused(run, capsys):
    """Before, `report tiny-run/results.json --summary docs/results/cpu-3-seeds.json` replaced the cpu record with the
    tiny one, exit 0."""
    cpu = report.summary(json.loads(run.read_text()))
    cpu["run"]["profile"] = "cpu"
    target = run.parent / "cpu-3-seeds.json"
    target.write_text(json.dumps(cpu))
    line = error_line(capsys, "report", str(run), "--summary", str(target))
    assert line.endswith(f"--summary {target} holds the summary of a `cpu` run and this is a `tiny` run, so it "
                         f"would replace that one: give --summary another file, e.g. docs/results/tiny.json, or "
                         f"remove {target} first"), line
    assert json.loads(target.read_text()) == cpu


@pytest.mark.parametrize("edit", [{"histories": []}, {"plots": [1]}])
def test_a_summary_of_an_edited_results_file_is_one_line(run, capsys, edit):
    """Before: a traceback (AttributeError, TypeError), where the tables of the same file gave one line."""
    run.write_text(json.dumps(json.loads(run.read_text()) | edit))
    line = error_line(capsys, "report", str(run), "--summary", str(run.parent / "s.json"))
    assert re.search(rf"results file {re.escape(str(run))} is incomplete or edited \((TypeError|AttributeError): ",
                     line), line
    assert not (run.parent / "s.json").exists()


def test_readme_and_summary_together_are_refused(run, capsys):
    """Before, --readme was silently dropped when --summary was given."""
    readme = run.parent / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    line = error_line(capsys, "report", str(run), "--readme", str(readme), "--summary", str(run.parent / "s.json"))
    assert line.endswith("give one of them per command"), line
    assert not (run.parent / "s.json").exists()


def test_a_readme_that_is_not_utf8_is_one_line(run, capsys):
    readme = run.parent / "README.md"
    readme.write_bytes(f"{START}\n{END}\n".encode("utf-16"))  # as a Windows editor may save it
    before = readme.read_bytes()
    line = error_line(capsys, "report", str(run), "--readme", str(readme))
    assert line.endswith(f"--readme {readme} is not UTF-8 text: save it as UTF-8, or give the README.md that holds the "
                         f"{START} marker"), line
    assert readme.read_bytes() == before


@pytest.mark.parametrize("edit", [{"run": {"profile_changes": None}}, {"models": [{"ece": "x"}]}])
def test_a_hand_edited_results_file_is_one_line(run, capsys, edit):
    results = json.loads(run.read_text())
    for section, value in edit.items():
        if isinstance(value, dict):
            results[section] |= value
        else:
            results[section][0] |= value[0]
    run.write_text(json.dumps(results))
    line = error_line(capsys, "report", str(run))
    assert "is incomplete or edited" in line and "or run it again" in line, line


def test_a_summary_report_could_not_read_back_is_not_written(run, tmp_path, capsys):
    """A latency edited to null: plain `report` refused the file, but --summary wrote it (exit 0), and the summary
    then failed every later `report` or --readme splice."""
    data = json.loads(run.read_text())
    data["models"][0]["latency_ms"] = None
    run.write_text(json.dumps(data))
    target = tmp_path / "summary.json"
    line = error_line(capsys, "report", str(run), "--summary", str(target))
    assert "is incomplete or edited" in line and not target.exists()


def test_a_benchmark_report_is_not_summarised(tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"kind": "benchmark", "phases": {}}))
    line = error_line(capsys, "report", str(bench), "--summary", str(tmp_path / "b.json"))
    assert "is a benchmark report, which --summary does not shorten" in line
    assert not (tmp_path / "b.json").exists()


def test_a_summary_that_cannot_be_written_names_the_option_not_the_artifact_home(run, tmp_path, capsys, monkeypatch):
    import errno

    from kd_tutorial import store

    def read_only(path, data):
        with store.disk_errors(path):
            raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(cli, "atomic_write_json", read_only)
    line = error_line(capsys, "report", str(run), "--summary", str(tmp_path / "s.json"))
    assert line == (f"kd-tutorial: error: cannot write --summary {tmp_path / 's.json'} (Read-only file system): give a "
                    "file path you can write; what was there before is untouched")


def test_a_summary_onto_an_empty_file_is_written(run, capsys):
    """Before: `touch summary.json` first gave a JSONDecodeError traceback (the empty file was let through, then read
    again as JSON)."""
    target = run.parent / "summary.json"
    target.touch()
    assert cli.main(["report", str(run), "--summary", str(target)]) == 0
    assert report.is_summary(json.loads(target.read_text()))


def test_a_summary_through_a_link_writes_the_file_it_names_and_keeps_the_link(run, capsys):
    """Before: the link was replaced by a file, and the summary it named was left as it was."""
    (run.parent / "summaries").mkdir()
    target = run.parent / "summaries" / "tiny.json"
    target.touch()
    (run.parent / "link.json").symlink_to(target)
    assert cli.main(["report", str(run), "--summary", str(run.parent / "link.json")]) == 0
    assert (run.parent / "link.json").is_symlink() and report.is_summary(json.loads(target.read_text()))


@pytest.mark.parametrize("command", ["report --summary", "benchmark --report"])
def test_a_target_that_is_not_a_regular_file_is_refused_and_kept(run, capsys, monkeypatch, command):
    """Before: a device (`--summary /dev/null`, run as root) counted as an empty file and was replaced by a regular
    one, exit 0; a pipe hung the command on reading it."""
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: pytest.fail("measured before the path was checked"))
    target, flag = run.parent / "out.json", command.split()[1]
    argv = [str(run), "--summary", str(target)] if command == "report --summary" else ["--profile", "tiny", "--report",
                                                                                          str(target)]
    with socket_file(target):
        line = error_line(capsys, command.split()[0], *argv)
        assert line.endswith(f"{flag} would write {target}, which is not a regular file (a device or a pipe): move "
                             f"it away, or give another {flag}"), line
        assert target.is_socket()


def test_json_nested_too_deep_is_one_line_and_kept(run, capsys):
    """Before: a RecursionError traceback from json's parser, as results file or as --summary target."""
    deep = run.parent / "deep.json"
    deep.write_text("[" * 100_000)
    line = error_line(capsys, "report", str(deep))
    assert line.startswith(f"kd-tutorial: error: cannot read results file {deep} (RecursionError): give the "), line
    line = error_line(capsys, "report", str(run), "--summary", str(deep))
    assert line.endswith(f"--summary {deep} exists and is not a results summary, so writing it would lose it: give a "
                         "new file name, or move that file away first"), line
    assert deep.read_text() == "[" * 100_000


# ------------------------------------------------------------------- report: a review of its rendering (stop 52)

def test_one_file_named_twice_is_rendered_once_printed_or_spliced(run, capsys, tmp_path, monkeypatch):
    """The printed report showed it once, --readme spliced its tables twice."""
    monkeypatch.chdir(run.parent)
    assert cli.main(["report", str(run), "./results.json"]) == 0
    assert capsys.readouterr().out.count("Profile `tiny`") == 1
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    assert cli.main(["report", str(run), "./results.json", "--readme", str(readme)]) == 0
    assert readme.read_text().count("Profile `tiny`") == 1


def test_a_readme_that_is_the_results_file_is_named_as_such(run, capsys):
    """It was told the results file lacked the README's markers: add them to the JSON."""
    before = run.read_bytes()
    line = error_line(capsys, "report", str(run), "--readme", str(run))
    assert line == (f"kd-tutorial: error: --readme {run} would overwrite the input {run}: give --readme the README.md "
                    f"that holds the {START} marker")
    assert run.read_bytes() == before


def test_a_run_folder_reads_its_results_json_and_a_folder_without_one_is_one_line(run, capsys, tmp_path):
    """Before: `report DIR` on the --out folder said "cannot read results file DIR (IsADirectoryError)". The
    folder's results.json is read, with nothing more said; a folder without one is named as such."""
    assert cli.main(["report", str(run)]) == 0
    alone = capsys.readouterr()
    assert cli.main(["report", str(run.parent)]) == 0
    assert capsys.readouterr() == alone
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error_line(capsys, "report", str(empty)) == (
        f"kd-tutorial: error: {empty} is a folder with no results.json in it: {cli.RESULTS_FIX}")


def test_a_device_or_a_huge_file_is_refused_before_it_is_read(capsys, tmp_path):
    """/dev/zero and a 3 GB file were read whole: a MemoryError traceback, or no end."""
    if os.path.exists("/dev/zero"):
        assert error_line(capsys, "report", "/dev/zero") == (
            f"kd-tutorial: error: results file /dev/zero, which is not a regular file (a device or a pipe): "
            f"{cli.RESULTS_FIX}")
    huge = tmp_path / "huge.json"
    with huge.open("wb") as fh:  # sparse: no disk used
        fh.truncate((cli.RESULTS_MAX_MB + 1) * 2**20)
    assert error_line(capsys, "report", str(huge)) == (
        f"kd-tutorial: error: results file {huge} is 0.3 GB, not a results.json: {cli.RESULTS_FIX}")


def test_a_comparison_that_holds_nan_gets_no_verdict():
    """A nan bound printed '[+nan, +3.70]' beside 'no detectable difference at this size'."""
    row = dict(student="s", recipe="kd", against="baseline", diff=0.014, ci_low=float("nan"), ci_high=0.037,
               p_mcnemar=float("nan"))
    line = report.format_comparisons([row]).splitlines()[-1]
    assert line == "| s | kd | baseline | - | - | - | not measured (the file holds nan): no verdict |"


def test_a_bound_above_zero_by_more_than_rounding_never_prints_as_zero():
    """format_points called anything under 1e-11 noise, the verdict anything under 1e-12: a bound of 5e-12 printed
    '+0.00' beside 'better'."""
    row = dict(student="s", recipe="kd", against="baseline", diff=0.01, ci_low=5e-12, ci_high=0.02, p_mcnemar=0.001)
    line = report.format_comparisons([row]).splitlines()[-1]
    assert line.endswith("| better |") and "[+0.00," not in line and "[+5e-10, +2.00]" in line


def test_a_small_mfu_keeps_two_significant_digits():
    """The H200 report's compact student ran at 0.22 % MFU and the table printed 0, as if unmeasured."""
    assert report._mfu(0.00221) == "0.22" and report._mfu(0.4321) == "43" and report._mfu(None) == "-"
    text = cli.benchmark_markdown(json.loads((RESULTS.parent / "benchmark-nvidia-h200.json").read_text()))
    row = next(line for line in text.splitlines() if line.startswith("| compact-2L-H128 distillation"))
    assert row.split("|")[4].strip() == "0.22"


def test_an_empty_comparison_table_is_its_header():
    assert report.format_table([]).splitlines()[0].startswith("| model")


@pytest.mark.parametrize("edit, said", [
    (lambda r: r["models"][1].update(accuracy=True), "'s accuracy is True, not a number"),
    (lambda r: r["models"][1].update(latency_ms=float("nan")), "'s latency_ms is nan, not a number"),
    (lambda r: r["models"][1].update(ece="0.03"), "'s ece is '0.03', not a number"),
    (lambda r: r["run"].update(data_notes="abc"), "run.data_notes is str, not a list of notes")])
def test_a_hand_edited_number_is_refused_not_printed_as_one(run, capsys, edit, said):
    """A pipeline review: accuracy true printed 100.00, nan printed nan, data notes "abc" printed 'a; b; c'."""
    results = json.loads(run.read_text())
    edit(results)
    run.write_text(json.dumps(results))
    line = error_line(capsys, "report", str(run))
    assert line.startswith(f"kd-tutorial: error: results file {run} is incomplete or edited (") and said in line


@pytest.mark.parametrize("aside", ["writable", "full too"])
def test_a_benchmark_report_the_disk_refuses_is_kept(tmp_path, capsys, monkeypatch, aside):
    """Before: a full disk when the measured report was written was a StorageError that named --out (benchmark has
    none) and KD_TUTORIAL_HOME, and the measurement was lost. Now it goes to a temporary folder, or onto stdout."""
    import errno
    import tempfile
    from kd_tutorial import store
    measured = json.loads((RESULTS.parent / "benchmark-nvidia-h200.json").read_text())
    monkeypatch.setattr(cli, "run_benchmark", lambda *a, **k: measured)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    target, real = tmp_path / "out" / "bench.json", tempfile.mkstemp

    def full(*a, dir=None, **k):
        if aside == "full too" or Path(dir) == target.parent:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, dir=dir, **k)
    monkeypatch.setattr(store.tempfile, "mkstemp", full)
    assert cli.main(["benchmark", "--profile", "tiny", "--report", str(target)]) == 2
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert not target.exists() and "| " in out  # the report's markdown is printed either way
    if aside == "writable":
        [kept] = (tmp_path / "tmp").glob("kd-benchmark-*/bench.json")
        assert json.loads(kept.read_text()) == measured
        assert line == (f"kd-tutorial: error: cannot write --report {target} (No space left on device): the report is "
                        f"in {kept} instead; copy it to {target} once the disk has room or can be written")
    else:
        assert json.loads(out[out.index("\n{") + 1:out.rindex("}") + 1]) == measured
        assert line.endswith(f"the report is printed above as JSON; save it as {target} once the disk has room")


@pytest.mark.parametrize("command, flag, example", [
    (["grade", "sub.ipynb"], "--out", "grades.csv"),
    (["report", "r.json"], "--summary", "summary.json"),
    (["benchmark", "--profile", "tiny"], "--report", "benchmark.json"),
])
def test_a_file_flag_ending_in_a_separator_is_refused_before_it_writes_a_file_of_the_folders_name(
        tmp_path, capsys, monkeypatch, command, flag, example):
    """`grade ... --out newgrades/` wrote the files newgrades and newgrades.json; --summary and --report alike."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:  # argparse's own refusal: usage, then one error line, status 2
        cli.main([*command, flag, "new/"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert (f"argument {flag}: new/ ends in a separator, so it names a folder: give a file in it, e.g. "
            f"new/{example}") in err.splitlines()[-1], err
    assert list(tmp_path.iterdir()) == []


def _first_student(report: dict) -> str:
    return next(iter(report["phases"]["students"]))


@pytest.mark.parametrize("edit, said", [
    (lambda r: r["phases"]["students"][_first_student(r)].update(mfu=True), ".mfu is True, not a number"),
    (lambda r: r["projection"].update(projected_s=float("nan")), "projection.projected_s is nan, not a number"),
    (lambda r: r["rates"].update({"train:teacher": "fast"}), "rates.train:teacher is 'fast', not a positive number"),
    (lambda r: r.update(rates=[1, 2]), "rates is a list, not a table of FLOP/s"),
    (lambda r: r["phases"]["inference"]["teacher"].update(latency_ms_p50=float("inf")), "is inf, not a number")])
def test_a_benchmark_report_with_a_bad_number_is_refused_before_the_readme_is_touched(tmp_path, capsys, edit, said):
    """A review: `report` rendered "mfu": true as a number (100 %) and a nan projection as "nan min", exit 0, and
    --readme spliced that into the README."""
    report_ = json.loads((RESULTS.parent / "benchmark-nvidia-h200.json").read_text())
    edit(report_)
    path, readme = tmp_path / "bench.json", tmp_path / "README.md"
    path.write_text(json.dumps(report_))
    readme.write_text(f"intro\n{START}\nold\n{END}\n")
    for extra in ([], ["--readme", str(readme)]):
        line = error_line(capsys, "report", str(path), *extra)
        assert line.startswith(f"kd-tutorial: error: benchmark report {path} is incomplete or edited (")
        assert said in line
        assert line.endswith("give the file `kd-tutorial benchmark --report` wrote, or measure again")
    assert readme.read_text() == f"intro\n{START}\nold\n{END}\n"


@pytest.mark.parametrize("where, value", [("wall_seconds", float("nan")), ("wall_seconds", "12"),
                                          ("students", True)])
def test_a_results_file_whose_seconds_are_no_number_is_refused(run, capsys, where, value):
    """A nan run.wall_seconds rendered "wall time nan s"; a phase's true rendered as 1 s."""
    results = json.loads(run.read_text())
    if where == "wall_seconds":
        results["run"]["wall_seconds"] = value
    else:
        results["run"]["phase_seconds"][where] = value
    run.write_text(json.dumps(results))
    line = error_line(capsys, "report", str(run))
    name = "run.wall_seconds" if where == "wall_seconds" else f"run.phase_seconds.{where}"
    assert line.startswith(f"kd-tutorial: error: results file {run} is incomplete or edited ({name} is {value!r}, "
                           "not a number)")


@pytest.mark.parametrize("edit, said", [
    (lambda r: r["models"][0].update(accuracy=1.7), "(ValueError: teacher's accuracy is 1.7, not a fraction from 0 to 1)"),
    (lambda r: r["models"][1].update(agreement=-0.2), "'s agreement is -0.2, not a fraction from 0 to 1)"),
    (lambda r: r["models"][1]["accuracy_per_seed"].__setitem__(0, 85.1),
     "'s accuracy_per_seed[0] is 85.1, not a fraction from 0 to 1)")])
def test_a_hand_edited_accuracy_outside_0_to_1_is_refused_not_printed_as_a_percentage(run, capsys, edit, said):
    """A bad-input sweep: an accuracy edited to 1.7 rendered as 170.00, beside an interval that excludes it."""
    results = json.loads(run.read_text())
    edit(results)
    run.write_text(json.dumps(results))
    line = error_line(capsys, "report", str(run))
    assert line.startswith(f"kd-tutorial: error: results file {run} is incomplete or edited (") and said in line, line


@pytest.mark.parametrize("comparisons, said", [
    (None, "No comparisons in this file: it has no `comparisons` entry, which `kd-tutorial distill` always writes"),
    ([], "No comparisons in this file: no student was trained with both a recipe and what it is compared against")])
def test_a_results_file_without_comparisons_says_so_where_their_table_would_be(run, capsys, comparisons, said):
    """A file without its comparisons rendered the models' table and then nothing, as if none had been measured."""
    from kd_tutorial import cli
    results = json.loads(run.read_text())
    del results["comparisons"]
    if comparisons is not None:
        results["comparisons"] = comparisons
    run.write_text(json.dumps(results))
    assert cli.main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert said in out and "| student | recipe | against |" not in out
    assert out.count("No comparisons in this file") == 1


def test_a_results_json_whose_models_are_no_list_is_called_edited_not_foreign(tmp_path, capsys):
    """A helper's finding: `"models": {}` was told "it has no 'run' and 'models'", both keys being there."""
    from kd_tutorial import cli
    path = tmp_path / "results.json"
    path.write_text('{"run": {"profile": "tiny"}, "models": {}}')
    assert cli.main(["report", str(path)]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(
        f"kd-tutorial: error: results file {path} is incomplete or edited ('run' is dict, 'models' dict, where "
        "distill writes a dict and a list of models): "), said
