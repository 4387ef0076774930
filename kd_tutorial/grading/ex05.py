"""Exercises for notebook 05 (distillation): fix a broken training step; a DistilBERT-style student."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .. import losses as ref
from .core import (Exercise, LearnerCrash, Wrong, as_loss_float, close, diagnose, ignored_settings, reaches,
                   records_graph, wrong_return)
from .toys import toy_batch, toy_bert

# imported by the grader before the learner's cells (outside the per-cell time limit): the checks build toy BERTs
PRELOAD = ("transformers.models.bert.modeling_bert",)

BROKEN_STEP = '''
def broken_distillation_step(student, teacher, batch, optimizer, temperature=2.0, alpha=0.5):
    student.train()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    teacher_logits = teacher(**inputs).logits
    student_logits = student(**inputs).logits
    loss = F.cross_entropy(student_logits, F.softmax(teacher_logits, dim=-1))
    loss.backward()
    optimizer.step()
    return loss.item()
'''.strip("\n")

# -- q1: the fixed step -------------------------------------------------------


def _reference_steps(student, teacher, batches, T, alpha, lr, zero_grad=True):
    student = copy.deepcopy(student)
    opt = torch.optim.SGD(student.parameters(), lr=lr)
    teacher = copy.deepcopy(teacher).eval()
    losses, first = [], None
    for b in batches:
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        with torch.no_grad():
            t = teacher(**inputs).logits
        student.train()
        s = student(**inputs).logits
        if first is None:
            first = (s.detach().clone(), t.clone())
        loss = ref.distillation_loss(s, t, b["labels"], T, alpha)
        if zero_grad:
            opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return student, losses, first


def _step(call, student, teacher, batch, optimizer, T, alpha):
    """One call of the learner's step, with autograd on; the crashes a common mistake causes, named."""
    try:
        with torch.enable_grad():
            return call(student, teacher, {k: v.clone() for k, v in batch.items()}, optimizer, T, alpha)
    except LearnerCrash as crash:
        said = str(crash)
        if "does not require grad" in said:
            raise Wrong("no gradient reaches the student: its logits go first in distillation_loss(student_logits, "
                        "teacher_logits, ...), and are computed with autograd on (not under torch.no_grad())") from None
        if "out of bounds" in said and "Target" in said:
            raise Wrong("a model computed its own loss from batch['labels'] (-1 for the transfer reviews): pass the "
                        "models only input_ids and attention_mask, not **batch") from None
        raise


def _check_step(call):
    # the defaults first, then other values: a step that drops temperature or alpha passes the first only
    for T, alpha in ((2.0, 0.5), (4.0, 0.7)):
        _check_step_at(call, T, alpha)


def _check_step_at(call, T, alpha):
    lr = 0.5
    teacher = toy_bert(num_layers=2, seed=11, dropout=0.3, logit_scale=100.0).train()
    grad_mode: list[bool] = []  # whether autograd recorded each forward pass of the teacher
    dropout_on: list[bool] = []  # whether each forward pass of the teacher ran in training mode

    def seen(module, *_):  # a forward hook that returns nothing leaves the output alone
        grad_mode.append(records_graph(module))
        dropout_on.append(module.training)
    teacher.register_forward_hook(seen)
    student = toy_bert(num_layers=1, seed=12, dropout=0.0)
    batches = [toy_batch(4, 10, seed=21, labels=[0, 1, -1, 1]), toy_batch(4, 9, seed=22, labels=[-1, -1, 0, 1])]
    ref_student, ref_losses, (s0, t0) = _reference_steps(student, teacher, batches, T, alpha, lr)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = [p.detach().clone() for p in student.parameters()]
    optimizer = torch.optim.SGD(student.parameters(), lr=lr)
    student_modes: list[bool] = []
    student.register_forward_hook(lambda module, *_: student_modes.append(module.training))
    got = [as_loss_float(_step(call, student, teacher, b, optimizer, T, alpha), "distillation_step") for b in batches]
    if not all(student_modes):
        raise Wrong("the student ran in eval mode: call student.train() in the step (its dropout must be on while "
                    "it learns; only the teacher is in eval mode)")
    if any(not torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items()):
        raise Wrong("the teacher's weights changed: the teacher is fixed during distillation "
                    "(only the student's parameters are in the optimizer)")
    if any(reaches(p.grad) for p in teacher.parameters()):
        raise Wrong("a gradient reached the teacher: compute its logits under torch.no_grad()")
    if any(grad_mode):
        raise Wrong("the teacher's forward pass ran with autograd on: wrap it in torch.no_grad() (autograd "
                    "kept its activations for a backward pass that must never reach it)")
    if not close(got[0], ref_losses[0], rtol=1e-4, atol=1e-5):
        if teacher.training:
            raise Wrong("the teacher is still in training mode, so dropout makes its soft labels noisy: "
                        "call teacher.eval()")
        if any(dropout_on):  # eval() came, but after the forward pass it should have changed
            raise Wrong("the teacher's forward pass ran in training mode, so dropout made its soft labels noisy: "
                        "call teacher.eval() before its forward pass, not after")
        raise Wrong(_first_loss_message(got[0], ref_losses[0], s0, t0, batches[0]["labels"], T, alpha))
    same = all(torch.allclose(p, q, atol=1e-6) for p, q in zip(student.parameters(), ref_student.parameters()))
    if same and close(got[1], ref_losses[1], rtol=1e-4, atol=1e-5):
        return
    if all(torch.equal(p, q) for p, q in zip(student.parameters(), student_before)):
        raise Wrong("your first loss is right, but the student never moved: call optimizer.step() after "
                    "loss.backward(), with the gradients still there (zero them before backward(), not between "
                    "backward() and step())")
    acc, _, _ = _reference_steps(toy_bert(num_layers=1, seed=12), teacher, batches, T, alpha, lr, zero_grad=False)
    if all(torch.allclose(p, q, atol=1e-6) for p, q in zip(student.parameters(), acc.parameters())):
        raise Wrong("gradients accumulate from one step to the next: call optimizer.zero_grad() "
                    "before loss.backward()")
    raise Wrong("your first loss is right, but after two steps the student differs from the reference: "
                "zero the gradients, call loss.backward() once, then optimizer.step()")


