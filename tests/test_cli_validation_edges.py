"""Edges of the command line's argument checks and error advice (kd_tutorial/cli.py), called directly on small
made-up inputs, nothing loaded or trained: where the profile line says the choice came from, the early checks of a
teacher folder and the recipes a run asks for, the device names accepted or refused and why, the writable-folder
check, --recipes, the results files `report` reads, the argparse types, and the one-line advice for a Hub that
cannot be reached, a download cut short, a full disk and a reader that left the pipe."""
import argparse
import errno
import io
import json
from pathlib import Path

import pytest

from kd_tutorial import cli, device
from kd_tutorial.errors import UsageError, UserError
from kd_tutorial.profiles import get_profile

TINY = get_profile("tiny")


def _inputs(**given):
    """The arguments _check_inputs reads, as distill's parser gives them when no option is given."""
    return argparse.Namespace(**{"data_dir": None, "teacher": None, "out": None, "recipes": None,
                                 "init": "pretrained", **given})


# ----------------------------------------------------------------------------------------------- the profile line

@pytest.mark.parametrize("flag, env, said", [("tiny", None, "(--profile)"), (None, "tiny", "($KD_TUTORIAL_PROFILE)"),
                                             (None, None, "(default for this device)")])
def test_the_profile_line_says_where_the_choice_came_from(monkeypatch, flag, env, said):
    if env:
        monkeypatch.setenv("KD_TUTORIAL_PROFILE", env)
    else:
        monkeypatch.delenv("KD_TUTORIAL_PROFILE", raising=False)
    out = io.StringIO()
    assert cli._profile(argparse.Namespace(profile=flag), file=out).name == "tiny"
    assert out.getvalue().startswith(f"profile: tiny {said} - ")


# ----------------------------------------------------------------------------------------------- early input checks

def test_a_teacher_folder_inside_the_checkpoints_of_out_is_refused_by_the_early_checks(tmp_path):
    """The pipeline refuses it too, but only after the data is read and the time estimate printed."""
    teacher = tmp_path / "out" / "checkpoints" / "distil-2L_kd" / "model"
    teacher.mkdir(parents=True)
    with pytest.raises(UsageError, match="lies in the checkpoints of --out"):
        cli._check_inputs(_inputs(teacher=str(teacher), out=str(tmp_path / "out")), TINY)
    cli._check_inputs(_inputs(teacher=str(teacher), out=str(tmp_path / "other")), TINY)  # another --out: fine


def test_a_teacher_folder_given_with_a_tilde_is_found_in_home(tmp_path, monkeypatch):
    """`--teacher=~/my-teacher` (no shell expands a tilde after '='): the folder exists, so it is not refused."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "my-teacher").mkdir()
    cli._check_inputs(_inputs(teacher="~/my-teacher"), TINY)
    with pytest.raises(UserError, match="^~/no-teacher: no such folder"):
        cli._check_inputs(_inputs(teacher="~/no-teacher"), TINY)


def test_leaving_out_a_recipe_with_recipes_passes_the_early_check_its_error_advises():
    """A teacher 63 wide with 3 heads cannot run the value-relation recipe of a student of 2 relation heads; the
    error says "leave it out with --recipes NAME", and --recipes baseline kd must then pass."""
    odd = TINY.with_overrides(["teacher_config={'hidden_size': 63, 'num_attention_heads': 3}"])
    with pytest.raises(UsageError, match=r"or leave \S+ out with --recipes NAME"):
        cli._check_inputs(_inputs(), odd)
    cli._check_inputs(_inputs(recipes=["baseline", "kd"]), odd)


def test_a_teacher_of_three_classes_passes_the_early_check_with_init_random(tmp_path):
    """--init random loads no weight, so the teacher's 3-class head does not matter (as the pipeline takes it)."""
    from transformers import BertConfig
    from kd_tutorial.models import TINY_BERT
    BertConfig(**TINY_BERT, num_labels=3, architectures=["BertForSequenceClassification"]).save_pretrained(
        tmp_path / "three")  # its config alone is read
    with pytest.raises(UserError, match="three has a 3-class head"):
        cli._check_inputs(_inputs(teacher=str(tmp_path / "three")), TINY)
    cli._check_inputs(_inputs(teacher=str(tmp_path / "three"), init="random"), TINY)


# ----------------------------------------------------------------------------------------------------- --device

@pytest.fixture
def machine(monkeypatch):
    """``machine(*devices)``: check_device on a machine that has these devices."""
    def have(*devices):
        monkeypatch.setattr(device, "available_devices", lambda: ["cpu", *devices])
    return have


