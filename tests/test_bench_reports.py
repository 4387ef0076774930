"""Benchmark reports (kd_tutorial.bench_reports): where they are read and where a new one belongs, a checkout's and
an install's from git, which reports a run's time is projected from, and the ones refused for a bad number."""
import json

import pytest

from kd_tutorial import bench_reports, flops
from kd_tutorial.profiles import get_profile


def test_projection_uses_a_measured_report_of_the_same_kind_of_gpu(tmp_path):
    full = get_profile("full")
    rates = {"train:teacher": 400e12, "infer:teacher": 500e12, "train:distil-6L": 300e12, "train:distil-4L": 250e12}
    report = {"kind": "benchmark", "environment": {"device_name": "NVIDIA H100 80GB HBM3"}, "rates": rates}
    (tmp_path / "benchmark-nvidia-h100-80gb-hbm3.json").write_text(json.dumps(report))
    measured = bench_reports.time_estimate(full, "NVIDIA H100 80GB HBM3", results_dir=tmp_path)
    expected = bench_reports.project(measured["estimate"], rates)
    slowest = {"train": 250e12, "infer": 500e12}  # written out: a model without a rate takes its kind's slowest
    by_hand = sum(f / rates.get(key, slowest[key.split(":")[0]])
                  for phase in measured["estimate"]["phases"].values() for key, f in phase["parts"].items())
    assert measured["projection_s"] == pytest.approx(by_hand) and by_hand > measured["floor_s"]
    assert measured["floor_s"] == pytest.approx(measured["total_flops"] / 989e12)
    assert "train:compact-2L-H128" in expected["fallbacks"]  # no measured rate: the slowest training rate
    other = bench_reports.time_estimate(full, "NVIDIA A100-SXM4-80GB", results_dir=tmp_path)
    assert other["projection_s"] is None and other["floor_s"] == pytest.approx(other["total_flops"] / 312e12)
    unknown = bench_reports.time_estimate(full, "Some GPU", results_dir=tmp_path)
    assert unknown["floor_s"] is None and unknown["projection_s"] is None


def test_the_projection_takes_a_report_of_its_own_precision_and_profile_or_says_it_guesses(tmp_path):
    """The projection took the first report of the GPU, whatever it measured: `--set precision=fp32` projected at
    bf16's rates, and the cpu profile at the full profile's, with distil-3L at compact-2L-H128's rate, unsaid."""
    from kd_tutorial.estimates import _projection_text
    cpu, h200 = get_profile("cpu"), "NVIDIA H200"
    env = {"device_name": h200, "precision": "bf16"}
    full_rates = {"train:teacher": 400e12, "infer:teacher": 500e12, "train:compact-2L-H128": 2e12,
                  "infer:compact-2L-H128": 4e12}
    (tmp_path / "benchmark-a.json").write_text(json.dumps({"profile": "full", "environment": env, "rates": full_rates}))
    guessed = bench_reports.time_estimate(cpu, h200, "bf16", results_dir=tmp_path)
    assert guessed["report_profile"] == "full" and guessed["fallbacks"] == ["infer:distil-3L", "train:distil-3L"]
    slowest = {"train": 2e12, "infer": 4e12}  # compact-2L-H128's rates, the slowest of each kind
    assert guessed["projection_s"] == pytest.approx(sum(
        f / full_rates.get(key, slowest[key.split(":")[0]])
        for phase in guessed["estimate"]["phases"].values() for key, f in phase["parts"].items()))
    text = _projection_text(guessed)
    assert text.startswith("; about ") and text.endswith(
        f"at the rates measured for the full profile's models in {tmp_path / 'benchmark-a.json'}, where distil-3L "
        "(infer), distil-3L (train) took the slowest rate it measured, having none, a guess")
    assert bench_reports.time_estimate(cpu, h200, "tf32", results_dir=tmp_path)["projection_s"] is None  # bf16's rates
    own = {"train:teacher": 100e12, "infer:teacher": 200e12} | {f"{kind}:{spec.name}": 50e12 for spec in cpu.students
                                                                 for kind in ("train", "infer")}
    (tmp_path / "benchmark-b.json").write_text(json.dumps({"profile": "cpu", "environment": env, "rates": own}))
    measured = bench_reports.time_estimate(cpu, h200, "bf16", results_dir=tmp_path)
    assert measured["report"].endswith("benchmark-b.json") and measured["report_profile"] is None
    assert measured["projection_s"] == pytest.approx(bench_reports.project(measured["estimate"], own)["seconds"])
    assert _projection_text(measured) == (f"; about {flops.duration_text(measured['projection_s'])} at the rates "
                                          f"measured in {tmp_path / 'benchmark-b.json'}")


