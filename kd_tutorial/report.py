"""Turning measurements into text: the console tables, the README's results section and its splice.

It renders what :mod:`kd_tutorial.evaluate` and :mod:`kd_tutorial.pipeline` measured
and computes no metric itself. Every number in the README comes from a
``results.json`` through :func:`results_markdown`, never from a hand-typed table.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .errors import JSON_ERRORS, refuse_not_regular, UsageError
from .evaluate import choice_key, ECE_BINS, ROUNDING_NOISE, verdict
from .store import atomic_write_text
from .threads import BUSY_LOAD

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def format_table(rows: list[dict], title: str | None = None) -> str:
    """A plain-text table of :func:`kd_tutorial.evaluate.compare` rows (markdown-compatible); "% of teacher" is each
    model's accuracy over the teacher's row's, with its interval where measured, as in the README's table, where the
    rows hold a teacher."""
    teacher_acc = next((r.get("accuracy") for r in rows if r.get("name") == "teacher"), None)
    if teacher_acc:
        rows = [r | {"of_teacher": f"{100 * r['accuracy'] / teacher_acc:.1f}{_share_interval(r)}"}
                if r.get("accuracy") is not None else r for r in rows]
    share = [("% of teacher", "of_teacher", "{}")] if teacher_acc else []
    cols = [("model", "name", "{}"), ("acc %", "accuracy", "{:.2f}"), *share, ("agree %", "agreement", "{:.2f}"),
            ("ECE", "ece", "{:.3f}"), ("params M", "params", "{:.2f}"), ("MB", "mb", "{:.1f}"),
            ("p50 ms", "latency_ms", "{:.2f}"), ("reviews/s", "reviews_per_s", "{:.0f}")]
    scale = {"accuracy": 100, "agreement": 100, "params": 1e-6}

    def cell(row, key, fmt):
        value = row.get(key)
        if value is None:
            return "-"
        if isinstance(value, (int, float)) and key in scale:
            value = value * scale[key]
        return fmt.format(value)

    header = [c[0] for c in cols]
    body = [[cell(r, k, f) for _, k, f in cols] for r in rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(b, widths)) + " |" for b in body]
    return ((title + "\n") if title else "") + "\n".join(lines)


def format_points(x: float) -> str:
    """A difference in accuracy as signed points, to 2 decimals; a bound nearer 0 than that keeps one significant
    digit (``+0.004``), so an interval that lies above 0 never prints ``+0.00`` (below 1e-9 points is rounding
    noise, as :func:`kd_tutorial.evaluate.verdict` reads it, and prints as it)."""
    points = 100 * x
    return f"{points:+.1g}" if 100 * ROUNDING_NOISE < abs(points) < 0.005 else f"{points:+.2f}"


def format_interval(comparison: dict) -> str:
    """A comparison's confidence interval in points: ``[-0.25, +1.10]`` (:func:`format_points`)."""
    return f"[{format_points(comparison['ci_low'])}, {format_points(comparison['ci_high'])}]"


def format_p(p: float, level: float = 0.95) -> str:
    """A p-value to 2 significant digits, or more where 2 would put it on the other side of ``1 - level`` than
    it is (0.0496 prints as 0.0496, not 0.05, beside "better")."""
    alpha = round(1 - level, 12)
    for digits in range(2, 8):
        text = f"{p:.{digits}g}"
        if (float(text) < alpha) == (p < alpha):
            return text
    return repr(p)


def comparisons_caption(rows: list[dict], split: str, n_seeds: int = 1) -> str:
    """The console's line above :func:`format_comparisons`: what each row compares (the references ``rows`` hold)
    and when a verdict is better or worse."""
    against = {r["against"] for r in rows}
    also = [what for ref, what in (("pseudo-label", "the soft targets against the pseudo-label control"),
                                   ("kd+transfer", "each recipe that adds a term to kd+transfer against kd+transfer"))
            if ref in against]
    pooled = ", pooled over seeds" if n_seeds > 1 else ""
    return (f"Each recipe against its student's baseline{' (and ' + '; '.join(also) + ')' if also else ''}, on the "
            f"same {split} reviews{pooled}: the difference, its paired bootstrap 95 % interval and McNemar's p; a "
            "verdict is better or worse only where both agree")


