"""kd_tutorial.lm and kd_tutorial.lm_methods: tokens, masks, models, sampling, metrics, and every method training."""
import dataclasses
import inspect
import math

import pytest
import torch

from kd_tutorial import lm, losses
from kd_tutorial import lm_methods as M
from kd_tutorial.models import VocabularyMismatchError

TINY = dataclasses.replace(lm.LM_PROFILES["tiny"], teacher_width=32, teacher_heads=2, student_width=16,
                           student_heads=2, max_length=48)


@pytest.fixture(scope="module")
def data():
    return lm.encode_texts(TINY, lm.load_texts(TINY))


@pytest.fixture(scope="module")
def teacher(data):
    model = lm.teacher_model(TINY, len(data.tokenizer))
    lm.train_lm(model, data.teacher[:800], M.data_only(), steps=60, batch_size=32, lr=3e-3)
    return model


def test_the_word_tokenizer_is_deterministic_and_round_trips():
    texts = lm.load_texts(TINY)
    a, b = lm.WordTokenizer(texts["train"]), lm.WordTokenizer(list(reversed(texts["train"])))
    assert a.vocab == b.vocab and a.vocab[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    for text in texts["train"][:50]:  # the corpus's words and punctuation come back, lower-cased
        ids = a.encode(text)
        assert ids[0] == lm.BOS_ID and ids[-1] == lm.EOS_ID and lm.UNK_ID not in ids
        assert a.decode(ids) == text.lower()
    assert a.encode("zyzzyva")[1] == lm.UNK_ID and a.decode(a.encode("zyzzyva")) == "<unk>"


def test_collate_masks_padding_and_prompts():
    batch = lm.collate([[1, 5, 6, 7, 2], [1, 8, 2]], prompt_lengths=[3, 1])
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 0, 0]]
    logits = torch.randn(2, 5, 9)
    z, y, m = lm.next_token(logits, batch)
    assert torch.equal(z, logits[:, :-1]) and y.tolist() == [[5, 6, 7, 2], [8, 2, 0, 0]]
    assert m.tolist() == [[0, 0, 1, 1], [1, 1, 0, 0]]  # the prediction made at t is scored on token t + 1
    on_a_gpu = torch.empty(2, 5, 9, device="meta")  # a review: on CUDA the targets and mask stayed on the CPU,
    _, y, m = lm.next_token(on_a_gpu, batch)  # and every token loss (a gather, a masked mean) mixed two devices
    assert y.device == m.device == on_a_gpu.device


