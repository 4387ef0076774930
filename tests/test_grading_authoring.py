"""Authoring: exercises/ is generated from solutions/ (drift test), nbgrader-compatible, outputs stripped."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from kd_tutorial.grading import authoring, registry

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"


def test_exercises_are_up_to_date_with_solutions():
    """The drift test: exercises/ equals what `kd-tutorial make-exercises` would generate."""
    assert authoring.stale(SOLUTIONS, EXERCISES) == []
    assert authoring.main(["--solutions", str(SOLUTIONS), "--exercises", str(EXERCISES), "--check"]) == 0


def test_the_committed_record_is_of_the_committed_exercises():
    """exercises/.make-exercises.json says which notebooks the generator wrote, as written: a stale record would make
    the next `make-exercises` take the course's own notebooks for a learner's edits (and refuse without --force)."""
    record = authoring.read_record(EXERCISES)
    assert record == {p.name: authoring.cells_hash(p.read_text(encoding="utf-8"))
                      for p in sorted(EXERCISES.glob("*.ipynb"))}


def test_check_mode_reports_stale_and_generate_fixes_it(tmp_path):
    out = tmp_path / "exercises"
    assert authoring.main(["--solutions", str(SOLUTIONS), "--exercises", str(out), "--check"]) == 1
    assert authoring.main(["--solutions", str(SOLUTIONS), "--exercises", str(out)]) == 0
    assert authoring.main(["--solutions", str(SOLUTIONS), "--exercises", str(out), "--check"]) == 0
    (out / "extra.ipynb").write_text("{}")
    assert authoring.main(["--solutions", str(SOLUTIONS), "--exercises", str(out), "--check"]) == 1
    assert authoring.main(["--solutions", str(tmp_path / "missing")]) == 2


def test_stub_replaces_region_at_its_indentation():
    src = "def f(x):\n    '''doc'''\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n    return 0"
    assert authoring.stub_source(src) == ("def f(x):\n    '''doc'''\n    # YOUR CODE HERE\n"
                                          "    raise NotImplementedError()\n    return 0")
    for bad in ("### BEGIN SOLUTION\nx", "x\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION"):
        with pytest.raises(authoring.AuthoringError):
            authoring.stub_source(bad)


@pytest.mark.parametrize("set_id", sorted(registry.SETS))
def test_notebooks_are_valid_stripped_and_carry_nbgrader_metadata(set_id):
    stem, labels = registry.SETS[set_id]
    for folder in (SOLUTIONS, EXERCISES):
        nb = nbformat.read(folder / f"{stem}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.nbformat == 4
        assert nb.metadata["kd_tutorial"]["exercise_set"] == set_id
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code)
        ids = [c.metadata["nbgrader"]["grade_id"] for c in code if "nbgrader" in c.metadata]
        assert len(ids) == len(set(ids))
        for label in labels:
            check = next(c for c in code if c.metadata.get("nbgrader", {}).get("grade_id") == f"{set_id}-{label}-check")
            assert check.metadata["nbgrader"]["grade"] and check.metadata["nbgrader"]["points"] == 1
            assert check.metadata["nbgrader"]["locked"]
            sol = next(c for c in code if c.metadata.get("nbgrader", {}).get("grade_id") == f"{set_id}-{label}-solution")
            assert sol.metadata["nbgrader"]["solution"] and not sol.metadata["nbgrader"]["grade"]
            if folder == SOLUTIONS:
                assert "### BEGIN SOLUTION" in sol.source
            else:
                assert "raise NotImplementedError()" in sol.source and "BEGIN SOLUTION" not in sol.source
        setup = next(c for c in code if c.metadata.get("nbgrader", {}).get("grade_id") == f"{set_id}-setup").source
        assert setup.index('os.environ["HF_HUB_OFFLINE"] = "1"') < setup.index("from kd_tutorial")
        assert code[0].id == f"{set_id}-install"  # first: on Colab the package must be there before the setup
        assert all(line.startswith("#") for line in code[0].source.splitlines())  # commented out: runs nothing


@pytest.mark.parametrize("set_id", sorted(registry.SETS))
def test_solution_shown_by_the_package_matches_the_notebook(set_id):
    """q.solution() shows the same code as the solution notebook (the notebook is the source)."""
    stem, _ = registry.SETS[set_id]
    nb = nbformat.read(SOLUTIONS / f"{stem}.ipynb", as_version=4)
    for ex in registry.exercises(set_id):
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"{ex.key.replace('.', '-')}-solution")
        assert cell.source.strip() == ex.solution_code.strip(), ex.key


def test_course_has_at_least_twelve_exercises():
    assert len(registry.all_exercises()) >= 12


def test_a_full_disk_says_free_space_and_the_rerun_finishes(tmp_path, monkeypatch, capsys):
    """Before: a full disk halfway through make-exercises said 'give --exercises a folder you can write', a fix for
    permissions, of a folder that was writable. Now it says to free space; the notebooks written are kept, and the
    rerun writes the same exercises as the committed ones."""
    import errno
    out, real, calls = tmp_path / "exercises", Path.write_text, []

    def full(self, *args, **kwargs):
        calls.append(self)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", full)
    assert authoring.main(["--solutions", str(SOLUTIONS), "--exercises", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"cannot write the exercises in {out} (No space left on device): "
                                                    "free some space on its disk (the notebooks already written are "
                                                    "kept), then run it again")
    assert len(list(out.glob("*.ipynb"))) == 2 and not list(out.glob(".*.tmp"))
    monkeypatch.undo()
    assert authoring.main(["--solutions", str(SOLUTIONS), "--exercises", str(out)]) == 0
    assert {p.name: p.read_text() for p in out.glob("*.ipynb")} == {
        p.name: p.read_text() for p in EXERCISES.glob("*.ipynb")}


def test_a_folder_where_an_exercise_notebook_goes_is_one_line_in_check_and_in_generate(tmp_path, capsys):
    """`make-exercises --check` with exercises/03_kd_losses.ipynb a folder gave IsADirectoryError's traceback; the
    generator's refusal did not name the path. Both name it, and the folder is left as it is."""
    out = tmp_path / "exercises"
    assert authoring.main(["--solutions", str(SOLUTIONS), "--exercises", str(out)]) == 0
    (out / "03_kd_losses.ipynb").unlink()
    (out / "03_kd_losses.ipynb").mkdir()
    capsys.readouterr()
    assert authoring.main(["--solutions", str(SOLUTIONS), "--exercises", str(out), "--check"]) == 1
    said = capsys.readouterr()
    assert "Traceback" not in said.err and "03_kd_losses.ipynb" in said.out + said.err
    assert "It would refuse 03_kd_losses.ipynb" in said.out + said.err
    for force in ([], ["--force"]):  # --force cannot replace a folder either: refused before anything is written
        assert authoring.main(["--solutions", str(SOLUTIONS), "--exercises", str(out), *force]) == 2
        err = capsys.readouterr().err
        assert err.strip().endswith(f"03_kd_losses.ipynb in {out} is a folder where the exercise notebook goes: move "
                                    f"it out of {out}, then run it again"), err
        assert (out / "03_kd_losses.ipynb").is_dir()