def format_comparisons(rows: list[dict], models: list[dict] | None = None) -> str:
    """A markdown table of :func:`kd_tutorial.pipeline.comparisons`: difference, 95 % CI, McNemar's p, verdict, and
    with several seeds each seed's difference (recorded, or from ``models``' accuracies per seed in older files).
    The verdict is the one today's rule gives the row's interval and p; a file that recorded another (an earlier
    rule's) shows both."""
    per_seed = [_seed_diffs(r, models) for r in rows]
    several = any(len(d) > 1 for d in per_seed)
    lines = ["| student | recipe | against | difference (points) | 95 % CI | McNemar p | verdict |"
             + (" per seed (points) |" if several else ""), "|---|---|---|---|---|---|---|" + ("---|" if several else "")]
    for r, diffs in zip(rows, per_seed):
        seeds = (" " + (", ".join(f"{100 * d:+.2f}" for d in diffs) or "-") + " |") if several else ""
        level = r.get("level", 0.95)
        if any(isinstance(v, float) and math.isnan(v) for v in (r["diff"], r["ci_low"], r["ci_high"], r["p_mcnemar"])):
            lines.append(f"| {r['student']} | {r['recipe']} | {r['against']} | - | - | - | not measured (the file "
                         "holds nan): no verdict |" + seeds)
            continue
        lines.append(f"| {r['student']} | {r['recipe']} | {r['against']} | {format_points(r['diff'])} | "
                     f"{format_interval(r)} | {format_p(r['p_mcnemar'], level)} | {_verdict_text(r)} |" + seeds)
    return "\n".join(lines)


def _verdict_text(comparison: dict) -> str:
    """The verdict today's rule gives a comparison's interval and McNemar's p, and the recorded one beside it
    where a file holds another (an earlier rule's)."""
    said = verdict(comparison["ci_low"], comparison["ci_high"], comparison.get("p_mcnemar"),
                   comparison.get("level", 0.95))
    recorded = comparison.get("verdict", said)
    return said + (f" (recorded: {recorded}, by an earlier rule)" if recorded != said else "")


def _seed_diffs(row: dict, models: list[dict] | None) -> list[float]:
    """Each seed's difference of one comparison: as recorded, or the difference of the two runs' accuracies per seed
    (results files from before it was recorded); empty where neither is known."""
    if row.get("diff_per_seed") is not None:
        return list(row["diff_per_seed"])
    by_name = {m["name"]: m.get("accuracy_per_seed") or [] for m in models or []}
    a, b = (by_name.get(f"{row['student']} {recipe}", []) for recipe in (row["recipe"], row["against"]))
    return [x - y for x, y in zip(a, b)] if len(a) == len(b) else []


def _mean_std(row: dict, key: str, scale: float = 100, digits: int = 2) -> str:
    """``row[key]`` scaled, with "± std" wherever it is a mean over several seeds (even a std of 0)."""
    text = f"{scale * row[key]:.{digits}f}"
    several = len(row.get(key + "_per_seed") or ()) > 1 or bool(row.get(key + "_std"))
    return text + (f" ± {scale * row.get(key + '_std', 0.0):.{digits}f}" if several else "")


def _layers_phase(phases: dict) -> str:
    """The cached teacher layers' phase, when the run had one (runs from before it existed have none)."""
    return f"teacher layers {phases['teacher_layers']:.0f} s, " if "teacher_layers" in phases else ""


def _precision_text(run: dict) -> str:
    """``precision bf16, 2 threads`` from a results.json's run record (older files recorded neither), and how many
    student runs trained at once, one thread each, when more than one did (``--workers``)."""
    precision = (run.get("precision") or {}).get("training", "not recorded")
    threads, workers = run.get("torch_threads"), run.get("student_workers") or 1
    threads_text = f", {threads} thread{'s' * (threads != 1)}" if threads else ""
    return (f"precision {precision}" + _other_precisions(run, precision) + threads_text +
            (f", students {workers} runs at a time with one thread each (so their train tokens/s are one "
             "thread's)" if workers > 1 else ""))


