"""How long a command will take, as it prints before it starts: a profile's measured seconds, scaled by the arithmetic
it adds or drops (FLOPs counted by :mod:`kd_tutorial.flops`), by the seeds, and by a slower CPU; on a GPU, the FLOPs
over the card's peak.

:func:`estimate` is the line ``kd-tutorial distill`` prints ("about 61 minutes on 2 CPU cores for one seed"). The
budgets themselves are measured (``Profile.time_budget_s``, on the split sizes of
:data:`~kd_tutorial.profiles.BUDGET_SOURCE`): docs/tuning.md says how.
"""
from __future__ import annotations

from .bench_reports import report_home, time_estimate
from .data import folder_rows, NAMED_SOURCES
from .device import resolve_precision, tf32_enabled
from .flops import duration_text, estimate_profile, peak_tflops, UnknownSizeError
from .profiles import BUDGET_SOURCE, timed_preset

def work_ratio(profile, runs=None, source: dict | None = None) -> float:
    """The model arithmetic of ``profile`` (every student running ``runs``; None: their own recipes) over that of
    the preset of its name as its ``time_budget_s`` was measured (:func:`~kd_tutorial.profiles.timed_preset`, on
    the split sizes it was measured on: :data:`~kd_tutorial.profiles.BUDGET_SOURCE`), as FLOPs counted by
    :mod:`kd_tutorial.flops`, the final evaluation left out (its size is the data folder's test split, which the
    profile does not know). 1.0 within 1 %, for an unknown name, and for sizes the FLOP counter cannot tell (a
    Hub teacher it does not list). A proxy: it ignores fixed costs, which dominate the ``tiny`` profile's minute.
    ``source``: a data folder's split sizes (:func:`kd_tutorial.data.folder_rows`), where not the profile's."""
    def work(p, recipes=None, measured=False):
        at = BUDGET_SOURCE.get(p.name, source) if measured else source  # the preset on the sizes it was timed on
        phases = estimate_profile(p, recipes=recipes, source=at)["phases"]
        return sum(phase["flops"] for name, phase in phases.items() if name != "evaluation")
    return _flops_ratio(profile, runs, work)


def _ratio_sizes(profile, data_dir: str | None) -> dict | None:
    """The split sizes :func:`work_ratio` counts a run on: a data folder's (``data_dir``, else one the profile names:
    ``--set data_source=PATH``); for a folder whose sizes cannot be told without reading it, those the budget was
    measured on (:data:`~kd_tutorial.profiles.BUDGET_SOURCE`, as its evaluation is taken to be:
    :func:`evaluation_change`), not the Hub's; None (the profile's own source) without one."""
    folder = _data_folder(profile, data_dir)
    return (folder_rows(folder) or BUDGET_SOURCE.get(profile.name)) if folder else None


def _data_folder(profile, data_dir: str | None) -> str | None:
    """The data folder a run reads: ``data_dir``, else the one the profile names (``--set data_source=PATH``); None
    for a source read by name (the built-in reviews, the Hub's IMDB by either of its names)."""
    return data_dir or (None if profile.data_source in NAMED_SOURCES else profile.data_source)


def evaluation_ratio(profile, runs=None) -> float:
    """As :func:`work_ratio`, for the evaluation alone, per test review: what the models' sizes, the length cap
    and the runs do to the cost of evaluating one review (how many reviews is :func:`evaluation_change`'s)."""
    def work(p, recipes=None, measured=False):
        estimate = estimate_profile(p, recipes=recipes)
        return estimate["phases"]["evaluation"]["flops"] / max(1, estimate["rows"]["test"])
    return _flops_ratio(profile, runs, work)


def _flops_ratio(profile, runs, work) -> float:
    """``work(profile, runs) / work(preset, measured=True)`` for the preset of ``profile``'s name as it was timed
    (``measured``: on the sizes it was timed on); 1.0 within 1 %, for an unknown name, and where the FLOP counter
    cannot tell."""
    preset = timed_preset(profile.name)
    try:
        ratio = work(profile, runs) / work(preset, measured=True) if preset is not None else 1.0
    except UnknownSizeError:
        return 1.0
    return 1.0 if abs(ratio - 1) < 0.01 else ratio