def test_a_gpu_machine_takes_cuda_with_or_without_an_index_and_counts_its_gpus_for_another(machine):
    machine("cuda:0", "cuda:1")
    assert [cli.check_device(d) for d in ("cuda", "cuda:0", "cuda:1")] == ["cuda", "cuda:0", "cuda:1"]
    with pytest.raises(UsageError) as refused:
        cli.check_device("cuda:2")
    assert str(refused.value) == ("--device cuda:2 is not here: this machine has 2 CUDA GPU(s); available here: cpu, "
                                  "cuda:0, cuda:1: give one of them, or leave --device out for the best one")


def test_mps_is_taken_only_where_the_machine_has_it(machine):
    machine("mps")
    assert cli.check_device("mps") == "mps"
    machine()
    with pytest.raises(UsageError, match=r"^--device mps needs Apple silicon with an MPS build of torch; available "
                                         r"here: cpu: "):
        cli.check_device("mps")


@pytest.mark.parametrize("device", ["meta", "xpu", "tpu"])
def test_a_device_torch_knows_but_the_course_does_not_run_on_is_named_as_such(machine, device):
    """torch parses "meta" and "xpu" (and not "tpu"): none of them is told it needs a CUDA GPU."""
    machine("cuda:0")
    with pytest.raises(UsageError, match=rf"^--device {device} is not a device the course runs on; available here: "
                                         r"cpu, cuda:0: give one of them"):
        cli.check_device(device)


@pytest.mark.parametrize("device", ["CUDA", "Cpu", "cuda:0 ", "GPU"])
def test_a_device_name_in_capitals_is_told_its_lower_case_spelling(machine, device):
    """torch refuses "CUDA" and "Cpu": the line said only that the course does not run on them."""
    machine("cuda:0")
    lower = f" \\(its names are lower case: {device.lower()}\\)" if device in ("CUDA", "Cpu") else ""  # not "gpu"
    with pytest.raises(UsageError, match=rf"^--device {device} is not a device the course runs on{lower}; available "
                                         r"here: cpu, cuda:0: give one of them"):
        cli.check_device(device)


@pytest.mark.parametrize("cuda, said", [(None, "is built without CUDA"), ("12.1", "sees none")])
def test_cuda_on_a_machine_without_a_gpu_says_whether_torch_was_built_for_one(machine, monkeypatch, cuda, said):
    import torch
    machine()
    monkeypatch.setattr(torch.version, "cuda", cuda)
    with pytest.raises(UsageError, match=rf"^--device cuda:0 needs a CUDA GPU, and torch \S+ {said}; available here: "
                                         r"cpu: "):
        cli.check_device("cuda:0")


# ------------------------------------------------------------------------------------------ writable folders, --recipes

def test_the_writable_check_removes_only_the_folders_it_made(tmp_path):
    """With leave_none (distill's --out, benchmark's --report folder), a run refused later leaves no empty folder
    behind: but an empty folder the user had made before stays."""
    (tmp_path / "mine").mkdir()
    cli._check_writable(tmp_path / "mine" / "new" / "deeper", "--out", "give --out a folder you can write",
                        leave_none=True)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and not any((tmp_path / "mine").iterdir())


def test_recipes_all_is_every_recipe_and_names_keep_the_order_given():
    """Names are checked here too: test_docs_snippets checks the docs' --recipes with this function alone."""
    from kd_tutorial.recipes import RECIPES
    assert cli._recipes(["all"]) == tuple(RECIPES) and len(RECIPES) > 3
    assert cli._recipes(["kd", "baseline"]) == ("kd", "baseline")
    assert cli._recipes(None) is None
    with pytest.raises(UsageError, match=r"^--recipes names kd more than once: give each recipe once$"):
        cli._recipes(["kd", "baseline", "kd"])
    with pytest.raises(UserError, match="^unknown recipe 'kd[+]magic': choose one of baseline, kd, "):
        cli._recipes(["kd", "kd+magic"])


# ------------------------------------------------------------------------------------------------- argparse types

@pytest.mark.parametrize("text, value", [("0", 0), (" 7 ", 7), ("4294967295", 4294967295)])
def test_a_seed_takes_every_value_torch_and_numpy_take_with_spaces_around(text, value):
    assert cli._seed(text) == value


@pytest.mark.parametrize("parse", [cli._given, cli._path, cli._file("summary.json")])
@pytest.mark.parametrize("text", ["", "  "])
def test_an_empty_name_or_path_is_refused_not_taken_for_the_default(parse, text):
    with pytest.raises(argparse.ArgumentTypeError, match="^an empty value: give one, or leave the option out"):
        parse(text)


@pytest.mark.parametrize("text", ["0", "-3", "two", "1.5"])
def test_a_count_below_one_or_not_whole_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match=rf"^'{text}' is not a whole number >= 1$"):
        cli._positive(text)