def _first_loss_message(got, expected, s0, t0, y, T, alpha) -> str:
    """What is wrong with a step whose first loss is ``got`` where the reference gives ``expected`` (on the student
    and teacher logits ``s0``, ``t0`` and the labels ``y``), named where it is a known mistake."""
    message = diagnose([got], {
        **ignored_settings(T, alpha, (2.0, 0.5), "distillation_loss",
                           lambda T_, a_: [ref.distillation_loss(s0, t0, y, T_, a_)]),
        "your loss is still the seed article's F.cross_entropy(student_logits, softmax(teacher_logits)): "
        "no temperature, no T^2 and no hard-label term":
            lambda: [F.cross_entropy(s0, F.softmax(t0, -1))],
        "your loss has no hard-label term: alpha * soft + (1 - alpha) * cross-entropy with the labels":
            lambda: [alpha * ref.kl_divergence(s0, t0, T)],
        "your soft term is missing its T^2 factor":
            lambda: [alpha * ref.kl_divergence(s0, t0, T) / T ** 2 + (1 - alpha) * ref.hard_cross_entropy(s0, y)],
        "alpha weights the soft term: alpha * soft + (1 - alpha) * hard":
            lambda: [(1 - alpha) * ref.kl_divergence(s0, t0, T) + alpha * ref.hard_cross_entropy(s0, y)],
        "your soft term has no temperature: divide both logits by T":
            lambda: [alpha * ref.kl_divergence(s0, t0, 1.0) + (1 - alpha) * ref.hard_cross_entropy(s0, y)],
        "you swapped teacher and student in the soft term: the teacher's probabilities are the target":
            lambda: [alpha * ref.kl_divergence(t0, s0, T) + (1 - alpha) * ref.hard_cross_entropy(s0, y)],
        "you averaged the hard term over the labelled reviews only (F.cross_entropy(..., ignore_index=-1)): "
        "divide its sum by the whole batch, as distillation_loss does, so every review weighs the same":
            lambda: [alpha * ref.kl_divergence(s0, t0, T) + (1 - alpha) * F.cross_entropy(s0, y, ignore_index=-1)],
    }, rtol=1e-4, atol=1e-5)
    return message or (f"the loss of your first step is {got:.5f}, expected {expected:.5f} "
                       "(distillation_loss(student_logits, teacher_logits, labels, temperature, alpha))")


# -- q2: DistilBERT-style initialisation ----------------------------------------


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _check_init(call):
    teacher = toy_bert(num_layers=4, seed=5).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    t_ptrs = {p.data_ptr() for p in teacher.parameters()}
    batch = toy_batch(3, 8, seed=9)
    config = teacher.config.to_dict()
    for layer_map in ([0, 2], [1, 3], [3], [0, 1, 2, 3]):
        student = call(teacher, list(layer_map))
        if not isinstance(student, type(teacher)):
            raise wrong_return(student, "a BertForSequenceClassification (with .bert and .classifier)",
                               "init_student_from_teacher")
        if any(not torch.equal(before[k], v) for k, v in teacher.state_dict().items()) \
                or len(teacher.bert.encoder.layer) != 4:
            raise Wrong("your function modified the teacher: build a new model (or deepcopy the teacher) first")
        if getattr(student, "config", None) is teacher.config or teacher.config.to_dict() != config:
            raise Wrong("the student shares (and changes) the teacher's config: the teacher's num_hidden_layers no "
                        "longer matches its layers. Build the student from copy.deepcopy(teacher.config)")
        if any(p.data_ptr() in t_ptrs for p in student.parameters()):
            raise Wrong("the student shares tensors with the teacher, so training it would change the teacher: "
                        "copy the weights (load_state_dict or copy.deepcopy)")
        layers = student.bert.encoder.layer
        if len(layers) != len(layer_map) or student.config.num_hidden_layers != len(layer_map):
            raise Wrong(f"for layer_map={layer_map} the student should have {len(layer_map)} layers "
                        f"(and config.num_hidden_layers = {len(layer_map)}), got {len(layers)}")
        if not _same(student.bert.embeddings, teacher.bert.embeddings):
            raise Wrong("copy the embeddings too (word, position and token-type tables, and their LayerNorm)")
        copied = []
        for j, layer in enumerate(layers):
            match = [i for i, t in enumerate(teacher.bert.encoder.layer) if _same(layer, t)]
            copied.append(match[0] if match else None)
        if copied != list(layer_map):
            if None in copied:
                raise Wrong(f"student layer {copied.index(None)} is not a copy of any teacher layer "
                            f"(layer_map={layer_map})")
            raise Wrong(f"for layer_map={layer_map} you copied teacher layers {copied}: student layer j "
                        "is teacher layer layer_map[j]")
        if not _same(student.bert.pooler, teacher.bert.pooler):
            raise Wrong("copy the pooler too (it feeds the classifier)")
        if student.classifier.weight.shape != teacher.classifier.weight.shape:
            raise Wrong("the student's classification head should have the teacher's shape "
                        "(hidden size x number of labels): build it from the teacher's config")
        if _same(student.classifier, teacher.classifier):
            raise Wrong("you copied the classification head: as in notebook 05 (distil_student's default, "
                        "copy_head=False), only the head is new, so leave student.classifier as "
                        "BertForSequenceClassification initialised it")
        if layer_map == [0, 1, 2, 3]:
            student.eval()
            with torch.no_grad():
                a = student.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
                b = teacher.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
            if not close(a, b, atol=1e-5):
                raise Wrong("with every layer copied the student's encoder should compute exactly what the "
                            "teacher's does")