# How many times longer a profile takes in fp32 on 2 cores of a CPU without bf16 units (an AMD EPYC) than in bf16 on
# the 2 cores with them where its time_budget_s was measured (a profile not listed was not measured both ways).
# tiny: 89.4 s on average with its students side by side (--workers, docs/tuning/tiny-workers.json; 118 s one after
# another, docs/tuning/tiny-fp32.json) against 47 s (49.4 s on the machine of cpu's budget: tuning/tiny-bf16.json).
# cpu: the students' training steps, two runs side by side as distill trains them, on such a CPU
# (docs/tuning/workers-step-cost-no-bf16.json) against the machine of the budget (workers-step-cost-bf16.json), each
# student weighted by the steps of its runs, compact-2L-H128's spare reviews included: 2.0 (tests/test_cli.py computes
# it from the two records and the timed seed's steps; 2.2 when compact-2L-H128 ran 1,125 of them). Steps, not a
# whole seed: the teacher's phases and the evaluation (a third of the seed) were not timed both ways. Both records
# keep the students' hidden dropout at 0.1.
CPU_FP32_SLOWDOWN = {"cpu": 2.0, "tiny": 1.9}
# fp32 asked for (precision=fp32) on a CPU with bf16 units: the precision alone, from one distil-3L step on such a
# CPU (0.876 s in fp32 against 0.438 s in bf16: docs/tuning.md, "Twenty minutes"); tiny was not measured this way
BF16_CPU_FP32_SLOWDOWN = {"cpu": 2.0}


IMDB_TEST_REVIEWS = 25_000  # IMDB's test split on the Hub (stanfordnlp/imdb), which a "hub" profile evaluates whole


def evaluation_change(profile, test_reviews: int | None, ratio: float = 1.0,
                      per_review: float = 1.0) -> tuple[float, str]:
    """Seconds to add to the measured budget, once scaled by ``ratio`` (:func:`work_ratio`), so that its evaluation
    is that of ``test_reviews`` (None: unknown, the number measured, ``profile.budget_evaluation``) at
    ``per_review`` times the measured cost of a review (:func:`evaluation_ratio`); and the words that say so."""
    if profile.budget_evaluation is None:
        return 0.0, ""
    seconds, measured = profile.budget_evaluation
    reviews = measured if test_reviews is None else test_reviews
    change = seconds * (per_review * reviews / measured - ratio)  # the evaluation as it will be, less as scaled
    if test_reviews is None:
        return change, (f", evaluating {measured:,} test reviews as measured ({_duration(seconds)} of it; "
                        "more reviews, more time)")
    # "up to": a test review whose text is also a train review is left out once the data is read
    return change, f", evaluating up to {test_reviews:,} test reviews"


def test_reviews_of(profile, data_dir: str | None) -> int | None:
    """How many test reviews ``distill`` will evaluate, where known without reading the data: at most ``n_test`` of
    a data folder's test split (its parquet metadata: :func:`kd_tutorial.data.folder_rows`), or of the whole of
    IMDB's for a profile that reads the Hub; ``n_test`` or None where the folder's size cannot be told (a few test
    reviews that are also train reviews are left out later, which this does not count)."""
    folder = _data_folder(profile, data_dir)
    if folder:
        rows = folder_rows(folder)
        return profile.n_test if rows is None else min(profile.n_test or rows["test"], rows["test"])
    if profile.data_source == "tiny":
        return profile.n_test
    return min(profile.n_test or IMDB_TEST_REVIEWS, IMDB_TEST_REVIEWS)  # the Hub's, by either of its names


