"""kd_tutorial.hf.DistillationTrainer: the course's loss and normalisation inside transformers.Trainer.

Offline, on the CPU, with the tiny profile's models: a compact 1-layer student built against a
tiny BERT, on the built-in review corpus. The cached "teacher" logits come from a bag-of-words
logistic regression trained on the labelled reviews (about 73% on the test split): fine-tuning the
tiny BERT teacher takes minutes, and these tests only need fixed, informative targets. Dropout is
off in the students so that two runs from one initialisation differ only in their loops.
"""
import copy
import dataclasses
import math

import pytest
import torch

pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (the dev extra installs it)")

from kd_tutorial import data, hf, losses, models  # noqa: E402
from kd_tutorial.evaluate import accuracy, predict_logits  # noqa: E402
from kd_tutorial.profiles import StudentSpec  # noqa: E402
from kd_tutorial.train import TrainConfig, linear_schedule, make_optimizer, recipe_loss, train  # noqa: E402

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
SMALL_TEACHER = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                 **NO_DROPOUT}
STUDENT = StudentSpec("compact-1L-H32", "compact", num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64)
LABELLED = 300  # the student's labelled reviews (the tiny profile's student_labels)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small run 10-100x faster on one thread than on two cores shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def kd():
    """Tiny-profile data: 300 labelled + 660 unlabelled (-1) training rows, their teacher logits, and test rows."""
    imdb = data.load_imdb("tiny", n_transfer=660, val_size=200, n_test=400, seed=0)
    tok = data.get_tokenizer()
    enc = {name: data.encode(getattr(imdb, name), tok, 64, "head+tail") for name in ("train", "transfer", "test")}
    teacher = _bag_of_words_teacher(enc["train"])
    labelled = data.subset_encoded(enc["train"], data.labelled_subset(enc["train"], LABELLED))
    rows = data.concat_encoded(labelled, enc["transfer"], "kd")
    with torch.no_grad():
        logits = teacher(*_bags(rows))
    assert accuracy(teacher(*_bags(enc["test"])).detach(), enc["test"].labels) > 0.65
    return {"rows": rows, "logits": logits, "test": enc["test"], "tokenizer": tok}


def _bags(encoded):
    ids = torch.tensor([t for row in encoded.input_ids for t in row])
    offsets = torch.tensor([0] + [len(row) for row in encoded.input_ids[:-1]]).cumsum(0)
    return ids, offsets


def _bag_of_words_teacher(train_rows):
    """A unigram logistic regression (mean of per-token weights) fitted on every labelled training review."""
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(models.vocab_size(), 2, mode="mean")
    torch.nn.init.zeros_(bag.weight)
    optimizer = torch.optim.Adam(bag.parameters(), lr=0.5)
    ids, offsets = _bags(train_rows)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(bag(ids, offsets), train_rows.labels).backward()
        optimizer.step()
    return bag.requires_grad_(False)


def reference_bert():
    """The tiny profile's BERT (no dropout): what the student is built against, and an (untrained) online teacher."""
    torch.manual_seed(1)
    return models.load_teacher("tiny-bert", config_overrides=SMALL_TEACHER)


def new_student(seed=0):
    """The tiny profile's compact student, random weights, dropout off."""
    torch.manual_seed(seed)
    student = models.build_student(STUDENT, reference_bert(), init="random", attention_dropout=0.0)
    student.config.hidden_dropout_prob = 0.0
    for module in student.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return student


def arguments(tmp_path, **overrides):
    defaults = dict(use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
                    train_sampling_strategy="sequential")
    return hf.training_arguments(str(tmp_path), **(defaults | overrides))


def course_batch(rows, order):
    return data.collate(rows, order)


def hf_batch(rows, order):
    dataset = hf.EncodedDataset(rows)
    return hf.EncodedCollator()([dataset[i] for i in order])


# --------------------------------------------------------------------------- one batch


