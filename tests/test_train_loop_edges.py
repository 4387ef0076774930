"""The training loop's edges that a mutation audit of kd_tutorial/train.py found untested: what a run refuses before
its first step, the batch order of each epoch, the epoch row of a run on unlabelled rows, the history's summaries
and its JSON round trip, and a frozen teacher; and four defects it found, fixed: a run resumed twice in another
thread count or precision, and budgets that stopped on a division by zero or trained nothing in silence. Tiny rows
and a one-layer BERT: the file runs in a few seconds."""
import pytest
import torch

from kd_tutorial import data, models
from kd_tutorial import train as loop
from kd_tutorial.history import History
from kd_tutorial.train import TrainConfig, freeze, train

SMALL = {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
ROWS = data.Encoded([[101] + [7 + i] * (2 + i % 5) + [102] for i in range(16)], torch.arange(16) % 2, "rows")

pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(seed=0):
    torch.manual_seed(seed)
    return models.load_teacher("tiny-bert", config_overrides=SMALL)


def test_patience_without_validation_data_is_refused_before_a_step():
    """keep_best alone was checked: patience without val_data trained its whole budget, never validating, so the
    early stopping asked for never happened and nothing said so."""
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError) as err:
        train(model, ROWS, config=TrainConfig(max_steps=2, batch_size=4, eval_every=1, patience=2), device="cpu",
              progress=False)
    assert str(err.value) == "keep_best and patience choose on validation: pass val_data"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_empty_training_data_is_refused_in_one_line_naming_the_run():
    empty = data.Encoded([], torch.zeros(0, dtype=torch.long), "empty")
    with pytest.raises(ValueError) as err:
        train(small_model(), empty, config=TrainConfig(max_steps=1), device="cpu", desc="compact s0", progress=False)
    assert str(err.value) == "compact s0: the training data is empty"


def test_each_epoch_reads_its_batches_in_another_order_that_the_seed_repeats(monkeypatch):
    """The seed fixes the batch order of a run, and each epoch shuffles anew (a loop seeding every epoch alike read
    the same batches in the same order every epoch)."""
    orders = []

    def recorded(*args, **kwargs):
        groups = data.batch_groups(*args, **kwargs)
        orders.append([tuple(g) for g in groups])
        return groups
    monkeypatch.setattr(loop, "batch_groups", recorded)
    for seed in (0, 0, 1):
        config = TrainConfig(epochs=2, lr=0.0, batch_size=4, seed=seed, precision="fp32")
        train(small_model(), ROWS, config=config, device="cpu", progress=False)
    first, second, repeated, repeated_second, other, _ = orders
    assert first != second  # epoch 2 reshuffled
    assert (repeated, repeated_second) == (first, second)  # the same seed, the same orders
    assert other != first  # another seed, another order


def test_an_epoch_of_unlabelled_rows_alone_has_no_train_accuracy():
    """Distilling on transfer rows (all -1): the epoch's train_acc is None (no labelled row to score), not 0.0."""
    unlabelled = data.Encoded(ROWS.input_ids, torch.full((16,), -1), "transfer")
    cached = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(mode="kd", alpha=1.0, max_steps=2, batch_size=8, precision="fp32")
    history = train(small_model(), unlabelled, config=config, teacher_logits=cached, device="cpu", progress=False)
    assert [e["train_acc"] for e in history.epochs] == [None]
    assert history.epochs[0]["train_loss"] > 0


def test_the_history_summarises_its_best_pass_last_epoch_and_speed():
    history = History(epochs=[{"epoch": 1, "val_acc": 0.6}, {"epoch": 2, "val_acc": 0.7}],
                      evals=[{"step": 2, "val_acc": 0.6}, {"step": 4, "val_acc": 0.9}, {"step": 6, "val_acc": 0.7}],
                      seconds=4.0, tokens=100)
    assert history.best_val_acc == 0.9 and history.final("val_acc") == 0.7
    assert history.tokens_per_s == 25.0
    assert History().best_val_acc is None and History().final("val_acc") is None and History().tokens_per_s == 0.0


def test_a_history_round_trips_through_its_dict_and_reads_files_written_before_later_keys():
    full = History(steps=[{"step": 1, "loss": 0.5}], epochs=[{"epoch": 1}], evals=[{"step": 1, "val_acc": 0.5}],
                   seconds=2.0, tokens=10, eval_seconds=1.0, best_step=1, best_val_correct="10",
                   finished_at="2026-12-07 10:00", precision="bf16, then fp32", threads="2, then 1")
    assert History.from_dict(full.to_dict()) == full
    oldest = {"steps": [], "epochs": [{"epoch": 1}], "seconds": 1.0, "tokens": 3}  # before evals and the rest
    assert History.from_dict(oldest) == History(epochs=[{"epoch": 1}], seconds=1.0, tokens=3)


