"""Edges of the built-in corpus, the teacher's cached layers and the small language-model code (notebook 09) that a
mutation audit of corpus, features, teacher_layers and lm found untested: plural subjects that agree with their verb,
the layer keys a cache is sized for, the tiny profile's texts (every built-in review, the test split held out, the
seed obeyed, whole reviews within max_length, the student's share), an explicit data folder that wins over
$KD_TUTORIAL_DATA_DIR, a tokenizer without an end token refused in one line, a vocabulary ordered by count, decoding
that stops at the end token, full batches reshuffled every pass, seeded GPTs without dropout, the learning-rate
schedule, train_lm's progress and eval mode, sampling that leaves the model's mode alone, and
evaluation one row at a time when not even one row fits the logit budget.

Everything runs on tiny GPTs (one or two layers of width 8) and a few reviews, so nothing is trained long."""
import collections
import dataclasses
import re

import pytest
import torch

from kd_tutorial import corpus, lm, teacher_layers
from kd_tutorial import lm_methods as M

TINY = lm.LM_PROFILES["tiny"]


@pytest.fixture(scope="module")
def tiny_texts():
    return lm.load_texts(TINY)


def _tiny_gpt(vocab=12, layers=1, seed=0):
    return lm.gpt(vocab, layers, 8, 2, 16, seed=seed)


ROWS = [[lm.BOS_ID, 5, 6, 7, 8, 9, lm.EOS_ID], [lm.BOS_ID, 4, 10, lm.EOS_ID], [lm.BOS_ID, 11, 5, 6, 4, lm.EOS_ID]]


# ----------------------------------------------------------------------------- corpus

def test_plural_subjects_take_were_and_singular_ones_was():
    """"the characters was" and "the plot weren't" would be bad English in every notebook's examples."""
    subject = re.compile(r"\b[Tt]he ([a-z ]+?) (was|were|wasn't|weren't)\b")
    seen = collections.Counter()
    for row in corpus.generate_corpus(n_train=600, n_unsupervised=0, n_test=0)["train"]:
        for noun, verb in subject.findall(row["text"]):
            plural = noun in corpus.PLURAL_ASPECTS
            assert plural or noun in corpus.ASPECTS, noun
            assert verb in (("were", "weren't") if plural else ("was", "wasn't")), row["text"]
            seen[plural, verb] += 1
    assert all(seen[key] > 0 for key in [(True, "were"), (True, "weren't"), (False, "was"), (False, "wasn't")])


# ----------------------------------------------------------------------------- teacher_layers

def test_the_cached_layer_keys_are_those_of_the_runs_that_read_the_cache_only():
    """The tuning scripts size the layer cache with cached_layer_keys: an attention run's hidden states are read from
    the teacher at every step, so they take no room in the cache; a profile that caches nothing needs no keys."""
    from kd_tutorial.profiles import get_profile
    from kd_tutorial.recipes import get_recipe
    cache = get_profile("tiny").replace(teacher_layers="cache")
    spec, recipes = cache.students[0], [get_recipe("kd+transfer+values"), get_recipe("kd+transfer+attn")]
    keys = teacher_layers.cached_layer_keys(cache, [spec], lambda _: recipes, 4)
    assert keys == sorted(teacher_layers.run_layer_keys(spec, recipes[0], 4)) and {k for k, _ in keys} == {"values"}
    assert teacher_layers.cached_layer_keys(cache.replace(teacher_layers="online"), [spec], lambda _: recipes, 4) == []


# ----------------------------------------------------------------------------- lm: texts and tokens

def test_the_tiny_profiles_texts_are_every_built_in_review_with_the_test_split_held_out(tiny_texts):
    built = corpus.generate_corpus(seed=0)
    assert tiny_texts["train"] == [r["text"] for r in built["train"] + built["unsupervised"]]
    assert tiny_texts["held_out"] == [r["text"] for r in built["test"]]
    assert not set(tiny_texts["train"]) & set(tiny_texts["held_out"])


def test_the_tiny_profiles_texts_follow_the_seed():
    a, b = lm.load_texts(TINY, seed=1), corpus.generate_corpus(seed=1)
    assert a["held_out"] == [r["text"] for r in b["test"]]