def cpu_slowdown(profile, device: str) -> tuple[float, str]:
    """How many times its measured budget ``profile`` takes on this CPU, and why: ``(1.0, "")`` for a device other
    than ``"cpu"``, in bf16 on a CPU with bf16 units (as the budgets were measured), and where none was measured."""
    if device != "cpu":
        return 1.0, ""
    precision = resolve_precision("cpu", profile.precision)
    if resolve_precision("cpu", "auto") == "bf16":  # a CPU with bf16 units: only the precision can differ
        slower = BF16_CPU_FP32_SLOWDOWN.get(profile.name) if precision == "fp32" else None
        if slower is None:
            return 1.0, ""
        return slower, (f"in fp32, since precision=fp32: one step of this profile's student took {slower:.1f}x its "
                        "bf16 time on a CPU with bf16 units")
    slower = CPU_FP32_SLOWDOWN.get(profile.name)
    if slower is None:
        return 1.0, ""
    why = "this CPU has no bf16 units" if profile.precision == "auto" else f"precision={profile.precision}"
    fp32 = "" if precision == "fp32" else ", in fp32,"
    emulated = "" if precision == "fp32" else f"; {precision}, emulated here, is slower still"
    return slower, (f"in {precision}, since {why}: on 2 slower cores without bf16 units{fp32} this profile takes "
                    f"about {slower:.1f}x the time measured on a CPU with them{emulated}; faster cores may take less")


def _cpu_estimate(profile, device: str, n_seeds: int, runs, test_reviews: int | None, data_dir: str | None) -> str:
    """:func:`estimate` on a CPU: the measured budget, scaled for settings, data, the CPU and the test split; with
    several seeds, their total too (:func:`seeds_ratio`)."""
    sizes = _ratio_sizes(profile, data_dir)
    ratio = work_ratio(profile, runs, sizes)
    slower, why = cpu_slowdown(profile, device)
    extra_s, evaluated = evaluation_change(profile, test_reviews, ratio, evaluation_ratio(profile, runs))
    seconds = round((profile.time_budget_s * ratio + extra_s) * slower)
    scaled = (f" (the {profile.name} profile's measured time scaled by {ratio:.2f}, the ratio of model "
              "arithmetic with these settings and data to those it was measured with)") if ratio != 1.0 else ""
    if slower != 1.0:
        scaled += f" ({why})"
    more = ""
    if n_seeds > 1:
        seeds = seeds_ratio(profile, n_seeds, runs, sizes)
        total = f"; {_duration(seconds * seeds)} for the {n_seeds} seeds" if seeds else ""
        further = "the further seed" if n_seeds == 2 else f"each of the {n_seeds - 1} further seeds"
        more = (f"{total}; {further} retrains only the students, or reuses them from "
                "the cache with --resume")
    return f"{_duration(seconds)} on 2 CPU cores for one seed{evaluated}{scaled}{more}"


def _duration(seconds: float) -> str:
    """``about 61 minutes`` (``about 1 minute``), or ``about N s`` under a minute."""
    if seconds < 60:
        return f"about {round(seconds)} s"
    minutes = f"{seconds / 60:.0f}"
    return f"about {minutes} minute{'' if minutes == '1' else 's'}"


def seeds_ratio(profile, n_seeds: int, runs=None, source: dict | None = None) -> float | None:
    """How many times one seed's model arithmetic ``n_seeds`` seeds take, as FLOPs counted by
    :mod:`kd_tutorial.flops`: the teacher and its outputs once, every student run and its evaluation once per seed
    (a proxy, as :func:`work_ratio` is: in the ``cpu`` seed timed at 7c0b9ad the students' phase took 65 % of the
    time, where the FLOPs give their runs 61 %). None where the FLOP counter cannot tell."""
    try:
        one, many = (estimate_profile(profile, n_seeds=n, recipes=runs, source=source)["total_flops"]
                     for n in (1, n_seeds))
    except UnknownSizeError:
        return None
    return many / one


