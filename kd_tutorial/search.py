"""``kd-tutorial search``: an Optuna study over T, alpha, the student and the transfer-set size.

Each trial trains one ``kd+transfer`` run (:func:`kd_tutorial.plan.run_config`, the profile's step budget
for the whole transfer set whatever fraction the trial reads, or ``steps`` of them) from the cached teacher and
its cached logits, then measures two objectives: the best validation accuracy of the run (maximised) and the p50
latency of one review at batch 1 on this device (minimised). Latency depends on the student's architecture, not
its weights, so it is measured once per student (kept in the study): two trials of one student differ in accuracy
only, not in the timer's noise, which would otherwise keep a less accurate trial on the front. The study is
multi-objective, so the answer is a Pareto front, not one trial. One reading taken while the machine was busy
would stay in the study for good, so the front is chosen on latencies timed again when the results are written,
every student side by side in turns (:func:`retime`), with their interquartile ranges.

Search space: ``T`` (1-8, log scale), ``alpha`` (0-1), ``student`` (one of the profile's students, plus for the
first ``distil`` student every other depth below the teacher's: ``distil-1L`` ... ``distil-(L-1)L``) and
``transfer_fraction`` (0.25, 0.5 or 1.0 of the profile's transfer reviews, always with the labelled ones). Every
student reads that one transfer set: a student that learns from the spare train reviews in ``distill``
(``StudentSpec.spare_reviews``) reads none here, and its budget counts the reviews it reads (:func:`spare_note`).

Pruning: Optuna's pruners (``MedianPruner``...) work on single-objective studies only (``Trial.report`` is refused
in a multi-objective one), so this module applies its own rule at the end of every training epoch (the
``on_epoch_end`` hook of :func:`kd_tutorial.train.train`), on the validation passes so far: a trial is pruned
(``raise optuna.TrialPruned()``, state PRUNED) when its best validation accuracy is below the teacher's by more
than ``margin``, or, once ``min_finished`` trials *of the same student* have completed, below the median of theirs
at the same pass by more than one standard error of that median accuracy on the validation reviews. Only trials of
one student share a latency: a faster student's trial can be on the front below a slower one's median. Short runs
(``steps`` under one epoch) are checked once, at their end: they are marked, not shortened. A trial whose training
diverges is pruned too, its reason kept, and the study goes on.

Resumable: the study lives in ``<out>/search.db`` (SQLite) as :data:`STUDY_NAME`; a second call continues it up
to ``trials`` finished (completed or pruned) trials in all. The sampler is seeded with the count of trials
already there, so a new process never proposes the same sequence again.

Test accuracy is computed only *after* the front is chosen on validation, and only for the front's trials (from
the weights each completed trial keeps in ``<out>/trials/<number>/model``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
from pathlib import Path

import torch

from .artifacts import data_key
from .data import subset_encoded
from .device import pick_device
from .errors import error_cause, error_chain, UsageError
from .evaluate import accuracy, accuracy_interval, latency, latency_in_turns, predict_logits
from .plan import check_student_labels, run_config, step_budget, student_data
from .profiles import Profile, StudentSpec
from .store import atomic_save_pretrained, atomic_savefig, atomic_write_json, locked, StorageError
from .teachers import ensure_teacher, ensure_teacher_logits
from .seeding import seed_everything
from .train import TrainingDivergedError, train

STUDY_NAME = "kd-search"
FRACTIONS = (0.25, 0.5, 1.0)
T_RANGE = (1.0, 8.0)
RECIPE = "kd+transfer"


@dataclasses.dataclass
class SearchContext:
    """What every trial shares: the profile, the cached teacher and its logits, and the study's settings."""

    profile: Profile
    teacher: object
    prep: object
    rows: object  # labelled + transfer reviews (data.Encoded)
    logits: torch.Tensor  # the teacher's logits on ``rows``
    n_labelled: int
    teacher_val: float
    students: dict  # choice name -> StudentSpec
    out: Path
    device: str = "cpu"
    steps: int | None = None
    margin: float = 0.15
    min_finished: int = 5
    seed: int = 0
    latency_n: int = 30


def student_choices(profile: Profile, teacher_layers: int) -> dict[str, StudentSpec]:
    """The students a trial may pick: the profile's own, plus the first distil student at every other depth."""
    choices = {spec.name: spec for spec in profile.students}
    distil = next((s for s in profile.students if s.kind == "distil"), None)
    if distil is not None:
        for layers in range(1, teacher_layers):
            name = f"distil-{layers}L"
            if name not in choices and layers != distil.num_layers:
                choices[name] = dataclasses.replace(distil, name=name, num_layers=layers, layer_map=None)
    return dict(sorted(choices.items()))


