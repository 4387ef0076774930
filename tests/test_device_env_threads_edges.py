"""What a mutation audit of device, env, threads, bars, seeding and console found untested: which GPU a device
string asks, its memory in GiB, bf16 units read from the CPU's flags, a 16-bit autocast that cannot run refused,
configure() on a GPU and on the CPU, the load from which threads wait passively, bars in a notebook or on odd
streams, seeds and GPU random states, and setup()'s and env's edges. GPUs are faked on the CPU (monkeypatch)."""
import io
import os
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kd_tutorial import bars, console, device as dev, env, seeding, threads
from kd_tutorial.errors import UsageError
from kd_tutorial.profiles import MAX_SEED, PROFILES


def fake_gpus(monkeypatch, capabilities, current=0):
    """GPUs of the given compute capabilities, ``current`` the one torch.cuda uses by default."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capabilities[index])


# --------------------------------------------------------------------------- device

@pytest.mark.parametrize("cuda, mps, picked", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_the_device_picked_is_a_visible_gpu_then_apples_then_the_cpu(monkeypatch, cuda, mps, picked):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert dev.pick_device() == picked

def test_a_device_string_asks_the_gpu_it_names_not_the_current_one(monkeypatch):
    """A T4 as cuda:0 beside an H100 as cuda:1 (the current device): "cuda" is the current one."""
    fake_gpus(monkeypatch, {0: (7, 5), 1: (9, 0)}, current=1)
    assert dev.precision_for("cuda:0") == "fp16" and dev.describe("cuda:0")["capability"] == "7.5"
    assert dev.precision_for("cuda:1") == "bf16" and dev.precision_for("cuda") == "bf16"


def test_gpu_memory_is_in_gib_and_none_off_a_gpu(monkeypatch):
    """The memory fit (FITS_16GB, a T4's 14.7) is in GiB as torch.cuda reports them; Apple's GPU has no torch.cuda
    memory to read."""
    def properties(device):
        assert device.type == "cuda", device
        return SimpleNamespace(total_memory=16 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    assert dev.memory_gb("cuda:0") == 16.0
    assert dev.memory_gb("mps") is None and dev.memory_gb("cpu") is None


def test_apples_gpu_is_never_given_bf16_for_the_cpus_units(monkeypatch):
    monkeypatch.setattr(dev, "cpu_bf16_units", lambda: True)
    assert dev.bf16_supported("cpu") is True
    assert dev.bf16_supported("mps") is False and dev.precision_for("mps") == "fp32"


@pytest.mark.parametrize("flags, units", [("avx512f avx512bw avx512_vnni", False), ("avx512f avx512_bf16", True),
                                          ("amx_tile amx_bf16 amx_int8", True), ("sse4_2 avx2", False)])
def test_bf16_units_are_read_from_linux_cpu_flags(monkeypatch, flags, units):
    """AVX-512 without BF16 is oneDNN's emulated bf16, slower than fp32: "auto" must stay fp32 there."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(dev, "open", lambda path: io.StringIO(f"processor : 0\nflags : {flags}\n"), raising=False)
    assert dev.cpu_bf16_units() is units
    assert dev.precision_for("cpu") == ("bf16" if units else "fp32")


def test_unreadable_cpu_flags_and_a_failing_cpu_probe_mean_no_bf16_units(monkeypatch):
    def unreadable(path):
        raise PermissionError(path)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(dev, "open", unreadable, raising=False)
    assert dev.cpu_bf16_units() is False

    def broken():
        raise RuntimeError("this build has no cpuinfo")
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    assert dev.cpu_bf16_units() is False


def test_a_16_bit_autocast_this_torch_cannot_give_raises_instead_of_running_fp32(monkeypatch):
    """Only an fp32 region falls back to no context where torch has no autocast for the device; fp16 or bf16
    asked for must not quietly train in fp32."""
    def refuses(device_type, *args, **kwargs):
        raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}'")
    monkeypatch.setattr(torch, "autocast", refuses)
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(RuntimeError, match="unsupported autocast device_type 'mps'"):
            dev.autocast("mps", dtype)
    with dev.autocast("mps", None):
        pass


