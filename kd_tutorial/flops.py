"""How much arithmetic a profile is, and how long it must take: FLOP counts, GPU peaks, time floors.

A BERT forward over one review of ``L`` real tokens costs, per layer (``H`` wide,
``I`` the feed-forward width, every matmul counted as 2 FLOPs per multiply-add)::

    L * (8 H^2 + 4 H I)      the matmuls: Q, K, V and the output projection (4 H^2 weights),
                             the feed-forward block (2 H I weights): 2 FLOPs per weight per token
    + 4 L^2 H                attention scores Q K^T (2 L^2 H) and the weighted values A V (2 L^2 H)

plus, once per review, the pooler (``2 H^2``) and the classifier (``2 H C``). Embedding
lookups, layer norms, softmax and GELU are left out (lookups are no arithmetic, the rest
is under 1 %). Training costs 3 forwards: the backward pass computes two matmuls (the
gradients of the activations and of the weights) for every one of the forward.

``forward_flops`` counts one forward over given token lengths; :func:`estimate_profile`
counts every phase of a profile's pipeline from its real sizes (no Hub needed), and
:func:`time_estimate` turns the total into a floor at a GPU's dense peak and, when a
measured ``benchmark-*.json`` of that GPU exists (:func:`report_dirs`), into a projection from
its measured rates (``kd-tutorial benchmark --report``).

It reads the pipeline's plan (step budgets, recipes: :mod:`kd_tutorial.plan`; which runs read the teacher's
cached layers: :mod:`kd_tutorial.teacher_layers`), so that the count never drifts from what the pipeline runs;
it never builds or trains a model, and sits below :mod:`kd_tutorial.pipeline`.
"""
from __future__ import annotations

import json
import math
import random
import re
import statistics
from pathlib import Path

from .data import MOVIE_GUARD
from .errors import JSON_ERRORS, UserError
from .plan import applicable, reads_cached_layers, step_budget, student_recipes, validation_passes
from .profiles import TINY_BERT, Profile, StudentSpec
from .store import home

NUM_LABELS = 2
RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "results"

# the teachers' sizes, from their config.json on the Hub (read once, kept here: no Hub at estimate time)
KNOWN_CONFIGS = {
    "bert-base-uncased": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "sentence-transformers/all-MiniLM-L6-v2": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12,
                                                   intermediate_size=1536),
}
# reviews per split of each data source (IMDB: Maas et al. 2011; tiny: corpus.generate_corpus's defaults)
SOURCE_ROWS = {"hub": dict(train=25_000, test=25_000, unsupervised=50_000),
               "tiny": dict(train=1_200, test=1_000, unsupervised=4_000)}

# IMDB review lengths in bert-base-uncased WordPiece tokens, [CLS] and [SEP] included: median about 230, about 13 %
# over 512 (see the course's reference numbers). A log-normal with that median and that tail:
# sigma = ln(512 / 230) / z(0.87).
IMDB_MEDIAN_TOKENS = 230
IMDB_FRAC_OVER_512 = 0.13
IMDB_SIGMA = math.log(512 / IMDB_MEDIAN_TOKENS) / statistics.NormalDist().inv_cdf(1 - IMDB_FRAC_OVER_512)

# Dense tensor-core peaks in TFLOP/s (no 2:4 sparsity: the datasheets' starred figures halved), from NVIDIA's
# datasheets: H100 / H200 (SXM, PCIe, NVL), A100 (SXM4 and PCIe), L40S, L4, A10, T4, V100. "fp32" is the plain
# (non-tensor-core) FP32 rate; tf32 is what fp32 matmuls get with torch.backends.cuda.matmul.allow_tf32.
# Matched against torch.cuda.get_device_name() in this order (the first pattern that matches wins).
PEAK_TFLOPS = [
    (r"H200 NVL", "H200 NVL", dict(bf16=835, fp16=835, tf32=418, fp32=60)),
    (r"H200", "H200", dict(bf16=989, fp16=989, tf32=494, fp32=67)),
    (r"H100 NVL", "H100 NVL", dict(bf16=835, fp16=835, tf32=418, fp32=60)),
    (r"H100 PCIe", "H100 PCIe", dict(bf16=756, fp16=756, tf32=378, fp32=51)),
    (r"H100", "H100 SXM", dict(bf16=989, fp16=989, tf32=494, fp32=67)),
    (r"A100", "A100", dict(bf16=312, fp16=312, tf32=156, fp32=19.5)),
    (r"L40S", "L40S", dict(bf16=362, fp16=362, tf32=183, fp32=91.6)),
    (r"\bL4\b", "L4", dict(bf16=121, fp16=121, tf32=60, fp32=30.3)),
    (r"\bA10\b", "A10", dict(bf16=125, fp16=125, tf32=62.5, fp32=31.2)),
    (r"\bT4\b", "T4", dict(fp16=65, fp32=8.1)),  # Turing: no bf16
    (r"V100", "V100", dict(fp16=125, fp32=15.7)),  # SXM2; no bf16
]