def suggest(trial, ctx: SearchContext) -> dict:
    """The trial's point of the search space."""
    return {"T": trial.suggest_float("T", *T_RANGE, log=True), "alpha": trial.suggest_float("alpha", 0.0, 1.0),
            "student": trial.suggest_categorical("student", list(ctx.students)),
            "transfer_fraction": trial.suggest_categorical("transfer_fraction", list(FRACTIONS))}


def transfer_rows(ctx: SearchContext, fraction: float):
    """The labelled reviews plus the first ``fraction`` of the transfer reviews (a fixed shuffle), and the
    teacher's logits on them."""
    n_transfer = len(ctx.rows) - ctx.n_labelled
    order = torch.randperm(n_transfer, generator=torch.Generator().manual_seed(0))
    keep = order[:max(1, round(fraction * n_transfer))].sort().values + ctx.n_labelled
    index = torch.cat([torch.arange(ctx.n_labelled), keep])
    return subset_encoded(ctx.rows, index, f"train+transfer x{fraction}"), ctx.logits[index]


def prune_reason(curve: list[float], finished: list[list[float]], *, teacher_val: float, margin: float,
                 min_finished: int, n_val: int | None = None) -> str | None:
    """Why a trial whose validation passes so far scored ``curve`` should stop (None: it goes on).

    ``finished``: the curves of the completed trials of the same student. The rule: the best accuracy so far is
    below the teacher's by more than ``margin``, or (with at least ``min_finished`` completed trials that reached
    this pass) below the median ``m`` of their best accuracies up to the same pass by more than one standard error,
    ``sqrt(m(1 - m) / n_val)`` on ``n_val`` validation reviews (None: by any amount).
    """
    if not curve:
        return None
    best, k = max(curve), len(curve)
    if best < teacher_val - margin:
        return f"validation accuracy {best:.3f} after pass {k} is below the teacher's {teacher_val:.3f} - {margin}"
    peers = [max(c[:k]) for c in finished if len(c) >= k]
    if len(peers) < max(1, min_finished):
        return None
    median = statistics.median(peers)
    noise = math.sqrt(median * (1 - median) / n_val) if n_val else 0.0
    if best < median - noise:
        return (f"validation accuracy {best:.3f} after pass {k} is below the median {median:.3f} of this student's "
                f"completed trials by more than one standard error ({noise:.3f})")
    return None


def _pruning_hook(trial, ctx: SearchContext, student: str):
    """An ``on_epoch_end`` callback that applies :func:`prune_reason` (against the completed trials of ``student``)
    and raises ``optuna.TrialPruned``."""
    import optuna
    complete = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    finished = [t.user_attrs.get("val_curve", []) for t in complete if t.params.get("student") == student]
    n_val = len(ctx.prep.encoded["validation"])

    def hook(epoch: int, history) -> None:
        curve = [e["val_acc"] for e in history.evals]
        trial.set_user_attr("val_curve", curve)
        reason = prune_reason(curve, finished, teacher_val=ctx.teacher_val, margin=ctx.margin,
                              min_finished=ctx.min_finished, n_val=n_val)
        if reason is not None:
            trial.set_user_attr("pruned_because", reason)
            raise optuna.TrialPruned(reason)
    return hook