def test_a_finished_run_records_when_it_ended():
    """A cached model's speed is from then: the report says when it was measured."""
    history = train(small_model(), ROWS, config=TrainConfig(max_steps=1, batch_size=8), device="cpu", progress=False)
    assert history.finished_at is not None and len(history.finished_at) == len("2026-12-07 10:00")


def test_freeze_turns_dropout_off_and_every_gradient():
    """A teacher left in train() mode gives noisy targets (its dropout on): freeze puts it in eval() too."""
    teacher = small_model().train()
    assert freeze(teacher) is teacher
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())



def test_a_run_started_over_without_resume_leaves_a_further_checkpoint_in_place(tmp_path, capsys):
    """--resume forgotten: the new run's periodic checkpoints (every step here) must not write over the step-4
    checkpoint of the earlier run until they pass it, and Ctrl-C at step 2 says which checkpoint stands."""
    from kd_tutorial.train import checkpoint_step
    config = TrainConfig(max_steps=4, batch_size=4, lr=1e-3, precision="fp32")
    train(small_model(), ROWS, config=config, checkpoint_dir=tmp_path, device="cpu", progress=False)
    saved = (tmp_path / "last.pt").read_bytes()
    assert checkpoint_step(tmp_path / "last.pt", config) == 4

    def ctrl_c_at_step_2(step, total):
        if step == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(small_model(), ROWS, config=config, checkpoint_dir=tmp_path, checkpoint_every_s=0.0, device="cpu",
              on_step=ctrl_c_at_step_2, desc="run", progress=False)
    assert (tmp_path / "last.pt").read_bytes() == saved
    assert (f"run: interrupted at step 2; the checkpoint of an earlier run of these settings, step 4, in "
            f"{tmp_path / 'last.pt'} stands: run again with resume=True") in capsys.readouterr().err


def test_patience_running_out_at_the_budgets_last_step_is_no_early_stop(monkeypatch, capsys):
    """The run trained its whole budget: its bar must not say it stopped early (it does when steps were left)."""
    for max_steps, early in ((4, False), (6, True)):
        scores = iter([0.5, 0.4, 0.4])
        monkeypatch.setattr(loop, "_validate", lambda model, val_data, config, device: (next(scores), "1"))
        config = TrainConfig(max_steps=max_steps, batch_size=2, lr=0.0, eval_every=2, patience=1)
        history = train(small_model(), ROWS, config=config, val_data=ROWS, device="cpu", desc="run")
        assert len(history.steps) == 4
        assert ("run: stopped early at step 4 of" in capsys.readouterr().err) == early



def test_a_checkpoint_of_other_settings_is_replaced_by_a_run_started_without_resume(tmp_path):
    """No resume could continue it (it would be refused), so it does not stand the way one of these settings does."""
    from kd_tutorial.train import checkpoint_step
    first = TrainConfig(max_steps=4, batch_size=4, lr=1e-3, precision="fp32")
    other = TrainConfig(max_steps=2, batch_size=4, lr=2e-3, precision="fp32")
    train(small_model(), ROWS, config=first, checkpoint_dir=tmp_path, device="cpu", progress=False)
    assert checkpoint_step(tmp_path / "last.pt", other) is None
    train(small_model(), ROWS, config=other, checkpoint_dir=tmp_path, device="cpu", progress=False)
    assert checkpoint_step(tmp_path / "last.pt", other) == 2


def test_resuming_a_finished_run_adds_no_second_row_for_its_last_epoch(tmp_path):
    """The run ended on its epoch's last batch (16 rows, 4 steps of 4): a resume finds nothing to do."""
    config = TrainConfig(max_steps=4, batch_size=4, lr=1e-3, precision="fp32")
    ends = []
    done = train(small_model(), ROWS, config=config, checkpoint_dir=tmp_path, device="cpu", progress=False)
    again = train(small_model(), ROWS, config=config, checkpoint_dir=tmp_path, resume=True, device="cpu",
                  progress=False, on_epoch_end=lambda epoch, history: ends.append(epoch))
    assert [e["step"] for e in done.epochs] == [4]
    assert again.epochs == done.epochs and again.steps == done.steps and ends == []


def test_eval_every_without_validation_data_trains_the_budget_without_passes():
    """eval_every says when to validate; with no val_data there is nothing to validate, and the run still trains."""
    config = TrainConfig(max_steps=3, batch_size=4, eval_every=1, lr=1e-3, precision="fp32")
    history = train(small_model(), ROWS, config=config, device="cpu", progress=False)
    assert len(history.steps) == 3 and history.evals == [] and history.best_step is None