def test_a_gpu_without_its_own_report_gets_another_gpus_share_of_peak_said_to_be_a_guess(monkeypatch, tmp_path):
    """Before, a T4 learner saw only the floor at 100 % of its peak (40 min for `full`), where the H200 reached 8.6 %
    of its own: hours, not minutes. The share comes from a committed report's floor over its projection."""
    from kd_tutorial.estimates import estimate
    monkeypatch.setattr(bench_reports, "RESULTS_DIR", tmp_path)
    t4, full = ("Tesla T4", "fp16"), get_profile("full")
    assert "if it reaches" not in estimate(full, "cuda", gpu=t4)  # no report at all: the floor alone
    report = {"environment": {"device_name": "NVIDIA H200"}, "rates": {"train:teacher": 300e12},
              "projection": {"floor_s": 100.0, "projected_s": 1000.0}}
    (tmp_path / "benchmark-nvidia-h200.json").write_text(json.dumps(report))
    t = bench_reports.time_estimate(full, *t4)
    assert t["projection_s"] is None and t["reference"]["share"] == pytest.approx(0.1)
    text = estimate(full, "cuda", gpu=t4)
    assert (f"; about {flops.duration_text(t['floor_s'] / 0.1)} if it reaches the 10.0% of its peak that an NVIDIA "
            "H200 reached over a whole run") in text and text.count("a guess") == 1
    assert "if it reaches" not in estimate(full, "cuda", gpu=("NVIDIA H200", "bf16"))  # its own rates instead


def test_a_report_in_the_artifact_cache_is_read_where_there_is_no_checkout(monkeypatch, tmp_path):
    """An install from pip or git (Colab's) has no docs/results: a GPU's report written there was never read back,
    though the estimate asked for one. The artifact cache's results folder is read too, and the advice names both."""
    from kd_tutorial.estimates import estimate
    monkeypatch.setattr(bench_reports, "RESULTS_DIR", tmp_path / "no-checkout" / "docs" / "results")
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    t4, full = ("Tesla T4", "fp16"), get_profile("full")
    text = estimate(full, "cuda", gpu=t4)
    assert f"(FILE: {tmp_path / 'home' / 'results'}/benchmark-<gpu>.json)" in text  # no docs/results: not named
    (tmp_path / "home" / "results").mkdir(parents=True)
    report = {"environment": {"device_name": "Tesla T4"}, "rates": {"train:teacher": 20e12, "infer:teacher": 40e12}}
    (tmp_path / "home" / "results" / "benchmark-tesla-t4.json").write_text(json.dumps(report))
    assert bench_reports.time_estimate(full, *t4)["projection_s"] is not None
    assert "at the rates measured in" in estimate(full, "cuda", gpu=t4)


@pytest.mark.parametrize("rates", [{"train:teacher": "fast"}, [300e12], {"train:teacher": float("nan")},
                                   {"train:teacher": True}, {"train:teacher": -1.0}])