def run_trial(trial, ctx: SearchContext) -> tuple[float, float]:
    """Train one ``kd+transfer`` run at the trial's point; return (validation accuracy, p50 latency in ms)."""
    from .models import build_student, fold_word_embeddings
    p, profile = suggest(trial, ctx), ctx.profile
    spec = ctx.students[p["student"]]
    rows, t_logits = transfer_rows(ctx, p["transfer_fraction"])
    steps = trial_steps(ctx, spec)
    config = dataclasses.replace(run_config(profile, spec, RECIPE, steps, ctx.seed), temperature=p["T"],
                                 alpha=p["alpha"])
    seed_everything(ctx.seed)
    student = build_student(spec, ctx.teacher, attention_dropout=profile.attention_dropout,
                            freeze_embeddings=profile.freeze_word_embeddings,
                            hidden_dropout=profile.student_hidden_dropout, teacher_tokenizer=ctx.prep.tokenizer)
    seed_everything(ctx.seed)
    try:
        history = train(student, rows, config=config, val_data=ctx.prep.encoded["validation"],
                        teacher_logits=t_logits, device=ctx.device, desc=f"trial {trial.number} {spec.name}",
                        progress=False, on_epoch_end=_pruning_hook(trial, ctx, spec.name))
    except TrainingDivergedError as err:  # a bad point of the space, not the user's error: the study goes on
        import optuna
        reason = f"training diverged: {str(err).split(';')[0]}"
        trial.set_user_attr("pruned_because", reason)
        raise optuna.TrialPruned(reason) from None
    student = fold_word_embeddings(student)
    atomic_save_pretrained(student, trial_folder(ctx.out, trial.number))
    trial.set_user_attr("steps", steps)
    trial.set_user_attr("params_count", sum(x.numel() for x in student.parameters()))
    return history.best_val_acc or 0.0, student_latency(trial.study, ctx, spec.name, student)


def trial_steps(ctx: SearchContext, spec: StudentSpec) -> int:
    """A trial's optimizer steps: ``ctx.steps``, else the profile's budget for the labelled and *all* transfer
    reviews, so that a trial reading a fraction of them trains as long (more passes over fewer reviews) and the
    fraction is the only thing it changes."""
    return ctx.steps or step_budget(ctx.profile, spec, len(ctx.rows))


def student_latency(study, ctx: SearchContext, name: str, student) -> float:
    """p50 latency in ms of student ``name``: measured on its first trial, then read from the study's records."""
    key = f"latency_ms {name}"
    if key not in study.user_attrs:
        timing = latency(student, ctx.prep.encoded["validation"], device=ctx.device, n=ctx.latency_n,
                         warmup=3, repeats=2, precision=ctx.profile.precision)
        study.set_user_attr(key, timing["p50"])
    return study.user_attrs[key]


def trial_folder(out: Path, number: int) -> Path:
    """Where a completed trial keeps its weights (the best on validation)."""
    return Path(out) / "trials" / f"{number:04d}" / "model"


# what sets each of a study's settings, for the message that refuses to continue it with others
FLAGS = {"profile": "--profile", "steps": "--steps",
         "profile settings": "the profile's settings (a hash; they change with kd-tutorial's version or in Python)",
         "seed": "--seed", "device": "--device", "data": "data ($KD_TUTORIAL_DATA_DIR)"}


# how a trial is trained and timed; a study whose trials followed another rule is not continued. 2: one step
# budget whatever share of the transfer set a trial reads, and one latency per student (:func:`student_latency`)
TRIAL_RULE = 2


def open_study(out: Path, profile: Profile, steps: int | None, seed: int = 0, **settings):
    """The study in ``out/search.db``: created, or loaded to continue; a UsageError when it was made with another
    profile (its name or any setting), step budget, seed or ``settings`` (device, data, latency reviews...), since one
    Pareto front must compare like with like, or is no study database (:func:`_create_study`). Trials left RUNNING
    by an interrupted call are marked FAIL (not counted)."""
    import optuna
    # ERROR: optuna logs a failed trial (Ctrl-C in one) as a WARNING with its traceback; the CLI says it in a line
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if not (Path(out) / "search.db").exists():  # refused before a new, empty search.db is left behind
        _refuse_earlier_trials(Path(out), None)
    study = _create_study(Path(out) / "search.db")
    # the effective batch, not its split: a GPU's memory fit (16 x 2 for 32 x 1) trains alike, and continues a
    # study made before the fit
    one_batch = profile.replace(batch_size=profile.effective_batch, grad_accum=1)
    now = {"profile": profile.name, "steps": steps, "profile settings": one_batch.config_hash(), "seed": seed,
           **settings}
    kept = study.user_attrs if study.trials else {}  # a study without a trial compares nothing: it takes today's
    _refuse_earlier_trials(Path(out), study)
    if kept and kept.get("trial rule", 1) != TRIAL_RULE:
        raise UsageError(f"{out}/search.db holds a study whose trials an earlier kd-tutorial trained and timed another "
                         "way (steps by their share of the transfer set, each trial timed on its own), which one front "
                         "cannot compare with today's: give another --out for a new study")
    now["trial rule"] = TRIAL_RULE
    differ = [k for k, v in now.items() if k in kept and kept[k] != v]  # a study from before a key was kept: its own
    if differ:
        was = ", ".join(f"{FLAGS.get(k, k)} {kept[k]!r} (now {now[k]!r})" for k in differ)
        raise UsageError(f"{out}/search.db holds a study made with {was}: continue it with the same settings, or "
                         "give another --out for a new study")
    for key, value in now.items():
        study.set_user_attr(key, value)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def _refuse_earlier_trials(out: Path, study) -> None:
    """A new study (no trial in its search.db, or no search.db: ``study`` None) would number its trials from 0 again
    and write over the models and search.json an earlier study left in ``out``: a UsageError instead."""
    left = [name for name in ("trials", "search.json") if (out / name).exists()]
    if (study is None or not study.trials) and left:
        raise UsageError(f"{out} holds {' and '.join(left)} of an earlier study, which a new study there would "
                         f"overwrite: give another --out, or move {' and '.join(left)} away")


