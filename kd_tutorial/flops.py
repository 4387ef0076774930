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
:func:`peak_tflops` gives a GPU's dense peak (a total over it is its time floor). Reading a measured
``benchmark-*.json`` (``kd-tutorial benchmark --report``) and projecting a run's time from its
rates is :mod:`kd_tutorial.bench_reports`'s, above this module.

It reads the pipeline's plan (step budgets, recipes: :mod:`kd_tutorial.plan`; which runs read the teacher's
cached layers: :mod:`kd_tutorial.teacher_layers`), so that the count never drifts from what the pipeline runs;
it never builds or trains a model, and sits below :mod:`kd_tutorial.pipeline`.
"""
from __future__ import annotations

import math
import random
import re
import statistics

from .data import MOVIE_GUARD
from .plan import applicable, reads_cached_layers, step_budget, student_recipes, validation_passes
from .profiles import TINY_BERT, Profile, StudentSpec

NUM_LABELS = 2

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


# --------------------------------------------------------------------------- peaks and floors

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


def duration_text(seconds: float) -> str:
    """``"2.6 min"``, or ``"35 s"`` under a minute."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