def test_a_run_resumed_twice_with_another_thread_count_records_the_change_once(tmp_path):
    """threads reads "1, then 2" after a resume with 2 threads, and still so after a second resume with 2 (it read
    "2": the history claimed the whole run trained as its last part did; precision likewise)."""
    config = TrainConfig(max_steps=4, batch_size=4, lr=1e-3, precision="fp32")

    def ctrl_c_at(at):
        def on_step(step, total):
            if step == at:
                raise KeyboardInterrupt
        return on_step
    before = torch.get_num_threads()
    try:
        for threads, at, resume in ((1, 2, False), (2, 3, True)):
            torch.set_num_threads(threads)
            with pytest.raises(KeyboardInterrupt):
                train(small_model(), ROWS, config=config, checkpoint_dir=tmp_path, resume=resume, device="cpu",
                      on_step=ctrl_c_at(at), progress=False)
        history = train(small_model(), ROWS, config=config, checkpoint_dir=tmp_path, resume=True, device="cpu",
                        progress=False)
    finally:
        torch.set_num_threads(before)
    assert len(history.steps) == 4 and history.threads == "1, then 2"



def test_an_interrupt_mid_step_after_a_resume_names_the_checkpoint_it_resumed_from(tmp_path, monkeypatch, capsys):
    """The resumed run has saved nothing yet, but the step-2 checkpoint it started from stands: say so. A run started
    without resume is told to ask for it; one started with it, that the same call again continues (the interrupt
    review: the teacher of notebook 04 told a learner to pass resume=True, which ensure_teacher does not take)."""
    config = TrainConfig(max_steps=4, batch_size=4, lr=1e-3, precision="fp32")

    def ctrl_c_at_2(step, total):
        if step == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(small_model(), ROWS, config=config, checkpoint_dir=tmp_path, device="cpu", on_step=ctrl_c_at_2,
              progress=False)
    assert ("step 2 of 4 is saved in " f"{tmp_path / 'last.pt'}: run again with resume=True (kd-tutorial: --resume) "
            "to continue from there") in capsys.readouterr().err

    def interrupted(*args, **kwargs):  # an interrupt inside the optimizer step, as if it were not held
        raise KeyboardInterrupt
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(small_model(), ROWS, config=config, checkpoint_dir=tmp_path, resume=True, device="cpu", desc="run",
              progress=False)
    assert (f"run: interrupted mid-step; the checkpoint of step 2 in {tmp_path / 'last.pt'} stands: run it again as "
            "it is (it resumes) to continue from there") in capsys.readouterr().err



def test_a_second_interrupt_during_the_save_names_the_checkpoint_that_stands(tmp_path, monkeypatch, capsys):
    """Jupyter's stop button clicked twice: the second interrupt stops the save of the step the first one held. The
    saves are atomic, so the previous checkpoint stands; the run said nothing of it, and a learner who read "step 3"
    before the click would resume from step 2 without a word. It names the checkpoint that stands."""
    config = TrainConfig(max_steps=4, batch_size=4, lr=1e-3, precision="fp32")
    saves = []
    real_save = loop._save_checkpoint

    def second_ctrl_c_in_the_interrupts_save(*args, **kwargs):
        saves.append(kwargs)
        if len(saves) == 3:  # step 1's and step 2's timed saves went through; the interrupt's save is cut
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    def ctrl_c_at_3(step, total):
        if step == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(loop, "_save_checkpoint", second_ctrl_c_in_the_interrupts_save)
    with pytest.raises(KeyboardInterrupt):
        train(small_model(), ROWS, config=config, checkpoint_dir=tmp_path, device="cpu", on_step=ctrl_c_at_3,
              progress=False, desc="run", checkpoint_every_s=0.0)
    assert (f"run: interrupted again while saving step 3; the checkpoint of step 2 in {tmp_path / 'last.pt'} "
            "stands: run again with resume=True (kd-tutorial: --resume) to continue from there"
            ) in capsys.readouterr().err
    history = train(small_model(), ROWS, config=config, checkpoint_dir=tmp_path, resume=True, device="cpu",
                    progress=False)
    assert len(history.steps) == 4