q1 = Exercise(
    "ex05.q1", "Find the bugs in a distillation step", "distillation_step", _check_step,
    hints=(
        'Compare the step with the training loop of notebook 05: what must be true of the teacher while it '
        "produces soft labels, which loss does the course distil with, and what happens to each parameter's "
        '.grad between two calls of backward()?',
        'Tools you need: teacher.eval(), a `with torch.no_grad():` block, distillation_loss(student_logits, '
        "teacher_logits, batch['labels'], temperature, alpha), and optimizer.zero_grad() before "
        'loss.backward().',
        'Four bugs: the teacher runs in training mode (dropout makes its soft labels noisy) and with autograd'
        " on (a gradient can reach it); the loss is the seed article's F.cross_entropy(student_logits, "
        "softmax(teacher_logits)) instead of Hinton's loss with temperature, T^2 and the hard labels; and the"
        ' gradients are never zeroed, so they accumulate from one step to the next.',
    ),
    solution='''
def distillation_step(student, teacher, batch, optimizer, temperature=2.0, alpha=0.5):
    """One distillation step; returns the loss as a float."""
    ### BEGIN SOLUTION
    student.train()
    teacher.eval()                      # bug 1: dropout off in the teacher
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():               # bug 2: no gradient reaches the teacher
        teacher_logits = teacher(**inputs).logits
    student_logits = student(**inputs).logits
    # bug 3: Hinton's loss (T, T^2, hard labels), not F.cross_entropy(student, softmax(teacher))
    loss = distillation_loss(student_logits, teacher_logits, batch["labels"], temperature, alpha)
    optimizer.zero_grad()               # bug 4: gradients accumulated across steps
    loss.backward()
    optimizer.step()
    return loss.item()
    ### END SOLUTION
''',
    success="Correct! Teacher frozen, Hinton's loss, clean gradients.",
)

q2 = Exercise(
    "ex05.q2", "A DistilBERT-style student from teacher layers", "init_student_from_teacher", _check_init,
    hints=(
        "A DistilBERT-style student reuses what the teacher learned: it starts from a subset of the teacher's"
        " layers, with the teacher's embeddings and pooler, and only its classification head is new. It is a "
        'separate model, so training it must never change the teacher.',
        'copy.deepcopy(teacher.config), then set num_hidden_layers; BertForSequenceClassification(config) '
        'builds a new model (with a freshly initialised head); module.load_state_dict(other.state_dict()) '
        'copies weights without sharing tensors; the layers are in model.bert.encoder.layer.',
        'Build the student from a copy of the config with num_hidden_layers = len(layer_map); load the '
        "embeddings' state dict; for j, i in enumerate(layer_map) load teacher layer i into student layer j; "
        "load the pooler; leave student.classifier as it was initialised (do not copy the teacher's head); "
        'return the student.',
    ),
    solution='''
def init_student_from_teacher(teacher, layer_map):
    """A student whose layer j is a copy of teacher layer layer_map[j], plus embeddings and pooler; a new head."""
    ### BEGIN SOLUTION
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layer_map)
    student = BertForSequenceClassification(config)
    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
    for j, i in enumerate(layer_map):
        student.bert.encoder.layer[j].load_state_dict(teacher.bert.encoder.layer[i].state_dict())
    student.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
    return student                      # student.classifier stays new
    ### END SOLUTION
''',
    success="Correct! Like DistilBERT, the student starts from a subset of its teacher's layers; only the task "
            "head starts from scratch.",
)

__all__ = ["q1", "q2", "BROKEN_STEP", "toy_bert", "toy_batch"]