def test_one_batch_loss_equals_the_course_loops(kd, tmp_path):
    """Cached logits and an online teacher: the Trainer's loss is recipe_loss's, to 1e-6."""
    rows, logits = kd["rows"], kd["logits"]
    order = [5, 310, 7, 640, 311, 120, 900, 42]  # labelled (< 300) and unlabelled rows, not in row order
    assert (rows.labels[order] == -1).sum() == 4
    config = TrainConfig(mode="kd", temperature=3.0, alpha=0.7)
    student = new_student()
    course, _ = recipe_loss(student, course_batch(rows, order), config, teacher_logits=logits)[:2]

    trainer = hf.DistillationTrainer(model=student, args=arguments(tmp_path), train_dataset=hf.EncodedDataset(rows),
                                     teacher_logits=logits, eval_teacher_logits=logits, temperature=3.0, alpha=0.7)
    student.train()
    ours = trainer.compute_loss(student, hf_batch(rows, order))
    print(f"cached logits: course {course.item():.8f}, Trainer {ours.item():.8f}, "
          f"|diff| {abs(course - ours).item():.2e}")
    assert abs(course - ours).item() < 1e-6
    # the rows' own logits were read (by index), not the first rows of the table
    wrong = losses.distillation_loss(student(**{k: v for k, v in hf_batch(rows, order).items()
                                                 if k in ("input_ids", "attention_mask")}).logits,
                                     logits[:len(order)], rows.labels[order], 3.0, 0.7)
    assert abs(wrong - ours).item() > 1e-3
    # inside a step of N rows a micro-batch of B rows returns its mean times B / N
    scaled = trainer.compute_loss(student, hf_batch(rows, order), num_items_in_batch=torch.tensor(4 * len(order)))
    assert torch.allclose(scaled * 4, ours, atol=1e-7) and trainer.loss_is_scaled_for_ga
    student.eval()
    assert torch.allclose(trainer.compute_loss(student, hf_batch(rows, order), num_items_in_batch=32), ours,
                          atol=1e-6), "evaluation reports the batch mean"

    teacher = models.load_teacher("tiny-bert", config_overrides=SMALL_TEACHER)  # online: frozen by the trainer
    online = hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher=teacher, temperature=3.0,
                                    alpha=0.7)
    student.train()
    course_online = recipe_loss(student, course_batch(rows, order), config, teacher=teacher)[0]
    ours_online = online.compute_loss(student, hf_batch(rows, order))
    print(f"online teacher: |diff| {abs(course_online - ours_online).item():.2e}")
    assert abs(course_online - ours_online).item() < 1e-6


# --------------------------------------------------------------------------- gradient accumulation


def _sgd_step(kd, tmp_path, student, order, batch_size, accumulation):
    """One plain SGD step (lr 1, no clipping, no warm-up, no decay) over ``order``; returns the new weights."""
    args = arguments(tmp_path / f"b{batch_size}", per_device_train_batch_size=batch_size,
                     gradient_accumulation_steps=accumulation, max_steps=1, optim="sgd", learning_rate=1.0,
                     lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, logging_steps=1)
    trainer = hf.DistillationTrainer(model=student, args=args, train_dataset=hf.EncodedDataset(kd["rows"], order),
                                     teacher_logits=kd["logits"], temperature=2.0, alpha=0.5)
    trainer.train()
    return {k: v.detach().clone() for k, v in student.named_parameters()}, trainer.state.log_history[0]["loss"]


def _gradient(student, kd, micro_batches, loss_of):
    student = copy.deepcopy(student)
    student.zero_grad()
    for order in micro_batches:
        batch = course_batch(kd["rows"], order)
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss_of(logits, kd["logits"][batch["index"]], batch["labels"], len(micro_batches)).backward()
    return {k: p.grad.clone() for k, p in student.named_parameters() if p.grad is not None}


def _max_rel_diff(a: dict, b: dict) -> float:
    scale = max(v.abs().max().item() for v in b.values())
    return max((a[k] - b[k]).abs().max().item() for k in b) / scale