def _busy_text(run: dict) -> str:
    """`` The machine was busy as the run started ...`` where its 1-minute load average (``load_at_start``) was at
    least :data:`kd_tutorial.threads.BUSY_LOAD`: its times are slower and noisier than idle cores give; "" if not (or
    not recorded)."""
    load = run.get("load_at_start")
    if not isinstance(load, (int, float)) or isinstance(load, bool) or not load >= BUSY_LOAD:
        return ""
    return (f" The machine was busy as the run started (1-minute load average {load:.1f}), so its times are slower "
            "and noisier than idle cores give.")


def _other_precisions(run: dict, precision: str) -> str:
    """`` (teacher, distil-3L kd trained in fp32)``: the models from the cache (or resumed) that trained in another
    precision than this run's (on another machine, where "auto" meant another); "" if none."""
    others: dict[str, list[str]] = {}
    for name, trained_in in (run.get("trained_in") or {}).items():
        if trained_in and trained_in != precision:
            others.setdefault(trained_in, []).append(name)
    return "".join(f" ({', '.join(names)} trained in {p})" for p, names in others.items())


def _cached_speed_sources(row: dict) -> list[str]:
    """The runs that measured a row's train tokens/s ("this run" or a date), each once; [] if this run alone."""
    sources = list(dict.fromkeys(s.strip() for s in (row.get("train_speed_from") or "this run").split(";")))
    if not row.get("train_tokens_per_s") or sources == ["this run"]:
        return []
    return [s.removeprefix("an earlier run (").removesuffix(")") for s in sources]


def _cached_speed_note(models: list[dict]) -> str:
    """The † footnote: for each row with seeds from the artifact cache, the runs that measured its speed."""
    sources = {r["name"]: _cached_speed_sources(r) for r in models}
    when = [f"{name} {', '.join(runs)}" for name, runs in sources.items() if runs]
    if not when:
        return ""
    return ("† some or all of its seeds were taken from the artifact cache, so its train tokens/s averages the speeds "
            f"measured when they were trained, in: {'; '.join(when)}.\n\n")


def _comparisons_text(results: dict, split: str, seeds: int) -> str:
    """The comparisons section of :func:`results_markdown`: its caption and table, or the line that says why a file
    holds none."""
    if results.get("comparisons"):
        extra = (", and the recipes that add to `kd+transfer` against it"
                 if any(c["against"] == "kd+transfer" for c in results["comparisons"]) else "")
        return (f"Each recipe against its student's baseline (and the soft-target runs against the pseudo-label "
                f"control{extra}), on the same {split} reviews, pooled over seeds: paired bootstrap 95 % interval and "
                f"McNemar's exact test over reviews (with several seeds, each review counts once, with its difference "
                f"averaged over the seeds: the exact sign-flip test, which is McNemar's for one seed). Both resample "
                f"or pair reviews, so a verdict is about these trained models on new reviews"
                f"{'; how much a difference moves from one training seed to the next is its per-seed column, which the interval does not include' if seeds > 1 else ''}"
                f".\n\n"
                + format_comparisons(results["comparisons"], results["models"]) + "\n\n")
    elif "comparisons" not in results:
        return ("No comparisons in this file: it has no `comparisons` entry, which `kd-tutorial distill` always "
                "writes, so it was cut or edited; the run's own results.json (in its --out folder) has them.\n\n")
    else:
        return ("No comparisons in this file: no student was trained with both a recipe and what it is compared "
                "against (its baseline, or the pseudo-label control).\n\n")