# --------------------------------------------------------------------------- model sizes

def config_dict(config) -> dict:
    """The four sizes that decide a BERT's FLOPs (and ``num_labels``), from a dict or a ``BertConfig``."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    layers, hidden = get("num_hidden_layers"), get("hidden_size")
    return dict(num_hidden_layers=int(layers), hidden_size=int(hidden),
                num_attention_heads=int(get("num_attention_heads")),
                intermediate_size=int(get("intermediate_size") or 4 * hidden),
                num_labels=int(get("num_labels") or NUM_LABELS))


class UnknownSizeError(ValueError):
    """A teacher whose sizes the FLOP counter does not know (neither ``teacher_config`` nor :data:`KNOWN_CONFIGS`)."""


def teacher_config(profile: Profile) -> dict:
    """The profile's teacher sizes: its ``teacher_config`` (tiny: laid over ``TINY_BERT``, as the teacher is
    built), else :data:`KNOWN_CONFIGS`."""
    if profile.teacher_config:
        return config_dict(TINY_BERT | profile.teacher_config)
    if profile.teacher not in KNOWN_CONFIGS:
        raise UnknownSizeError(f"no known size for teacher {profile.teacher!r}: add it to "
                               f"kd_tutorial.flops.KNOWN_CONFIGS (known: {', '.join(KNOWN_CONFIGS)})")
    return config_dict(KNOWN_CONFIGS[profile.teacher])


def student_config(spec: StudentSpec, teacher: dict) -> dict:
    """A student's sizes: the teacher's with ``num_layers`` layers (distil), or its own (compact)."""
    if spec.kind == "distil":
        return teacher | {"num_hidden_layers": spec.num_layers}
    return config_dict(dict(num_hidden_layers=spec.num_layers, hidden_size=spec.hidden_size,
                            num_attention_heads=spec.num_heads, intermediate_size=spec.intermediate_size,
                            num_labels=teacher["num_labels"]))


def non_embedding_params(config) -> int:
    """Weights of the matmuls a token passes through (layers, pooler, classifier; biases and norms left out)."""
    c = config_dict(config)
    h, i = c["hidden_size"], c["intermediate_size"]
    return c["num_hidden_layers"] * (4 * h * h + 2 * h * i) + h * h + h * c["num_labels"]


# --------------------------------------------------------------------------- FLOPs

def forward_flops(config, lengths) -> float:
    """FLOPs of one forward over reviews of these real token ``lengths`` (see the module's formulas):

    ``layers * (sum(L) * (8 H^2 + 4 H I) + 4 H * sum(L^2)) + reviews * (2 H^2 + 2 H C)``.
    """
    c = config_dict(config)
    h, i, n_layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    lengths = list(lengths)
    tokens, squares = sum(lengths), sum(n * n for n in lengths)
    per_layer = tokens * (8 * h * h + 4 * h * i) + 4 * h * squares
    return float(n_layers * per_layer + len(lengths) * (2 * h * h + 2 * h * c["num_labels"]))


def train_flops(config, lengths) -> float:
    """FLOPs of one training step over reviews of these lengths: 3 forwards (forward + backward)."""
    return 3 * forward_flops(config, lengths)


def imdb_lengths(n: int, max_length: int | None = None, seed: int = 0) -> list[int]:
    """``n`` synthetic IMDB review lengths (tokens incl. [CLS]/[SEP]), capped at ``max_length`` as head+tail
    truncation does: the quantiles of a log-normal with IMDB's median (230) and tail (13 % over 512), shuffled."""
    dist = statistics.NormalDist(math.log(IMDB_MEDIAN_TOKENS), IMDB_SIGMA)
    lengths = [max(3, round(math.exp(dist.inv_cdf((k + 0.5) / n)))) for k in range(n)]
    random.Random(seed).shuffle(lengths)
    return [min(x, max_length) for x in lengths] if max_length else lengths


# --------------------------------------------------------------------------- a profile's phases

def split_rows(profile: Profile, source: dict | None = None) -> dict[str, int]:
    """Reviews per split as the pipeline carves them: train (after validation), validation, test, transfer, and the
    spare train reviews no split holds (a few more than the pipeline's, which drops repeated texts).
    ``source``: the reviews of the source's train, test and unsupervised splits (a data folder's,
    :func:`kd_tutorial.data.folder_rows`); else the profile's own source (the Hub's IMDB). Without unlabelled
    reviews the transfer set is carved from train, as :func:`kd_tutorial.data.split_raw` does."""
    src = source or SOURCE_ROWS.get(profile.data_source, SOURCE_ROWS["hub"])
    train = max(0, src["train"] - profile.val_size - validation_guards(profile))
    if src["unsupervised"]:
        transfer = min(profile.n_transfer or src["unsupervised"], src["unsupervised"])
    else:  # no unlabelled reviews: transfer is carved from train, which keeps n_train (or half of it)
        keep = min(profile.n_train or train // 2, train)
        transfer = min(profile.n_transfer or train, train - keep)
        train -= transfer
    kept = min(profile.n_train or train, train)
    return dict(train=kept, validation=profile.val_size, test=min(profile.n_test or src["test"], src["test"]),
                transfer=transfer, spare=train - kept)


def validation_guards(profile: Profile) -> int:
    """About how many train reviews a validation split carved in runs leaves unused: :data:`MOVIE_GUARD` on either
    side of each run, each class's half of ``val_size`` in runs of ``val_block``. Exact for the Hub's IMDB (two
    classes of 12,500); elsewhere tens of reviews off: a run at either end of its class, or two runs side by side,
    drop fewer, and classes of unequal size or a run cut short by the end of its class, more."""
    if not profile.val_block:
        return 0
    halves = (profile.val_size // 2, profile.val_size - profile.val_size // 2)
    runs = sum(math.ceil(half / profile.val_block) for half in halves)
    return 2 * MOVIE_GUARD * runs


def _phase(parts: dict[str, float], **info) -> dict:
    """One phase: its FLOPs in total and per rate key (``train:<model>`` / ``infer:<model>``), plus ``info``."""
    parts = {k: v for k, v in parts.items() if v}
    return {"flops": sum(parts.values()), "parts": parts} | info


def _student_run(profile: Profile, spec: StudentSpec, recipe, rows: dict, per_review: dict, n_rows: int) -> dict:
    """The FLOPs of one student run: its training steps, the online teacher where the recipe needs it (and its
    layers are not cached), validation."""
    steps = step_budget(profile, spec, n_rows)
    reviews = steps * getattr(profile, "effective_batch", profile.batch_size)  # batch_size x grad_accum
    online = recipe.needs_token_internals and not reads_cached_layers(profile, recipe)
    return _phase({f"train:{spec.name}": 3 * reviews * per_review[spec.name],
                   "infer:teacher": reviews * per_review["teacher"] if online else 0.0,
                   f"infer:{spec.name}": validation_passes(profile, steps, spec)[1] * rows["validation"]
                   * per_review[spec.name]},
                  steps=steps, reviews=reviews, online_teacher=online)


def estimate_profile(profile: Profile, lengths=None, n_seeds: int = 1, recipes=None, source: dict | None = None) -> dict:
    """The FLOPs of every phase of ``profile``'s pipeline, and their total.

    ``lengths``: real token lengths of the profile's reviews (else :func:`imdb_lengths`), capped at
    ``max_length``. ``recipes``: names every student runs (None: each student's own, as ``distill``).
    ``source``: the data's split sizes where they are not the profile's source's (:func:`split_rows`).
    Phases: ``teacher`` (fine-tuning and its validation passes), ``teacher_logits`` (train + transfer,
    and the augmented copies a recipe needs), or, when a run reads the teacher's cached layers,
    ``teacher_layers`` (train + transfer, one pass that writes those layers with the logits) and
    ``teacher_logits`` (the augmented copies only), one per student run (``"<student> <recipe>"``: its step
    budget of training, the teacher's online forward where the recipe needs it, its validation passes: those of
    ``evals_per_run`` that its steps allow, :func:`kd_tutorial.plan.validation_passes`) times ``n_seeds``,
    and ``evaluation`` (every model on the test split).
    """
    mix = [min(x, profile.max_length) for x in (lengths or imdb_lengths(20_000))]
    rows, teacher = split_rows(profile, source), teacher_config(profile)
    configs = {"teacher": teacher} | {s.name: student_config(s, teacher) for s in profile.students}
    per_review = {name: forward_flops(c, mix) / len(mix) for name, c in configs.items()}
    runs = [(spec, r) for spec in profile.students for r in student_recipes(profile, spec, recipes)
            if applicable(r, spec, teacher["num_attention_heads"])]
    spare = any(spec.spare_reviews and recipe.transfer for spec, recipe in runs)
    phases = _teacher_phases(profile, rows | {"spare": rows["spare"] if spare else 0}, per_review["teacher"],
                             augmented=any(r.augment for _, r in runs),
                             layers=any(reads_cached_layers(profile, r) for _, r in runs))
    labelled = min(profile.student_labels or rows["train"], rows["train"])
    for spec, recipe in runs:
        n_rows = labelled + rows["transfer"] + (rows["spare"] if spec.spare_reviews else 0)
        one = _student_run(profile, spec, recipe, rows, per_review, n_rows)
        phases[f"{spec.name} {recipe.name}"] = _scaled(one, n_seeds) | {"student": spec.name, "recipe": recipe.name}
    evaluation = {"infer:teacher": rows["test"] * per_review["teacher"]}
    for spec, _ in runs:  # every run's model, on every seed
        key = f"infer:{spec.name}"
        evaluation[key] = evaluation.get(key, 0.0) + n_seeds * rows["test"] * per_review[spec.name]
    phases["evaluation"] = _phase(evaluation)
    return {"profile": profile.name, "n_seeds": n_seeds, "rows": rows, "models": configs,
            "mean_tokens": statistics.mean(mix), "lengths": "given" if lengths else "synthetic IMDB",
            "flops_per_review": per_review, "phases": phases,
            "total_flops": sum(p["flops"] for p in phases.values())}


def _teacher_phases(profile: Profile, rows: dict, per_review: float, augmented: bool, layers: bool = False) -> dict:
    """Fine-tuning (``teacher_epochs`` over train, a validation pass per epoch) and the pass over train + transfer
    (+ ``rows["spare"]``, the spare reviews that students learn from) that gives its logits: ``teacher_layers`` when
    runs read cached layers (the pass writes them too), else ``teacher_logits``, which also holds the pass over an
    augmented copy of transfer when a recipe needs one."""
    epochs = profile.teacher_epochs
    one_pass = rows["train"] + rows["transfer"] + rows.get("spare", 0)
    logits_rows = (0 if layers else one_pass) + (rows["transfer"] if augmented else 0)
    phases = {"teacher": _phase({"train:teacher": 3 * epochs * rows["train"] * per_review,
                                 "infer:teacher": math.ceil(epochs) * rows["validation"] * per_review})}
    if layers:
        phases["teacher_layers"] = _phase({"infer:teacher": one_pass * per_review})
    return phases | {"teacher_logits": _phase({"infer:teacher": logits_rows * per_review})}


def _scaled(phase: dict, k: int) -> dict:
    return phase | {"flops": k * phase["flops"], "parts": {n: k * v for n, v in phase["parts"].items()},
                    "runs": k}


# --------------------------------------------------------------------------- peaks, floors, projections

def device_kind(device_name: str | None) -> str | None:
    """The row of :data:`PEAK_TFLOPS` a device name (``torch.cuda.get_device_name()``) belongs to, or None."""
    for pattern, kind, _ in PEAK_TFLOPS:
        if device_name and re.search(pattern, device_name, flags=re.I):
            return kind
    return None


def precision_name(dtype) -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` for an autocast dtype (``None``: fp32), the keys of :data:`PEAK_TFLOPS`."""
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(dtype), "fp32")


def peak_tflops(device_name: str | None, precision: str = "bf16") -> float | None:
    """The dense peak TFLOP/s of ``device_name`` at ``precision`` (bf16, fp16, tf32, fp32); None if unknown."""
    kind = device_kind(device_name)
    peaks = next((p for _, k, p in PEAK_TFLOPS if k == kind), {})
    return peaks.get(precision)


def report_dirs(results_dir: str | Path | None = None) -> list[Path]:
    """Where GPU benchmark reports are read: ``results_dir`` when given, else a checkout's ``docs/results`` and the
    artifact cache's ``results`` folder (an install from pip or git has no ``docs/``: a report goes there)."""
    if results_dir:
        return [Path(results_dir)]
    try:
        return [RESULTS_DIR, home() / "results"]
    except UserError:  # an unusable KD_TUTORIAL_HOME, refused where the cache is used
        return [RESULTS_DIR]


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


def duration_text(seconds: float) -> str:
    """``"2.6 min"``, or ``"35 s"`` under a minute."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


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
    profile it measured, when another one's). ``recipes``: the
    names every student runs (None: each student's own); ``source``: the data's split sizes (:func:`split_rows`)."""
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
