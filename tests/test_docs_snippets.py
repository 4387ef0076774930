"""What a reader copies out of the docs still works: every relative link and #anchor in the markdown files and the
notebooks' markdown cells resolves (GitHub's anchor rules), every ```python block of a markdown file compiles, and
every `kd-tutorial ...` command the docs show parses with today's flags, its --set fields and --recipes names
included. Text only: nothing is trained, nothing downloaded."""
import argparse
import json
import re
import shlex
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

from kd_tutorial import cli
from kd_tutorial.grading import authoring, grader
from kd_tutorial.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = sorted(p for p in ROOT.rglob("*.md") if not {".git", ".venv-ci", "node_modules"} & set(p.parts))
NOTEBOOKS = sorted(p for folder in ("notebooks", "exercises", "solutions") for p in (ROOT / folder).glob("*.ipynb"))
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)


def _texts(path: Path, kind: str = "markdown") -> list[str]:
    """The markdown of a file: the whole file, or each markdown cell of a notebook."""
    if path.suffix == ".ipynb":
        return ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
                if c["cell_type"] == kind]
    return [path.read_text(encoding="utf-8")]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: link text kept, lower case, every character but letters, digits, marks, '_',
    '-' and spaces dropped, spaces to '-'."""
    text = re.sub(r"<[^>]+>", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)).strip().lower()
    kept = "".join(ch for ch in text if ch in "-_ " or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Every anchor of a markdown file or notebook: its headings (repeats numbered -1, -2, ...) and <a id=...>."""
    seen: dict[str, int] = {}
    found = set()
    for text in _texts(path):
        for match in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCE.sub("", text), flags=re.M):
            slug = _slug(match.group(1))
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
        found.update(re.findall(r'<a\s+(?:name|id)="([^"]+)"', text))
    return found


def _links(path: Path):
    """The relative links of a markdown file or a notebook's markdown cells (code blocks and spans left out)."""
    for text in _texts(path):
        prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))
        for url in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):
            if not re.match(r"[a-z][a-z0-9+.-]*:", url):
                yield url


def test_the_slug_follows_githubs_rules():
    assert _slug("Two runs at a time: `--workers`") == "two-runs-at-a-time---workers"
    assert _slug("compact-2L-H128 on a transfer set 25 times larger (e32)") == \
        "compact-2l-h128-on-a-transfer-set-25-times-larger-e32"
    assert _slug("Setup without the Hub · 镜像与离线安装") == "setup-without-the-hub--镜像与离线安装"


@pytest.mark.parametrize("path", MARKDOWN + NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path):
    broken = []
    for url in _links(path):
        target, _, anchor = url.partition("#")
        file = (path.parent / unquote(target)).resolve() if target else path
        if not file.exists():
            broken.append(f"{url}: no such file")
        elif anchor and file.suffix in (".md", ".ipynb") and unquote(anchor) not in _anchors(file):
            broken.append(f"{url}: no such heading")
    assert not broken, broken


def test_the_python_blocks_of_the_markdown_files_compile():
    blocks = [(p, block) for p in MARKDOWN for text in _texts(p)
              for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M) if lang == "python"]
    assert blocks  # the README's Trainer example at least
    for path, block in blocks:
        compile(block, str(path), "exec")


COMMAND = re.compile(r"\bkd-tutorial ((?:distill|env|prefetch|report|benchmark|search|grade|make-exercises)\b.*)")


def _commands() -> list[tuple[str, str]]:
    """``(where, the words after kd-tutorial)`` of every command a reader would copy, in a line of a shell block
    (`... && kd-tutorial distill`, `docker run ... kd-tutorial grade ...` included) or a code span; optional parts
    in [brackets] and comments left out. One that spans more than one word of a sentence ends at its code span."""
    found = []
    for path in MARKDOWN + NOTEBOOKS:
        if path.name == "tuning.md":  # a history of measurements, whose commands ran at their own commits
            continue
        for text in _texts(path):
            blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
            lines = [line for lang, block in blocks if lang in ("", "bash", "console", "sh", "powershell")
                     for line in block.splitlines()]
            spans = re.findall(r"`([^`]+)`", FENCE.sub("", text))
            for line in lines + spans:
                match = COMMAND.search(re.sub(r"\s+", " ", line.split(" #")[0]).strip())
                if match:
                    found.append((str(path.relative_to(ROOT)), re.sub(r"\s*\[[^\]]*\]", "", match.group(1))))
    return found