def test_accumulating_four_micro_batches_equals_one_batch_four_times_larger(kd, tmp_path):
    """B=4 with accumulation 4 and one batch of 16 give the same step, over 14 rows that mix labelled and
    unlabelled reviews unevenly (the last micro-batch holds 2 rows), where per-micro-batch means would not."""
    rows = kd["rows"]
    labelled, unlabelled = list(range(0, 300, 37)), list(range(300, 960, 71))
    order = labelled[:4] + labelled[4:5] + unlabelled[:3] + unlabelled[3:7] + labelled[5:6] + unlabelled[7:8]
    assert len(order) == 14 and (rows.labels[order] >= 0).sum() == 6
    start = new_student(3)
    w0 = {k: v.detach().clone() for k, v in start.named_parameters()}
    w_acc, loss_acc = _sgd_step(kd, tmp_path, copy.deepcopy(start), order, 4, 4)
    w_big, loss_big = _sgd_step(kd, tmp_path, copy.deepcopy(start), order, 16, 1)
    step_acc = {k: w0[k] - w_acc[k] for k in w0}
    step_big = {k: w0[k] - w_big[k] for k in w0}

    # the exact gradient: the course's loss on all 14 rows at once (SGD with lr 1 steps by -gradient)
    def one_batch(z_s, z_t, y, k):
        return losses.distillation_loss(z_s, z_t, y, 2.0, 0.5)
    exact = _gradient(start, kd, [order], one_batch)
    micro = [order[i:i + 4] for i in range(0, 14, 4)]

    def mean_over_k(z_s, z_t, y, k):  # each micro-batch mean divided by K (transformers 4; 5 does not divide it)
        return losses.distillation_loss(z_s, z_t, y, 2.0, 0.5) / k

    def labelled_mean(z_s, z_t, y, k):  # hard term over each micro-batch's labelled rows (transformers' -100 rule)
        hard = torch.nn.functional.cross_entropy(z_s, y.masked_fill(y < 0, -100), ignore_index=-100)
        hard = torch.nan_to_num(hard)  # a micro-batch without labels
        return (0.5 * losses.kl_divergence(z_s, z_t, 2.0) + 0.5 * hard) / k
    naive = {"mean / K": _gradient(start, kd, micro, mean_over_k),
             "labelled mean": _gradient(start, kd, micro, labelled_mean)}
    exact = {k: exact[k] for k in step_big}
    d_acc_big, d_big_exact = _max_rel_diff(step_acc, step_big), _max_rel_diff(step_big, exact)
    d_naive = {name: _max_rel_diff(g, exact) for name, g in naive.items()}
    print(f"accumulated vs one batch: {d_acc_big:.2e}; one batch vs exact gradient: {d_big_exact:.2e}; naive: "
          + ", ".join(f"{k} {v:.2e}" for k, v in d_naive.items()) + f"; logged losses {loss_acc:.7f} {loss_big:.7f}")
    assert d_acc_big < 1e-5, "4 micro-batches of 4 must step as one batch of 14"
    assert d_big_exact < 1e-5, "the step is the gradient of the course's loss on the whole batch"
    assert all(d > 1e-2 for d in d_naive.values()), d_naive  # the test can tell the shortcuts apart
    assert loss_acc == pytest.approx(loss_big, abs=1e-6), "the logged loss is the whole batch's, not a micro-batch's"


# --------------------------------------------------------------------------- a whole run