def _create_study(db: Path):
    """The study in the SQLite file ``db``, created or loaded; a UsageError, the file left as it is, when it cannot
    be opened as an Optuna study (not a database, a folder, another program's tables...)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError  # optuna's storage layer: installed with it
    url = _sqlite_url(db)
    _refuse_foreign_database(db)
    try:
        return optuna.create_study(study_name=STUDY_NAME, storage=url, directions=["maximize", "minimize"],
                                   load_if_exists=True)
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        raise UsageError(f"{db} cannot be opened as a study database ({_database_cause(err)}): give another "
                         f"--out, or move {db} (with the trials/ and search.json beside it) away to start a new "
                         "study there") from None


def _refuse_foreign_database(db: Path) -> None:
    """A UsageError, the file left as it is, for a SQLite ``db`` that holds tables and none of Optuna's: Optuna adds
    its own tables to any database it is given (another program's search.db came back with 25 more)."""
    import sqlite3
    from urllib.parse import quote
    if not db.is_file() or db.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(db.resolve()))}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return  # not a database: create_study's own error names it
    if tables and not {"studies", "version_info"} <= tables:
        names = sorted(tables)
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise UsageError(f"{db} is another program's database (tables {shown}), not a study's: give another --out, "
                         "or move it away")


def _sqlite_url(db: Path) -> str:
    """The SQLAlchemy URL that names the file ``db`` itself. Written plainly, a "?" in a folder's name starts the
    URL's query (the study went to a file above ``--out``) and "%20" reads as a space; such a path is percent-quoted
    where this SQLAlchemy decodes it back, else refused in one line."""
    from urllib.parse import quote

    from sqlalchemy.engine import make_url
    path = str(db.resolve())
    for url in (f"sqlite:///{path}", f"sqlite:///{quote(path, safe='/')}"):
        if make_url(url).database == path:
            return url
    raise UsageError(f"{db.parent} cannot hold the study: the database URL cannot name a path with characters such as "
                     "? or % in this SQLAlchemy: give another --out")


def _database_cause(err: BaseException) -> str:
    """The first line of the database's own complaint behind ``err`` (optuna wraps sqlalchemy, which wraps
    sqlite3)."""
    inner = err.__cause__ or err
    text = str(getattr(inner, "orig", None) or inner).strip().splitlines()
    return text[0] if text else inner.__class__.__name__


def finished_count(study) -> int:
    """Trials that ran to an answer: completed or pruned."""
    import optuna
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def make_context(profile: Profile, out: Path, *, device: str, steps: int | None, progress: bool,
                 **settings) -> SearchContext:
    """The cached teacher, its logits on the labelled and transfer reviews, and the student choices."""
    teacher, prep, info = ensure_teacher(profile, device=device, progress=progress)
    check_student_labels(profile, len(prep.encoded["train"]))  # the teacher is cached: a refusal here loses nothing
    logits = {split: ensure_teacher_logits(profile, split, teacher_model=teacher, device=device, progress=progress)
              for split in ("train", "transfer")}
    sets = student_data(profile, prep, logits)
    rows, t_logits, _ = sets["transfer"]
    teacher_val = teacher_val_accuracy(profile, teacher, prep, info, device=device)
    return SearchContext(profile=profile, teacher=teacher, prep=prep, rows=rows, logits=t_logits,
                         n_labelled=len(sets["labelled"][0]), teacher_val=teacher_val,
                         students=student_choices(profile, teacher.config.num_hidden_layers), out=Path(out),
                         device=device, steps=steps, **settings)