def test_the_docs_show_kd_tutorial_commands():
    assert len({c for _, c in _commands()}) >= 15  # the README's, the exercises' and the notebooks'


def _parser_of(name: str) -> argparse.ArgumentParser:
    """The parser of one sub-command (grade and make-exercises parse their own arguments)."""
    if name in ("grade", "make-exercises"):
        return (grader if name == "grade" else authoring)._parser(_Refusing)
    return cli.build_parser().commands[name]


@pytest.mark.parametrize("where, command", sorted(set(_commands())))
def test_every_documented_command_parses(where, command):
    name, *rest = shlex.split(command)
    assert name in cli.build_parser().commands, f"{where}: kd-tutorial {command}: no such command"
    flags = {flag: action for action in _parser_of(name)._actions for flag in action.option_strings}
    if not rest or (len(rest) == 1 and rest[0] in flags and flags[rest[0]].nargs != 0):
        return  # prose naming a command or a flag (`kd-tutorial grade`, `kd-tutorial distill --workers`)
    if name in ("grade", "make-exercises"):
        _parser_of(name).parse_args(rest)
        return
    args, unknown = cli.build_parser().parse_known_args([name, *rest])
    assert not unknown, f"{where}: kd-tutorial {command}: {unknown} are not {name}'s flags"
    if getattr(args, "set", None):
        get_profile(args.profile or "tiny").with_overrides(args.set)
    if getattr(args, "recipes", None):
        cli._recipes(args.recipes)


def test_the_set_examples_of_the_readme_and_of_distill_help_are_fields_a_run_takes():
    """`--set FIELD=VALUE ...` spans of the README and the e.g. of `distill --help` (placeholders such as N left
    out) are refused by no profile."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    helps = " ".join(action.help or "" for action in cli.build_parser().commands["distill"]._actions)
    spans = re.findall(r"`--set ([^`]+)`", readme) + re.findall(r"e\.g\. --set ((?:[a-z_]+=\S+ ?)+)", helps)
    checked = 0
    for span in spans:
        items = [item for item in span.split() if re.fullmatch(r"[a-z_]+=[\w.\"']+", item) and
                 not re.fullmatch(r"\w+=[A-Z]", item)]
        for item in items:  # each alone: the README's examples name fields of different profiles' concerns
            get_profile("tiny").with_overrides([item])
            checked += 1
    assert checked >= 6  # the README's n_test, temperature, max_length, teacher_layers; the help's two


class _Refusing(argparse.ArgumentParser):
    """A parser whose errors fail the test with argparse's message, rather than exiting."""

    def error(self, message):
        pytest.fail(f"{self.prog}: {message}")


def _pytest_command(text: str) -> list[str]:
    """The first `python -m pytest ...` command of a text, its backslash continuations joined."""
    line = next(line for line in text.replace("\\\n", " ").splitlines() if line.startswith("python -m pytest"))
    return shlex.split(line)


def test_the_readme_runs_the_suite_as_ci_does(request):
    """The README promises that .ci/run runs its test command: the two stay one command, and the files the
    conftest starts first (its RUN_FIRST) still exist, else a renamed slow file would silently run last."""
    # tests/conftest.py as pytest loaded it: `import conftest` gets whichever conftest.py was imported last (in the
    # whole suite, tests/fixtures/grading's), and `import tests.conftest` would run it a second time
    conftest = ROOT / "tests" / "conftest.py"
    RUN_FIRST = next(plugin.RUN_FIRST for plugin in request.config.pluginmanager.get_plugins()
                     if getattr(plugin, "__file__", None) and Path(plugin.__file__) == conftest)
    readme, ci = (_pytest_command((ROOT / p).read_text(encoding="utf-8")) for p in ("README.md", ".ci/run"))
    assert readme == ci
    assert "--no-loadscope-reorder" in ci  # else xdist orders the files by their count of tests, not RUN_FIRST
    assert [p for p in RUN_FIRST if not (ROOT / p).is_file()] == []


