"""Reading ``kd-tutorial benchmark --report`` files, and projecting a run's time from one.

A benchmark report (:func:`kd_tutorial.benchmark.run_benchmark`) holds a GPU's measured FLOP/s per model and
phase (``rates``). :func:`report_dirs` says where reports are read and :func:`report_home` where a new one belongs;
:func:`read_report` reads one and refuses one with no number where a number belongs (:func:`report_problem`),
:func:`find_report` picks the one of a kind of GPU, precision and profile. :func:`time_estimate` counts a
profile's FLOPs (:mod:`kd_tutorial.flops`), takes the floor at the GPU's dense peak and, when such a report exists,
projects the run's time from its rates (:func:`project`); else :func:`reference_share` gives the share of its peak
another measured GPU reached.

It sits above :mod:`kd_tutorial.flops`, which counts and knows peaks but reads no report.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import JSON_ERRORS, UserError
from .flops import device_kind, estimate_profile, peak_tflops
from .profiles import Profile
from .store import home

RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "results"
# the course's GPU reports as the package ships them (pyproject's package-data), for an install from pip or git
# (Colab's), which has no docs/: copies of docs/results/benchmark-*.json, kept identical by tests/test_packaging.py
SHIPPED_DIR = Path(__file__).resolve().parent / "resources" / "benchmarks"


def report_dirs(results_dir: str | Path | None = None) -> list[Path]:
    """Where GPU benchmark reports are read, first found first used: ``results_dir`` when given; else, in a
    checkout, its ``docs/results`` then the artifact cache's ``results`` folder; in an install from pip or git (no
    ``docs/``), the cache's ``results`` folder (where a user's own reports go) then the reports the package ships
    (:data:`SHIPPED_DIR`)."""
    if results_dir:
        return [Path(results_dir)]
    cache = _cache_results()
    own = [] if cache is None else [cache]
    return [RESULTS_DIR] + own if RESULTS_DIR.is_dir() else own + [SHIPPED_DIR]


def _cache_results() -> Path | None:
    """The artifact cache's ``results`` folder; None where ``KD_TUTORIAL_HOME`` is unusable (refused where the cache
    is used)."""
    try:
        return home() / "results"
    except UserError:
        return None


def report_home(file_name: str) -> str:
    """Where a GPU's report named ``file_name`` belongs, so that ``distill`` reads it (:func:`report_dirs`): a
    checkout's ``docs/results`` (said as ``docs/results/...`` when typed from the checkout's root), else the artifact
    cache's ``results`` folder (``$KD_TUTORIAL_HOME/results/...`` where that variable cannot be used)."""
    if RESULTS_DIR.is_dir():
        here = (Path.cwd() / "docs" / "results").resolve()
        return f"docs/results/{file_name}" if here == RESULTS_DIR.resolve() else str(RESULTS_DIR / file_name)
    cache = _cache_results()
    return f"$KD_TUTORIAL_HOME/results/{file_name}" if cache is None else str(cache / file_name)


def _reports(results_dir: str | Path | None = None) -> list[Path]:
    """Every ``benchmark-*.json`` of :func:`report_dirs`, in order."""
    return [path for folder in report_dirs(results_dir) for path in sorted(folder.glob("benchmark-*.json"))]


# a benchmark report's numbers per phase (kd_tutorial.benchmark._Bench.record and its extras), None where unmeasured
PHASE_NUMBERS = frozenset({"seconds", "tokens", "tokens_per_s", "flops", "tflops", "mfu", "peak_memory_gib", "steps",
                           "batch_size", "max_length", "padded_to", "reviews", "reviews_per_s", "latency_ms_p50",
                           "latency_ms_q1", "latency_ms_q3", "cache_seconds", "speedup"})
PROJECTION_NUMBERS = ("total_flops", "mean_tokens", "floor_s", "projected_s")


def not_a_number(value, *, optional: bool = True) -> bool:
    """Whether ``value`` is no measurement: a bool, text, a list, inf or nan (and None unless ``optional``)."""
    if value is None:
        return not optional
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    try:
        return not math.isfinite(value)
    except OverflowError:  # an integer too large for a float (400 digits typed into the file)
        return True