def test_a_trainer_run_reaches_the_course_loops_accuracy(kd, tmp_path):
    """Same student init, data, batches, step budget and schedule: the Trainer (micro-batches of 8, accumulation 4)
    and the course's loop (batches of 32) end within 2 points of each other on the test split."""
    rows, logits, test = kd["rows"], kd["logits"], kd["test"]
    epochs, batch = 3, 32
    config = TrainConfig(mode="kd", epochs=epochs, lr=2e-3, batch_size=batch, temperature=2.0, alpha=0.5,
                         precision="fp32", seed=0)
    start = new_student(7)
    course_student = copy.deepcopy(start)
    history = train(course_student, rows, config=config, teacher_logits=logits, device="cpu", progress=False)
    steps = len(history.steps)
    assert steps == epochs * len(rows) // batch

    # the course's batches, epoch after epoch, read in that order by the Trainer
    order = [i for epoch in range(epochs)
             for group in data.batch_groups(rows, batch, shuffle=True, group_by_length=True,
                                               seed=config.seed * 1000 + epoch)
             for i in group]
    hf_student = copy.deepcopy(start)
    # the course's AdamW (no decay on biases and LayerNorm) and warm-up: transformers' linear schedule starts at lr 0
    optimizer = make_optimizer(hf_student, config.lr, config.weight_decay)
    schedule = linear_schedule(optimizer, int(config.warmup_fraction * steps), steps)
    args = arguments(tmp_path, per_device_train_batch_size=8, gradient_accumulation_steps=4, num_train_epochs=1,
                     max_grad_norm=config.max_grad_norm, logging_steps=1)
    trainer = hf.DistillationTrainer(model=hf_student, args=args, train_dataset=hf.EncodedDataset(rows, order),
                                     teacher_logits=logits, temperature=2.0, alpha=0.5,
                                     optimizers=(optimizer, schedule))
    trainer.train()
    assert trainer.state.global_step == steps
    logged = [row["loss"] for row in trainer.state.log_history if "loss" in row]

    acc_course = accuracy(predict_logits(course_student, test, device="cpu"), test.labels)
    acc_hf = accuracy(predict_logits(hf_student, test, device="cpu"), test.labels)
    print(f"test accuracy: course loop {acc_course:.4f}, Trainer {acc_hf:.4f} ({steps} steps); first step's loss "
          f"{history.steps[0]['loss']:.6f} vs {logged[0]:.6f}")
    assert logged[0] == pytest.approx(history.steps[0]["loss"], abs=1e-5)  # same batch, same weights
    drift = max(abs(a - b["loss"]) for a, b in zip(logged, history.steps))
    print(f"largest difference between the two runs' step losses: {drift:.2e}")
    assert drift < 1e-3, "the two runs follow the same trajectory"
    assert acc_course > 0.7, "the student learned from the teacher"
    assert abs(acc_hf - acc_course) <= 0.02

    with pytest.warns(UserWarning, match="hard cross-entropy"):
        metrics = trainer.evaluate(hf.EncodedDataset(test), metric_key_prefix="test")
    trainer.compute_metrics = hf.compute_accuracy
    metrics = trainer.evaluate(hf.EncodedDataset(test), metric_key_prefix="test")
    assert metrics["test_accuracy"] == pytest.approx(acc_hf, abs=1e-6)


# --------------------------------------------------------------------------- the teacher


def test_the_teacher_stays_frozen_on_the_device_and_out_of_the_optimizer(kd, tmp_path):
    teacher = models.load_teacher("tiny-bert", config_overrides=SMALL_TEACHER)
    teacher.train()  # handed over unfrozen: the trainer freezes it
    before = copy.deepcopy(teacher.state_dict())
    seen, grad_on = [], []
    teacher.register_forward_pre_hook(lambda module, _args: seen.append(module.training))
    teacher.register_forward_pre_hook(lambda module, _args: grad_on.append(torch.is_grad_enabled()))
    student = new_student(5)
    start = copy.deepcopy(student.state_dict())
    args = arguments(tmp_path, per_device_train_batch_size=8, gradient_accumulation_steps=2, max_steps=3,
                     learning_rate=1e-2, train_sampling_strategy="random")
    trainer = hf.DistillationTrainer(model=student, args=args, train_dataset=hf.EncodedDataset(kd["rows"]),
                                     teacher=teacher, temperature=2.0, alpha=0.5)
    teacher.train()  # switched back after the trainer froze it (a notebook cell that trains something else)
    trainer.train()
    assert len(seen) == 6 and not any(seen), "the teacher ran every micro-batch, in eval() mode"
    assert not any(grad_on), "the teacher ran with autograd on: its activations were kept for nothing"
    assert not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items()), "the teacher changed"
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters()), "a gradient reached the teacher"
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}
    assert in_optimizer == {id(p) for p in student.parameters() if p.requires_grad}
    assert next(teacher.parameters()).device == trainer.args.device
    assert any(not torch.equal(start[k], v) for k, v in student.state_dict().items()), "the student learned"


def test_misuse_is_refused_with_a_clear_message(kd, tmp_path):
    rows, logits = kd["rows"], kd["logits"]
    student = new_student()
    with pytest.raises(ValueError, match="needs a teacher"):
        hf.DistillationTrainer(model=student, args=arguments(tmp_path), train_dataset=hf.EncodedDataset(rows))
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        hf.DistillationTrainer(model=student, args=arguments(tmp_path, remove_unused_columns=True),
                               train_dataset=hf.EncodedDataset(rows), teacher_logits=logits)
    with pytest.raises(ValueError, match="aligned with the dataset's rows"):
        hf.DistillationTrainer(model=student, args=arguments(tmp_path), train_dataset=hf.EncodedDataset(rows),
                               teacher_logits=logits[:-1])
    trainer = hf.DistillationTrainer(model=student, args=arguments(tmp_path), train_dataset=hf.EncodedDataset(rows),
                                     teacher_logits=logits)
    batch = hf_batch(rows, [0, 1])
    del batch["index"]
    with pytest.raises(ValueError, match="'index' column"):
        trainer.compute_loss(student.train(), batch)
    wide = models.compact_student(1, 32, 2, 64, vocab_size_=1000)
    with pytest.raises(models.VocabularyMismatchError):
        hf.DistillationTrainer(model=wide, args=arguments(tmp_path), teacher=reference_bert())