def results_markdown(results: dict) -> str:
    """The README's results for one ``results.json``: a header line, the models, and the paired comparisons.

    A benchmark report (``kd-tutorial benchmark --report``) is rendered by :func:`benchmark_markdown`.
    """
    if results.get("kind") == "benchmark":
        return benchmark_markdown(results)
    _check_fractions(results["models"])
    run = results["run"]
    rows = []
    teacher_acc = next((r["accuracy"] for r in results["models"] if r["name"] == "teacher"), None)
    for r in results["models"]:
        train_speed = f"{r['train_tokens_per_s']:.0f}" if r.get("train_tokens_per_s") else "-"
        if _cached_speed_sources(r):
            train_speed += " †"
        agree = _mean_std(r, "agreement", digits=1) if r.get("agreement") is not None else "-"
        ratio = f"{100 * r['accuracy'] / teacher_acc:.1f}{_share_interval(r)}" if teacher_acc else "-"
        iqr = (f" ({r['latency_q1_ms']:.2f}-{r['latency_q3_ms']:.2f})" if r.get("latency_q1_ms") is not None else "")
        rows.append(f"| {r['name']} | {_mean_std(r, 'accuracy')} | {ratio} | {agree} | {r['ece']:.3f} | "
                    f"{r['params'] / 1e6:.2f} | {r['latency_ms']:.2f}{iqr} | {r['reviews_per_s']:.0f} | {train_speed} |")
    split = run["evaluated_on"]
    status = list(run.get("student_status", {}).values())
    reused = (f"; {status.count('cached')} of {len(status)} student runs taken from the artifact cache"
              if "cached" in status else "")
    phases = run["phase_seconds"]
    changed = ", ".join(f"`{k}={v}`" for k, v in run.get("profile_changes", {}).items())
    head = (f"Profile `{run['profile']}`{f' (changed: {changed})' if changed else ''}, "
            f"{run['split_sizes'].get('test', '?')} {split} reviews, device "
            f"`{run['device']}`, seeds {run['seeds']}, wall time {run['wall_seconds']:.0f} s (teacher "
            f"{phases['teacher']:.0f} s, teacher logits {phases.get('teacher_logits', 0):.0f} s, "
            f"{_layers_phase(phases)}students "
            f"{phases['students']:.0f} s, evaluation {phases['evaluation']:.0f} s{reused}), {_precision_text(run)}, commit "
            f"`{run.get('git_commit') or '-'}`.{_busy_text(run)}\n\n")
    passes = all(r.get("reviews_per_s_passes") for r in results["models"])  # in turns, the median pass kept
    table = (f"| model | {split} acc % | % of teacher | agreement % | ECE ({ECE_BINS} bins) | params M | "
             f"p50 ms, batch 1 (IQR) | reviews/s{' (median of 3 passes)' if passes else ''} | train tokens/s |\n"
             "|---|---|---|---|---|---|---|---|---|\n")
    notes = run.get("data_notes")
    out = head + (f"Data: {'; '.join(notes)}.\n\n" if notes else "") + table + "\n".join(rows) + "\n\n"
    out += _cached_speed_note(results["models"])
    if len(run.get("seeds", [])) > 1:
        out += ("Accuracy and agreement are means over the seeds ± the sample standard deviation (n - 1); ECE and the "
                "speeds are means over the seeds; p50 latency pools every seed's timings.\n\n")
    out += _comparisons_text(results, split, len(run.get("seeds", [])))
    return out + format_best_recipes(results, split)


FRACTIONS = ("accuracy", "agreement", "ece")  # a model's numbers that are shares of its reviews, from 0 to 1


def _check_fractions(models: list[dict]) -> None:
    """Refuse, as a ValueError (``kd-tutorial report``'s "incomplete or edited" line), a model's accuracy, agreement
    or ECE outside [0, 1], or one seed's: an edited accuracy of 1.7 rendered as 170.00 beside an interval that
    excludes it. A nan stays (it prints as nan: not measured)."""
    for model in models:
        for key in FRACTIONS:
            for where, value in [(key, model.get(key))] + [
                    (f"{key}_per_seed[{i}]", v) for i, v in enumerate(model.get(f"{key}_per_seed") or [])]:
                if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 <= value <= 1 \
                        and value == value:
                    raise ValueError(f"{model.get('name', '?')}'s {where} is {value!r}, not a fraction from 0 to 1")