def report_problem(report) -> str:
    """What in a benchmark report (:func:`kd_tutorial.benchmark.run_benchmark`) is no number where one belongs, in a
    few words (``phases.students.distil-2L.mfu is True, not a number``); "" when nothing is. Checked: every phase's
    numbers, the rates (positive), the projection and its phases' seconds, and the run's seconds."""
    if not isinstance(report, dict):
        return f"it is a JSON {type(report).__name__}, not a report"
    rates, projection = report.get("rates"), report.get("projection")
    if rates is not None and not isinstance(rates, dict):
        return f"rates is a {type(rates).__name__}, not a table of FLOP/s"
    if projection is not None and not isinstance(projection, dict):
        return f"projection is a {type(projection).__name__}, not a table"
    projection = projection or {}
    # (where, value, what it must be): a rate is a positive number; seconds, where given, are none below zero
    numbers = [(f"rates.{k}", v, "rate") for k, v in (rates or {}).items()]
    numbers += [(f"projection.{k}", projection.get(k), "seconds" if k.endswith("_s") else "number")
                for k in PROJECTION_NUMBERS]
    seconds = projection.get("phase_seconds")
    numbers += [(f"projection.phase_seconds.{k}", v, "seconds")
                for k, v in (seconds.items() if isinstance(seconds, dict) else [("", seconds)] if seconds else [])]
    numbers += [("seconds", report.get("seconds"), "seconds")]
    for where, value, kind in numbers:
        if not_a_number(value, optional=kind != "rate") or (kind == "rate" and value <= 0):
            return f"{where.rstrip('.')} is {value!r}, not a {'positive ' if kind == 'rate' else ''}number"
        if kind == "seconds" and value is not None and value < 0:
            return f"{where.rstrip('.')} is {value!r}, not a number of seconds (0 or more)"
    return _phase_problem(report.get("phases"), "phases")


def _phase_problem(phases, where: str) -> str:
    """The first of :data:`PHASE_NUMBERS` under ``phases`` (at any depth) that holds no number, said as
    :func:`report_problem` says it; "" when none."""
    if not isinstance(phases, dict):
        return "" if phases is None else f"{where} is a {type(phases).__name__}, not a table"
    for key, value in phases.items():  # a table under a number's name is a model's (a student named "speedup")
        if key in PHASE_NUMBERS and not isinstance(value, dict) and not_a_number(value):
            return f"{where}.{key} is {value!r}, not a number"
        wrong = _phase_problem(value, f"{where}.{key}") if isinstance(value, dict) else ""
        if wrong:
            return wrong
    return ""


def read_report(path: Path) -> tuple[dict | None, str]:
    """``(report, "")`` for a benchmark report at ``path`` that names its device and holds numbers where numbers
    belong (:func:`report_problem`); ``(None, why)`` for a file that cannot be read, is no report, or holds a bad
    number."""
    try:
        report = json.loads(path.read_text())
        report["environment"]["device_name"].lower()
    except (OSError, *JSON_ERRORS) as err:
        return None, f"cannot be read ({err.__class__.__name__})"
    except (KeyError, TypeError, AttributeError):
        return None, "names no environment.device_name"
    wrong = report_problem(report)
    return (None, wrong) if wrong else (report, "")


def _matching_reports(device_name: str | None, results_dir, precision: str | None):
    """``(path, report or None, why)`` for each ``benchmark-*.json`` of :func:`report_dirs` measured on this kind of
    device, in ``precision`` when given; a report with a bad number is None, with what is wrong in it."""
    kind = device_kind(device_name)
    for path in _reports(results_dir):
        report, why = read_report(path)
        try:
            env = (report or json.loads(path.read_text()))["environment"]
            measured = env["device_name"]
        except (OSError, *JSON_ERRORS, KeyError, TypeError):
            continue
        if not isinstance(measured, str):  # a device named by a number or a list: no device this one can match
            continue
        if precision and env.get("precision", precision) != precision:
            continue
        if measured == device_name or (kind is not None and device_kind(measured) == kind):
            yield path, report, why