@pytest.mark.parametrize("kind, said", [(int, "is not an integer"), (float, "is not a number")])
def test_a_number_option_names_its_flag_and_the_kind_it_takes(kind, said):
    assert cli._number(kind, "--margin")("0.5" if kind is float else "3") in (0.5, 3)
    with pytest.raises(argparse.ArgumentTypeError, match=rf"^--margin 'x' {said}$"):
        cli._number(kind, "--margin")("x")


def test_an_errors_one_line_is_its_first_line_or_its_class_name():
    assert cli._one_line(ValueError("what went wrong\n  where it went wrong")) == "what went wrong"
    assert cli._one_line(KeyError()) == "KeyError"
    assert cli._one_line(OSError("  \n")) == "OSError"


# ------------------------------------------------------------------------------------- the advice for library errors

def _http_error(status: int):
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import httpx
    request = httpx.Request("GET", "https://huggingface.co/org/m/resolve/main/model.safetensors")
    return HfHubHTTPError(f"{status} Server Error", response=httpx.Response(status, request=request))


@pytest.mark.parametrize("status", [500, 408])
def test_a_hub_answer_worth_asking_again_is_a_cut_download(status):
    assert cli._download_cut(_http_error(status)) == f"HfHubHTTPError: {status} Server Error"


def test_a_connection_dropped_mid_download_is_a_cut_download_by_its_base_class():
    """httpx's ReadError is a NetworkError, the name the cut errors list."""
    from huggingface_hub.utils import httpx
    assert cli._download_cut(httpx.ReadError("connection reset by peer")) == "ReadError: connection reset by peer"


def test_a_connection_error_subclass_of_the_hubs_client_means_offline():
    import requests
    assert cli._is_offline_error(requests.exceptions.ConnectTimeout("connect timed out"))


def test_an_exceeded_disk_quota_is_a_full_disk():
    quota = OSError(errno.EDQUOT, "Disk quota exceeded", "/hf/hub/blobs/x.incomplete")
    try:
        raise OSError("cannot load org/m") from quota
    except OSError as wrapped:
        assert cli._disk_full(wrapped) is quota


@pytest.mark.parametrize("command, err, said", [
    ("distill", OSError(errno.ENOSPC, "No space left on device", "/runs/x"),
     "cannot write /runs/x (No space left on device): free some space on that disk; checkpoints are kept: run the "
     "same command with --resume to continue"),
    ("env", OSError(errno.ENOSPC, None),
     "a write failed (no space left on the disk): free some space on that disk; then run the same command again")])
def test_the_full_disk_line_names_the_file_and_how_to_go_on_for_the_command(command, err, said):
    assert cli.disk_full_advice(command, err) == said


def test_the_advice_for_a_profile_name_that_is_no_profile_falls_back_on_cpu():
    """The advice is written inside main's last handler: a profile it cannot resolve must not raise there."""
    said = cli.cut_advice(argparse.Namespace(command="distill", profile="huge"), "ReadTimeout: timed out")
    assert said.endswith("run the same command again, or `kd-tutorial prefetch --profile cpu` first where the "
                         "connection is steady")


def test_a_broken_pipe_under_a_replaced_stdout_is_not_the_reader_leaving(monkeypatch):
    """In Jupyter or under a capture, another pipe broke: that error is not hidden as `| head`."""
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert not cli._reader_left(BrokenPipeError(errno.EPIPE, "Broken pipe"))


# --------------------------------------------------------------------------------------------- benchmark's options

def test_benchmark_report_names_every_option_it_would_drop_a_negative_student_too():
    args = argparse.Namespace(quick=True, report="r.json", data_dir="reviews", student=-1, init="random")
    with pytest.raises(UsageError) as refused:
        cli._check_benchmark_options(args)
    assert str(refused.value) == ("--report measures every student with random weights on synthetic reviews, so "
                                  "--data-dir, --student, --init would change nothing: leave them out, or drop "
                                  "--report for the loop benchmark")
    cli._check_benchmark_options(argparse.Namespace(quick=False, report=None, data_dir="reviews", student=-1,
                                                    init="random"))  # the loop benchmark takes them


# ------------------------------------------------------------------------------------------------- results files

def test_data_notes_that_are_a_list_of_other_things_than_notes_are_refused(tmp_path):
    """A list holding a number among the notes printed as if it were one."""
    results = json.loads((Path(__file__).parent.parent / "docs" / "results" / "tiny.json").read_text())
    results["run"]["data_notes"] = ["a note", 3]
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(UsageError, match=r"is incomplete or edited \(run.data_notes is list, not a list of notes\)"):
        cli.read_results(str(tmp_path / "results.json"))
    results["run"]["data_notes"] = ["a note"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert cli.read_results(str(tmp_path / "results.json"))["run"]["data_notes"] == ["a note"]