def test_notebook_05_section_6_promises_the_checks_its_cell_makes():
    """Section 6 said its cell 'checks all three ways' (too big, right, too small) while the cell asserts two
    gradients against the big batch's: the divided one and the undivided one."""
    cells = {c.get("id"): "".join(c["source"])
             for c in json.loads((ROOT / "notebooks" / "05_distillation.ipynb").read_text(encoding="utf-8"))["cells"]}
    assert cells["05-n04"].count("torch.testing.assert_close(") == 2, cells["05-n04"]
    assert "all three ways" not in cells["05-n02"] and "with and without the\ndivision by $K$" in cells["05-n02"]


def _cells(notebook: str) -> dict[str, str]:
    """``{cell id: source}`` of one of the course's notebooks."""
    path = ROOT / "notebooks" / f"{notebook}.ipynb"
    return {c.get("id"): "".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]}


def test_notebook_00s_full_time_for_notebook_05_is_the_benchmarks_projection():
    """The run-time table gave notebook 05 on `full` "about 10 minutes": its 12 runs (3 students x 4) are 1,620 s at
    the per-run times benchmark-nvidia-h200.json projects. The row's per-run seconds and total are the record's."""
    row = next(line for line in _cells("00_setup")["00-13"].splitlines() if line.startswith("| 05 · Distillation"))
    full = row.rstrip(" |").rsplit(" | ", 1)[1]
    minutes, runs, *seconds = re.search(r"about (\d+) minutes on an H200 .*?: 3 students × (\d) runs, at the (\d+) s "
                                        r"per distil-6L run, (\d+) s per distil-4L run and (\d+) s per "
                                        r"compact-2L-H128 run", full).groups()
    phases = json.loads((ROOT / "docs/results/benchmark-nvidia-h200.json").read_text())["projection"]["phase_seconds"]
    per_run = [phases[f"{student} baseline"] for student in ("distil-6L", "distil-4L", "compact-2L-H128")]
    assert [int(s) for s in seconds] == [round(s) for s in per_run]
    assert int(minutes) == round(int(runs) * sum(per_run) / 60)
    assert all(phases[f"{s} {run}"] == phases[f"{s} baseline"]  # the same step budget, the same projected time
               for s in ("distil-6L", "distil-4L", "compact-2L-H128") for run in ("kd+transfer", "pseudo-label"))


def test_notebook_01s_imdb_reference_lengths_are_the_records():
    """Notebook 01 printed IMDB's token lengths as "course reference numbers" that no record held (>256: 45 %, where
    the shared copy's train split gives 44.3 %). They are now docs/tuning/imdb-lengths.json's, as the cell prints
    them: whole tokens, shares to a tenth of a percent, and the number of reviews measured."""
    cell = _cells("01_bert_anatomy")["01-14"]
    assert "docs/tuning/imdb-lengths.json" in cell
    code = re.search(r"^IMDB_REFERENCE = (\{.*?\})\n(?=\S)", cell, flags=re.S | re.M).group(1)
    reference = eval(code, {"__builtins__": {}, "dict": dict})  # a literal of dicts and numbers
    record = json.loads((ROOT / "docs/tuning/imdb-lengths.json").read_text())["splits"]
    assert set(reference) == set(record) == {"train", "test"}
    for split, ref in reference.items():
        got = record[split]
        assert ref == dict(reviews=got["reviews"], mean=round(got["mean"]), median=round(got["median"]),
                           p90=round(got["p90"]), over_256=round(got["frac_over_256"], 3),
                           over_512=round(got["frac_over_512"], 3)), (split, ref, got)
    said = _cells("01_bert_anatomy")["01-13"]
    assert f"all {record['train']['reviews']:,} train reviews" in " ".join(said.split())
    assert f"{record['test']['reviews']:,} of the 25,000 test reviews" in " ".join(said.split())