def teacher_val_accuracy(profile: Profile, teacher, prep, info: dict, *, device: str) -> float:
    """The cached teacher's validation accuracy, the pruning rule's bar: as ``teacher.json`` records it, or computed
    again on the validation reviews (one pass, and a line that says so) where it records no number in [0, 1] (an
    older or hand-edited file): read as 0, it switched the rule off and wrote 0 into search.json."""
    recorded = info.get("val_accuracy")
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and 0 <= recorded <= 1:
        return float(recorded)
    val = prep.encoded["validation"]
    logits = predict_logits(teacher, val, batch_size=profile.eval_batch_size, device=device,
                            precision=profile.precision)
    acc = accuracy(logits, val.labels)
    print(f"teacher: {prep.directory / 'teacher.json'} records no validation accuracy ({recorded!r}); computed "
          f"again on {len(val)} validation reviews: {acc:.4f}", flush=True)
    return acc


def trial_record(t) -> dict:
    """One trial as search.json keeps it."""
    values = t.values or [None, None]
    return {"number": t.number, "state": t.state.name, "params": dict(t.params), "val_accuracy": values[0],
            "latency_ms": values[1], "val_curve": t.user_attrs.get("val_curve", []),
            "steps": t.user_attrs.get("steps"), "pruned_because": t.user_attrs.get("pruned_because")}


def pareto_front(records: list[dict]) -> list[dict]:
    """The completed records that no other completed record beats on both objectives (ties kept)."""
    done = [r for r in records if r["state"] == "COMPLETE"]
    return [r for r in done if not any(dominates(o, r) for o in done)]


def dominates(a: dict, b: dict) -> bool:
    """``a`` is at least as good as ``b`` on both objectives and better on one."""
    ge = a["val_accuracy"] >= b["val_accuracy"] and a["latency_ms"] <= b["latency_ms"]
    return ge and (a["val_accuracy"] > b["val_accuracy"] or a["latency_ms"] < b["latency_ms"])


def evaluate_on_test(ctx: SearchContext, number: int) -> dict:
    """A completed trial's accuracy on the test split, from its kept weights (only for chosen trials), with its
    95 % interval (:func:`kd_tutorial.evaluate.accuracy_interval`) and the count of test reviews."""
    test = ctx.prep.encoded["test"]
    logits = predict_logits(load_trial(ctx, number), test, batch_size=ctx.profile.eval_batch_size,
                            device=ctx.device, precision=ctx.profile.precision)
    acc, n = accuracy(logits, test.labels), int((torch.as_tensor(test.labels) >= 0).sum())
    return {"test_accuracy": acc, "test_interval": list(accuracy_interval(round(acc * n), n)), "n_test": n}


def load_trial(ctx: SearchContext, number: int):
    """A completed trial's kept model; a UsageError naming the fix when its folder is gone or cannot be read (a
    copy of the study cut short)."""
    from transformers import BertForSequenceClassification
    folder = trial_folder(ctx.out, number)
    if not (folder / "config.json").is_file():
        raise UsageError(f"trial {number}'s weights are missing from {folder}: restore them there, or give another "
                         "--out for a new study")
    try:
        return BertForSequenceClassification.from_pretrained(folder)
    except Exception as err:  # a cut or damaged model.safetensors, a config.json edited
        raise UsageError(f"cannot read trial {number}'s weights in {folder} ({error_cause(err)}): restore them there "
                         "from where the study was copied, or give another --out for a new study") from None


def retime(ctx: SearchContext, records: list[dict]) -> None:
    """Time every student of the completed ``records`` again, side by side in turns
    (:func:`kd_tutorial.evaluate.latency_in_turns`, 3 passes), and set each record's ``latency_ms`` (p50) and
    ``latency_iqr`` from it; the study's own reading stays in ``study_latency_ms``."""
    done = [r for r in records if r["state"] == "COMPLETE"]
    first: dict[str, int] = {}
    # any trial of a student whose weights are kept will do (its latency is its architecture's): those first
    for r in sorted(done, key=lambda r: not (trial_folder(ctx.out, r["number"]) / "config.json").is_file()):
        first.setdefault(r["params"]["student"], r["number"])
    models = {name: load_trial(ctx, number) for name, number in first.items()}
    timings = latency_in_turns(models, ctx.prep.encoded["validation"], device=ctx.device, n=ctx.latency_n,
                               repeats=3, precision=ctx.profile.precision) if models else {}
    for r in done:
        t = timings[r["params"]["student"]]
        r["study_latency_ms"], r["latency_ms"], r["latency_iqr"] = r["latency_ms"], t["p50"], [t["q1"], t["q3"]]