@pytest.fixture
def gpu_settings(monkeypatch):
    """The allocator variables unset, and both TF32 flags put back after the test."""
    for key in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"):
        monkeypatch.delenv(key, raising=False)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield monkeypatch
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_configure_on_an_sm80_gpu_sets_both_tf32_flags_and_both_allocator_names(gpu_settings):
    """PYTORCH_CUDA_ALLOC_CONF is the name torch before 2.9 reads; cuDNN's convolutions take TF32 as matmuls do."""
    fake_gpus(gpu_settings, {0: (8, 0)})
    assert dev.configure("cuda")["tf32"] is True
    assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True
    assert os.environ["PYTORCH_ALLOC_CONF"] == os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_configure_keeps_a_users_allocator_setting_under_its_older_name(gpu_settings):
    fake_gpus(gpu_settings, {0: (9, 0)})
    gpu_settings.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    dev.configure("cuda")
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128" and "PYTORCH_ALLOC_CONF" not in os.environ


def test_configure_on_the_cpu_sets_nothing(gpu_settings):
    chosen = dev.configure("cpu")
    assert chosen["device"] == "cpu" and chosen["capability"] is None and chosen["tf32"] is False
    assert "PYTORCH_ALLOC_CONF" not in os.environ and "PYTORCH_CUDA_ALLOC_CONF" not in os.environ
    assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False


# --------------------------------------------------------------------------- threads and the console script

def test_a_load_of_exactly_one_is_busy(monkeypatch):
    """BUSY_LOAD is 'at least': one other process keeping a core busy is what slowed the tiny teacher 2.6-fold."""
    environ = {}
    assert threads.quiet_threads_when_busy(environ, load=1.0) == 1.0 and environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.quiet_threads_when_busy({}, load=0.99) is None


def test_a_load_average_the_system_cannot_give_is_none_not_a_traceback(monkeypatch):
    """os.getloadavg raises OSError where the load is unobtainable (a container without /proc/loadavg)."""
    def unobtainable():
        raise OSError("Load averages are unobtainable")
    monkeypatch.setattr(threads.os, "getloadavg", unobtainable)
    assert threads.load_average() is None
    assert threads.quiet_threads_when_busy({}) is None


def test_the_console_script_records_the_load_that_made_threads_wait(monkeypatch, capsys):
    """What the commands' 'threads: this machine was busy' line and the results' record read."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "unset below, put back after")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(threads, "busy_at", None)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 1.0, 0.5))
    monkeypatch.setattr(sys, "argv", ["kd-tutorial", "report", "missing.json"])
    assert console.main() == 2
    assert threads.busy_at == 3.5 and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "(load 3.5)" in threads.busy_note()


# --------------------------------------------------------------------------- bars

class _Stream:
    """A stream that writes; ``isatty`` as given (None: it has none)."""

    def __init__(self, isatty=None):
        if isatty is not None:
            self.isatty = isatty

    def write(self, s):
        pass

    def flush(self):
        pass


def test_a_stream_without_isatty_or_a_closed_one_is_a_log_not_a_traceback():
    closed = io.StringIO()
    closed.close()
    assert bars.is_live(_Stream()) is False and bars.is_live(closed) is False
    bar = bars.progress_bar(total=2, file=_Stream())
    assert bar.mininterval == bars.LOG_INTERVAL_S
    bar.close()


def test_a_notebooks_bars_are_live(monkeypatch):
    """In Jupyter, tqdm.auto draws widgets that replace themselves: they keep their redraw rate."""
    monkeypatch.setattr(bars.auto, "notebook_tqdm", type("Widget", (), {}))
    assert bars.is_live(_Stream(isatty=lambda: False)) is True


def test_a_bar_in_a_log_keeps_longer_intervals_it_was_given():
    bar = bars.progress_bar(total=2, file=_Stream(isatty=lambda: False), mininterval=60.0, maxinterval=120.0)
    assert (bar.mininterval, bar.maxinterval) == (60.0, 120.0)
    bar.close()


# --------------------------------------------------------------------------- seeding

def test_the_same_seed_gives_the_same_draws_from_python_numpy_and_torch():
    draws = []
    for _ in range(2):
        seeding.seed_everything(11)
        draws.append((random.random(), np.random.rand(), torch.rand(3).tolist()))
    seeding.seed_everything(12)
    other = (random.random(), np.random.rand(), torch.rand(3).tolist())
    assert draws[0] == draws[1]
    assert all(a != b for a, b in zip(draws[0], other))


@pytest.fixture
def fake_cuda_rng(monkeypatch):
    """A started CUDA on two GPUs whose random states are strings, and what set_rng_state_all was given."""
    state = {"states": ["gpu0", "gpu1"], "set": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(state["states"]))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(state["states"]))

    def set_all(states):
        state["set"].append(list(states))
        state["states"] = list(states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)
    return state


def test_kept_rng_puts_back_the_gpus_random_states(fake_cuda_rng):
    """Dropout on a GPU draws from them: a teacher trained inside would otherwise move a notebook's later numbers."""
    with seeding.kept_rng():
        fake_cuda_rng["states"] = ["moved0", "moved1"]
    assert fake_cuda_rng["states"] == ["gpu0", "gpu1"]