def estimate(profile, device: str, n_seeds: int = 1, gpu: tuple[str, str] | None = None, runs=None,
             test_reviews: int | None = None, data_dir: str | None = None) -> str:
    """The pipeline's duration: on a CPU the profile's measured budget (scaled by :func:`work_ratio` when its
    settings or ``runs`` differ from the preset's, by :func:`cpu_slowdown` on a CPU unlike the one it was
    measured on, and its evaluation by ``test_reviews``: :func:`evaluation_change`); on CUDA its FLOPs counted
    phase by phase (:mod:`kd_tutorial.flops`), the floor at this GPU's dense peak, and the projection from a
    measured ``benchmark-*.json`` of this kind of GPU when there is one (:func:`kd_tutorial.bench_reports.report_dirs`;
    a new one belongs in :func:`~kd_tutorial.bench_reports.report_home`).
    ``gpu``: its (name, precision), asked of CUDA when not given."""
    if not device.startswith("cuda") and profile.time_budget_s is None:
        said = f"not measured on a CPU (the {profile.name} profile is sized for a GPU)"
        try:
            flops = estimate_profile(profile, n_seeds=n_seeds, recipes=runs,
                                     source=folder_rows(data_dir) if data_dir else None)["total_flops"]
        except UnknownSizeError:
            return said
        return f"{said}: about {flops / 1e15:.3g} PFLOP of model arithmetic"
    if not device.startswith("cuda"):
        return _cpu_estimate(profile, device, n_seeds, runs, test_reviews, data_dir)
    if gpu is None:
        import torch

        gpu = torch.cuda.get_device_name(torch.device(device)), matmul_precision(device, profile.precision)
    name, precision = gpu
    rows = folder_rows(data_dir) if data_dir else None
    try:
        t = time_estimate(profile, name, precision, n_seeds=n_seeds, recipes=runs, source=rows)
    except UnknownSizeError:
        return f"not estimated: the size of teacher {profile.teacher!r} is not known before it loads"
    text = f"about {t['total_flops'] / 1e15:.3g} PFLOP of model arithmetic"
    if data_dir:
        text += (" (on the data folder's reviews" if rows else " (on the Hub's IMDB sizes: the data folder's are "
                 "not known before it is read") + ")"
    if t["floor_s"] is None and t["precision"] == "bf16" and peak_tflops(name, "fp16"):  # a T4, a V100
        text += (f" ({name} has no {t['precision']} units: emulated, far slower than its fp16; leave precision to "
                 "auto, which picks fp16 there)")
    elif t["floor_s"] is None:
        text += f" (no dense peak known for {name}: {duration_text(t['total_flops'] / 100e12)} at 100 TFLOP/s)"
    else:
        text += (f", at least {duration_text(t['floor_s'])} at 100 % of this {name}'s dense {t['precision']} peak "
                 f"({t['peak_tflops']:.0f} TFLOP/s)")
    skipped = f"; skipped the report {t['skipped']}" if t.get("skipped") else ""  # a bad number: not read
    if t["projection_s"] is not None:
        return text + _projection_text(t) + skipped
    text += skipped
    ref = t.get("reference")
    if ref:  # another GPU's share of its peak: a guess, said to be one
        text += (f"; about {duration_text(t['floor_s'] / ref['share'])} if it reaches the {ref['share']:.1%} of its "
                 f"peak that an {ref['device']} reached over a whole run ({ref['report']}), a guess")
    if precision in ("tf32", "fp32"):  # the benchmark measures what auto picks, a 16-bit precision on a GPU
        return text + (f"; no benchmark report projects {precision} (`kd-tutorial benchmark` measures the precision "
                       "auto picks): leave precision to auto for a projection")
    return text + ("; measure this GPU with `kd-tutorial benchmark --report FILE` to project the wall time (FILE: "
                   f"{report_home('benchmark-<gpu>.json')})")


def _projection_text(t: dict) -> str:
    """``; about 3.2 min at the rates measured in FILE``, and what makes that a guess: a report of another profile's
    models, or models it has no rate for (projected at the slowest rate it measured)."""
    text = f"; about {duration_text(t['projection_s'])} at the rates measured"
    if t["report_profile"]:
        text += f" for the {t['report_profile']} profile's models"
    text += f" in {t['report']}"
    slowest = ", ".join(f"{key.split(':', 1)[1]} ({key.split(':')[0]})" for key in t["fallbacks"])
    text += f", where {slowest} took the slowest rate it measured, having none" if slowest else ""
    return text + (", a guess" if t["report_profile"] or slowest else "")


def matmul_precision(device: str, precision: str) -> str:
    """The number format of the matrix products ``precision`` runs on CUDA ``device``: ``"tf32"`` for fp32 where
    :func:`~kd_tutorial.device.configure` lets fp32 matmuls use TF32 (capability 8.0 and up), else the precision."""
    precision = resolve_precision(device, precision)
    return "tf32" if precision == "fp32" and tf32_enabled(device) else precision