def test_a_held_ctrl_c_where_ctrl_c_is_ignored_stays_ignored():
    """A process that ignores SIGINT (SIG_IGN) must not be stopped by the Ctrl-C held during an optimizer step."""
    import os
    import signal

    from kd_tutorial.train import ctrl_c_after
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        try:
            with ctrl_c_after():
                os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pytest.fail("the held Ctrl-C raised KeyboardInterrupt where SIGINT was ignored")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_run_stopped_after_its_budgets_last_step_validates_it_on_resume(tmp_path, monkeypatch):
    """max_steps=3, eval_every=2: an interrupt held to the end of step 3 saves it before its pass; the resume runs
    that pass (the budget's last step, though no multiple of eval_every), as a straight run does."""
    monkeypatch.setattr(loop, "_validate", lambda model, val_data, config, device: (0.5, "1"))
    config = TrainConfig(max_steps=3, batch_size=4, eval_every=2, lr=1e-3, precision="fp32")

    def ctrl_c_at_3(step, total):
        if step == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(small_model(), ROWS, config=config, val_data=ROWS, checkpoint_dir=tmp_path, device="cpu",
              on_step=ctrl_c_at_3, progress=False)
    history = train(small_model(), ROWS, config=config, val_data=ROWS, checkpoint_dir=tmp_path, resume=True,
                    device="cpu", progress=False)
    assert [e["step"] for e in history.evals] == [2, 3] and history.epochs[-1]["val_acc"] == 0.5



def test_an_unknown_mode_is_refused_not_trained_as_distillation():
    """mode="KD" (a typo of "kd") with cached logits must stop on the mode's name, not distil in silence."""
    cached = torch.zeros(16, 2)
    with pytest.raises(ValueError, match="unknown mode 'KD': use 'ce', 'kd' or 'pseudo'"):
        train(small_model(), ROWS, config=TrainConfig(mode="KD", max_steps=1, batch_size=4), teacher_logits=cached,
              device="cpu", progress=False)


def test_validation_rows_all_of_label_0_are_labelled_rows():
    """Only -1 is unlabelled: a validation split whose reviews are all negative (0) is scored, not refused."""
    negatives = data.Encoded(ROWS.input_ids[:4], torch.zeros(4, dtype=torch.long), "negatives")
    config = TrainConfig(max_steps=1, batch_size=4, eval_every=1, lr=0.0, precision="fp32")
    history = train(small_model(), ROWS, config=config, val_data=negatives, device="cpu", progress=False)
    assert [e["step"] for e in history.evals] == [1]



def test_a_fractional_warm_up_rounds_down_as_notebook_04_computes_it():
    """W = int(warmup_fraction * S) (notebook 04): 10% of 15 steps is 1 warm-up step, so the first step is at peak."""
    config = TrainConfig(max_steps=15, lr=1e-3, warmup_fraction=0.1, batch_size=4, precision="fp32")
    history = train(small_model(), ROWS, config=config, device="cpu", progress=False)
    assert [s["lr"] for s in history.steps][:3] == pytest.approx([1e-3, 1e-3, 1e-3 * 13 / 14])



def test_a_diverged_run_stops_at_the_first_log_after_its_loss_became_nan():
    """log_every=1: the loss reaches the host after every step, so a NaN stops the run after step 1, not at the
    epoch's end (the steps in between are wasted time on a GPU)."""
    from kd_tutorial.train import TrainingDivergedError
    seen = []
    config = TrainConfig(mode="kd", max_steps=4, batch_size=4)
    with pytest.raises(TrainingDivergedError, match="loss became nan at step 1"):
        train(small_model(), ROWS, config=config, teacher_logits=torch.full((16, 2), float("nan")), device="cpu",
              log_every=1, on_step=lambda step, total: seen.append(step), progress=False)
    assert seen == [0, 1]