def test_notebook_07s_summary_gives_the_validation_leads_of_the_record_it_cites():
    """The summary cited cpu-3-seeds.json through a section of docs/tuning.md that counts an older record (where
    compact-2L-H128 chose +values, with no interval); its figures are now the cited record's `validation_lead`s."""
    text = " ".join(_cells("07_intermediate_layers")["07-25"].split())
    said = re.search(r"both students chose `([^`]+)`, each by a lead of ([\d.]+) points over its runner-up "
                     r"\(distil-3L's `([^`]+)`, compact-2L-H128's `([^`]+)`\): a net (\w+) right answers among (\d+) "
                     r"reviews x (\d) seeds, with 95 % intervals of \[([-+\d.]+), ([-+\d.]+)\] and \[([-+\d.]+), "
                     r"([-+\d.]+)\] points and McNemar's p of ([\d.]+) and ([\d.]+), ([a-z ]+) \(each student's "
                     r"`validation_lead` under `best_recipes` in \[docs/results/cpu-3-seeds.json\]", text).groups()
    best = json.loads((ROOT / "docs/results/cpu-3-seeds.json").read_text())["best_recipes"]
    distil, compact = best["distil-3L"], best["compact-2L-H128"]
    assert distil["recipe"] == compact["recipe"] == said[0]
    assert [distil["validation_lead"]["against"], compact["validation_lead"]["against"]] == \
        [f"kd+transfer{said[2]}", f"kd+transfer{said[3]}"]
    for i, lead in enumerate(b["validation_lead"] for b in (distil, compact)):
        assert f"{100 * lead['diff']:.2f}" == said[1]
        assert round(lead["diff"] * lead["reviews"] * lead["seeds"]) == 2 and said[4] == "two"
        assert (int(said[5]), int(said[6])) == (lead["reviews"], lead["seeds"])
        assert said[7 + 2 * i: 9 + 2 * i] == (f"{100 * lead['ci_low']:+.2f}", f"{100 * lead['ci_high']:+.2f}")
        assert said[11 + i] == f"{lead['p_mcnemar']:.2f}" and said[13].startswith(lead["verdict"].split(" at ")[0])


def test_the_readmes_thread_count_paragraph_says_what_its_record_holds():
    """The README's `tiny` bullet says a run of 2 threads gives the block's numbers to the review and a run of one
    thread another teacher: the record (docs/tuning/tiny-threads.json) must show both, and the figures typed in the
    README must be the record's."""
    record = json.loads((ROOT / "docs" / "tuning" / "tiny-threads.json").read_text(encoding="utf-8"))
    block = json.loads((ROOT / "docs" / "results" / "tiny.json").read_text(encoding="utf-8"))
    two, one, again = record["runs"]
    assert (two["torch_threads"], one["torch_threads"], again["torch_threads"]) == (2, 1, 1)
    assert two["accuracy"] == {m["name"]: m["accuracy"] for m in block["models"]}
    assert one["accuracy"] == again["accuracy"]
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    pseudo = next(c for c in one["against_baseline"] if (c["student"], c["recipe"]) == ("distil-2L", "pseudo-label"))
    compact = [c for c in one["against_baseline"] if c["student"] == "compact-1L-H32"]
    gains = sorted(100 * c["diff"] for c in compact)
    assert f"scores {100 * one['accuracy']['teacher']:.2f} %" in readme
    assert (f"lands {100 * pseudo['diff']:.2f} points [{100 * pseudo['ci_low']:+.2f}, {100 * pseudo['ci_high']:+.2f}] "
            f"from its baseline (no detectable difference)") in readme and pseudo["verdict"].startswith("no detectable")
    assert f"by {gains[0]:.1f} to {gains[-1]:.1f} points, all three \"better\"" in readme
    assert [c["verdict"] for c in compact] == ["better"] * 3
    assert f"Rerun at commit `{two['git_commit'].split('+')[0]}` with 2 threads" in readme


def _lead(readme: str, title: str) -> str:
    """The short lead of one profile's bullet under "Latest results": from its bold title to its <details>."""
    return readme.split(title, 1)[1].split("<details>", 1)[0]


