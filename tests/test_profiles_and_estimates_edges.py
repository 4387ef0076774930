"""What a mutation audit of profiles and estimates found untested: the bounds FIELD_RULES names are themselves taken,
values of the wrong kind given to a profile directly and a student of an unknown kind are refused in one line,
``--set`` keeps a number in the type the preset holds (so a value set to itself keys the same artifacts) and takes a
whole number for a float field, the memory fit's edges (exactly 24 GiB, a batch that already fits), and the printed
CPU estimate's edges: two seeds, one minute, the test reviews a run evaluates, the fp32 slowdown said for tiny, and a
GPU profile counted on a data folder's sizes. Nothing trains or loads."""
import pytest

from kd_tutorial import device, estimates, profiles
from kd_tutorial.profiles import MAX_SEED, PROFILES, ProfileOverrideError, StudentSpec, get_profile


@pytest.fixture
def bf16_cpu(monkeypatch):
    """The CPU the budgets were measured on (bf16 units), so that no slowdown enters the estimate."""
    monkeypatch.setattr(device, "bf16_supported", lambda name: True)


# --------------------------------------------------------------------------- FIELD_RULES: the bounds are inclusive

@pytest.mark.parametrize("item, value", [
    ("alpha=0", 0.0), ("alpha=1", 1.0),  # hard labels only, soft targets only: both named by the rule
    ("temperature=100", 100.0), ("temperature=0.01", 0.01),
    ("weight_decay=0", 0.0), ("warmup_fraction=0", 0.0), ("warmup_fraction=1", 1.0),
    ("attention_dropout=0", 0.0), ("student_hidden_dropout=0", 0.0),
    ("student_labels=2", 2), ("max_length=3", 3), ("batch_size=1", 1), ("n_train=1", 1),
    ("budget_evaluation=(0, 1)", (0, 1)),
])
def test_the_bounds_a_fields_rule_names_are_taken(item, value):
    """Each rule's message names its bounds ("from 0 to 1", ">= 0"): a value at the bound runs."""
    name = item.partition("=")[0]
    changed = get_profile("tiny").with_overrides([item])
    assert getattr(changed, name) == value and type(getattr(changed, name)) is type(value)


def test_the_largest_and_smallest_seeds_are_taken():
    """The notebooks take seeds from the profile: 0 to MAX_SEED, the range torch and numpy accept."""
    assert get_profile("tiny").replace(seeds=(0, MAX_SEED)).seeds == (0, MAX_SEED)


@pytest.mark.parametrize("changes, says", [
    (dict(recipes=(1,)), "recipes=(1,): give a tuple of one or more recipe names, ('kd+transfer',) say"),
    (dict(student_lr="1e-4"), "student_lr='1e-4': give a number > 0"),  # a string compares with no number
    (dict(temperature=None), "temperature=None: give a number from 0.01 to 100"),
])
def test_a_value_of_the_wrong_kind_given_in_python_is_one_line(changes, says):
    """profile.replace() skips --set's type check: the rules refuse these themselves, rather than a later traceback."""
    with pytest.raises(ProfileOverrideError) as refused:
        get_profile("tiny").replace(**changes)
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value)


def test_a_student_of_an_unknown_kind_is_refused_where_it_is_written():
    """Refused by the spec itself, in one line naming the two kinds, not later when the student is built."""
    with pytest.raises(ProfileOverrideError) as refused:
        StudentSpec("s", "distilled", 2)
    assert str(refused.value) == "student s: unknown student kind 'distilled': give 'distil' or 'compact'"


# --------------------------------------------------------------------------- --set: numbers in the preset's type

def test_set_to_the_presets_own_value_keys_the_same_artifacts():
    """8 and 8.0 hash apart: --set temperature=2 (an int literal for a float field) and teacher_epochs=8.0 (a float
    for tiny's int) are the preset as it is, so they key the same teacher and the same runs."""
    tiny = get_profile("tiny")
    same = tiny.with_overrides(["temperature=2", "teacher_epochs=8.0"])
    assert type(same.temperature) is float and type(same.teacher_epochs) is int
    assert same.config_hash() == tiny.config_hash() and same.teacher_hash() == tiny.teacher_hash()
    assert same.changes() == {}