def test_save_model_refuses_an_unfolded_student_and_keeps_its_checkpoints(kd, tmp_path):
    torch.manual_seed(0)
    spec = dataclasses.replace(STUDENT, teacher_word_vectors=True)
    summed = models.build_student(spec, reference_bert(), init="random").eval()
    trainer = hf.DistillationTrainer(model=summed, args=arguments(tmp_path),
                                     train_dataset=hf.EncodedDataset(kd["rows"]), teacher_logits=kd["logits"])
    for save in (lambda: trainer.save_model(str(tmp_path / "final")), trainer.push_to_hub):  # refused before the Hub
        with pytest.raises(ValueError, match="fold them first with kd_tutorial.models.fold_word_embeddings"):
            save()
    assert not (tmp_path / "final").exists()
    trainer.save_model(str(tmp_path / "checkpoint"), _internal_call=True)  # what a checkpoint saves: resumable
    assert (tmp_path / "checkpoint" / "config.json").exists()
    batch = hf_batch(kd["rows"], [0, 1])
    with torch.no_grad():
        expected = summed(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    models.fold_word_embeddings(summed)  # in place: the trainer's model is folded too
    trainer.save_model(str(tmp_path / "final"))
    reloaded = type(summed).from_pretrained(tmp_path / "final").eval()
    with torch.no_grad():
        got = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------- decoder classifiers and wrappers


def _gpt2_classifier(pad):
    """A tiny GPT-2 classifier: it reads the logits at the last token that is not ``config.pad_token_id``."""
    from transformers import GPT2Config, GPT2ForSequenceClassification
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, num_labels=2,
                        pad_token_id=pad, bos_token_id=1, eos_token_id=2)
    return GPT2ForSequenceClassification(config).eval()


