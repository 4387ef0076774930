"""kd_tutorial.lm_trl: the word tokenizer as a transformers tokenizer, the prompt/completion dataset, GKDTrainer."""
import copy
import dataclasses
import math
import os

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # GKDTrainer lives in trl.experimental, which warns
pytest.importorskip("trl")

from kd_tutorial import lm  # noqa: E402
from kd_tutorial import lm_methods as M  # noqa: E402
from kd_tutorial import lm_trl  # noqa: E402

TINY = dataclasses.replace(lm.LM_PROFILES["tiny"], teacher_width=32, teacher_heads=2, student_width=16,
                           student_heads=2, max_length=48)


@pytest.fixture(scope="module")
def texts():
    return lm.load_texts(TINY)


@pytest.fixture(scope="module")
def data(texts):
    return lm.encode_texts(TINY, texts)


@pytest.fixture(scope="module")
def teacher(data):
    model = lm.teacher_model(TINY, len(data.tokenizer))
    lm.train_lm(model, data.teacher[:800], M.data_only(), steps=40, batch_size=32, lr=3e-3)
    return model.requires_grad_(False)


def test_the_hf_tokenizer_gives_the_word_tokenizers_ids(data, texts):
    tok, hf = data.tokenizer, lm_trl.hf_tokenizer(data.tokenizer)
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2, 3)
    assert len(hf) == len(tok)
    for text in texts["train"][:200] + texts["held_out"][:50] + ["Zyzzyva, it's GREAT!!  (10/10)"]:
        assert hf(text)["input_ids"] == tok.encode(text), text


def test_the_dataset_keeps_the_prompt_out_of_the_loss(data):
    from trl.experimental.utils import DataCollatorForChatML
    prompt, rows = 4, data.student[:6] + [[lm.BOS_ID, 5, 2]]  # the last row has no completion: dropped
    dataset = lm_trl.gkd_dataset(rows, prompt, data.tokenizer)
    assert len(dataset) == 6 and {"prompt", "completion", "input_ids", "completion_mask"} <= set(dataset.column_names)
    hf = lm_trl.hf_tokenizer(data.tokenizer)
    for example, row in zip(dataset, rows):  # the text tokenizes back to the row (how TRL 1.0 finds the prompt)
        assert example["input_ids"] == row
        assert hf(example["prompt"], add_special_tokens=False)["input_ids"] == row[:prompt]
        assert hf(example["completion"], add_special_tokens=False)["input_ids"] == row[prompt:]
    batch = lm_trl._right_padded(DataCollatorForChatML(tokenizer=hf, max_length=TINY.max_length))(list(dataset))
    ours = lm.collate(rows[:6], prompt)
    assert torch.equal(batch["input_ids"], ours["input_ids"])  # padded on the right, as the course's loop
    assert torch.equal(batch["attention_mask"], ours["attention_mask"])
    assert torch.equal(batch["labels"] != -100, ours["loss_mask"].bool())  # prompt and padding: -100
    assert batch["prompts"].tolist() == [row[:prompt] for row in rows[:6]]  # what the student continues


def test_run_gkd_trains_the_student_towards_the_teacher(data, teacher):
    student = lm.student_model(TINY, teacher)
    teacher_before = copy.deepcopy(teacher.state_dict())
    student_before = copy.deepcopy(student.state_dict())
    held_out = data.held_out[:200]
    ppl_before = lm.perplexity(student, held_out)
    trained, losses = lm_trl.run_gkd(teacher, student, data.student, data.tokenizer, steps=8, lr=3e-3,
                                     batch_size=16, prompt_tokens=TINY.prompt_tokens, max_new_tokens=20)
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert any(not torch.equal(v, trained.state_dict()[k]) for k, v in student_before.items())
    assert not trained.training
    assert lm.perplexity(trained, held_out) < 0.95 * ppl_before