def format_best_recipes(results: dict, split: str) -> str:
    """The line naming each student's best recipe and its margin on validation, and what the "% of teacher"
    brackets mean where a file has them."""
    out = ""
    if results.get("best_recipes"):
        margins = {student: _margin_text(results, student, b) for student, b in results["best_recipes"].items()}
        best = [f"{student} `{b['recipe']}` (validation {100 * b['val_accuracy']:.2f} %{margins[student]}, {split} "
                f"{100 * b['test_accuracy']:.2f} %{_share_text(b.get('share_of_teacher'))})"
                for student, b in results["best_recipes"].items()]
        out += "Best recipe per student, chosen on validation: " + "; ".join(best) + ".\n\n"
        tested = [bool(b.get("validation_lead")) for s, b in results["best_recipes"].items() if margins[s]]
        if any(tested):
            out += ("A margin's 95 % interval and verdict are the comparisons' (paired bootstrap and McNemar's test), "
                    "over the validation reviews that each run's kept pass answered, seeds pooled.\n\n")
        if not all(tested):
            out += ("A margin without an interval is a difference of mean validation accuracies over the seeds (from "
                    "runs that did not keep their answers): validation chooses, but a small margin does not show that "
                    f"the chosen recipe is the better one (the comparisons above test that on the {split} reviews)."
                    "\n\n")
    if any(r.get("share_of_teacher") for r in results["models"]):
        out += ("% of teacher: the student's accuracy over the teacher's, pooled over seeds, and in brackets its "
                f"paired bootstrap 95 % interval over the {split} reviews (both models' answers on each drawn review)."
                "\n\n")
    return out


def _margin_text(results: dict, student: str, best: dict) -> str:
    """", 0.07 points above `kd+transfer` on 998 reviews" (or "level with" it): the chosen recipe's lead on
    validation over the runner-up among the student's distillation recipes, or "" where it had none."""
    others = {r: v for r, v in _validation_means(results, student, best).items() if r != best["recipe"]}
    if not others:
        return ""
    top = max(choice_key(v) for v in others.values())  # the runner-up as best_recipes ranks them: a tie goes to the
    runner = next(r for r, v in others.items() if choice_key(v) == top)  # first listed, the one its lead was tested on
    n_val = results["run"].get("split_sizes", {}).get("validation")
    on = f" on {n_val:,} reviews" if n_val else ""
    lead, tested = 100 * (best["val_accuracy"] - others[runner]), best.get("validation_lead") or {}
    test = f" {format_interval(tested)}, {_verdict_text(tested)}" if tested.get("against") == runner else ""
    if choice_key(best["val_accuracy"]) == choice_key(others[runner]):  # a tie, which best_recipes broke
        return f", level with `{runner}`{on}{test}, and kept as the one trained first"
    return f", {lead:.2f} points above `{runner}`{on}{test}"


def _validation_means(results: dict, student: str, best: dict) -> dict[str, float]:
    """Each distillation recipe's mean validation accuracy for ``student``: as ``best_recipes`` holds it, or, in a
    file from before it did, from its runs' validation passes (``histories``)."""
    if "validation" in best:
        return best["validation"]
    from .recipes import RECIPES
    run, histories = results["run"], results.get("histories") or {}
    seeds = run.get("seeds") or [0]
    means = {}
    for recipe in run.get("students", {}).get(student, {}).get("recipes", {}):
        names = [f"{student} {recipe}" + (f" s{seed}" if len(seeds) > 1 else "") for seed in seeds]
        evals = [(histories.get(n) or {}).get("evals") for n in names]
        if recipe in RECIPES and RECIPES[recipe].targets == "soft" and all(evals):
            means[recipe] = sum(max(e["val_acc"] for e in ev) for ev in evals) / len(evals)
    return means


def _share_interval(row: dict) -> str:
    """" [low, high]" of a row's share of the teacher, in %, or "" for a file from before it was measured."""
    share = row.get("share_of_teacher")
    return f" [{100 * share['ci_low']:.1f}, {100 * share['ci_high']:.1f}]" if share else ""