def test_a_decoder_classifier_gives_a_short_row_the_same_logits_alone_and_padded_in_the_trainers_batch(tmp_path):
    """The collator padded with 0 whatever the model's pad token: GPT-2 (pad id 49) then classified a padding
    position of every short row, silently."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast
    student = _gpt2_classifier(pad=49)
    trainer = hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher_logits=torch.zeros(2, 2))
    short, long = [3, 7, 9], [3, 7, 9, 11, 12, 13]
    batch = trainer.data_collator([{"input_ids": short, "labels": 0, "index": 0},
                                   {"input_ids": long, "labels": 1, "index": 1}])
    assert batch["input_ids"][0].tolist() == short + [49] * 3
    with torch.no_grad():
        alone = student(input_ids=torch.tensor([short])).logits[0]
        padded = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]
    torch.testing.assert_close(padded, alone)
    # warned, not refused: an encoder (BERT pads with 0, RoBERTa with 1) reads only the attention mask
    with pytest.warns(UserWarning, match="pads with id 0 but the student's config.pad_token_id is 49: a decoder "
                                         "classifier"):
        hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher_logits=torch.zeros(2, 2),
                               data_collator=hf.EncodedCollator(pad_id=0))
    with pytest.warns(UserWarning, match="the teacher's config.pad_token_id is 48, the student pads with 49"):
        hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher=_gpt2_classifier(pad=48))
    # no pad id in the config: the processing class's
    vocab = {f"w{i}": i for i in range(50)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="w0")),
                                        pad_token="w5", unk_token="w0")
    trainer = hf.DistillationTrainer(model=_gpt2_classifier(pad=None), args=arguments(tmp_path),
                                     teacher_logits=torch.zeros(2, 2), processing_class=tokenizer)
    assert trainer.data_collator([{"input_ids": short}, {"input_ids": long}])["input_ids"][0].tolist() == [3, 7, 9, 5,
                                                                                                          5, 5]
    assert hf.EncodedCollator()([{"input_ids": short}, {"input_ids": long}])["input_ids"][0].tolist()[3:] == [0] * 3


def test_save_model_and_push_to_hub_save_a_wrappers_student_that_from_pretrained_reloads(kd, tmp_path, monkeypatch):
    """Trainer saved a DistillationStudent as a state dict of 'student.'-prefixed names without config.json; the
    reload was a random model, with only a warning."""
    import transformers.trainer
    from safetensors.torch import load_file
    wrapped = models.DistillationStudent(new_student(2), teacher_width=64)  # learned projections, 32 -> 64
    start = copy.deepcopy(wrapped.student.state_dict())
    args = arguments(tmp_path / "out", per_device_train_batch_size=8, max_steps=2, learning_rate=1e-2)
    trainer = hf.DistillationTrainer(model=wrapped, args=args, train_dataset=hf.EncodedDataset(kd["rows"]),
                                     teacher_logits=kd["logits"])
    trainer.train()
    trained = wrapped.student.state_dict()
    assert any(not torch.equal(start[k], v) for k, v in trained.items()), "the student learned"

    def same_as_trained(folder):
        loaded = type(wrapped.student).from_pretrained(folder).state_dict()
        return loaded.keys() == trained.keys() and all(torch.equal(loaded[k], v) for k, v in trained.items())
    trainer.save_model(str(tmp_path / "final"))
    assert same_as_trained(tmp_path / "final")
    trainer.save_model(str(tmp_path / "checkpoint"), _internal_call=True)  # a checkpoint: the wrapper, to resume
    names = load_file(str(tmp_path / "checkpoint" / "model.safetensors")).keys()
    assert any(k.startswith("projections.") for k in names) and all(k.startswith(("student.", "projections."))
                                                                    for k in names)
    uploaded = []

    class Hub:
        def upload_folder(self, folder_path, **kwargs):
            uploaded.append(same_as_trained(folder_path))
    if hasattr(transformers.trainer, "hf_api"):  # push_to_hub uploads through hf_api() in later transformers
        monkeypatch.setattr(transformers.trainer, "hf_api", Hub)
    else:  # and through huggingface_hub's upload_folder, imported by name, at the floor (5.5.4)
        monkeypatch.setattr(transformers.trainer, "upload_folder", Hub().upload_folder)
    monkeypatch.setattr(trainer, "init_hf_repo", lambda **kw: setattr(trainer, "hub_model_id", "me/student"))
    monkeypatch.setattr(trainer, "create_model_card", lambda **kw: None)
    trainer.push_to_hub()
    assert uploaded == [True]
    # no processing_class: Trainer saves the collator's tokenizer, and so does a wrapper's final save
    saved = []
    trainer.data_collator.tokenizer = type("Tok", (), {"save_pretrained": lambda self, d: saved.append(d)})()
    trainer.save_model(str(tmp_path / "with-tokenizer"))
    assert saved == [str(tmp_path / "with-tokenizer")]


# --------------------------------------------------------------------------- datasets as practitioners bring them


def test_a_label_column_named_label_keeps_the_hard_term_and_a_batch_without_labels_is_refused(kd, tmp_path):
    """Before, the collator kept only ``labels``: a ``datasets`` table's ``label`` column (IMDB's) was dropped and the
    loss was alpha * soft alone, without a word; ``token_type_ids`` (sentence pairs) were dropped too."""
    rows, logits, order = kd["rows"], kd["logits"], [5, 310, 7, 640]
    items = [{"input_ids": rows.input_ids[i], "label": int(rows.labels[i]), "index": i,
              "token_type_ids": [0] * len(rows.input_ids[i])} for i in order]
    batch = hf.EncodedCollator()(items)
    assert torch.equal(batch["labels"], hf_batch(rows, order)["labels"])
    assert batch["token_type_ids"].shape == batch["input_ids"].shape and int(batch["token_type_ids"].sum()) == 0
    student = new_student().train()
    trainer = hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher_logits=logits, alpha=0.5)
    assert torch.allclose(trainer.compute_loss(student, batch), trainer.compute_loss(student, hf_batch(rows, order)))
    del batch["labels"]
    with pytest.raises(ValueError, match=r"no labels, so the hard term \(weight 1 - alpha = 0.5\) would silently "
                                         r"drop out: name the label column 'labels' or 'label'"):
        trainer.compute_loss(student, batch)
    trainer.alpha = 1.0  # soft targets alone need no labels
    assert torch.isfinite(trainer.compute_loss(student, batch))


def test_evaluating_another_dataset_never_reads_the_eval_datasets_cached_logits(kd, tmp_path):
    """Before, evaluate(other) looked the other dataset's rows up in eval_dataset's table: the wrong targets, silently
    (an IndexError only when it was larger). Now its own table is taken when given, else a warning and the hard
    cross-entropy; a dict of eval datasets cannot share one table."""
    rows, logits, test = kd["rows"], kd["logits"], kd["test"]
    student = new_student()
    trainer = hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher_logits=logits,
                                     train_dataset=hf.EncodedDataset(rows), eval_dataset=hf.EncodedDataset(rows),
                                     eval_teacher_logits=logits)
    other = hf.EncodedDataset(test)
    with pytest.warns(UserWarning) as said:
        hard = trainer.evaluate(other)["eval_loss"]
    expected = ("belong to the trainer's eval_dataset, not to this dataset", "eval_loss is the student's hard")
    assert [any(m in str(w.message) for w in said) for m in expected] == [True, True]
    student.eval()
    with torch.no_grad():
        test_logits = predict_logits(student, test, device="cpu")
    assert hard == pytest.approx(losses.hard_cross_entropy(test_logits, test.labels).item(), rel=1e-5)
    own = torch.randn(len(test), 2, generator=torch.Generator().manual_seed(0))
    kd_loss = trainer.evaluate(other, eval_teacher_logits=own)["eval_loss"]
    assert kd_loss == pytest.approx(losses.distillation_loss(test_logits, own, test.labels, 2.0, 0.5).item(), rel=1e-5)
    assert trainer.eval_teacher_logits is not None and len(trainer.eval_teacher_logits) == len(rows)  # given back
    with pytest.raises(ValueError, match="has 399 rows but its dataset has 400"):
        trainer.evaluate(other, eval_teacher_logits=own[:-1])
    with pytest.raises(ValueError, match="this is a dict of several: give each dataset its own"):
        hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher_logits=logits,
                               eval_dataset={"a": other, "b": other}, eval_teacher_logits=own)


def test_a_student_that_returns_tuples_still_gives_its_predictions(kd, tmp_path):
    """transformers reads a tuple's logits after its loss; the student's own tuple holds none, so predict() gave ()
    and compute_accuracy an IndexError. An eval set with no labelled row has no accuracy (nan), not 0.0."""
    logits, test = kd["logits"], kd["test"]
    student = new_student()
    student.config.return_dict = False
    trainer = hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher_logits=logits,
                                     compute_metrics=hf.compute_accuracy)
    with pytest.warns(UserWarning, match="eval_loss is the student's hard cross-entropy"):  # no teacher for it
        out = trainer.predict(hf.EncodedDataset(test))
    student.config.return_dict = True
    fp32 = predict_logits(student, test, device="cpu", precision="fp32")  # as the Trainer predicts here; auto: bf16
    assert torch.allclose(torch.as_tensor(out.predictions), fp32, atol=1e-5)  # on a CPU with bf16 units
    assert 0.0 <= out.metrics["test_accuracy"] <= 1.0
    unlabelled = type("P", (), {"predictions": out.predictions, "label_ids": -torch.ones(len(test))})()
    assert math.isnan(hf.compute_accuracy(unlabelled)["accuracy"])


def test_cached_eval_logits_passed_with_several_datasets_or_by_name_are_checked_against_the_right_one(kd, tmp_path):
    """A review of the evaluate override: with a dict of datasets, the logits given were dropped as "the trainer's"
    (a false warning, the hard loss); a dataset given by its name was measured as a string (1 row)."""
    logits, test = kd["logits"], kd["test"]
    student, other = new_student(), hf.EncodedDataset(test)
    own = torch.randn(len(test), 2, generator=torch.Generator().manual_seed(0))
    trainer = hf.DistillationTrainer(model=student, args=arguments(tmp_path), teacher_logits=logits,
                                     eval_dataset={"test": other})
    with pytest.raises(ValueError, match="this is a dict of several: give each dataset its own"):
        trainer.evaluate(eval_teacher_logits=own)
    by_name = trainer.evaluate("test", eval_teacher_logits=own)["eval_loss"]
    assert by_name == pytest.approx(trainer.evaluate(other, eval_teacher_logits=own)["eval_loss"], rel=1e-6)