def format_front(front: list[dict]) -> str:
    """The Pareto front as a markdown table, fastest first: test accuracy with its 95 % interval, latency with its
    interquartile range."""
    lines = ["| trial | T | alpha | student | transfer fraction | val accuracy | test accuracy [95 % CI] | "
             "p50 ms (IQR) |", "|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in sorted(front, key=lambda r: r["latency_ms"]):
        p, test, (lo, hi) = r["params"], r.get("test_accuracy"), r.get("test_interval") or (None, None)
        shown = "-" if test is None else f"{100 * test:.1f}"
        shown += "" if lo is None else f" [{100 * lo:.1f}, {100 * hi:.1f}]"
        iqr = r.get("latency_iqr")
        spread = "" if not iqr else f" ({iqr[0]:.2f}-{iqr[1]:.2f})"
        lines.append(f"| {r['number']} | {p['T']:.2f} | {p['alpha']:.2f} | {p['student']} | "
                     f"{p['transfer_fraction']:g} | {100 * r['val_accuracy']:.1f} | {shown} | "
                     f"{r['latency_ms']:.2f}{spread} |")
    return "\n".join(lines)


def plot_front(records: list[dict], front: list[dict], path: Path, title: str) -> str:
    """Validation accuracy against p50 latency: every completed trial, the front highlighted and joined."""
    from matplotlib.figure import Figure  # no pyplot: no backend to choose, nothing left open
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    done = [r for r in records if r["state"] == "COMPLETE"]
    ax.scatter([r["latency_ms"] for r in done], [100 * r["val_accuracy"] for r in done], color="gray", alpha=0.6,
               label="trials")
    pts = sorted((r["latency_ms"], 100 * r["val_accuracy"]) for r in front)
    ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color="C3", label="Pareto front", drawstyle="steps-post")
    for r in front:
        ax.annotate(f"#{r['number']} {r['params']['student']}", (r["latency_ms"], 100 * r["val_accuracy"]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="p50 latency at batch 1 (ms)", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, Path(path), dpi=120)  # a full disk: one line, and no cut PNG left
    return str(path)


def check_margin(margin: float) -> None:
    """Refuse a ``--margin`` outside 0 to 1: below 0 a trial had to beat the teacher, and ``--margin -1`` pruned
    every trial of the study. (:func:`run_search` itself takes any margin: the tests force a pruning with -1.)"""
    if not 0.0 <= margin <= 1.0:
        raise UsageError(f"--margin {margin}: give how far below the teacher's validation accuracy a trial may fall "
                         "before it is pruned, from 0 to 1 (e.g. 0.15)")


def run_search(profile: Profile, *, trials: int = 20, out: str | Path = "runs/search", steps: int | None = None,
               device: str | None = None, progress: bool = True, seed: int = 0, margin: float = 0.15,
               min_finished: int = 5, latency_n: int = 30) -> dict:
    """Run (or continue) the study until it holds ``trials`` finished trials; write search.json and the plot.

    Returns search.json's content: every trial, the front (with test accuracy, computed for it alone), the
    teacher's validation accuracy and the paths written.
    """
    if trials < 1 or (steps is not None and steps < 1):
        raise UsageError(f"trials={trials}, steps={steps}: give whole numbers >= 1")
    out, device = Path(out), device or pick_device()
    with locked(out), _study_writes(out / "search.db"):
        study = open_study(out, profile, steps, seed, device=device, latency_n=latency_n,
                           data=data_key(profile, None))  # not the pruning rule: it measures nothing
        ctx = make_context(profile, out, device=device, steps=steps, progress=progress, margin=margin,
                           min_finished=min_finished, seed=seed, latency_n=latency_n)
        todo = max(0, trials - finished_count(study))
        if spare_note(profile, ctx.prep):
            print(spare_note(profile, ctx.prep), flush=True)
        print(f"study {STUDY_NAME} in {out / 'search.db'}: {finished_count(study)} finished trial(s), running "
              f"{todo} more", flush=True)
        if todo:
            study.optimize(lambda trial: run_trial(trial, ctx), n_trials=todo, gc_after_trial=True, callbacks=[_say])
        return write_results(study, ctx)


@contextlib.contextmanager
def _study_writes(db: Path):
    """Turn SQLite refusing to write the study (a full disk: "database or disk is full", a read-only file) into one
    StorageError that names the fix; optuna re-raises it as an AssertionError ("Should not reach.") when a trial's
    result could not be stored. SQLite rolls the refused write back: the finished trials stay in ``db``."""
    try:
        yield
    except Exception as err:
        why = _refused_write(err)
        if why is None:
            raise
        raise StorageError(f"cannot write {db}: {why}; free some space, or make {db} writable, then run the same "
                           "command again to continue: the finished trials are kept in it") from err


def _refused_write(err: BaseException | None) -> str | None:
    """SQLite's complaint in ``err``'s chain when it could not write (full, read-only, an I/O error), else None."""
    for err in error_chain(err):
        text = str(getattr(err, "orig", None) or err).strip().splitlines()
        if type(err).__module__.split(".")[0] in ("sqlalchemy", "sqlite3") and text and any(
                words in text[0] for words in ("disk is full", "readonly database", "disk I/O error")):
            return text[0].removeprefix("(sqlite3.OperationalError) ")
    return None


def spare_note(profile: Profile, prep=None) -> str | None:
    """The line that says which students learn from the spare train reviews in ``distill`` but not in the study
    (None: no student asks for them, or ``prep``'s data, when given, holds none)."""
    if prep is not None and prep.spare_rows() == 0:
        return None
    names = [spec.name for spec in profile.students if spec.spare_reviews]
    if not names:
        return None
    return (f"search: {', '.join(names)} also learn{'s' if len(names) == 1 else ''} from the spare train reviews in "
            "distill; here every trial reads the labelled and transfer reviews alone, at the budget they make")


def _say(study, trial) -> None:
    """One line per finished trial."""
    values = "" if not trial.values else f": val {100 * trial.values[0]:.1f} %, {trial.values[1]:.2f} ms"
    if trial.user_attrs.get("pruned_because"):
        values = f": {trial.user_attrs['pruned_because']}"
    params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial.params.items())
    print(f"trial {trial.number} {trial.state.name.lower()} ({params}){values}", flush=True)