def test_an_explicit_data_folder_wins_over_the_environment(tmp_path, monkeypatch):
    """The ``data_dir`` argument is the first choice, $KD_TUTORIAL_DATA_DIR the second (load_texts' docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    for name, folder in (("given", tmp_path / "given"), ("env", tmp_path / "env")):
        folder.mkdir()
        for split, n in (("train", 40), ("test", 10)):
            table = pa.table({"text": [f"{name} {split} {i}" for i in range(n)], "label": [i % 2 for i in range(n)]})
            pq.write_table(table, folder / f"{split}.parquet")
    monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(tmp_path / "env"))
    texts = lm.load_texts(lm.LM_PROFILES["full"], data_dir=str(tmp_path / "given"))
    assert all(t.startswith("given ") for t in texts["train"] + texts["held_out"])


def test_the_tiny_profile_keeps_whole_reviews_and_gives_the_student_its_share(tiny_texts):
    """max_length counts <bos> and <eos>: a review cut short would lose its end token (sampling stops there)."""
    data = lm.encode_texts(TINY, tiny_texts)
    assert all(row[-1] == lm.EOS_ID and len(row) <= TINY.max_length for row in data.teacher + data.held_out)
    assert len(data.student) == TINY.student_reviews and data.student == data.teacher[: TINY.student_reviews]


def test_rows_longer_than_max_length_are_cut_to_it():
    profile = dataclasses.replace(TINY, max_length=4)
    data = lm.encode_texts(profile, {"train": ["a b c d e f"], "held_out": ["a b"]})
    assert data.teacher == [[lm.BOS_ID, 4, 5, 6]] and data.held_out == [[lm.BOS_ID, 4, 5, lm.EOS_ID]]


def test_a_tokenizer_without_an_end_token_is_refused_in_one_line():
    class NoEos:
        bos_token_id, eos_token_id = 1, None

        def encode(self, text, add_special_tokens=False):
            return [5]
    with pytest.raises(ValueError, match=r"^the tokenizer has no eos_token_id: set tokenizer.bos_token and "
                                         r"tokenizer.eos_token"):
        lm._encode(NoEos(), "a review")


def test_the_vocabulary_puts_the_most_frequent_words_first_ties_alphabetically():
    tok = lm.WordTokenizer(["b a b c", "c b d"])
    assert tok.vocab == ["<pad>", "<bos>", "<eos>", "<unk>", "b", "c", "a", "d"]


def test_decoding_stops_at_the_first_end_token():
    tok = lm.WordTokenizer(["good film ."])
    ids = tok.encode("good film .") + tok.encode("film")[1:]
    assert tok.decode(ids) == "good film."


# ----------------------------------------------------------------------------- lm: batches and models

def test_batches_are_always_full_and_reshuffled_every_pass():
    rows = [[i] for i in range(5)]
    stream = lm.batches(rows, 2, torch.Generator().manual_seed(0))
    drawn = [next(stream) for _ in range(40)]  # 20 passes of two batches each (the fifth row waits a pass)
    assert all(len(b) == 2 for b in drawn)
    passes = {tuple(x[0] for b in drawn[i: i + 2] for x in b) for i in range(0, 40, 2)}
    assert len(passes) > 1


@pytest.mark.parametrize("size", [0, -2])
def test_a_batch_of_no_rows_is_refused_in_one_line(size):
    """It stopped on range()'s "arg 3 must not be zero"; a negative size spun for ever, drawing nothing."""
    with pytest.raises(ValueError, match=rf"^batch_size={size}: give a whole number of rows >= 1$"):
        next(lm.batches([[1], [2]], size, torch.Generator().manual_seed(0)))


def test_gpt_is_seeded_and_has_no_dropout():
    a, b, c = lm.gpt(20, 1, 8, 2, 16, seed=3), lm.gpt(20, 1, 8, 2, 16, seed=3), lm.gpt(20, 1, 8, 2, 16, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    ids = torch.tensor([[1, 5, 6, 7]])
    a.train()
    assert torch.equal(a(input_ids=ids).logits, a(input_ids=ids).logits)  # no dropout in train mode either


def test_a_tiny_teacher_is_built_from_the_seed_given():
    profile = dataclasses.replace(TINY, teacher_width=8, teacher_heads=2, max_length=16)
    a, b = lm.teacher_model(profile, 20, seed=5), lm.teacher_model(profile, 20, seed=6)
    assert not torch.equal(a.lm_head.weight, b.lm_head.weight)


# ----------------------------------------------------------------------------- lm: training

def _train(monkeypatch, steps, progress=None, lr=1.0):
    """train_lm on a tiny GPT: the model, its losses, and the learning rate of every step as AdamW saw it."""
    seen = []

    class Spy(torch.optim.AdamW):
        def step(self, *a, **k):
            seen.append(self.param_groups[0]["lr"])
            return super().step(*a, **k)
    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    model = _tiny_gpt()
    history = lm.train_lm(model, ROWS, M.data_only(), steps=steps, batch_size=2, lr=lr, progress=progress)
    return model, history, seen


def test_the_learning_rate_warms_up_over_a_tenth_of_the_steps_then_falls_linearly_to_zero(monkeypatch):
    _, _, lrs = _train(monkeypatch, 20)
    expected = [min((s + 1) / 2, (20 - s) / 18) for s in range(20)]  # warm-up: 2 steps of 20
    assert lrs == pytest.approx(expected)


def test_train_lm_counts_every_step_on_the_progress_bar_and_leaves_the_model_in_eval_mode(monkeypatch):
    class Bar:
        n = 0

        def update(self, k):
            self.n += k
    bar = Bar()
    model, history, _ = _train(monkeypatch, 3, progress=bar, lr=1e-3)
    assert bar.n == 3 and len(history) == 3 and not model.training


# ----------------------------------------------------------------------------- lm: sampling and metrics

@pytest.mark.parametrize("training", [True, False])
def test_sampling_leaves_the_model_in_the_mode_it_came_in(training):
    """On-policy KD samples the student between its training steps: left in eval mode, it would train without
    dropout from then on."""
    model = _tiny_gpt().train(training)
    lm.sample(model, [[lm.BOS_ID, 5]], max_length=6, generator=torch.Generator().manual_seed(0))
    assert model.training is training


def test_a_model_too_wide_for_the_logit_budget_still_evaluates_one_row_at_a_time(monkeypatch):
    model = _tiny_gpt().eval()
    monkeypatch.setattr(lm, "LOGIT_BUDGET", 1)  # not even one row's logits fit
    assert lm.fitting_rows(model, ROWS) == 1
    assert lm.perplexity(model, ROWS) == pytest.approx(lm.perplexity(model, ROWS, batch_size=3), rel=1e-5)