def test_sampling_with_the_cache_equals_sampling_without_it(teacher):
    prompts = [[lm.BOS_ID, 5, 6], [lm.BOS_ID, 7, 8]] * 4
    rows = lm.sample(teacher, prompts, max_length=20, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    ids = torch.tensor(prompts)
    done = torch.zeros(len(prompts), dtype=torch.bool)
    while ids.shape[1] < 20 and not bool(done.all()):  # the same loop, recomputing the whole prefix
        with torch.no_grad():
            nxt = torch.multinomial(torch.softmax(teacher(input_ids=ids).logits[:, -1], -1), 1, generator=g)[:, 0]
        ids = torch.cat([ids, torch.where(done, lm.EOS_ID, nxt)[:, None]], 1)
        done |= nxt == lm.EOS_ID
    expected = [r[:3] + lm._until(r[3:], lm.EOS_ID) for r in ids.tolist()]
    assert rows == expected
    assert all(r[:3] == p and len(r) <= 20 for r, p in zip(rows, prompts))
    assert all(lm.EOS_ID not in r[3:-1] for r in rows)  # nothing after the end of a review


def test_sampling_draws_where_the_model_runs_with_the_seed_still_fixing_it(monkeypatch):
    """Drawn on the host, every token of a GPU's samples copied the vocabulary's probabilities over and sampled on
    the CPU (GPT-2: over a second a token for 256 rows). A generator of another device is now seeded from the one
    given: the same seed gives the same generator there; on the CPU it is the one given."""
    given = torch.Generator().manual_seed(3)
    assert lm.generator_on(given, "cpu") is given
    made = []

    class OtherDevice:  # torch.Generator(device=...) on a machine with no GPU, as lm.generator_on calls it
        def __init__(self, device):
            self.device = torch.device(device)

        def manual_seed(self, seed):
            made.append(seed)
            return self
    monkeypatch.setattr(torch, "Generator", OtherDevice)
    first = lm.generator_on(given.manual_seed(3), "meta")
    lm.generator_on(given.manual_seed(3), "meta")
    lm.generator_on(given.manual_seed(4), "meta")
    assert first.device.type == "meta" and made[0] == made[1] != made[2]  # the seed given decides it


def test_a_uniform_model_has_the_vocabularys_perplexity_and_training_lowers_it(data, teacher):
    untrained = lm.gpt(len(data.tokenizer), 1, 16, 2, 48)
    torch.nn.init.zeros_(untrained.lm_head.weight)  # tied to the embeddings: all logits 0, a uniform model
    assert lm.perplexity(untrained, data.held_out[:50]) == pytest.approx(len(data.tokenizer), rel=1e-4)
    assert lm.perplexity(teacher, data.held_out) < 0.2 * len(data.tokenizer)


def test_evaluation_batches_fit_a_large_vocabularys_logits_and_give_the_same_values(data, teacher, monkeypatch):
    """128 reviews a batch (the old default) were 6.6 GB of logits a copy for GPT-2's 50,257-token vocabulary, on
    the ``full`` profile: more than a T4 holds. Batches now shrink to the logit budget; values do not move."""
    class Gpt2Sized:
        config = type("Config", (), {"vocab_size": 50_257})()
    rows = [[0] * 256] * 300
    chosen = lm.fitting_rows(Gpt2Sized(), rows)
    assert chosen == 5 and chosen * 256 * 50_257 <= lm.LOGIT_BUDGET < (chosen + 1) * 256 * 50_257
    assert lm.fitting_rows(teacher, data.held_out) == 128 and lm.fitting_rows(Gpt2Sized(), rows, 64) == 64
    held_out = data.held_out[:40]
    before = (lm.review_nll(teacher, held_out, batch_size=128), lm.mean_entropy(teacher, held_out, batch_size=128),
              M.cache_logits(teacher, held_out[:10], batch_size=128))
    seen, real = [], lm.collate
    for module in (lm, M):
        monkeypatch.setattr(module, "collate", lambda part, *a, **k: seen.append(len(part)) or real(part, *a, **k))
    longest = max(map(len, held_out))
    monkeypatch.setattr(lm, "LOGIT_BUDGET", 7 * longest * len(data.tokenizer))  # 7 rows of the longest a batch
    nll, counts = lm.review_nll(teacher, held_out)
    assert set(seen) == {7, 40 % 7} and torch.allclose(nll, before[0][0], rtol=1e-5)
    assert torch.equal(counts, before[0][1])
    assert lm.mean_entropy(teacher, held_out) == pytest.approx(before[1], rel=1e-5)
    padded = lm.gpt(len(data.tokenizer) + 5, 1, 16, 2, 48)  # a vocabulary padded beyond the tokenizer's: 6 rows
    assert lm.fitting_rows(padded, held_out) == 6  # a batch, where the teacher's gives 7: agreement pairs them
    assert lm.agreement(padded, teacher, held_out) == pytest.approx(lm.agreement(padded, teacher, held_out, 128))
    seen.clear()
    cached = M.cache_logits(teacher, held_out[:10])
    assert seen == [7, 3] and all(torch.allclose(cached[k], v, atol=1e-5) for k, v in before[2].items())


def test_the_perplexity_ratio_and_its_interval(data, teacher):
    nll, counts = lm.review_nll(teacher, data.held_out[:200])
    assert lm.perplexity_ratio(nll, nll, counts) == (1.0, 1.0, 1.0)
    worse = nll + 0.1 * counts  # 0.1 nat more per token: a ratio of exp(0.1)
    ratio, lo, hi = lm.perplexity_ratio(worse, nll, counts)
    assert ratio == pytest.approx(math.exp(0.1)) and lo == pytest.approx(ratio) and hi == pytest.approx(ratio)
    noisy = nll + torch.randn(len(nll), generator=torch.Generator().manual_seed(0)) * counts * 0.2
    ratio, lo, hi = lm.perplexity_ratio(noisy, nll, counts)
    assert lo < ratio < hi and hi / lo > 1.01
    assert math.exp(float(nll.sum() / counts.sum())) == pytest.approx(lm.perplexity(teacher, data.held_out[:200]))


def test_copy_layers_takes_the_chosen_blocks_as_copies():
    teacher = lm.gpt(30, 4, 16, 2, 32).eval().requires_grad_(False)  # frozen, as notebook 09 freezes it
    student = lm.copy_layers(teacher, [0, 2])
    assert student.training and all(p.requires_grad for p in student.parameters())  # it had none to train
    assert student.config.n_layer == 2 and len(student.transformer.h) == 2
    for s_block, t_index in zip(student.transformer.h, (0, 2)):
        t_block = teacher.transformer.h[t_index]
        assert all(torch.equal(a, b) for a, b in zip(s_block.parameters(), t_block.parameters()))
        assert s_block is not t_block
    ids = torch.tensor([[1, 4, 5, 6]])
    assert student(input_ids=ids).logits.shape == (1, 4, 30)
    narrow = lm.student_model(TINY, teacher)  # a teacher trained from scratch: a new, narrower student
    assert narrow.config.n_embd == TINY.student_width and narrow.config.n_layer == TINY.student_layers


def test_the_top_k_cache_holds_the_teachers_largest_logits(data, teacher):
    rows = data.student[:10]
    full, top = M.cache_logits(teacher, rows), M.cache_logits(teacher, rows, top_k=4)
    for row in rows:
        z, (values, ids) = full[tuple(row)], top[tuple(row)]
        assert z.shape == (len(row) - 1, len(data.tokenizer)) and values.shape == ids.shape == (len(row) - 1, 4)
        assert torch.equal(values, z.gather(-1, ids)) and torch.equal(values, z.topk(4, -1).values)
    real = lm.next_token(torch.zeros(3, max(map(len, rows[:3])), 1), lm.collate(rows[:3]))[2].bool()
    assert torch.allclose(M.cached(full)(rows[:3])[real], M.online(teacher)(rows[:3])[real], atol=1e-5)


def test_a_rest_cache_holds_the_teachers_mass_outside_its_top_k(data, teacher):
    rows = data.student[:10]
    full, top = M.cache_logits(teacher, rows), M.cache_logits(teacher, rows, top_k=4, rest=True)
    for row in rows:
        z, (values, ids, log_rest) = full[tuple(row)], top[tuple(row)]
        assert torch.equal(values, z.topk(4, -1).values) and log_rest.shape == (len(row) - 1,)
        outside = 1 - torch.softmax(z.double(), -1).gather(-1, ids).sum(-1)
        assert torch.allclose(log_rest.exp().double(), outside, rtol=1e-4)
    with pytest.raises(ValueError, match="give top_k too"):
        M.cache_logits(teacher, rows, rest=True)
    with pytest.raises(ValueError, match="give temperature=1.0, or a cache without rest=True"):
        M.topk_kd(top, temperature=2.0)
    with pytest.raises(ValueError, match="build it with cache_logits"):
        M.topk_kd(full)
    # topk_kd reads the rest: its KL is topk_rest_token_kl's on the padded batch, not topk_token_kl's
    student = lm.student_model(TINY, teacher)
    batch = lm.collate(rows[:4])
    z, y, m = lm.next_token(lm.logits_of(student, batch), batch)
    side = M._padded_topk(top, rows[:4], z.shape[1])
    ce = M.losses.token_cross_entropy(z, y, m)
    expected = 0.5 * losses.topk_rest_token_kl(z, *side, m) + 0.5 * ce
    assert torch.allclose(M.topk_kd(top)(student, rows[:4]), expected, atol=1e-6)
    assert not torch.allclose(expected, 0.5 * M.losses.topk_token_kl(z, *side[:2], m) + 0.5 * ce, atol=1e-3)


def test_older_notebooks_still_find_the_rest_kl_in_lm_methods():
    """topk_rest_token_kl moved to losses; older copies of notebook 09 call methods.topk_rest_token_kl, which must
    be the very same function (not a copy that could drift from the one the tests check)."""
    assert M.topk_rest_token_kl is losses.topk_rest_token_kl


def test_the_teachers_side_runs_it_in_eval_mode(data, teacher):
    """online() (and cache_logits, on_policy_kd through it) ran the teacher in whatever mode it was left: a GPT-2
    in train mode gave dropout-noised targets (correctness note 7: the teacher frozen, in eval mode)."""
    teacher.train()
    try:
        M.online(teacher)(data.student[:2])
        assert not teacher.training
    finally:
        teacher.eval()


@pytest.mark.parametrize("method", ["data", "forward", "reverse", "top-k", "top-k + rest", "sequence", "on-policy"])
def test_every_method_trains_the_student(data, teacher, method):
    student = lm.student_model(TINY, teacher)
    before = lm.perplexity(student, data.held_out[:100])
    full = M.cache_logits(teacher, data.student[:200])
    rows, loss = data.student[:200], {
        "data": lambda: M.data_only(),
        "forward": lambda: M.token_kd(M.cached(full)),
        "reverse": lambda: M.token_kd(M.online(teacher), reverse=True),
        "top-k": lambda: M.topk_kd(M.cache_logits(teacher, data.student[:200], top_k=4)),
        "top-k + rest": lambda: M.topk_kd(M.cache_logits(teacher, data.student[:200], top_k=4, rest=True)),
        "sequence": lambda: M.data_only(prompt_tokens=TINY.prompt_tokens),
        "on-policy": lambda: M.on_policy_kd(teacher, M.prompts_of(data.student[:200], TINY.prompt_tokens),
                                            M.cached(full), max_length=TINY.max_length, pool_size=32, refresh_every=10),
    }[method]()
    if method == "sequence":
        rows = M.sequence_kd_rows(teacher, data.student[:100], prompt_tokens=TINY.prompt_tokens,
                                  max_length=TINY.max_length)
        assert len(rows) == 100 and all(r[: TINY.prompt_tokens] == s[: TINY.prompt_tokens]
                                        for r, s in zip(rows, data.student))
    history = lm.train_lm(student, rows, loss, steps=30, batch_size=16, lr=3e-3)
    assert all(math.isfinite(x) for x in history) and len(history) == 30
    assert lm.perplexity(student, data.held_out[:100]) < 0.8 * before


def _row_kl(student, teacher, rows, first: int, temperature: float = 1.0, reverse: bool = False):
    """Each row's token KL computed alone, unpadded, over the positions that predict tokens ``first`` on: their sum
    and count (written out here, not by the package's masks)."""
    total, count = 0.0, 0
    for row in rows:
        ids = torch.tensor([row])
        with torch.no_grad():
            log_p = torch.log_softmax(teacher(input_ids=ids).logits[0, first - 1:-1] / temperature, -1)
            log_q = torch.log_softmax(student(input_ids=ids).logits[0, first - 1:-1] / temperature, -1)
        a, b = (log_q, log_p) if reverse else (log_p, log_q)
        total += float((a.exp() * (a - b)).sum())
        count += len(row) - first
    return total, count


@pytest.mark.parametrize("reverse, temperature", [(False, 2.0), (True, 1.0)])
def test_token_kd_is_the_teachers_kl_row_by_row_at_its_temperature(data, teacher, reverse, temperature):
    """The method-level tests only asked that the student learn, which the cross-entropy half does alone: swapping
    teacher and student, inverting `reverse`, shifting the teacher by a position or ignoring T passed them all."""
    student, rows = lm.student_model(TINY, teacher), data.student[:6]
    total, count = _row_kl(student, teacher, rows, 1, temperature, reverse)
    value = M.token_kd(M.online(teacher), alpha=1.0, temperature=temperature, reverse=reverse)(student, rows)
    assert float(value.detach()) == pytest.approx(temperature ** 2 * total / count, rel=1e-4)
    full = M.cache_logits(teacher, rows)
    top = M.cache_logits(teacher, rows, top_k=len(data.tokenizer))  # every token: the top-k KL is the full one
    if not reverse:
        with torch.no_grad():
            assert float(M.topk_kd(top, alpha=1.0, temperature=temperature)(student, rows)) == pytest.approx(
                float(M.token_kd(M.cached(full), alpha=1.0, temperature=temperature)(student, rows)), rel=1e-5)


def test_on_policy_mixes_the_kl_on_the_students_continuation_and_on_the_data(data, teacher, monkeypatch):
    """With a pool of one continuation: mix x its KL after the prompt + (1 - mix) x the KL on the data rows after
    <bos>. Scoring the prompt too, or dropping the pool's half, passed every test."""
    pool = []
    real = M.sample
    monkeypatch.setattr(M, "sample", lambda model, prompts, **kw: pool.extend(real(model, prompts, **kw)) or pool)
    student, rows = lm.student_model(TINY, teacher), data.student[:4]
    prompts = M.prompts_of(data.student[:50], TINY.prompt_tokens)
    value = M.on_policy_kd(teacher, prompts, M.online(teacher), max_length=TINY.max_length, pool_size=1,
                           mix=0.3)(student, rows)
    own, own_n = _row_kl(student, teacher, pool, len(prompts[0]))  # the batch is that one row, len(rows) times
    on_data, data_n = _row_kl(student, teacher, rows, 1)
    assert len(pool) == 1
    assert float(value.detach()) == pytest.approx(0.3 * own / own_n + 0.7 * on_data / data_n, rel=1e-4)


def test_sequence_level_kd_samples_the_teacher_at_temperature_one(data, teacher, monkeypatch):
    said = []
    real = M.sample
    default = inspect.signature(real).parameters["temperature"].default  # what a call that names none gets
    monkeypatch.setattr(M, "sample",
                        lambda model, prompts, **kw: said.append((model, kw)) or real(model, prompts, **kw))
    M.sequence_kd_rows(teacher, data.student[:4], prompt_tokens=TINY.prompt_tokens, max_length=TINY.max_length)
    assert said and all(model is teacher and kw.get("temperature", default) == 1.0 for model, kw in said)


def test_on_policy_samples_are_the_students_and_refresh_on_schedule(data, teacher, monkeypatch):
    calls = []
    real = M.sample
    monkeypatch.setattr(M, "sample", lambda model, prompts, **kw: calls.append(model) or real(model, prompts, **kw))
    student = lm.student_model(TINY, teacher)
    prompts = M.prompts_of(data.student[:50], TINY.prompt_tokens)
    loss = M.on_policy_kd(teacher, prompts, M.online(teacher), max_length=TINY.max_length, pool_size=8,
                          refresh_every=5)
    lm.train_lm(student, data.student[:50], loss, steps=12, batch_size=8, lr=1e-3)
    assert len(calls) == 3 and all(model is student for model in calls)  # steps 0, 5 and 10


def test_on_policy_scores_a_pool_too_large_to_cache_with_the_teacher_online(data, teacher, monkeypatch):
    """On GPT-2's vocabulary a pool's full logits are gigabytes: the teacher then scores each batch of the pool,
    and the loss is the one the cache gives."""
    student = lm.student_model(TINY, teacher)
    prompts = M.prompts_of(data.student[:50], TINY.prompt_tokens)
    rows = data.student[:8]

    def first_loss(**kw):
        loss = M.on_policy_kd(teacher, prompts, M.online(teacher), max_length=TINY.max_length, pool_size=8, **kw)
        return loss(student, rows).item()
    with_cache = first_loss()
    monkeypatch.setattr(M, "cache_logits", lambda *a, **k: pytest.fail("cached a pool over max_cache_gb"))
    assert first_loss(max_cache_gb=0) == pytest.approx(with_cache, rel=1e-5)


def test_hugging_face_token_names_work_on_the_word_tokenizer(data):
    """Notebook 09 names tokens by convert_ids_to_tokens, which GPT-2's tokenizer has too (its .vocab is a dict)."""
    tok = data.tokenizer
    assert tok.convert_ids_to_tokens([lm.PAD_ID, lm.BOS_ID, lm.EOS_ID, 5]) == ["<pad>", "<bos>", "<eos>", tok.vocab[5]]


def test_a_pretrained_teacher_loads_from_a_folder_and_its_student_copies_its_layers(tmp_path, data):
    """The `full` path (GPT-2 from the Hub, a distilGPT-2 student) on a saved tiny GPT-2, offline."""
    saved = lm.gpt(len(data.tokenizer), 4, 16, 2, 48)
    saved.save_pretrained(tmp_path / "gpt")
    profile = dataclasses.replace(lm.LM_PROFILES["full"], teacher=str(tmp_path / "gpt"), max_length=48,
                                  student_layers=2)
    teacher = lm.teacher_model(profile, len(data.tokenizer))
    student = lm.student_model(profile, teacher)
    assert teacher.config.n_layer == 4 and student.config.n_layer == 2
    assert torch.equal(student.transformer.h[1].mlp.c_fc.weight, teacher.transformer.h[2].mlp.c_fc.weight)
    history = lm.train_lm(student, data.student[:64], M.token_kd(M.online(teacher)), steps=3, batch_size=16,
                          lr=profile.lr)
    assert len(history) == 3 and all(math.isfinite(x) for x in history)


def test_too_few_rows_for_one_batch_is_an_error_not_an_endless_loop():
    with pytest.raises(ValueError, match="3 rows cannot fill one batch of 4: give more rows or a batch_size of at most 3"):
        next(lm.batches([[1, 2], [3], [4, 5]], 4, torch.Generator().manual_seed(0)))
    assert len(next(lm.batches([[1, 2], [3], [4, 5]], 3, torch.Generator().manual_seed(0)))) == 3


def test_a_teacher_of_another_vocabulary_is_refused_by_every_method(data, teacher):
    """Logits over two vocabularies were compared position by position (a shape error at best, nonsense when the
    sizes agree); the teacher also read ids the student wrote (on-policy) from a vocabulary it does not have."""
    V = len(data.tokenizer)
    other = lm.gpt(V + 5, 1, 16, 2, TINY.max_length)
    student, rows = lm.student_model(TINY, teacher), data.student[:4]
    logits = f"the teacher's logits cover {V + 5} tokens, the student's {V}: distil between models of one tokenizer"
    with pytest.raises(VocabularyMismatchError, match=logits):
        M.token_kd(M.online(other))(student, rows)
    with pytest.raises(VocabularyMismatchError, match=logits):
        M.token_kd(M.cached(M.cache_logits(other, rows)), reverse=True)(student, rows)
    shifted = {row: (values, ids + V) for row, (values, ids) in M.cache_logits(teacher, rows, top_k=4).items()}
    with pytest.raises(VocabularyMismatchError, match=f"the student's vocabulary has {V} tokens: distil between"):
        M.topk_kd(shifted)(student, rows)
    models = f"the teacher's vocabulary has {V + 5} tokens, the student's {V}"
    on_policy = M.on_policy_kd(other, M.prompts_of(rows, TINY.prompt_tokens), M.online(other),
                               max_length=TINY.max_length, pool_size=4)
    with pytest.raises(VocabularyMismatchError, match=models):
        on_policy(student, rows)


def test_a_hugging_face_tokenizer_that_adds_its_own_specials_frames_each_review_once(data):
    """_encode added <bos> and <eos> around tokenizer.encode(text), which a Llama-style tokenizer had already
    framed: two <bos> and two <eos>; a tokenizer without a bos id put None among the ids."""
    from kd_tutorial import lm_trl
    hf = lm_trl.hf_tokenizer(data.tokenizer)  # adds <bos> and <eos> itself, like Llama's
    text = "a great movie ."
    assert hf(text)["input_ids"][0] == lm.BOS_ID  # the tokenizer does add its specials
    assert lm._encode(hf, text) == data.tokenizer.encode(text)  # one <bos>, one <eos>
    assert lm.encode_texts(TINY, {"train": [text], "held_out": []}, hf).teacher == [data.tokenizer.encode(text)]
    hf.bos_token = None
    with pytest.raises(ValueError, match="the tokenizer has no bos_token_id: set tokenizer.bos_token and "
                                         "tokenizer.eos_token"):
        lm._encode(hf, text)


def test_a_pretrained_teachers_reviews_come_from_the_data_folder_the_course_uses(tmp_path, monkeypatch):
    """Notebook 09 on the full profile went to the Hub with $KD_TUTORIAL_DATA_DIR set, and its error said to set it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    for split, n in (("train", 40), ("test", 10)):
        pq.write_table(pa.table({"text": [f"{split} review {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}),
                       tmp_path / f"{split}.parquet")
    monkeypatch.setenv("KD_TUTORIAL_DATA_DIR", str(tmp_path))
    texts = lm.load_texts(lm.LM_PROFILES["full"])
    assert len(texts["held_out"]) == 10 and all(t.startswith("test review") for t in texts["held_out"])
    assert len(texts["train"]) == 38 and all(t.startswith("train review") for t in texts["train"])  # 2 validate


def test_a_pretrained_teacher_that_cannot_be_loaded_is_one_line_naming_prefetch_and_prefetch_lists_it():
    from kd_tutorial.errors import ModelSourceError
    missing = dataclasses.replace(lm.LM_PROFILES["full"], teacher="kd-tutorial-tests/no-such-gpt")  # offline here
    for load in (lambda: lm.tokenizer_for(missing, {}), lambda: lm.teacher_model(missing, 10)):
        with pytest.raises(ModelSourceError, match=r"^cannot load (tokenizer|model) 'kd-tutorial-tests/no-such-gpt' "
                                                   r"\(offline or not cached\): .*kd-tutorial prefetch") as caught:
            load()
        assert "\n" not in str(caught.value)
    assert lm.hub_models("full") == ["gpt2"] == [lm.LM_PROFILES["full"].teacher]
    assert lm.hub_models("cpu") == lm.hub_models("tiny") == []  # notebook 09 trains its own GPT there
    from kd_tutorial.artifacts import cache_status
    from kd_tutorial.profiles import get_profile
    assert "gpt2" in cache_status(get_profile("full"), also=lm.hub_models("full"))  # what env lists