def test_set_takes_a_whole_number_for_a_float_field_the_preset_holds_as_an_int():
    """tiny's teacher_epochs is the int 8 in a field typed float: --set teacher_epochs=3 is 3 epochs, not refused."""
    assert get_profile("tiny").with_overrides(["teacher_epochs=3"]).teacher_epochs == 3
    assert get_profile("tiny").with_overrides(["teacher_epochs=2.5"]).teacher_epochs == 2.5


# --------------------------------------------------------------------------- fit_memory's edges

def test_a_24_gib_card_keeps_the_profile_and_one_just_under_fits_it():
    """"unchanged from 24 GiB up": an L4-class card of exactly 24 GiB trains the preset's batch."""
    full = PROFILES["full"]
    assert full.fit_memory("fp32", 24.0) is full
    under = full.fit_memory("fp32", 23.9)
    assert (under.batch_size, under.effective_batch) == (profiles.FITS_16GB[512]["fp32"], full.effective_batch)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_batch_that_exactly_fills_the_rows_that_fit_is_kept(precision):
    """cpu's 16 rows of 256 tokens are what a 16 GB card fits in fp32 and emulated bf16: kept, not halved."""
    cpu = PROFILES["cpu"]
    assert profiles.FITS_16GB[256][precision] == cpu.batch_size
    assert cpu.fit_memory(precision, 15.0) is cpu


# --------------------------------------------------------------------------- the printed CPU estimate

def test_two_seeds_say_their_total_and_the_one_further_seed(bf16_cpu):
    tiny = get_profile("tiny")
    said = estimates.estimate(tiny, "cpu", 2)
    assert said.startswith("about 1 minute on 2 CPU cores for one seed; about 2 minutes for the 2 seeds; "
                           "the further seed retrains only the students"), said


@pytest.mark.parametrize("budget, said", [(60, "about 1 minute "), (119, "about 2 minutes "), (59, "about 59 s ")])
def test_a_minute_is_said_in_minutes_and_less_in_seconds(bf16_cpu, budget, said):
    assert estimates.estimate(get_profile("tiny").replace(time_budget_s=budget), "cpu").startswith(said)


def test_the_test_reviews_a_run_evaluates_are_capped_by_the_split_it_reads(monkeypatch):
    """n_test is "at most": beyond a data folder's test split, or IMDB's 25,000 on the Hub, the split is what runs;
    the built-in reviews' split is not known before they are read (None), whatever the Hub holds."""
    cpu = get_profile("cpu")
    monkeypatch.setattr(estimates, "folder_rows", lambda folder: dict(train=2000, test=500, unsupervised=0))
    assert estimates.test_reviews_of(cpu.replace(n_test=10_000), "/data") == 500
    assert estimates.test_reviews_of(cpu.replace(n_test=300), "/data") == 300
    assert estimates.test_reviews_of(cpu.replace(n_test=30_000), None) == estimates.IMDB_TEST_REVIEWS == 25_000
    assert estimates.test_reviews_of(cpu.replace(data_source="tiny"), None) is None


def test_tiny_on_a_cpu_without_bf16_units_says_its_measured_slowdown(monkeypatch):
    """The slowdown is a CPU's: a GPU run on the same machine is not slowed by its CPU's missing bf16 units."""
    monkeypatch.setattr(device, "bf16_supported", lambda name: False)
    assert estimates.cpu_slowdown(get_profile("tiny"), "cuda") == (1.0, "")
    said = estimates.estimate(get_profile("tiny"), "cpu")
    assert said.startswith("about 2 minutes ") and "this CPU has no bf16 units" in said, said
    assert f"this profile takes about {estimates.CPU_FP32_SLOWDOWN['tiny']:.1f}x the time measured" in said


def test_a_slower_cpu_slows_the_added_evaluation_too(monkeypatch):
    """On the Hub's 25,000 test reviews cpu's evaluation grows fivefold: without bf16 units that takes the measured
    2x as well, so the whole estimate doubles, not only the budget it starts from."""
    cpu = profiles.timed_preset("cpu")
    minutes = {}
    for units in (True, False):
        monkeypatch.setattr(device, "bf16_supported", lambda name: units)
        minutes[units] = int(estimates.estimate(cpu, "cpu", test_reviews=25_000).split()[1])
    assert abs(minutes[False] - estimates.CPU_FP32_SLOWDOWN["cpu"] * minutes[True]) <= 1, minutes


