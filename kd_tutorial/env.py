"""The notebook header: offline flags, seeds, device, quiet logging, and an environment report.

Call :func:`setup` in the first code cell that runs of every notebook (after the
commented install line), *before* anything imports transformers: the Hugging Face
offline flags are read at import time.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from .artifacts import cache_status
from .device import (bf16_supported, configure, describe, memory_gb, pick_device,  # noqa: F401  (notebooks)
                     resolve_precision)
from .errors import UsageError
from .lm import hub_models
from .provenance import versions
from .profiles import describe_choice, MAX_SEED, Profile, PROFILE_ENV, PROFILES, resolve_profile
from .store import ArtifactError, cache_problem, home, HOME_ENV
from .seeding import seed_everything


QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",          # no LOAD REPORT tables, no SDPA warnings
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",        # no download / save bars
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
# TOKENIZERS_PARALLELISM is left alone: "false" would make tokenizing 25k-100k reviews single-threaded (measured
# 1.7x slower on 2 cores for 10k IMDB reviews). Unset, the Rust tokenizer uses every core and, in a process forked
# after that, turns its threads off by itself (printing a warning) rather than deadlock.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
HF_TRUE = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub and datasets read as "on" in their offline variables
# where a library already imported keeps the offline setting it read then
READ_AT_IMPORT = {"huggingface_hub": ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
                  "datasets": ("datasets.config", "HF_DATASETS_OFFLINE")}
# what pyproject.toml asks for (its comments say why): transformers 5 is where SDPA returns no attention weights and
# models have set_attn_implementation, as notebooks 01 and 07 show, and 5.5.4 where Trainer's gradient accumulation
# (notebook 08) steps in full; the newest transformers treats a torch below 2.6 as missing. An older one left
# installed (Colab) failed mid-notebook
MINIMUM = {"torch": (2, 6), "transformers": (5, 5, 4)}


@dataclass
class Session:
    """What :func:`setup` chose: the profile, the device and the seed."""

    profile: Profile
    device: str
    seed: int
    offline: bool

    def __repr__(self) -> str:
        return (f"Session(profile={self.profile.name!r}, device={self.device!r}, seed={self.seed}, "
                f"offline={self.offline})")


def quiet() -> None:
    """Silence Hugging Face logging and progress bars (env vars, and the APIs if already imported)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


def fit_to_device(profile: Profile, device: str) -> tuple[Profile, str | None]:
    """``profile`` with its batch fitted to a small GPU's memory (:meth:`~kd_tutorial.profiles.Profile.fit_memory`:
    the same effective batch), and a line that says so (None when nothing changed). ``distill``, ``search`` and the
    notebooks fit alike: the batch is part of the teacher's cache key, so each finds the teacher the others
    trained."""
    memory = memory_gb(device)
    if memory is None:
        return profile, None
    precision = resolve_precision(device, profile.precision)
    # native bf16 (sm80 and up) runs the fused attention kernels, as fp16 does: FITS_16GB's bf16 row is emulated bf16
    kernel = "fp16" if precision == "bf16" and bf16_supported(device) else precision
    fitted = profile.fit_memory(kernel, memory)
    if fitted == profile:
        return profile, None
    return fitted, (f"{memory:.1f} GiB GPU in {precision}: batch {fitted.batch_size} x {fitted.grad_accum} "
                    f"accumulation steps (the profile's effective batch of {profile.effective_batch})")


def artifact_home_problem() -> str | None:
    """One line naming why the artifact cache (``$KD_TUTORIAL_HOME``) cannot be used and its fix (a read-only copy of
    a workshop's cache: copy it where you can write, which keeps its teachers), as ``kd-tutorial env`` says it; None
    when it can be used. Judged without creating anything."""
    try:
        root = home()
    except ArtifactError as err:  # a relative $KD_TUTORIAL_HOME
        return f"artifact cache unusable: {err}"
    found = cache_problem(root)
    if found is None:
        return None
    problem, fix = found[0], found[1] or f"point {HOME_ENV} to a folder you can write"
    return (f"artifact cache unusable: {problem}: {fix} (in the shell that starts Jupyter, then start it again); "
            "the cells that train or read the cached teacher fail until then")