def _numbers(text: str) -> list[str]:
    """The numbers typed in a text, signs kept ("+2.26", "4,906"); digits inside names (distil-3L, bf16) left out."""
    return re.findall(r"(?<![\w.+-])[-+]?\d+(?:[.,]\d+)*", re.sub(r"`[0-9a-f]{7}`", "", text))


def test_the_readmes_cpu_lead_gives_the_numbers_of_the_record_it_sums_up():
    """The `cpu` bullet under "Latest results" opens with a lead: what ran, on what data, each student's best recipe
    (its share of the teacher, its gain over its baseline) and the pseudo-label control. Every number typed there is
    docs/results/cpu-3-seeds.json's, as the block prints it, and said next to what it measures."""
    record = json.loads((ROOT / "docs/results/cpu-3-seeds.json").read_text(encoding="utf-8"))
    run, settings, best = record["run"], record["run"]["settings"], record["best_recipes"]
    lead = _lead(" ".join((ROOT / "README.md").read_text(encoding="utf-8").split()),
                 "**`cpu`: real IMDB, both students, three seeds**")
    compared = {(c["student"], c["recipe"], c["against"]): c for c in record["comparisons"]}
    point = lambda x: f"{100 * x:+.2f}"  # noqa: E731  -- the comparisons table's format
    ci = lambda c: f"[{point(c['ci_low'])}, {point(c['ci_high'])}]"  # noqa: E731
    said = [f"(brackets: {round(100 * compared[('distil-3L', 'kd+transfer', 'baseline')]['level'])} % intervals)",
            f"at commit `{run['git_commit']}`, seeds {', '.join(map(str, run['seeds'][:-1]))} and {run['seeds'][-1]} ",
            f"`kd-tutorial distill --profile cpu --seeds {' '.join(map(str, run['seeds']))} --resume`",
            f"the teacher learns from {settings['n_train']:,} labelled IMDB train reviews and scores "
            f"{100 * record['models'][0]['accuracy']:.2f} % on test",
            f"the students see {settings['student_labels']:,} of those labels, and the runs with a transfer set also "
            f"{settings['n_transfer']:,} reviews labelled only by the teacher",
            f"{settings['val_size']:,} validation reviews carved from train",
            f"every score is on {run['split_sizes']['test']:,} IMDB **test** reviews"]
    assert record["models"][0]["name"] == "teacher" and set(best) == {"distil-3L", "compact-2L-H128"}
    assert {b["recipe"] for b in best.values()} == {"kd+transfer"}
    assert "validation chose `kd+transfer` for both students" in lead
    for student, b in best.items():
        share, gain = b["share_of_teacher"], compared[(student, b["recipe"], "baseline")]
        assert gain["verdict"] == "better" and share["level"] == gain["level"]
        said.append(f"{student}: {100 * share['share']:.1f} % of the teacher [{100 * share['ci_low']:.1f}, "
                    f"{100 * share['ci_high']:.1f}], {point(gain['diff'])} points over its baseline {ci(gain)}")
    assert "; both \"better\"" in lead
    pseudo = [compared[(s, "pseudo-label", "baseline")] for s in best]
    assert [c["verdict"] for c in pseudo] == ["better", "better"]
    said.append(f"gains {point(pseudo[0]['diff'])} {ci(pseudo[0])} and {point(pseudo[1]['diff'])} {ci(pseudo[1])} "
                "points over the two baselines, both \"better\"")
    soft = [compared[(s, "kd+transfer", "pseudo-label")] for s in best]
    words = [c["verdict"] if c["verdict"].startswith("no detectable") else f"\"{c['verdict']}\"" for c in soft]
    said.append(f"add {point(soft[0]['diff'])} {ci(soft[0])} points for distil-3L ({words[0]}) and "
                f"{point(soft[1]['diff'])} {ci(soft[1])} for compact-2L-H128 ({words[1]})")
    for text in said:
        assert text in lead, text
    # "most of each gain comes from the extra reviews the teacher labels": the control's gain is most of kd+transfer's
    assert all(2 * p["diff"] > compared[(p["student"], "kd+transfer", "baseline")]["diff"] for p in pseudo)
    typed = _numbers(lead)
    assert typed and set(typed) <= set(_numbers(" ".join(said))), set(typed) - set(_numbers(" ".join(said)))


