"""Exercises for notebook 04 (the teacher: soft labels on unlabelled data, efficiently)."""
from __future__ import annotations

import random

import torch

from .core import Exercise, Wrong, as_float, as_tensor, close
from .toys import toy_batch, toy_bert

# imported by the grader before the learner's cells (outside the per-cell time limit): the checks build toy BERTs
PRELOAD = ("transformers.models.bert.modeling_bert",)

# -- q1: teacher logits ---------------------------------------------------------


def _check_teacher_logits(call):
    teacher = toy_bert(num_layers=2, seed=1, dropout=0.3, logit_scale=100.0)
    teacher.train()  # as it comes out of a training loop: dropout on
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    batch = toy_batch(batch_size=5, max_len=10, seed=3, labels=[1, -1, 0, -1, 1])
    with torch.no_grad():
        teacher.eval()
        ids, mask = batch["input_ids"], batch["attention_mask"]
        expected = teacher(input_ids=ids, attention_mask=mask).logits
        no_mask = teacher(input_ids=ids).logits
        teacher.train()
    with torch.enable_grad():
        out = call(teacher, {k: v.clone() for k, v in batch.items()})
    if hasattr(out, "logits"):
        raise Wrong("return the logits tensor (outputs.logits), not the whole model output")
    if isinstance(out, torch.Tensor) and out.requires_grad:
        raise Wrong("your logits carry a gradient: run the teacher under torch.no_grad() "
                    "(or torch.inference_mode()); the teacher is never trained here")
    out = as_tensor(out, expected.shape, "teacher_logits")
    if any(p.grad is not None for p in teacher.parameters()):
        raise Wrong("a gradient reached the teacher's parameters: use torch.no_grad()")
    if any(not torch.equal(before[k], v) for k, v in teacher.state_dict().items()):
        raise Wrong("your function changed the teacher's weights")
    if close(out, expected, atol=1e-5):
        return
    if close(out, torch.softmax(expected, -1), atol=1e-5):
        raise Wrong("return logits, not probabilities: the loss applies the temperature to the logits")
    if close(out, no_mask, atol=1e-5):
        raise Wrong("pass the attention_mask too: without it the padding changes the logits")
    if teacher.training:
        raise Wrong("dropout was on: call teacher.eval() before predicting, or the soft labels are noisy")
    raise Wrong("your logits differ from teacher(input_ids=..., attention_mask=...).logits in eval mode")


# -- q2: padding waste ------------------------------------------------------------


def _mask_batch(lengths, width=None):
    width = width or max(lengths)
    lengths = torch.tensor(lengths)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return {"input_ids": mask * 7, "attention_mask": mask}


def _waste_ref(batches):
    total = sum(b["attention_mask"].numel() for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return (total - real) / total


def _check_waste(call):
    cases = [
        [_mask_batch([5, 3, 2, 2])],
        [_mask_batch([10, 1]), _mask_batch([4, 4, 4, 4, 3, 3])],
        [_mask_batch([3, 3, 3]), _mask_batch([8, 2, 2, 2, 2]), _mask_batch([6], width=16)],
        [_mask_batch([4, 4])],
    ]
    got = [as_float(call([dict(b) for b in c]), "padding_waste") for c in cases]
    expected = [_waste_ref(c) for c in cases]
    if all(close(g, e) for g, e in zip(got, expected)):
        return
    if all(close(g, 100 * e) for g, e in zip(got, expected)):
        raise Wrong("return a fraction between 0 and 1, not a percentage")
    if all(close(g, 1 - e) for g, e in zip(got, expected)):
        raise Wrong("you returned the fraction of real tokens: padding is where attention_mask == 0")
    per_batch = [sum(_waste_ref([b]) for b in c) / len(c) for c in cases]
    if all(close(g, e) for g, e in zip(got, per_batch)):
        raise Wrong("you averaged the per-batch fractions: batches have different sizes, so divide the "
                    "total number of padding positions by the total number of positions")
    raise Wrong(f"for batches with lengths [[5, 3, 2, 2]] the waste is {expected[0]:.3f}, you returned {got[0]:.3f}")


# -- q3: length-grouped batches -------------------------------------------------


def _batches_waste(lengths, batches):
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths) / total


