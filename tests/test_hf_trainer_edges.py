"""kd_tutorial.hf: behaviours a mutation audit of the DistillationTrainer found untested.

Each test pins one behaviour whose careless edit left tests/test_hf_trainer.py passing: the world-size factor of the
normalisation, the collator's padding, the refusals of mismatched inputs, the evaluation's hard loss, the final save of
a wrapper's gathered state dict. The fixtures and helpers are test_hf_trainer's.
"""
import types
import warnings

import pytest
import torch

pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (the dev extra installs it)")

from kd_tutorial import hf, models  # noqa: E402
import test_hf_trainer  # noqa: E402
from test_hf_trainer import _gpt2_classifier, arguments, hf_batch, new_student  # noqa: E402

kd = test_hf_trainer.kd  # its fixtures: the data and cached logits, one thread
one_thread = test_hf_trainer.one_thread

ORDER = [5, 310, 7, 640]  # two labelled rows (< 300), two unlabelled (-1)


def _student_logits(student, batch):
    with torch.no_grad():
        return student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_with_two_processes_n_sums_both_processes_rows_and_the_loss_is_multiplied_by_two(kd, tmp_path, monkeypatch):
    """DDP averages the gradients of W processes: N is the rows of all of them and each loss is multiplied by W."""
    rows, logits = kd["rows"], kd["logits"]
    student = new_student().train()
    trainer = hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher_logits=logits)
    mean = trainer.compute_loss(student, hf_batch(rows, ORDER)).detach()
    monkeypatch.setattr(type(trainer.args), "world_size", property(lambda self: 2))
    other_process = 12  # rows the other process read in this step

    def gather(count):  # both processes' counts
        return torch.stack([count, torch.full_like(count, other_process)])
    monkeypatch.setattr(trainer, "accelerator", types.SimpleNamespace(num_processes=2, gather=gather))
    batches, n = trainer.get_batch_samples(iter([hf_batch(rows, ORDER), hf_batch(rows, [1, 2])]), 2)
    assert len(batches) == 2 and int(n) == 6 + other_process
    scaled = trainer.compute_loss(student, hf_batch(rows, ORDER), num_items_in_batch=n).detach()
    torch.testing.assert_close(scaled, mean * len(ORDER) / 18 * 2)


def test_the_collator_pads_ids_with_pad_id_and_the_mask_and_token_types_with_zeros_to_a_multiple():
    items = [{"input_ids": [3, 4, 5], "token_type_ids": [0, 1, 1], "labels": 1, "label": 0},
             {"input_ids": [3, 4, 5, 6, 7], "token_type_ids": [0, 0, 1, 1, 1], "labels": 0, "label": 1}]
    batch = hf.EncodedCollator(pad_id=9, pad_to_multiple_of=4)(items)
    assert batch["input_ids"].tolist() == [[3, 4, 5, 9, 9, 9, 9, 9], [3, 4, 5, 6, 7, 9, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [1, 0], "a 'labels' column is read before a 'label' one"


def test_compute_accuracy_skips_rows_labelled_minus_100():
    pred = types.SimpleNamespace(predictions=torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]]),
                                 label_ids=torch.tensor([0, -100, 1, -1]))
    assert hf.compute_accuracy(pred)["accuracy"] == pytest.approx(0.5)


def test_out_of_range_temperature_alpha_and_misshapen_logits_are_refused(kd, tmp_path):
    rows, logits = kd["rows"], kd["logits"]
    student, data = new_student(), hf.EncodedDataset(rows)

    def make(**kw):
        return hf.DistillationTrainer(model=student, args=arguments(tmp_path), train_dataset=data, **kw)
    for T in (0, float("nan"), float("inf")):  # nan and inf passed "<= 0" and trained on a loss of nan
        with pytest.raises(ValueError, match=f"^temperature must be a finite number above 0, got {T!r}$"):
            make(teacher_logits=logits, temperature=T)
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
            make(teacher_logits=logits, alpha=alpha)
    with pytest.raises(ValueError, match="teacher_logits has 3 classes, the student 2"):
        make(teacher_logits=torch.cat([logits, logits[:, :1]], 1))
    with pytest.raises(ValueError, match="has 961 rows but its dataset has 960"):
        make(teacher_logits=torch.cat([logits, logits[:1]]))
    with pytest.raises(ValueError, match=r"must be a \[rows, classes\] tensor, got shape \(960,\)"):
        make(teacher_logits=logits[:, 0])
    make(teacher_logits=logits, alpha=0.0)  # the bounds themselves are fine
    make(teacher_logits=logits, alpha=1.0)