def test_a_held_sigterm_raises_terminated_even_where_ctrl_c_is_ignored():
    """The CLI hands a SIGTERM on as a call of the SIGINT handler with SIGTERM (cli.sigterm_as_ctrl_c): held during
    a step, it still ends the run as Terminated where Ctrl-C itself is ignored."""
    import signal

    from kd_tutorial.errors import Terminated
    from kd_tutorial.train import ctrl_c_after
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(Terminated):
            with ctrl_c_after():
                signal.getsignal(signal.SIGINT)(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_grad_accum_below_one_is_refused_in_one_line():
    """It stopped on a ZeroDivisionError traceback (a notebook's own TrainConfig; the profiles refuse it earlier)."""
    with pytest.raises(ValueError, match=r"^grad_accum=0: give a whole number of micro-batches >= 1"):
        train(small_model(), ROWS, config=TrainConfig(max_steps=1, batch_size=4, grad_accum=0), device="cpu",
              progress=False)


def test_a_batch_size_below_one_is_refused_in_one_line():
    """It stopped on a ZeroDivisionError traceback in data.n_batches."""
    with pytest.raises(ValueError, match=r"^batch_size=0: give a whole number of rows >= 1$"):
        train(small_model(), ROWS, config=TrainConfig(max_steps=1, batch_size=0), device="cpu", progress=False)


@pytest.mark.parametrize("change, said", [
    ({"max_steps": -3}, r"^max_steps=-3: give a whole number of optimizer steps >= 1, or None to train for "
                        r"`epochs`$"),
    ({"max_steps": 0}, r"^max_steps=0: give a whole number of optimizer steps"),  # it fell back to `epochs`
    ({"epochs": 0}, r"^epochs=0: give a number of passes above 0"),  # it trained one step
    ({"epochs": None}, r"^epochs=None: give a number of passes above 0"),  # a TypeError traceback
    ({"epochs": float("inf")}, r"^epochs=inf: give a number of passes above 0"),  # an OverflowError traceback
    ({"mode": "KD", "max_steps": 1}, r"^unknown mode 'KD': use 'ce', 'kd' or 'pseudo'$")])  # was "needs teacher_logits"
def test_a_budget_that_trains_nothing_and_an_unknown_mode_are_refused_in_one_line(change, said):
    """max_steps=-3 trained no step and returned an empty history in silence."""
    config = TrainConfig(**{"batch_size": 4, **change})
    with pytest.raises(ValueError, match=said):
        train(small_model(), ROWS, config=config, device="cpu", progress=False)


@pytest.mark.parametrize("change, said", [
    ({"max_grad_norm": -1.0}, "max_grad_norm=-1.0: give the largest gradient norm kept, above 0 (inf: no clipping)"),
    ({"max_grad_norm": 0.0}, "max_grad_norm=0.0: give the largest gradient norm kept, above 0 (inf: no clipping)"),
    ({"lr": -1}, "lr=-1: give a finite learning rate >= 0, such as 1e-4 (0: no update)"),  # torch's own error
    ({"lr": "1e-3"}, "lr='1e-3': give a finite learning rate >= 0, such as 1e-4 (0: no update)"),  # a TypeError
    ({"lr": float("nan")}, "lr=nan: give a finite learning rate >= 0, such as 1e-4 (0: no update)"),
    ({"warmup_fraction": 2}, "warmup_fraction=2: give the share of the steps spent warming up, from 0 to 1"),
    ({"weight_decay": -0.01}, "weight_decay=-0.01: give a finite number >= 0 (0: no decay)")])
def test_an_optimizer_number_out_of_its_range_is_refused_in_one_line(change, said):
    """A bad-input sweep: max_grad_norm=-1 flipped every gradient, so 32 steps took the loss from 0.69 to 2.17 in
    silence; warmup_fraction=2 was taken; lr=-1 and lr='1e-3' stopped on torch's or Python's own errors."""
    with pytest.raises(ValueError) as err:
        train(small_model(), ROWS, config=TrainConfig(max_steps=1, batch_size=4, **change), device="cpu",
              progress=False)
    assert str(err.value) == said
    train(small_model(), ROWS, config=TrainConfig(max_steps=1, batch_size=4, max_grad_norm=float("inf"),
                                                  warmup_fraction=0, weight_decay=0), device="cpu", progress=False)


@pytest.mark.parametrize("teacher", [False, True])
def test_intermediate_terms_in_a_run_on_labels_alone_are_refused_in_one_line(teacher):
    """mode="ce" reads no teacher: its terms were dropped in silence with a teacher given, and without one the run
    was told it needs the teacher it would never read. Both runs (and recipe_loss itself) name the two fixes now."""
    from kd_tutorial.recipes import Intermediate
    config = TrainConfig(mode="ce", max_steps=1, batch_size=4, intermediate=Intermediate(hidden_mse=1.0))
    said = r"^mode='ce' trains on the labels alone and reads no intermediate terms: set intermediate=None, or mode="
    with pytest.raises(ValueError, match=said):
        train(small_model(), ROWS, config=config, teacher=freeze(small_model(1)) if teacher else None, device="cpu",
              progress=False)
    batch = {"input_ids": torch.tensor([[101, 7, 102]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match=said):
        loop.recipe_loss(small_model(), batch, config)


def test_whole_numbers_from_numpy_are_taken_as_counts():
    """A budget computed with NumPy (np.int64) trains as an int does: only its type differs."""
    import numpy as np
    config = TrainConfig(max_steps=np.int64(2), batch_size=np.int64(4), grad_accum=np.int64(1), lr=1e-3)
    assert len(train(small_model(), ROWS, config=config, device="cpu", progress=False).steps) == 2