def _check_grouping(call):
    rng = random.Random(7)
    lengths = [min(512, max(8, int(rng.lognormvariate(5.0, 0.7)))) for _ in range(1003)]
    batch_size = 16
    batches = call(list(lengths), batch_size, 0)
    try:
        batches = [[int(i) for i in b] for b in batches]
    except (TypeError, ValueError):
        raise Wrong("return a list of batches, each a list of indices into `lengths`") from None
    seen = [i for b in batches for i in b]
    if len(set(seen)) != len(seen):
        raise Wrong("some reviews appear in more than one batch: use each index exactly once")
    missing = set(range(len(lengths))) - set(seen)
    if missing:
        raise Wrong(f"{len(missing)} reviews are in no batch (did you drop the last, smaller batch?): "
                    "every review needs its soft label")
    if any(i < 0 or i >= len(lengths) for i in seen):
        raise Wrong("your batches contain indices outside range(len(lengths))")
    if max(len(b) for b in batches) > batch_size:
        raise Wrong(f"some batches hold more than batch_size = {batch_size} reviews")
    if sum(len(b) < batch_size for b in batches) > 1 + len(batches) // 20:
        raise Wrong("too many batches are smaller than batch_size: fill each batch (only the last "
                    "batches of a group may be short)")
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    random_waste = _batches_waste(lengths, [order[i:i + batch_size] for i in range(0, len(order), batch_size)])
    waste = _batches_waste(lengths, batches)
    if waste > 0.25 * random_waste:
        raise Wrong(f"your batches waste {waste:.0%} of their positions on padding, about as much as random "
                    f"batches ({random_waste:.0%}): put reviews of similar length in the same batch")
    maxes = [max(lengths[i] for i in b) for b in batches]
    if maxes == sorted(maxes) or maxes == sorted(maxes, reverse=True):
        raise Wrong("your batches come in order of length: shuffle the order of the batches "
                    "(training on all the short reviews first biases the updates)")
    again = [[int(i) for i in b] for b in call(list(lengths), batch_size, 0)]
    if again != batches:
        raise Wrong("two calls with the same seed gave different batches: use random.Random(seed)")


q1 = Exercise(
    "ex04.q1", "Teacher logits: eval mode, no gradient", "teacher_logits", _check_teacher_logits,
    hint="""teacher.eval() switches dropout off; torch.no_grad() stops autograd from recording. Pass
    input_ids and attention_mask (not labels or index) and return outputs.logits.""",
    solution='''
def teacher_logits(teacher, batch):
    """The teacher's logits (T = 1) for a batch: eval mode, no gradient."""
    ### BEGIN SOLUTION
    teacher.eval()
    with torch.no_grad():
        out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits
    ### END SOLUTION
''',
    success="Correct! Deterministic, gradient-free soft labels: compute them once and cache them.",
)

q2 = Exercise(
    "ex04.q2", "Measuring padding waste", "padding_waste", _check_waste,
    hint="""Padding is where attention_mask == 0. Add up padding positions over all batches and divide by
    the total number of positions (sum of mask.numel()).""",
    solution='''
def padding_waste(batches):
    """Fraction of all positions in `batches` that are padding (attention_mask == 0)."""
    ### BEGIN SOLUTION
    total = sum(b["attention_mask"].numel() for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return (total - real) / total
    ### END SOLUTION
''',
    success="Correct! Every padding position costs as much compute as a real token.",
)

q3 = Exercise(
    "ex04.q3", "Batches grouped by length", "length_grouped_batches", _check_grouping,
    hint="""Sort the indices by length, cut the sorted list into chunks of batch_size, then shuffle the
    order of the chunks with random.Random(seed). (Sorting within large random 'mega-chunks' keeps
    more randomness and is fine too.)""",
    solution='''
def length_grouped_batches(lengths, batch_size, seed=0):
    """Batches (lists of indices) of reviews of similar length, in random order."""
    ### BEGIN SOLUTION
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches
    ### END SOLUTION
''',
    success="Correct! Grouping by length removes most padding while every review keeps its soft label.",
)

__all__ = ["q1", "q2", "q3", "toy_bert", "toy_batch"]