def _share_text(share: dict | None) -> str:
    """", 97.9 % of the teacher [97.3, 98.6]" for the best-recipe line, or "" when not measured."""
    if not share:
        return ""
    return (f", {100 * share['share']:.1f} % of the teacher "
            f"[{100 * share['ci_low']:.1f}, {100 * share['ci_high']:.1f}]")


def _num(value, spec: str = "{:.0f}", scale: float = 1.0) -> str:
    """``value * scale`` in ``spec``, "-" for None."""
    return "-" if value is None else spec.format(value * scale)


def _mfu(value) -> str:
    """MFU in percent: whole numbers, and two significant digits under 1 % (0.22, not a 0 that reads unmeasured)."""
    return _num(value, "{:.2g}" if value is not None and value * 100 < 1 else "{:.0f}", 100)


def _warm_up(settings: dict) -> str:
    """What ran untimed before each phase: a few steps, or on a GPU the timed steps themselves."""
    if settings.get("warm_every_shape"):
        return "the same steps untimed (a GPU's first call of each shape picks its kernels)"
    return f"{settings['warmup']} warm-up step(s)"


def _phase_row(label: str, r: dict) -> str:
    if "skipped" in r:
        return f"| {label} | skipped: {r['skipped']} | | | | |"
    return (f"| {label} | {_num(r['tokens_per_s'])} | {_num(r['tflops'], '{:.3g}')} | {_mfu(r['mfu'])} "
            f"| {_num(r['peak_memory_gib'], '{:.1f}')} | {_num(r['seconds'], '{:.2f}')} |")


def benchmark_markdown(report: dict) -> str:
    """A benchmark report (:func:`kd_tutorial.benchmark.run_benchmark`) as markdown: the device, every phase's
    tokens/s, TFLOP/s, MFU, peak memory and seconds, inference per model, and the projected wall time."""
    env, ph, s = report["environment"], report["phases"], report["settings"]
    kernels = ", ".join(k.replace("_", "-") for k, on in env["sdpa"].items() if on)
    peak = f", dense peak {env['peak_tflops']:.0f} TFLOP/s" if env.get("peak_tflops") else ""
    bs, n = ph["teacher_train"]["batch_size"], ph["naive_vs_optimised"]
    out = [f"Benchmark of profile `{report['profile']}` on **{env['device_name']}** (`{env['device']}`, "
           f"compute capability {env['compute_capability'] or '-'}, {env['precision']}{peak}; "
           f"SDPA kernels: {kernels}), "
           f"torch {env['torch']}, commit `{report.get('git_commit') or '-'}`: random weights at the profile's sizes, "
           f"synthetic reviews with IMDB's lengths, {s['steps']} timed steps per phase after {_warm_up(s)}. "
           f"MFU: model FLOPs on real tokens against the dense {env['precision']} peak.\n",
           "| phase | tokens/s | TFLOP/s | MFU % | peak memory GiB | seconds |", "|---|---|---|---|---|---|",
           _phase_row(f"teacher fine-tuning, batch {bs}", ph["teacher_train"]),
           _phase_row(f"teacher logits, batch {ph['teacher_logits']['batch_size']}", ph["teacher_logits"])]
    out += [_phase_row(f"{name} distillation (KD, cached logits)", r) for name, r in ph["students"].items()]
    out += [_phase_row(f"{n['student']}, naive loop (fp32, padded, teacher every step)", n["naive"]),
            _phase_row(f"{n['student']}, course loop ({_speedups(n)})", n["optimised"])]
    out += [_phase_row(f"worst batch {bs} x {report['max_length']}, {dtype}, forward + backward", r)
            for dtype, r in ph["worst_batch"].items()]
    out += ["", "| model | p50 ms, batch 1 (IQR) | reviews/s, batch 256 | TFLOP/s | MFU % |", "|---|---|---|---|---|"]
    out += [f"| {name} | {r['latency_ms_p50']:.2f} ({r['latency_ms_q1']:.2f}-{r['latency_ms_q3']:.2f}) | "
            f"{r['reviews_per_s']:.0f} | {_num(r['tflops'], '{:.3g}')} | {_mfu(r['mfu'])} |"
            for name, r in ph["inference"].items()]
    return "\n".join(out) + "\n\n" + _projection_line(report["projection"]) + "\n\n"