def setup(profile: str | None = None, seed: int = 0, offline: bool | None = None) -> Session:
    """Prepare a notebook or script: quiet logging, offline flags, seeds, profile and device (set up as ``distill``
    sets it up: :func:`kd_tutorial.device.configure`).

    ``offline=None`` turns the Hub off for the ``tiny`` profile (it needs nothing
    from it) and leaves it as the environment says otherwise.
    """
    _check_setup(profile, seed, offline)
    check_versions()
    quiet()
    chosen = resolve_profile(profile)
    asked = offline
    if offline is None:
        offline = chosen.name == "tiny" or bool(offline_flags(models_only=True))
    _apply_offline(offline, unset=asked is False)
    seed_everything(seed)
    device = pick_device()
    if device == "cpu" and _cuda_build():
        print(f"torch is a CUDA {_cuda_build()} build but sees no GPU: on Colab, Runtime > Change runtime type > "
              "GPU; elsewhere check nvidia-smi and CUDA_VISIBLE_DEVICES")
    configure(device)  # as distill does: on a GPU, TF32 from sm80 and the allocator, before anything is allocated
    source = "argument" if profile else (f"${PROFILE_ENV}" if os.environ.get(PROFILE_ENV) else None)
    print(describe_choice(chosen, source))
    if source is None:  # chosen by the device: on a GPU, full, which a Colab T4 takes hours over
        advice = full_by_default(chosen, device)
        if advice:
            print(advice)
    chosen, fitted = fit_to_device(chosen, device)  # as distill fits it, so that both find the same teacher
    if fitted:
        print(fitted)
    print(f"device: {device} | seed: {seed} | Hugging Face Hub: {'offline' if offline else 'online'}")
    problem = artifact_home_problem()
    if problem:  # said once here, in one line with its fix, not as a traceback at the first cell that trains
        print(problem)
    return Session(profile=chosen, device=device, seed=seed, offline=offline)


def full_by_default(profile: Profile, device: str) -> str | None:
    """Advice when a GPU made ``full`` the default (a notebook on Colab's T4 lands there): it is sized for a
    data-centre GPU, ``distill`` prints its cost on this one, and the smaller profiles are one setting away. None
    for another profile, or off a GPU."""
    if profile.name != "full" or not device.startswith("cuda"):
        return None
    return ("full is sized for a data-centre GPU (bert-base on IMDB's 100k reviews) and runs far longer on Colab's "
            "T4 (`kd-tutorial distill --profile full` prints its cost on this GPU before it starts). On Colab or a "
            f"small GPU start with cpu or tiny: setup(\"cpu\"), or {PROFILE_ENV}=cpu before setup()")


def offline_flags(models_only: bool = False) -> list[str]:
    """The variables that turn the Hub off in this environment, read as huggingface_hub and datasets read them
    ("1", "true", "yes", "on"), of those a download of the models (and, unless ``models_only``, of the dataset)
    reads."""
    asks = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") + (() if models_only else ("HF_DATASETS_OFFLINE",))
    return [name for name in asks if os.environ.get(name, "").upper() in HF_TRUE]


def _apply_offline(offline: bool, unset: bool) -> None:
    """Set the offline variables (``offline``), or unset those that are set (``unset``: an explicit
    ``offline=False``; otherwise the environment's are left as they are), and warn in one line when a library
    imported earlier read the other setting: it keeps it."""
    if offline:
        os.environ.update(OFFLINE_ENV)
    elif unset:
        was = offline_flags()
        for name in was:
            del os.environ[name]
        if was:
            print(f"setup(offline=False): {', '.join(was)} unset, so the Hub is used")
    stale = [name for name, (module, flag) in READ_AT_IMPORT.items()
             if module in sys.modules and bool(getattr(sys.modules[module], flag, offline)) != offline]
    if stale:
        print(f"warning: {' and '.join(stale)} {'was' if len(stale) == 1 else 'were'} imported before setup(), with "
              f"the Hub {'on' if offline else 'off'}, and keep{'s' if len(stale) == 1 else ''} it: restart the kernel "
              "and run this cell first")


def _cuda_build() -> str | None:
    """The CUDA version torch was built with (None for a CPU-only or MPS build)."""
    import torch
    return torch.version.cuda