def empty_front_fix(records: list[dict]) -> str:
    """What to change when no trial completed, from the pruned trials' reasons: the margin, for trials pruned
    below the teacher by it; more trials, for diverged ones (other points of T and alpha) and the rest."""
    reasons = [r.get("pruned_because") or "" for r in records]
    fixes = (["give a larger --margin"] if any("below the teacher" in r for r in reasons) else []) + \
        ["give more --trials" + (" (a diverged trial is a bad point of T and alpha)" if any(
            r.startswith("training diverged") for r in reasons) else "")]
    return ", or ".join(fixes)


def write_results(study, ctx: SearchContext) -> dict:
    """Choose the front on validation, then (only then) measure its trials on test; write search.json + plot."""
    import optuna
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    records = [trial_record(t) for t in study.get_trials(deepcopy=False, states=finished)]
    retime(ctx, records)
    front = pareto_front(records)
    for r in front:
        r.update(evaluate_on_test(ctx, r["number"]))
    plot = plot_front(records, front, ctx.out / "search-pareto.png",
                      f"{ctx.profile.name}: {len(records)} trials, Pareto front of {len(front)}")
    result = {"study": STUDY_NAME, "storage": str(ctx.out / "search.db"), "profile": ctx.profile.name,
              "device": ctx.device, "steps": ctx.steps, "teacher_val_accuracy": ctx.teacher_val,
              "n_validation": len(ctx.prep.encoded["validation"]),
              "objectives": ["val_accuracy (max)", "latency_ms p50 batch 1 (min)"], "trials": records,
              "front": front, "plot": plot}
    atomic_write_json(ctx.out / "search.json", result)
    print(format_front(front), flush=True)
    if not front:
        print(f"no trial completed, so the front is empty (each pruned trial's reason is above and in search.json): "
              f"{empty_front_fix(records)}", flush=True)
    else:
        print(f"validation accuracy is on {result['n_validation']} reviews (one review is "
              f"{100 / max(1, result['n_validation']):.2f} points), so the front's points may differ by noise alone; "
              "two points are scored on the same test reviews, so a paired interval of their difference "
              "(kd_tutorial.evaluate.paired_bootstrap) tells them apart, not whether these intervals overlap",
              flush=True)
    print(f"wrote {ctx.out / 'search.json'} and {plot}", flush=True)
    return result