def _speedups(n: dict) -> str:
    """The course loop's speed-up over the naive one: its steps alone, and with the pass that cached the teacher's
    logits for these rows counted in (paid once, then shared by every run and epoch that reads them)."""
    with_cache = n["optimised"]["seconds"] + (n.get("cache_seconds") or 0.0)
    once = n["naive"]["seconds"] / with_cache if with_cache else None
    return f"{_num(n['speedup'], '{:.1f}')}x; {_num(once, '{:.1f}')}x with its logits pass"


def _flop_text(flops: float) -> str:
    """``155 PFLOP``, ``2.3 TFLOP``: three significant digits in the largest unit below the number."""
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.0f} FLOP"


def _projection_line(p: dict) -> str:
    floor = f", at least {p['floor_s'] / 60:.1f} min at the dense peak" if p.get("floor_s") else ""
    return (f"Projected wall time of profile `{p['profile']}` (one seed, every run of every student, from the "
            f"measured rates): {p['projected_s'] / 60:.1f} min for {_flop_text(p['total_flops'])}{floor}; "
            "loading data, checkpoints and the eager attention of attention-map recipes not included.")


def summary(results: dict) -> dict:
    """``results`` without the per-step training logs: what ``docs/results/`` keeps of a run.

    Each history keeps its validation passes, best step, training and validation seconds and tokens/s.
    """
    keep = ("evals", "best_step", "seconds", "eval_seconds", "tokens", "tokens_per_s")
    histories = {name: ({k: h.get(k) for k in keep} if h else None) for name, h in results.get("histories", {}).items()}
    plots = [Path(p).name for p in results.get("plots", [])]
    return {k: v for k, v in results.items() if k not in ("histories", "plots")} | {"histories": histories,
                                                                                    "plots": plots}


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one file, however spelt: the same resolved path (``./x``, ``d/../x``, a
    symlink), or, when both exist, the same file on disk (a hard link, another case on a case-blind disk)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def refuse_overwrite(target: str | Path, flag: str, inputs, fix: str = "") -> None:
    """A UsageError when ``target``, the file that ``flag`` writes, is one of ``inputs`` (``None`` entries are
    skipped): writing it would replace what the command reads. ``fix`` replaces the default advice."""
    for path in inputs:
        if path is not None and same_file(target, path):
            raise UsageError(f"{flag} {target} would overwrite the input {path}: "
                             f"{fix or f'give {flag} a file of its own'}")


def check_summary_target(target: str | Path, results_paths, readme: str | Path | None = None,
                         profile: str | None = None) -> None:
    """Refuse a ``--summary`` file that is one of the results files or the README, any existing file that is not a
    results summary, or the summary of another profile's run than ``profile``'s: the summary would replace it."""
    refuse_overwrite(target, "--summary", [*results_paths, readme],
                     fix="give --summary another file, e.g. docs/results/<run>.json")
    refuse_foreign(target, "--summary", "a results summary", is_summary)
    try:  # a summary (refuse_foreign let it through), or an empty file
        earlier = profile_of(json.loads(Path(target).read_text(encoding="utf-8")))
    except (OSError, *JSON_ERRORS):
        earlier = None
    if profile is not None and earlier not in (None, profile):
        raise UsageError(f"--summary {target} holds the summary of a `{earlier}` run and this is a `{profile}` run, "
                         f"so it would replace that one: give --summary another file, e.g. "
                         f"docs/results/{profile}.json, or remove {target} first")


def profile_of(results: dict) -> str | None:
    """The profile a results file or summary names (``run.profile``), or None."""
    run = results.get("run") if isinstance(results, dict) else None
    return run.get("profile") if isinstance(run, dict) and isinstance(run.get("profile"), str) else None