def _check_setup(profile, seed, offline) -> None:
    """Refuse, in one line, what :func:`setup` cannot use: an empty profile name (it fell back to the default), a
    seed torch and numpy refuse, an ``offline`` that is not True, False or None ("no" read as True)."""
    if profile is not None and (not isinstance(profile, str) or not profile.strip()):
        raise UsageError(f"setup(profile={profile!r}): give a profile name ({', '.join(PROFILES)}), or None for "
                         "the default")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"setup(seed={seed!r}): give a whole number from 0 to {MAX_SEED}")
    if offline not in (None, True, False):
        raise UsageError(f"setup(offline={offline!r}): give True, False, or None (offline for tiny)")


def check_versions(found: dict[str, str] | None = None) -> None:
    """Refuse, in one line naming the pip command, a package older than :data:`MINIMUM` (``found``: name ->
    version, the installed ones by default); a missing one is left to the import that needs it."""
    found = found or {name: versions().get(name, "missing") for name in MINIMUM}
    old = [f"{name} {found[name]}" for name, least in MINIMUM.items()
           if found.get(name, "missing") != "missing" and _release(found[name]) < least]
    if old:
        wanted = " ".join(f'"{name}>={".".join(map(str, MINIMUM[name]))}"' for name in MINIMUM
                          if any(o.startswith(name + " ") for o in old))
        raise UsageError(f"{', '.join(old)} {'is' if len(old) == 1 else 'are'} older than the course needs: "
                         f"pip install -U {wanted}, then restart the kernel")


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version string: "5.24.0" -> (5, 24, 0), "2.13.0+cpu" -> (2, 13, 0), "5.0.0rc1"
    -> (5, 0, 0)."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(x) for x in match.group(0).split(".")) if match else ()


def hub_reachable(timeout: float = 3.0) -> bool | None:
    """Whether the Hub answers: ``$HF_ENDPOINT``'s host (a mirror), else huggingface.co, on its port (None when
    the offline variables say not to ask, or behind an HTTPS proxy, which a direct socket does not go through)."""
    if offline_flags(models_only=True):
        return None
    import socket
    from urllib.parse import urlparse
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    try:
        port = url.port if url.port is not None else (80 if url.scheme == "http" else 443)
    except ValueError:  # "Port could not be cast to integer value", "Port out of range 0-65535"
        port = 0
    if not port:
        raise UsageError(f"HF_ENDPOINT={endpoint} has no valid port: give the mirror's address as "
                         "https://host or https://host:port, with a port from 1 to 65535")
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # the clients go through the proxy, where a direct socket may not: no verdict (a bad port still is)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def environment_report(profile: Profile | None = None) -> dict:
    """Versions, device, profile and whether what the profile needs is reachable or cached."""
    import torch
    profile = profile or resolve_profile()
    device = pick_device()
    report = {"versions": versions(), "device": device, "profile": profile.name,
              "torch_threads": torch.get_num_threads(), "bf16": bf16_supported(device),
              "hub_offline": bool(offline_flags(models_only=True)), "offline_flags": offline_flags(models_only=True),
              "hub_reachable": None,
              "data_dir": os.environ.get("KD_TUTORIAL_DATA_DIR"), "data_source": profile.data_source,
              "cuda_build": torch.version.cuda}
    if device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(0)
    report["precision"] = describe(device)
    report["needs"] = cache_status(profile, also=hub_models(profile.name))
    try:
        report["hub_reachable"] = hub_reachable()
    except UsageError as err:  # a mistyped $HF_ENDPOINT: the report says so with its fix, as below, and env exits 1
        report["hub_problem"] = str(err)
    try:
        check_versions()
    except UsageError as err:  # an old transformers left installed (Colab): the report says so, env exits 1
        report["version_problem"] = str(err)
    try:
        report["artifact_home"] = str(home())
        found = cache_problem(home())  # its fix: a copy, or chmod, that keeps the teachers it holds
        report["artifact_home_problem"], fix = found or (None, None)
        if fix:
            report["artifact_home_fix"] = fix
    except ArtifactError as err:  # a relative $KD_TUTORIAL_HOME: shown, as every other problem here, its fix said
        report["artifact_home"], report["artifact_home_problem"] = os.environ.get(HOME_ENV), str(err)
        report["artifact_home_fix"] = None
    return report