def test_gpu_random_states_are_restored_only_onto_as_many_gpus(fake_cuda_rng):
    """A checkpoint from a 2-GPU machine resumed on one GPU, or one saved without CUDA (None): nothing set, no
    traceback."""
    seeding.set_cuda_rng_states(["a"])
    seeding.set_cuda_rng_states(None)
    assert fake_cuda_rng["set"] == []
    seeding.set_cuda_rng_states(["a", "b"])
    assert fake_cuda_rng["set"] == [["a", "b"]]


# --------------------------------------------------------------------------- env

@pytest.fixture
def hub_flags(monkeypatch):
    """No offline variable set, and setup()'s own changes to them undone after the test."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("value", ["on", "ON"])
def test_the_offline_variables_are_read_as_on_as_the_hub_reads_it(hub_flags, value):
    hub_flags.setenv("HF_HUB_OFFLINE", value)
    assert env.offline_flags(models_only=True) == ["HF_HUB_OFFLINE"]
    assert env.hub_reachable() is None


def test_setup_leaves_an_offline_dataset_variable_alone_unless_told_offline_false(hub_flags, capsys):
    """offline=None on the cpu profile: HF_DATASETS_OFFLINE=1 (models from the Hub, data from the cache) is the
    user's choice; only an explicit offline=False unsets it."""
    hub_flags.setenv("HF_DATASETS_OFFLINE", "1")
    assert env.setup("cpu").offline is False
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1" and "unset" not in capsys.readouterr().out


def test_a_cuda_build_that_sees_its_gpu_is_not_told_to_look_for_one(hub_flags, capsys):
    hub_flags.setattr(env, "_cuda_build", lambda: "12.4")
    hub_flags.setattr(env, "pick_device", lambda: "cuda")
    hub_flags.setattr(env, "configure", lambda device: {"tf32": True})
    hub_flags.setattr(env, "memory_gb", lambda device: 79.2)
    hub_flags.setattr(env, "resolve_precision", lambda device, precision="auto": "bf16")
    hub_flags.setattr(env, "bf16_supported", lambda device: True)
    env.setup("tiny")
    assert "sees no GPU" not in capsys.readouterr().out


def test_env_tells_only_a_cuda_build_on_the_cpu_that_it_sees_no_gpu():
    lines = dict(env._device_lines({"device": "cuda", "cuda_build": "12.4", "gpu": "NVIDIA H100"}))
    assert lines["CUDA build"] == "12.4"