def test_run_gkd_trains_in_fp32_as_the_course_loop(data, teacher, monkeypatch):
    # TRL's configs default to bf16 autocast, which a CPU without bf16 units emulates 4-5x slower than fp32
    from trl.experimental import gkd
    seen = {}

    class Recording(gkd.GKDTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["args"] = self.args

    monkeypatch.setattr(gkd, "GKDTrainer", Recording)
    lm_trl.run_gkd(teacher, lm.student_model(TINY, teacher), data.student, data.tokenizer, steps=1, lr=3e-3,
                   batch_size=4, prompt_tokens=TINY.prompt_tokens, max_new_tokens=4)
    assert seen["args"].bf16 is False and seen["args"].fp16 is False


def test_an_on_policy_step_averages_over_the_tokens_it_scores(data, teacher, monkeypatch):
    """Trainer counted num_items_in_batch from the data's completions, before GKD swapped in the student's own, and
    the loss divided by that count: ratios of 0.30 to 0.52 to the per-token mean were measured on on-policy steps."""
    import inspect
    from trl.experimental import gkd
    seen = []
    real = gkd.GKDTrainer.generalized_jsd_loss
    if "num_items_in_batch" not in inspect.signature(real).parameters:  # trl 1.0, the extra's floor
        pytest.skip("this trl's generalized_jsd_loss takes no num_items_in_batch: its loss is the per-token mean")

    def recorded(*args, **kwargs):
        loss = real(*args, **kwargs)
        mean = real(*args, **(kwargs | {"num_items_in_batch": None}))  # the mean over the scored tokens
        seen.append((float(loss), float(mean)))
        return loss
    monkeypatch.setattr(gkd.GKDTrainer, "generalized_jsd_loss", staticmethod(recorded))
    lm_trl.run_gkd(teacher, lm.student_model(TINY, teacher), data.student, data.tokenizer, steps=3, lmbda=1.0,
                   lr=3e-3, batch_size=4, prompt_tokens=TINY.prompt_tokens, max_new_tokens=4)
    assert len(seen) == 3 and all(loss == pytest.approx(mean, rel=1e-6) for loss, mean in seen), seen


def test_run_gkd_refuses_models_and_a_tokenizer_of_different_vocabularies(data, teacher):
    from kd_tutorial.models import VocabularyMismatchError
    V = len(data.tokenizer)
    other = lm.gpt(V + 5, 1, 16, 2, TINY.max_length)
    kwargs = dict(steps=1, lr=3e-3, batch_size=4, prompt_tokens=TINY.prompt_tokens, max_new_tokens=4)
    with pytest.raises(VocabularyMismatchError, match=f"the teacher's vocabulary has {V + 5} tokens, the student's "
                                                      f"{V}"):
        lm_trl.run_gkd(other, lm.student_model(TINY, teacher), data.student, data.tokenizer, **kwargs)
    big = lm.WordTokenizer([" ".join(f"w{i}" for i in range(V))])  # more ids than the models have
    with pytest.raises(VocabularyMismatchError, match=f"the word tokenizer has {len(big)} tokens, the models' "
                                                      f"vocabulary only {V}: build teacher and student with"):
        lm_trl.run_gkd(teacher, lm.student_model(TINY, teacher), data.student, big, **kwargs)


def test_run_gkd_refuses_samples_longer_than_the_models_read(data, teacher):
    """A prompt of 4 tokens and 45 new ones overflow GPT-2's 48 positions: the first sample that long stopped the
    run mid-way (an IndexError on the CPU, a device-side assert on a GPU)."""
    student = lm.student_model(TINY, teacher)
    assert student.config.n_positions == TINY.max_length == 48
    kwargs = dict(steps=1, lmbda=1.0, lr=3e-3, batch_size=4, prompt_tokens=4)
    with pytest.raises(ValueError, match="prompt_tokens=4 \\+ max_new_tokens=45 exceeds the 48 positions the models "
                                         "read: give max_new_tokens <= 44"):
        lm_trl.run_gkd(teacher, student, data.student, data.tokenizer, max_new_tokens=45, **kwargs)
    _, losses = lm_trl.run_gkd(teacher, student, data.student, data.tokenizer, max_new_tokens=44, **kwargs)
    assert len(losses) == 1 and math.isfinite(losses[0])