def format_report(report: dict) -> str:
    """:func:`environment_report` as aligned ``key: value`` lines in four groups: versions, device and
    precision, profile, and cache status (what ``kd-tutorial env`` prints; ``--json`` gives the dict)."""
    old = [("too old", report["version_problem"])] if report.get("version_problem") else []
    sections = {"versions": list(report.get("versions", {}).items()) + old,
                "device and precision": _device_lines(report),
                "profile": _profile_lines(report),
                "cache status": _cache_lines(report)}
    width = min(20, max(len(key) for lines in sections.values() for key, _ in lines) + 1)  # long names overflow
    out = []
    for title, lines in sections.items():
        out += [f"{title}:"] + [f"  {key + ':':<{width}} {value}" for key, value in lines] + [""]
    return "\n".join(out).rstrip()


def _yes(flag) -> str:
    return "-" if flag is None else "yes" if flag else "no"


def _device_lines(report: dict) -> list[tuple[str, str]]:
    """The device, its GPU and capability, and the precision training runs in there."""
    p = report.get("precision", {})
    lines = [("device", report.get("device", "-"))]
    if report.get("gpu"):
        lines.append(("GPU", f"{report['gpu']} (compute capability {p.get('capability') or '-'})"))
    build = report.get("cuda_build") or ("none (CPU-only torch)" if report.get("device") == "cpu" else "none")
    if report.get("cuda_build") and report.get("device") == "cpu":
        build += " (sees no GPU: on Colab, Runtime > Change runtime type > GPU; elsewhere nvidia-smi)"
    lines += [("CUDA build", build),
              ("precision (auto)", p.get("precision", "-")), ("native bf16", _yes(report.get("bf16"))),
              ("GradScaler", _yes(p.get("grad_scaler"))), ("TF32 matmuls", _yes(p.get("tf32"))),
              ("torch threads", str(report.get("torch_threads", "-")))]
    return lines


def _profile_lines(report: dict) -> list[tuple[str, str]]:
    """The profile and where its data comes from."""
    data_dir = report.get("data_dir")
    source = f"{data_dir} (KD_TUTORIAL_DATA_DIR)" if data_dir else f"{report.get('data_source', '-')} (the profile's)"
    return [("profile", report.get("profile", "-")), ("data", source)]


def home_problem(report: dict) -> str | None:
    """Why the artifact cache of :func:`environment_report`'s ``report`` cannot be used, with its fix, in one line
    (None when it can): what ``kd-tutorial env`` and notebook 00 print."""
    problem = report.get("artifact_home_problem")
    if not problem:
        return None
    fix = report.get("artifact_home_fix", "point KD_TUTORIAL_HOME to a folder you can write")
    return problem + (f": {fix}" if fix else "")


def _cache_lines(report: dict) -> list[tuple[str, str]]:
    """The artifact cache, the Hub, and whether each model and data set the profile needs is there."""
    if report.get("hub_offline"):
        hub = f"offline ({', '.join(f'{n}={os.environ.get(n)}' for n in report.get('offline_flags', [])) or 'flags'})"
    else:
        needs = report.get("needs") or {}
        ready = needs and not any(str(status).startswith(("missing", "unusable")) for status in needs.values())
        fetch = "the tiny profile needs nothing from it" if report.get("profile") == "tiny" else (
            "nothing below is missing: set HF_HUB_OFFLINE=1, so that notebooks read it without waiting for the Hub"
            if ready else f"run `kd-tutorial prefetch --profile {report.get('profile')}` where there is internet, "
            "then set HF_HUB_OFFLINE=1")
        hub = {True: "reachable", False: f"unreachable: {fetch}", None: "-"}[report.get("hub_reachable")]
        hub = f"unusable: {report['hub_problem']}" if report.get("hub_problem") else hub
    problem = home_problem(report)
    cache = f"unusable: {problem}" if problem else \
        f"{report.get('artifact_home', '-')} (set KD_TUTORIAL_HOME to move it)"
    lines = [("artifact cache", cache),
             ("Hugging Face Hub", hub)]
    return lines + [(name, status) for name, status in report.get("needs", {}).items()]
