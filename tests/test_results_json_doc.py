"""docs/results-json.md, the reference page of the results.json that `kd-tutorial distill` writes, against the
committed examples (docs/results/tiny.json, docs/results/cpu-3-seeds.json) and the code: every key those files hold
at the top level, in `run` and its records, in every `models`, `comparisons`, `best_recipes` and `histories` entry
is on the page as `key`; no key the page's tables name is missing from every results file and from the package's
source (none invented); the numbers the page quotes are the files' and the code's; and what it tells a reader to
rely on (the sample standard deviation, strict JSON, the verdict's rule, `diff` as the mean of the seeds') holds
for both files. Text and JSON only: nothing is trained."""
import inspect
import json
import re
import statistics
from pathlib import Path

import pytest

from kd_tutorial import evaluate, report, threads

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results-json.md"
EXAMPLES = [ROOT / "docs" / "results" / name for name in ("tiny.json", "cpu-3-seeds.json")]
OLDER = sorted((ROOT / "docs" / "results" / "earlier").glob("*.json"))  # results.json files of earlier code
METRICS = ("accuracy", "agreement", "ece", "reviews_per_s", "tokens_per_s", "train_tokens_per_s")


def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def _backticked(text: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", text))


def _load(path: Path) -> dict:
    """A results file, refused if it holds NaN or Infinity (which strict JSON readers refuse)."""
    def refuse(constant):
        raise ValueError(f"{path.name} holds {constant}, which is not strict JSON")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def _documented_keys(results: dict) -> dict[str, set[str]]:
    """``{where: keys}`` of one results file: the objects whose keys are names of fields (not of models or runs)."""
    run, out = results["run"], {"top level": set(results), "run": set(results["run"])}
    for record in ("precision", "teacher_layers", "phase_seconds", "split_sizes"):
        out[f"run.{record}"] = set(run.get(record) or {})
    out["run.students"] = {k for plan in run["students"].values() for k in plan}
    out["models"] = {k for row in results["models"] for k in row}
    out["share_of_teacher"] = {k for row in results["models"] for k in row.get("share_of_teacher") or {}}
    out["comparisons"] = {k for row in results["comparisons"] for k in row}
    out["best_recipes"] = {k for best in results["best_recipes"].values() for k in best}
    out["validation_lead"] = {k for best in results["best_recipes"].values() for k in best.get("validation_lead", {})}
    out["histories"] = {k for history in results["histories"].values() for k in history or {}}
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_key_of_the_examples_is_on_the_page(path):
    on_page = _backticked(_page())
    missing = {where: sorted(keys - on_page) for where, keys in _documented_keys(_load(path)).items()}
    assert not any(missing.values()), {where: keys for where, keys in missing.items() if keys}


def _run_files() -> list[Path]:
    """The committed results files of distill runs: the examples and the older files."""
    return EXAMPLES + OLDER


def _all_keys(value) -> set[str]:
    """Every key of every object in ``value``, however deep."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _all_keys(v)}
    return set()


def _table_keys(text: str) -> set[str]:
    """The backticked names in the first cell of every table row (the header and separator rows hold none)."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return {name for row in rows for name in _backticked(row.split("|")[1])}


def test_no_key_in_the_pages_tables_is_invented():
    named = _table_keys(_page())
    assert len(named) > 100, f"the page's tables name {len(named)} keys: the rows were not read"
    in_files = {k for path in _run_files() for k in _all_keys(_load(path))}
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "kd_tutorial").glob("*.py"))
    in_code = {k for k in named if re.search(rf"[\"']{re.escape(k)}[\"']", source)}
    invented = sorted(named - in_files - in_code)
    assert not invented, f"the page's tables name keys no results file nor kd_tutorial/*.py holds: {invented}"


def test_the_numbers_the_page_quotes_are_tiny_jsons():
    page, results = " ".join(_page().split()), _load(EXAMPLES[0])
    teacher = next(row for row in results["models"] if row["name"] == "teacher")
    assert f"`accuracy` is {teacher['accuracy']!r}, which the tables print as {100 * teacher['accuracy']:.2f} %" \
        in page
    row = next(c for c in results["comparisons"] if (c["student"], c["recipe"], c["against"]) ==
               ("distil-2L", "kd+transfer", "baseline"))
    quoted = (f"`diff` {row['diff']!r}, `ci_low` {row['ci_low']!r} and `ci_high` {row['ci_high']!r}, which they "
              f"print as {report.format_points(row['diff'])} {report.format_interval(row)}")
    assert quoted in page
    assert f"a `diff` of {row['diff']!r} is {report.format_points(row['diff'])} points" in page


def test_the_constants_the_page_quotes_are_the_codes():
    page = " ".join(_page().split())
    compare = inspect.signature(evaluate.compare).parameters
    boot = inspect.signature(evaluate.paired_bootstrap).parameters
    share = inspect.signature(evaluate.teacher_share).parameters
    turns = inspect.signature(evaluate.throughput_in_turns).parameters
    assert share["n_boot"].default == boot["n_boot"].default and share["level"].default == boot["level"].default
    quoted = [f"{evaluate.ECE_BINS} equal-width confidence bins (`ECE_BINS`)",
              f"bootstrap resamples, {boot['n_boot'].default:,}", f"bootstrap resamples ({share['n_boot'].default:,})",
              f"the interval's coverage, {boot['level'].default}", f"coverage ({share['level'].default}: a",
              f"{compare['latency_n'].default} reviews timed {compare['latency_repeats'].default} times each",
              f"median of {turns['repeats'].default} passes", f"from {threads.BUSY_LOAD} (`BUSY_LOAD`, threads.py)",
              f"below 1 - `level` ({1 - boot['level'].default:.2f})"]
    assert [q for q in quoted if q not in page] == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_what_the_page_says_of_the_numbers_holds_in_the_examples(path):
    results = _load(path)  # strict JSON, as the page says
    page = " ".join(_page().split())
    assert "the **sample** standard deviation over the seeds (`statistics.stdev`, n - 1" in page
    for row in results["models"]:
        for key in (k for k in METRICS if k in row):
            values = row[f"{key}_per_seed"]
            assert row[key] == pytest.approx(statistics.mean(values), abs=1e-12), (row["name"], key)
            sample_std = statistics.stdev(values) if len(values) > 1 else 0.0
            assert row[f"{key}_std"] == pytest.approx(sample_std, abs=1e-12), (row["name"], key)
    for c in results["comparisons"]:
        assert c["diff"] == pytest.approx(statistics.mean(c["diff_per_seed"]), abs=1e-6)
        significant = c["p_mcnemar"] < 1 - c["level"]  # the page's rule, written out
        said = ("better" if significant and c["ci_low"] > 0 else "worse" if significant and c["ci_high"] < 0
                else "no detectable difference at this size")
        assert c["verdict"] == said, (c["student"], c["recipe"], c["against"])