def test_gradient_accumulation_is_refused_on_a_transformers_that_scales_its_steps_twice(kd, tmp_path, monkeypatch):
    """The floors review: at transformers 5.2 to 5.5.3 a step of K accumulated micro-batches came out K times too
    short (the accumulation test read 0.75 off), in silence. Such a version refuses accumulation in one line that
    names the upgrade; one micro-batch per step, or a fixed transformers, trains."""
    rows, logits = kd["rows"], kd["logits"]

    def make(steps):
        return hf.DistillationTrainer(model=new_student(), args=arguments(tmp_path, gradient_accumulation_steps=steps),
                                      train_dataset=hf.EncodedDataset(rows), teacher_logits=logits)
    monkeypatch.setattr(hf.transformers, "__version__", "5.5.3")
    with pytest.raises(hf.UsageError, match=r'^transformers 5.5.3 divides .* by its 2 micro-batches twice \(fixed in '
                                            r'5.5.4\): pip install -U "transformers>=5.5.4", or train with '
                                            "gradient_accumulation_steps=1$"):
        make(2)
    make(1)
    for fixed in ("5.5.4", "5.5.4rc1", "5.25.0"):  # release numbers, as env.MINIMUM reads them
        monkeypatch.setattr(hf.transformers, "__version__", fixed)
        make(2)


def test_the_trainer_pads_with_the_students_config_pad_id_and_leaves_the_callers_collator_alone(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({f"w{i}": i for i in range(50)}, "w0")),
                                        pad_token="w5", unk_token="w0")
    mine = hf.EncodedCollator()
    trainer = hf.DistillationTrainer(model=_gpt2_classifier(pad=49), args=arguments(tmp_path),
                                     teacher_logits=torch.zeros(2, 2), data_collator=mine, processing_class=tokenizer)
    batch = trainer.data_collator([{"input_ids": [3, 7]}, {"input_ids": [3, 7, 9]}])
    assert batch["input_ids"][0].tolist() == [3, 7, 49], "the config's pad id comes before the tokenizer's"
    assert mine.pad_id is None, "the caller's collator was changed"


def test_evaluation_without_a_teacher_reports_the_hard_loss_over_all_rows_and_warns_once(kd, tmp_path):
    rows, logits = kd["rows"], kd["logits"]
    student = new_student().eval()
    trainer = hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher_logits=logits)
    batch = hf_batch(rows, ORDER)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        loss = trainer.compute_loss(student, batch).detach()
        trainer.compute_loss(student, batch)
    assert sum("hard cross-entropy" in str(w.message) for w in said) == 1
    z, y = _student_logits(student, batch), batch["labels"]
    labelled = y >= 0
    assert labelled.sum() == 2
    expected = torch.nn.functional.cross_entropy(z[labelled], y[labelled], reduction="sum") / len(ORDER)
    torch.testing.assert_close(loss, expected)


def test_a_wrappers_gathered_state_dict_is_saved_under_its_students_names(kd, tmp_path):
    """FSDP and DeepSpeed hand _save the wrapper's state dict ('student.'-prefixed): the student's part is saved."""
    wrapped = models.DistillationStudent(new_student(2), teacher_width=64)
    trainer = hf.DistillationTrainer(model=wrapped, args=arguments(tmp_path), teacher_logits=kd["logits"])
    gathered = {k: v + 0.5 if v.is_floating_point() else v for k, v in wrapped.state_dict().items()}
    with trainer._student_alone(True):
        trainer._save(str(tmp_path / "final"), state_dict=gathered)
    loaded = type(wrapped.student).from_pretrained(tmp_path / "final").state_dict()
    expected = {k[len("student."):]: v for k, v in gathered.items() if k.startswith("student.")}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_cached_logits_given_as_a_float64_numpy_array_give_the_float32_loss(kd, tmp_path):
    rows, logits = kd["rows"], kd["logits"]
    student, batch = new_student().train(), hf_batch(rows, ORDER)
    losses_ = [hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher_logits=table)
               .compute_loss(student, batch).detach() for table in (logits, logits.double().numpy())]
    assert losses_[1].dtype == torch.float32
    torch.testing.assert_close(losses_[1], losses_[0])