def test_a_gpu_large_enough_keeps_the_profiles_batch_and_says_nothing(monkeypatch):
    monkeypatch.setattr(env, "memory_gb", lambda device: 79.2)  # an H100
    monkeypatch.setattr(env, "resolve_precision", lambda device, precision="auto": "bf16")
    monkeypatch.setattr(env, "bf16_supported", lambda device: True)
    assert env.fit_to_device(PROFILES["full"], "cuda") == (PROFILES["full"], None)


@pytest.mark.parametrize("kwargs, expected", [
    ({"seed": True}, r"setup\(seed=True\): give a whole number from 0 to"),
    ({"seed": MAX_SEED + 1}, rf"setup\(seed={MAX_SEED + 1}\): give a whole number from 0 to {MAX_SEED}")])
def test_setup_refuses_a_bool_seed_and_a_seed_past_the_largest(kwargs, expected):
    with pytest.raises(UsageError, match=expected):
        env.setup(**kwargs)


def test_setup_takes_the_largest_seed_torch_and_numpy_take(hub_flags, capsys):
    assert env.setup("tiny", seed=MAX_SEED).seed == MAX_SEED


def test_a_missing_package_is_left_to_the_import_that_needs_it():
    env.check_versions({"torch": "2.13.0"})  # no transformers: no KeyError, no "missing is older"
    with pytest.raises(UsageError, match=r"^torch 2.1.0 is older than the course needs"):
        env.check_versions({"torch": "2.1.0"})


@pytest.mark.parametrize("endpoint, address", [("http://mirror.lan", ("mirror.lan", 80)),
                                               ("https://mirror.lan:8443", ("mirror.lan", 8443)),
                                               ("http://127.0.0.1:8080/hf", ("127.0.0.1", 8080))])
def test_hub_reachable_asks_the_mirrors_own_port(hub_flags, endpoint, address):
    import socket
    asked = []

    def connect(where, timeout):
        asked.append(where)
        raise OSError("no network here")
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        hub_flags.delenv(name, raising=False)
    hub_flags.setattr(socket, "create_connection", connect)
    hub_flags.setenv("HF_ENDPOINT", endpoint)
    assert env.hub_reachable() is False and asked == [address]


def test_quiet_keeps_a_users_own_verbosity_and_silences_an_imported_transformers(monkeypatch):
    import transformers
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_info()
    try:
        env.quiet()
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
        assert transformers.logging.get_verbosity() == transformers.logging.ERROR
    finally:
        transformers.logging.set_verbosity(before)


@pytest.mark.parametrize("endpoint", ["https://hf-mirror.com:443x", "https://hf-mirror.com:99999",
                                      "https://hf-mirror.com:0"])
def test_a_mistyped_port_in_hf_endpoint_is_refused_in_one_line_naming_it(hub_flags, endpoint):
    import socket
    hub_flags.setattr(socket, "create_connection", lambda where, timeout: pytest.fail("no socket for a bad port"))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        hub_flags.delenv(name, raising=False)
    hub_flags.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(UsageError, match=rf"^HF_ENDPOINT={endpoint} has no valid port: give the mirror's address as "
                                         r"https://host or https://host:port, with a port from 1 to 65535$"):
        env.hub_reachable()  # urllib's ValueError, a traceback from `kd-tutorial env`, `prefetch` and `distill`