def find_report(device_name: str | None, results_dir: str | Path | None = None, *, profile: str | None = None,
                precision: str | None = None) -> Path | None:
    """A ``benchmark-*.json`` of :func:`report_dirs` measured on this kind of device, in ``precision`` when given
    (another precision's kernels run at other rates), of ``profile`` if there is one (another profile's models are a
    guess for this one's); a report that does not say its precision or profile is taken for any, and one that holds
    no number where a number belongs (:func:`report_problem`) is skipped."""
    found = [(not profile or report.get("profile", profile) == profile, path)
             for path, report, _ in _matching_reports(device_name, results_dir, precision) if report is not None]
    return next((path for same, path in found if same), found[0][1] if found else None)


def bad_report(device_name: str | None, results_dir: str | Path | None = None, *,
               precision: str | None = None) -> str | None:
    """``"FILE (what is wrong)"`` for the first report of this kind of device that :func:`find_report` skipped for
    a bad number, or None."""
    return next((f"{path} ({why})" for path, report, why in _matching_reports(device_name, results_dir, precision)
                 if report is None), None)


def project(estimate: dict, rates: dict[str, float]) -> dict:
    """Seconds of each phase of ``estimate`` at measured ``rates`` (FLOP/s per ``train:``/``infer:`` key).

    A key without a measured rate takes the slowest measured rate of its kind (``train`` or ``infer``),
    and is listed in ``fallbacks``.
    """
    fallbacks, seconds = set(), {}
    for name, phase in estimate["phases"].items():
        seconds[name] = 0.0
        for key, flops in phase["parts"].items():
            rate = rates.get(key)
            if not rate:
                same_kind = [r for k, r in rates.items() if k.split(":")[0] == key.split(":")[0] and r]
                rate = min(same_kind or [r for r in rates.values() if r])
                fallbacks.add(key)
            seconds[name] += flops / rate
    return {"seconds": sum(seconds.values()), "phase_seconds": seconds, "fallbacks": sorted(fallbacks)}


def time_estimate(profile: Profile, device_name: str | None, precision: str = "bf16", *, n_seeds: int = 1,
                  lengths=None, results_dir: str | Path | None = None, recipes=None, source: dict | None = None) -> dict:
    """The profile's total FLOPs, the floor at ``device_name``'s dense peak (None when unknown) and, when a
    benchmark report of this kind of device and precision exists, the projection from its measured rates
    (``fallbacks``: the models it had no rate for, projected at the slowest of their kind; ``report_profile``: the
    profile it measured, when another one's). ``recipes``: the names every student runs (None: each student's own);
    ``source``: the data's split sizes (:func:`kd_tutorial.flops.split_rows`)."""
    est = estimate_profile(profile, lengths=lengths, n_seeds=n_seeds, recipes=recipes, source=source)
    peak = peak_tflops(device_name, precision)
    out = {"total_flops": est["total_flops"], "peak_tflops": peak, "precision": precision,
           "floor_s": est["total_flops"] / (peak * 1e12) if peak else None, "report": None, "projection_s": None,
           "estimate": est}
    path = find_report(device_name, results_dir, profile=profile.name, precision=precision)
    report = (read_report(path)[0] if path else None) or {}  # checked by find_report: numbers where they belong
    rates, measured = report.get("rates"), report.get("profile")
    out["skipped"] = bad_report(device_name, results_dir, precision=precision)  # said, even where another was used
    if rates:
        projected = project(est, rates)
        out |= {"report": str(path), "projection_s": projected["seconds"], "fallbacks": projected["fallbacks"],
                "report_profile": measured if measured and measured != profile.name else None}
    elif peak:
        out["reference"] = reference_share(results_dir)
    return out


def reference_share(results_dir: str | Path | None = None) -> dict | None:
    """The share of its dense peak that a measured GPU reached over a whole profile (its report's floor over its
    projection), from the first ``benchmark-*.json`` that holds both: ``{"share", "report", "device"}``, or None.
    Another GPU's share is a guess for this one (a smaller GPU is often busier with the same batches), never a
    measurement."""
    for path in _reports(results_dir):
        report = read_report(path)[0]  # None: unreadable, or a bad number (report_problem)
        try:
            floor, projected = report["projection"]["floor_s"], report["projection"]["projected_s"]
            device = report["environment"]["device_name"]
        except (KeyError, TypeError):
            continue
        if floor and projected and projected >= floor:
            return {"share": floor / projected, "report": str(path), "device": device}
    return None