def test_a_gpu_profile_on_a_cpu_counts_the_data_folders_sizes(monkeypatch):
    """full was never timed on a CPU: its line gives the arithmetic, of the data folder's reviews where given."""
    full = get_profile("full")
    hub = estimates.estimate(full, "cpu")
    monkeypatch.setattr(estimates, "folder_rows", lambda folder: dict(train=2000, test=500, unsupervised=0))
    small = estimates.estimate(full, "cpu", data_dir="/data")
    assert hub.startswith("not measured on a CPU (the full profile is sized for a GPU): about ") and "PFLOP" in hub
    pflop = [float(s.split("about ")[1].split()[0]) for s in (hub, small)]
    assert pflop[1] < pflop[0] / 10, (hub, small)


# --------------------------------------------------------------------------- defects found by the audit

def test_a_folder_named_by_data_source_is_evaluated_on_its_test_split(tmp_path):
    """Only --data-dir's sizes were read: the same folder named by --set data_source=PATH was taken for the
    budget's 4,906 test reviews (about 8 minutes printed, where --data-dir printed about 3)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    for split, n in (("train", 50), ("test", 1000)):
        pq.write_table(pa.table({"text": ["a review"] * n, "label": [0] * n}), tmp_path / f"{split}.parquet")
    cpu = get_profile("cpu")
    assert estimates.test_reviews_of(cpu.replace(data_source=str(tmp_path)), None) == estimates.test_reviews_of(
        cpu, str(tmp_path)) == 1000


def test_the_hubs_imdb_by_either_name_evaluates_its_whole_test_split():
    """"stanfordnlp/imdb" is read as "hub" is, but was taken for a folder of unknown size: 4,906, not 25,000."""
    from kd_tutorial.data import HUB_DATASET
    cpu = get_profile("cpu")
    assert estimates.test_reviews_of(cpu.replace(data_source=HUB_DATASET), None) == estimates.test_reviews_of(
        cpu, None) == 25_000


# --------------------------------------------------------------------------- --set: a misspelt field

@pytest.mark.parametrize("item, meant", [
    ("tempreature=4", "did you mean --set temperature=4?"),
    ("lr=1e-3", "did you mean --set teacher_lr=1e-3 or --set student_lr=1e-3?"),
    ("Alpha=0.5", "did you mean --set alpha=0.5?"),
])
def test_a_misspelt_set_field_is_told_the_field_meant_not_the_whole_list(item, meant):
    """A learner's typo got the 37 settable names; the profile's own did-you-mean (profile.replace) was not used."""
    with pytest.raises(ProfileOverrideError) as refused:
        get_profile("tiny").with_overrides([item])
    said = str(refused.value)
    assert said == f"--set {item!r}: a profile has no field {item.split('=')[0]!r}: {meant}"


@pytest.mark.parametrize("item, said", [("zzz=1", "expected FIELD=VALUE with FIELD one of .*temperature"),
                                        ("students=()", "--set cannot change students: choose them with --profile"),
                                        ("name=cpu", "--set cannot change name: --profile NAME picks a profile")])
def test_a_set_field_with_nothing_close_or_not_settable_gets_the_list_or_its_fix(item, said):
    """No near spelling: the settable fields are listed; a field --set cannot change (students, name): how to change
    it instead (it got the list, itself not in it). No field is said to be missing that the profile has."""
    with pytest.raises(ProfileOverrideError, match=said) as refused:
        get_profile("tiny").with_overrides([item])
    assert "did you mean" not in str(refused.value) and "has no field" not in str(refused.value)


@pytest.mark.parametrize("profile, item, says", [
    ("tiny", "seed=1", "--set 'seed=1': kd-tutorial takes its seeds from --seeds"),
    ("tiny", "recipe=kd", "--set 'recipe=kd': every student of the tiny profile sets its own recipes"),
    ("cpu", "lr=1e-3", "--set 'lr=1e-3': a profile has no field 'lr': did you mean --set teacher_lr=1e-3?"),
])
def test_a_misspelt_set_field_is_never_told_a_field_that_set_then_refuses(profile, item, says):
    """`seed=1` was told "did you mean --set seeds=1?", which --set refuses (give --seeds); on cpu, whose students
    all set their own learning rate, `lr` was told student_lr too: the fix given is one that works."""
    with pytest.raises(ProfileOverrideError) as refused:
        get_profile(profile).with_overrides([item])
    assert str(refused.value).startswith(says) and "seeds=1?" not in str(refused.value)
    assert "student_lr" not in str(refused.value) and "recipes=kd?" not in str(refused.value)