def test_kd_tutorial_env_lists_a_mistyped_hf_endpoint_in_its_report_and_exits_1(hub_flags, capsys):
    """The room check reports every problem with its fix, as it does an unusable cache folder, instead of stopping
    at the first: the whole report is printed, the Hub's line names the fix, and one line on stderr names the
    variable."""
    from kd_tutorial import cli
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        hub_flags.delenv(name, raising=False)
    hub_flags.setenv("HF_ENDPOINT", "https://hf-mirror.com:443x")
    assert cli.main(["env", "--profile", "tiny"]) == 1
    out, err = capsys.readouterr()
    hub = [line for line in out.splitlines() if line.strip().startswith("Hugging Face Hub:")]
    assert hub == ["  Hugging Face Hub: unusable: HF_ENDPOINT=https://hf-mirror.com:443x has no valid port: give the "
                   "mirror's address as https://host or https://host:port, with a port from 1 to 65535"]
    assert "torch threads:" in out and "tiny-bert:" in out  # the rest of the report is there too
    assert err.splitlines() == ["kd-tutorial env: unusable: HF_ENDPOINT (see above for the fix)"]
    assert env.environment_report(PROFILES["tiny"])["hub_problem"].startswith("HF_ENDPOINT=https://hf-mirror.com:443x")


# ----------------------------------------------------------------------------- survivors of the leftover mutants


def test_setup_turns_the_hub_off_for_tiny_in_the_variables_the_libraries_read(hub_flags, capsys):
    """The notebooks' header on ``tiny`` says "Hub: offline": the variables must say it too, or a later import of
    transformers or datasets would ask the Hub (a room without Wi-Fi waits on each call's retries)."""
    assert env.setup("tiny").offline is True
    assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("HF_DATASETS_OFFLINE") == "1"
    assert env.offline_flags() == ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"]


def test_full_as_the_default_is_advised_against_only_on_a_gpu():
    """The advice names a GPU's cost; full on the CPU is a choice the user typed (the default there is tiny)."""
    assert "full is sized for a data-centre GPU" in env.full_by_default(PROFILES["full"], "cuda")
    assert env.full_by_default(PROFILES["full"], "cpu") is None
    assert env.full_by_default(PROFILES["cpu"], "cuda") is None


def test_the_report_says_where_the_data_comes_from():
    lines = dict(env._profile_lines({"profile": "cpu", "data_dir": "/data/imdb", "data_source": "stanfordnlp/imdb"}))
    assert lines["data"] == "/data/imdb (KD_TUTORIAL_DATA_DIR)"
    lines = dict(env._profile_lines({"profile": "cpu", "data_source": "stanfordnlp/imdb"}))
    assert lines["data"] == "stanfordnlp/imdb (the profile's)"


def test_bf16_on_apples_gpu_is_not_refused_when_the_macos_version_cannot_be_read(monkeypatch):
    """platform.mac_ver() answers "" where it cannot read the version: that is no proof of a macOS before 14."""
    import platform
    monkeypatch.setattr(platform, "mac_ver", lambda *a: ("", ("", "", ""), ""))
    monkeypatch.setattr(torch, "__version__", "2.8.0")
    assert dev.resolve_precision("mps", "bf16") == "bf16"
    monkeypatch.setattr(platform, "mac_ver", lambda *a: ("13.6", ("", "", ""), "arm64"))
    with pytest.raises(UsageError, match=r"^precision=bf16 on Apple's GPU \(MPS\) needs macOS 14 or newer "
                                         r"\(this is macOS 13\.6\): use precision=fp16"):
        dev.resolve_precision("mps", "bf16")


def test_a_mistyped_hf_endpoint_behind_a_proxy_is_refused_too(hub_flags):
    """Behind a proxy the socket probe gives no verdict, but the libraries still read the address: it is checked."""
    hub_flags.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    hub_flags.setenv("HF_ENDPOINT", "https://hf-mirror.com:443x")
    with pytest.raises(UsageError, match=r"^HF_ENDPOINT=https://hf-mirror.com:443x has no valid port"):
        env.hub_reachable()
    hub_flags.setenv("HF_ENDPOINT", "https://hf-mirror.com")
    assert env.hub_reachable() is None