def is_summary(data: dict) -> bool:
    """Whether ``data`` is what :func:`summary` writes: a run and its models, and no per-step training log or plot
    path (which a whole ``results.json``, another run's record, holds)."""
    histories, plots = data.get("histories", {}), data.get("plots", [])
    return (isinstance(data.get("run"), dict) and isinstance(data.get("models"), list)
            and isinstance(histories, dict) and isinstance(plots, list)
            and not any(isinstance(h, dict) and "steps" in h for h in histories.values())
            and all(isinstance(p, str) and Path(p).name == p for p in plots))


def refuse_foreign(target: str | Path, flag: str, kind: str, ours, fix: str = "give a new file name") -> None:
    """A UsageError when ``target`` exists and is not ``kind``: a JSON object for which ``ours(data)`` is true.
    The file ``flag`` writes may replace an earlier one of its kind, never another file. ``fix``: what to give
    instead (a flag that names a folder: "give another --out")."""
    target = Path(target)
    if target.is_dir():  # found now, not when the file is written at the end of a run
        raise UsageError(f"{target} is a folder, where {flag} writes a file: move that folder away, or give "
                         f"another {flag}")
    if not target.exists():
        return
    refuse_not_regular(target, f"{flag} would write {target}", f"move it away, or give another {flag}")
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
        mine = isinstance(data, dict) and bool(ours(data))
    except (OSError, *JSON_ERRORS):
        mine = False
    if not mine and target.stat().st_size > 0:
        raise UsageError(f"{flag} {target} exists and is not {kind}, so writing it would lose it: {fix}, or move "
                         "that file away first")


def check_readme_markers(text: str, readme: str | Path) -> None:
    """A UsageError unless ``text`` (the README ``readme``) holds the start marker once, then the end marker once:
    anything else would make the splice fail or replace text outside the results block."""
    block = f"{README_START} ... {README_END} block"
    if README_START not in text or README_END not in text:
        raise UsageError(f"{readme} has no {block}: add those two lines where the results tables go")
    twice = [m for m in (README_START, README_END) if text.count(m) > 1]
    if twice:
        raise UsageError(f"{readme} holds {' and '.join(twice)} more than once: keep one {block} and delete the "
                         "other markers")
    if text.index(README_END) < text.index(README_START):
        raise UsageError(f"{readme} has {README_END} above {README_START}: put the start marker first, on the "
                         "line above the results tables, and the end marker after them")


def splice_readme(readme: str | Path, results_paths: list[str | Path], read: dict | None = None) -> None:
    """Rewrite the block between the README's results markers with the tables of ``results_paths`` (their contents
    as ``read`` holds them, by path, where the caller read them already: a pipe reads empty the second time).

    The markers are checked (:func:`check_readme_markers`) and a README that is one of the results files is
    refused, before anything is written. The new text is written to a temporary file and renamed into place:
    an interrupted splice leaves the old README whole.
    """
    refuse_overwrite(readme, "--readme", results_paths, fix=f"give --readme the README.md that holds the "
                                                            f"{README_START} marker")
    readme = Path(readme).resolve()  # through a link, the file it names (the link stays a link)
    read = {str(p): data for p, data in (read or {}).items()}
    table = "".join(results_markdown(read[p] if p in read else json.loads(Path(p).read_text(encoding="utf-8")))
                    for p in sorted(map(str, results_paths)))
    with open(readme, encoding="utf-8", newline="") as f:  # UTF-8 whatever the locale; its line endings kept
        text = f.read()
    check_readme_markers(text, readme)
    before, rest = text.split(README_START, 1)
    after = rest.split(README_END, 1)[1]
    mode, nl = readme.stat().st_mode & 0o777, "\r\n" if "\r\n" in text else "\n"
    block = f"{README_START}\n{table}{README_END}".replace("\n", nl)  # in the README's own line endings
    atomic_write_text(readme, f"{before}{block}{after}", newline="")
    os.chmod(readme, mode)  # the README's own permissions, not a new file's