def test_a_report_with_a_bad_rate_is_skipped_by_the_estimate_and_said_so(monkeypatch, tmp_path, rates):
    """A review: a benchmark-*.json in $KD_TUTORIAL_HOME/results whose rate was "fast" made the estimate a TypeError
    (a list: AttributeError; nan: a nan projection), a traceback from `distill` on a matching GPU."""
    from kd_tutorial.estimates import estimate
    monkeypatch.setattr(bench_reports, "RESULTS_DIR", tmp_path / "no-checkout")
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "results").mkdir(parents=True)
    bad = tmp_path / "home" / "results" / "benchmark-h100.json"
    bad.write_text(json.dumps({"environment": {"device_name": "NVIDIA H100 80GB HBM3"}, "rates": rates}))
    h100, full = ("NVIDIA H100 80GB HBM3", "bf16"), get_profile("full")
    assert bench_reports.time_estimate(full, *h100)["projection_s"] is None and bench_reports.find_report(h100[0]) is None
    text = estimate(full, "cuda", gpu=h100)
    assert f"; skipped the report {bad} (rates" in text and "at the rates measured" not in text and " nan " not in text
    good = {"environment": {"device_name": "NVIDIA H100 80GB HBM3"}, "rates": {"train:teacher": 300e12}}
    (tmp_path / "home" / "results" / "benchmark-h100-good.json").write_text(json.dumps(good))
    assert "at the rates measured in" in estimate(full, "cuda", gpu=h100) and bench_reports.find_report(h100[0]) is not None


def test_another_gpus_report_with_a_bad_projection_gives_no_share(monkeypatch, tmp_path):
    """A text floor_s in the H200's report was a TypeError where a T4's estimate compares it with the projection."""
    monkeypatch.setattr(bench_reports, "RESULTS_DIR", tmp_path)
    report = {"environment": {"device_name": "NVIDIA H200"}, "rates": {"train:teacher": 300e12},
              "projection": {"floor_s": "100", "projected_s": 1000.0}}
    (tmp_path / "benchmark-nvidia-h200.json").write_text(json.dumps(report))
    assert bench_reports.time_estimate(get_profile("full"), "Tesla T4", "fp16")["reference"] is None


def test_report_checks_a_review_found_too_strict_or_too_loose(monkeypatch, tmp_path):
    """A second review of the check: a student named "speedup" (a table under a number's name) refused a valid
    report; 400 digits typed into a number, or a device named by a number, were tracebacks (OverflowError,
    TypeError); negative seconds passed; and a bad report went unmentioned where another report was used."""
    from kd_tutorial.estimates import estimate
    assert bench_reports.report_problem({"phases": {"students": {"speedup": {"seconds": 5.6, "mfu": 0.1}}}}) == ""
    assert bench_reports.report_problem({"phases": {"students": {"speedup": {"mfu": 10 ** 400}}}}) == \
        f"phases.students.speedup.mfu is {10 ** 400!r}, not a number"
    assert bench_reports.report_problem({"projection": {"projected_s": -5.0}}) == \
        "projection.projected_s is -5.0, not a number of seconds (0 or more)"
    assert bench_reports.report_problem({"projection": {"phase_seconds": {"teacher": 0.0}}}) == ""  # a phase with no work
    monkeypatch.setattr(bench_reports, "RESULTS_DIR", tmp_path / "no-checkout")
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "results").mkdir(parents=True)
    a100, full = ("NVIDIA A100-SXM4-80GB", "bf16"), get_profile("full")
    (tmp_path / "home" / "results" / "benchmark-odd.json").write_text(
        json.dumps({"environment": {"device_name": 5}, "rates": {"train:teacher": 1e12}}))
    bad = tmp_path / "home" / "results" / "benchmark-a100-full.json"
    bad.write_text(json.dumps({"environment": {"device_name": a100[0]}, "profile": "full",
                               "rates": {"train:teacher": "fast"}}))
    good = {"environment": {"device_name": a100[0]}, "profile": "cpu", "rates": {"train:teacher": 200e12}}
    (tmp_path / "home" / "results" / "benchmark-a100-cpu.json").write_text(json.dumps(good))
    text = estimate(full, "cuda", gpu=a100)
    assert "at the rates measured" in text and f"; skipped the report {bad} (rates.train:teacher" in text