def test_notebook_00_lists_a_mistyped_hf_endpoint_as_not_ready(hub_flags, capsys):
    """Notebook 00's report cell, run on a report holding a bad $HF_ENDPOINT: its NOT READY line names it with the
    fix (the report no longer raises, so the cell has to say it)."""
    import json
    from pathlib import Path
    cells = json.loads((Path(__file__).parents[1] / "notebooks" / "00_setup.ipynb").read_text(encoding="utf-8"))
    cell = next("".join(c["source"]) for c in cells["cells"]
                if c["cell_type"] == "code" and "NOT READY" in "".join(c["source"]))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        hub_flags.delenv(name, raising=False)
    hub_flags.setenv("HF_ENDPOINT", "https://hf-mirror.com:443x")
    exec(cell, {"env": env, "session": SimpleNamespace(profile=PROFILES["tiny"])})
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("NOT READY:")]
    assert len(said) == 1 and "{'HF_ENDPOINT': \"HF_ENDPOINT=https://hf-mirror.com:443x has no valid port: give " \
                              "the mirror's address as https://host" in said[0], said


@pytest.mark.parametrize("device", ["gpu", "GPU", "cuda", "cuda:3", "mps", "cpu:1", "tpu", "meta"])
def test_a_device_the_machine_lacks_is_refused_by_predict_logits_as_the_command_line_refuses_it(device, monkeypatch):
    """evaluate.predict_logits(..., device="gpu") gave torch's list of device types ("Expected one of cpu, cuda, ...
    device type at start of device string: gpu"); it now says what ``--device gpu`` says, with the argument named as
    Python names it. The command line's check is device.check_device said as a flag."""
    from kd_tutorial import cli, data, evaluate
    monkeypatch.setattr(dev, "available_devices", lambda: ["cpu"])  # a machine with the CPU alone, wherever it runs
    with pytest.raises(UsageError) as flag:
        cli.check_device(device)
    with pytest.raises(UsageError) as same:
        dev.check_device(device, "--device")
    assert str(same.value) == str(flag.value)
    model = torch.nn.Linear(1, 2)
    model.config = SimpleNamespace(max_position_embeddings=16, num_labels=2)
    with pytest.raises(UsageError) as refused:
        evaluate.predict_logits(model, data.Encoded([[101, 7, 102]], torch.tensor([0]), "rows"), device=device)
    expected = str(flag.value).replace(f"--device {device}", f"device={device!r}").replace("--device", "device")
    assert str(refused.value) == expected.replace("device cpu", "device='cpu'") and "\n" not in expected
    assert dev.check_device("cpu:0") == "cpu" == dev.check_device(torch.device("cpu"))


def test_setup_says_in_one_line_that_the_artifact_cache_is_unusable_and_how_to_fix_it(tmp_path, monkeypatch, capsys):
    """A learner's notebook with $KD_TUTORIAL_HOME on a read-only copy (or a file): env.setup() said nothing, and the
    first cell that trained ended in a StorageError traceback. It now says so in one line naming the fix."""
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(a_file))
    env.setup("tiny")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("artifact cache unusable")]
    assert lines == [f"artifact cache unusable: {a_file} is a file, not a folder: point KD_TUTORIAL_HOME to a folder "
                     "you can write (in the shell that starts Jupyter, then start it again); the cells that train or "
                     "read the cached teacher fail until then"], lines


def test_setup_names_the_copy_for_a_read_only_cache_that_holds_a_teacher(tmp_path, monkeypatch, capsys):
    """A prefetched cache copied read-only: the fix is the copy that keeps its teachers, as `kd-tutorial env` says."""
    cache = tmp_path / "cache"
    (cache / "tiny").mkdir(parents=True)
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(cache))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == cache else real_access(p, mode, **kw))
    env.setup("tiny")
    out = capsys.readouterr().out
    assert f"artifact cache unusable: {cache} is not writable: copy it where you can write" in out, out
    assert "chmod -R u+w ~/kd-tutorial-cache && export KD_TUTORIAL_HOME=~/kd-tutorial-cache" in out, out


def test_setup_is_silent_about_a_writable_artifact_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KD_TUTORIAL_HOME", str(tmp_path / "new"))
    env.setup("tiny")
    assert "artifact cache" not in capsys.readouterr().out