def test_the_readmes_tiny_lead_gives_the_numbers_of_its_record():
    """The `tiny` bullet's lead: the commit, the seed, the threads and the split sizes are docs/results/tiny.json's,
    and distil-2L's one interval above 0 is its pseudo-label control's."""
    record = json.loads((ROOT / "docs/results/tiny.json").read_text(encoding="utf-8"))
    run = record["run"]
    lead = _lead(" ".join((ROOT / "README.md").read_text(encoding="utf-8").split()),
                 "**`tiny`: the built-in corpus, one seed**")
    said = [f"at commit `{run['git_commit']}` (the block names it), one seed, from an empty artifact cache on "
            f"{run['torch_threads']} idle cores",
            f"the students see {run['settings']['student_labels']:,} labelled reviews and the runs with a transfer set "
            f"also {run['settings']['n_transfer']:,} unlabelled reviews labelled only by the teacher; "
            f"{run['split_sizes']['test']:,} test reviews",
            f"with {run['split_sizes']['test']:,} test reviews, every recipe of the compact student",
            "only its pseudo-label control beats its baseline with the interval above 0 on this seed"]
    compared = {(c["student"], c["recipe"], c["against"]): c for c in record["comparisons"]}
    point = lambda x: f"{100 * x:+.2f}"  # noqa: E731  -- the comparisons table's format
    best = []
    for student, b in record["best_recipes"].items():
        share, gain = b["share_of_teacher"], compared[(student, b["recipe"], "baseline")]
        best.append(f"{student}'s `{b['recipe']}`, {100 * share['share']:.1f} %{' of the teacher' * (not best)} "
                    f"[{100 * share['ci_low']:.1f}, {100 * share['ci_high']:.1f}], {point(gain['diff'])} points over "
                    f"its baseline [{point(gain['ci_low'])}, {point(gain['ci_high'])}]")
    said.append(f"the teacher scores {100 * record['models'][0]['accuracy']:.2f} %; validation chose {best[0]}, and "
                f"{best[1]}.")
    assert len(run["seeds"]) == 1 and record["models"][0]["name"] == "teacher"
    above = [c["recipe"] for c in record["comparisons"]
             if (c["student"], c["against"]) == ("distil-2L", "baseline") and c["ci_low"] > 0]
    assert above == ["pseudo-label"]
    for text in said:
        assert text in lead, text
    assert "**The thread count is part of the seed.**" in lead
    assert set(_numbers(lead)) <= set(_numbers(" ".join(said))), set(_numbers(lead)) - set(_numbers(" ".join(said)))


def test_notebook_05s_cells_after_a_stopped_students_cell_say_to_run_it_again():
    """The interrupt review: stopped part-way, the students' cell (05-09) left `trained` with some runs, and the
    cells after it drew empty curves, printed a table of the teacher alone without a word, then a KeyError. They
    check first, with `check_trained`, defined before the runs start, and say to run the cell again."""
    import ast
    import types
    cells = _cells("05_distillation")
    define = next(node for node in ast.parse(cells["05-09"]).body
                  if isinstance(node, ast.FunctionDef) and node.name == "check_trained")
    profile = types.SimpleNamespace(students=("a", "b"), seeds=(0,))
    space = {"profile": profile, "RUNS": ("baseline", "kd"), "trained": {"a baseline": 1}}
    exec(compile(ast.Module([define], []), "05-09", "exec"), space)
    with pytest.raises(AssertionError, match=r"^3 run\(s\) missing: .* run it again \(it resumes\)$"):
        space["check_trained"]()
    space["trained"].update({"a kd": 1, "b baseline": 1, "b kd": 1})
    space["check_trained"]()  # all four: no word
    assert all(cells[cid].startswith("check_trained()") for cid in ("05-10", "05-14", "05-15"))
    assert cells["05-09"].index("def check_trained") < cells["05-09"].index("pipeline.distill_students")