def test_an_install_without_a_checkout_names_only_the_artifact_caches_results_folder(monkeypatch, tmp_path):
    """From a wheel (`pip install git+...`, as on Colab) the estimate told a GPU user to put a report in
    `<site-packages>/docs/results/`, and `benchmark --report` said it "belongs in docs/results/...", a folder of the
    current directory: distill reads neither there. Both name the artifact cache's results folder now; a checkout's
    docs/results keeps its short name from the checkout's root, and its whole path from anywhere else."""
    from kd_tutorial.benchmark import report_name
    from kd_tutorial.estimates import estimate
    monkeypatch.setattr(bench_reports, "RESULTS_DIR", tmp_path / "site-packages" / "docs" / "results")
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert bench_reports.report_dirs() == [tmp_path / "home" / "results", bench_reports.SHIPPED_DIR]
    text = estimate(get_profile("full"), "cuda", gpu=("Tesla T4", "fp16"))
    assert "site-packages" not in text
    assert text.endswith(f"(FILE: {tmp_path / 'home' / 'results'}/benchmark-<gpu>.json)")
    assert report_name("Tesla T4") == str(tmp_path / "home" / "results" / "benchmark-tesla-t4.json")
    monkeypatch.setenv("KD_TUTORIAL_HOME", "relative/home")  # refused by store.home: no folder to name
    assert bench_reports.report_dirs() == [bench_reports.SHIPPED_DIR]
    assert report_name("Tesla T4") == "$KD_TUTORIAL_HOME/results/benchmark-tesla-t4.json"
    assert estimate(get_profile("full"), "cuda", gpu=("Tesla T4", "fp16")).endswith(
        "(FILE: $KD_TUTORIAL_HOME/results/benchmark-<gpu>.json)")
    checkout = tmp_path / "clone" / "docs" / "results"
    checkout.mkdir(parents=True)
    monkeypatch.setattr(bench_reports, "RESULTS_DIR", checkout)
    assert report_name("Tesla T4") == str(checkout / "benchmark-tesla-t4.json")  # typed from another folder
    monkeypatch.chdir(tmp_path / "clone")
    assert report_name("Tesla T4") == "docs/results/benchmark-tesla-t4.json"


def test_an_install_without_a_checkout_projects_from_the_reports_the_package_ships(monkeypatch, tmp_path):
    """A packaging review: the course's GPU reports lived in docs/results alone, which an install from git (every
    notebook's first cell on Colab) lacks, so a T4 learner got the bare floor ("at least 39.5 min") where a checkout
    gets the H200's measured share of peak as a guess, and an H200 user no projection at all. The package ships
    copies; a user's own report in the artifact cache comes first."""
    from kd_tutorial.estimates import estimate
    monkeypatch.setattr(bench_reports, "RESULTS_DIR", tmp_path / "site-packages" / "docs" / "results")
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "home"))
    full = get_profile("full")
    shipped = bench_reports.SHIPPED_DIR / "benchmark-nvidia-h200.json"
    h200 = estimate(full, "cuda", gpu=("NVIDIA H200", "bf16"))
    assert f"at the rates measured in {shipped}" in h200, h200
    t4 = estimate(full, "cuda", gpu=("Tesla T4", "fp16"))
    assert f"of its peak that an NVIDIA H200 reached over a whole run ({shipped}), a guess" in t4, t4
    own = tmp_path / "home" / "results"
    own.mkdir(parents=True)
    (own / "benchmark-nvidia-h200.json").write_text(shipped.read_text())
    assert f"at the rates measured in {own / 'benchmark-nvidia-h200.json'}" in estimate(full, "cuda",
                                                                                        gpu=("NVIDIA H200", "bf16"))
