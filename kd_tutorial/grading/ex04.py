"""Exercises for notebook 04 (the teacher: soft labels on unlabelled data, efficiently)."""
from __future__ import annotations

import operator
import random

import torch

from .core import (Exercise, LearnerCrash, Wrong, as_float, as_tensor, close, describe, diagnose, records_graph,
                   wrong_return)
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
    grad_on: list[bool] = []  # whether autograd recorded each forward pass of the teacher (a frozen one records none)
    dropout_on: list[bool] = []  # whether each forward pass ran in training mode (eval() after it comes too late)

    def seen(module, *_):  # a forward hook that returns nothing leaves the output alone
        grad_on.append(records_graph(module))
        dropout_on.append(module.training)
    hook = teacher.register_forward_hook(seen)
    given: set[str] = set()  # the keyword arguments the teacher was called with
    pre = teacher.register_forward_pre_hook(lambda module, args, kwargs: given.update(kwargs), with_kwargs=True)
    try:
        with torch.enable_grad():
            out = call(teacher, {k: v.clone() for k, v in batch.items()})
    except LearnerCrash:
        if "labels" in given:  # teacher(**batch): the model computes its own loss, and -1 is no class
            raise Wrong("you passed the batch's labels to the teacher (teacher(**batch) does): unlabelled reviews "
                        "have label -1, which its built-in loss cannot take, and predicting needs no labels: pass "
                        "input_ids and attention_mask only") from None
        raise
    finally:
        hook.remove()
        pre.remove()
    if hasattr(out, "logits"):
        raise Wrong("return the logits tensor (outputs.logits), not the whole model output")
    if isinstance(out, torch.Tensor) and out.requires_grad:
        raise Wrong("your logits carry a gradient: run the teacher under torch.no_grad() "
                    "(or torch.inference_mode()); the teacher is never trained here")
    if any(grad_on):
        raise Wrong("the teacher ran with autograd on: .detach() afterwards comes too late, the graph and every "
                    "activation were already kept; run it under torch.no_grad() (or torch.inference_mode())")
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
    if any(dropout_on) and teacher.training:  # never switched: teacher.eval without its (), or no eval at all
        raise Wrong("dropout was on: the teacher is still in training mode; call teacher.eval() before predicting "
                    "(teacher.eval without () does nothing), or the soft labels are noisy")
    if any(dropout_on):
        raise Wrong("dropout was on: call teacher.eval() before predicting (not after), or the soft labels are noisy")
    raise Wrong("your logits differ from teacher(input_ids=..., attention_mask=...).logits in eval mode")


# -- q2: padding waste of a batch order ----------------------------------------------


def _waste_of_order(word_counts, batch_size, max_length, *, specials=2, truncate="after", global_max=False,
                    per_batch=False, to_max_length=False, drop_last=False, sort=False, full_last=False, of="all"):
    if truncate == "after":
        tokens = [min(n + specials, max_length) for n in word_counts]
    elif truncate == "before":
        tokens = [min(n, max_length) + specials for n in word_counts]
    else:
        tokens = [n + specials for n in word_counts]
    if sort:
        tokens = sorted(tokens)
    batches = [tokens[i:i + batch_size] for i in range(0, len(tokens), batch_size)]
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches = batches[:-1]
        tokens = [t for b in batches for t in b]
    width = max_length if to_max_length else max(tokens)
    padded = [(batch_size if full_last else len(b)) * (width if global_max or to_max_length else max(b))
              for b in batches]
    if of == "count":  # padding positions, not a fraction
        return sum(padded) - sum(tokens)
    if of == "real":  # padding over the real tokens
        return (sum(padded) - sum(tokens)) / sum(tokens)
    if per_batch:
        return sum((p - sum(b)) / p for p, b in zip(padded, batches)) / len(batches)
    return (sum(padded) - sum(tokens)) / sum(padded)


def _waste_cases():
    return [
        ([5, 3, 2, 2], 4, 512),
        ([10, 1, 4, 4, 4, 4, 3, 3], 3, 512),            # a short last batch
        ([30, 2, 2, 2, 9, 9, 9, 9, 1], 4, 16),            # truncation: 30 word pieces do not fit in 16
        ([7, 7, 1, 20, 20, 20, 3], 2, 12),
    ]


def _check_waste(call):
    cases = _waste_cases()
    got = [as_float(call(list(w), b, m), "padding_waste_of_order") for w, b, m in cases]
    expected = [_waste_of_order(w, b, m) for w, b, m in cases]
    if all(close(g, e) for g, e in zip(got, expected)):
        return
    V = lambda **kw: (lambda: [_waste_of_order(w, b, m, **kw) for w, b, m in cases])  # noqa: E731
    message = diagnose(got, {
        "you added [CLS] and [SEP] twice (4 special tokens per review): each review is "
        "[CLS] + its word pieces + [SEP], 2 more tokens than its word pieces": V(specials=4),
        "you forgot [CLS] and [SEP]: each review holds 2 more tokens than its word pieces": V(specials=0),
        "you truncated the word pieces to max_length and then added [CLS] and [SEP]: max_length counts the "
        "special tokens too, so a review holds at most max_length tokens in all": V(truncate="before"),
        "a review never holds more than max_length tokens: the tokenizer truncates the long ones": V(truncate="none"),
        "you padded every batch to the longest review overall: each batch is padded only to its own "
        "longest review": V(global_max=True),
        "you averaged the per-batch fractions: batches have different sizes (the last one is shorter), so "
        "divide the padding positions of all batches by all their positions": V(per_batch=True),
        "you padded every review to max_length (padding=\"max_length\"): dynamic padding pads each batch only to "
        "its own longest review": V(to_max_length=True),
        "you left out the last, shorter batch: its reviews are padded too, count every batch": V(drop_last=True),
        "you sorted the reviews first: the reviews come in the given order, and that order is what is measured "
        "(the exercise compares a random order with a sorted one)": V(sort=True),
        "you counted the last, shorter batch as batch_size rows: it holds only the reviews left, each padded to "
        "its longest": V(full_last=True),
        "you returned the number of padding positions: return their fraction of all the batches' positions":
            V(of="count"),
        "you divided the padding by the real tokens: divide it by all the positions (real and padding)":
            V(of="real"),
    })
    if message:
        raise Wrong(message)
    if all(close(g, 100 * e) for g, e in zip(got, expected)):
        raise Wrong("return a fraction between 0 and 1, not a percentage")
    if all(close(g, 1 - e) for g, e in zip(got, expected)):
        raise Wrong("you returned the fraction of real tokens: return the fraction of padding")
    w, b, m = cases[2]
    raise Wrong(f"for word_counts={w}, batch_size={b}, max_length={m} the padding waste is {expected[2]:.4f}, "
                f"you returned {got[2]:.4f}")


# -- q3: length-grouped batches -------------------------------------------------


def _batches_waste(lengths, batches):
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths) / total


def _index(i) -> int:
    try:
        return operator.index(i)
    except (TypeError, ValueError, RuntimeError):  # a float, a tensor of several (or no) values, a meta tensor
        pass
    if isinstance(i, float) and i.is_integer():
        return int(i)
    raise Wrong(f"a batch holds {describe(i)}: each batch should hold integer indices into `lengths`")


def _iterable(value) -> bool:
    """A container of items (not text, not a mapping, not a 0-d tensor or array)."""
    return (hasattr(value, "__iter__") and not isinstance(value, (str, bytes, dict))
            and getattr(value, "ndim", 1) != 0 and getattr(value, "device", None) != torch.device("meta"))


def _as_batches(value) -> list[list[int]]:
    """The learner's batches as lists of ints, or :class:`Wrong` naming what it returned."""
    want = "a list of batches, each a list of indices into `lengths`"
    if not _iterable(value):
        raise wrong_return(value, want, "length_grouped_batches")
    batches = []
    for b in value:
        if not _iterable(b):
            raise Wrong(f"`length_grouped_batches` returned a batch that is {describe(b)}: {want}")
        batches.append([_index(i) for i in b])
    return batches


def _check_grouping(call):
    rng = random.Random(7)
    lengths = [min(512, max(8, int(rng.lognormvariate(5.0, 0.7)))) for _ in range(1003)]
    batch_size = 16
    batches = _as_batches(call(list(lengths), batch_size, 0))
    if any(len(b) == 0 for b in batches):
        raise Wrong("some of your batches are empty: every batch holds at least one review")
    seen = [i for b in batches for i in b]
    if sorted(seen) == sorted(lengths) and sorted(seen) != list(range(len(lengths))):
        raise Wrong("your batches hold the reviews' lengths, not their indices: a batch is a list of positions in "
                    "`lengths` (sort the indices by length, e.g. sorted(range(len(lengths)), key=lengths.__getitem__))")
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
    fewest = -(-len(lengths) // batch_size)
    if len(batches) > 1.5 * fewest:  # a short batch at the end of each group (or length bucket) is fine
        raise Wrong(f"{len(batches)} batches where {fewest} can hold the {len(lengths)} reviews: fill the batches "
                    "(only the last batch of a group may be short), or every epoch takes more steps than it needs")
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    random_waste = _batches_waste(lengths, [order[i:i + batch_size] for i in range(0, len(order), batch_size)])
    waste = _batches_waste(lengths, batches)
    if waste > 0.5 * random_waste:
        raise Wrong(f"your batches waste {waste:.0%} of their positions on padding, about as much as random "
                    f"batches ({random_waste:.0%}): put reviews of similar length in the same batch")
    if waste > 0.25 * random_waste:  # grouped within small pools (a bucket iterator): better, not enough
        ranked = sorted(range(len(lengths)), key=lengths.__getitem__)
        floor = _batches_waste(lengths, [ranked[i:i + batch_size] for i in range(0, len(ranked), batch_size)])
        raise Wrong(f"your grouping cut the padding from {random_waste:.0%} (random batches) to {waste:.0%} of the "
                    f"positions, not enough: group over all the reviews, or pools far larger than a few batches "
                    f"(batches of all the indices sorted by length waste {floor:.0%})")
    maxes = [max(lengths[i] for i in b) for b in batches]
    if maxes == sorted(maxes) or maxes == sorted(maxes, reverse=True):
        raise Wrong("your batches come in order of length: shuffle the order of the batches "
                    "(training on all the short reviews first biases the updates)")
    again = _as_batches(call(list(lengths), batch_size, 0))
    if again != batches:
        raise Wrong("two calls with the same seed gave different batches: use random.Random(seed)")
    if _as_batches(call(list(lengths), batch_size, 1)) == batches:
        raise Wrong("seeds 0 and 1 gave the same batches: shuffle with random.Random(seed), the seed you are "
                    "given, not a fixed one")


# -- q4: the teacher's label order ------------------------------------------------------------


def _label_cases():
    g = torch.Generator().manual_seed(8)
    return [
        (torch.randn(4, 2, generator=g), ["POSITIVE", "NEGATIVE"], ["negative", "positive"]),
        (torch.randn(3, 3, generator=g), ["neutral", "negative", "positive"], ["negative", "positive", "neutral"]),
        (torch.randn(5, 2, generator=g), ["neg", "pos"], ["neg", "pos"]),
        # the data's names in capitals: lower-casing the teacher's names alone is not "regardless of case"
        (torch.randn(3, 2, generator=g), ["negative", "positive"], ["Positive", "NEGATIVE"]),
    ]


def _check_label_order(call):
    for logits, teacher_labels, data_labels in _label_cases():
        t_names = [n.lower() for n in teacher_labels]
        perm = [t_names.index(n.lower()) for n in data_labels]
        expected = logits[:, perm]
        try:
            got = call(logits.clone(), list(teacher_labels), list(data_labels))
        except LearnerCrash as crash:
            if any(a != b and a.lower() == b.lower() for a in teacher_labels for b in data_labels):
                raise Wrong(f"your function fails when the names differ only in case ({teacher_labels} vs "
                            f"{data_labels}): {crash}. Compare both lists' names lower-cased") from None
            raise
        got = as_tensor(got, tuple(logits.shape), "align_teacher_logits")
        if close(got, expected):
            continue
        inverse = [perm.index(j) for j in range(len(perm))]
        if close(got, logits) and perm != list(range(len(perm))):
            raise Wrong(f"the columns are still in the teacher's order {teacher_labels}: column j of the result must "
                        f"be the teacher's logit for data_labels[j] ({data_labels})")
        if close(got, logits[:, inverse]):
            raise Wrong(f"you applied the inverse permutation (visible with 3 classes, {teacher_labels} -> "
                        f"{data_labels}): column j of the result is teacher column "
                        "teacher_labels.index(data_labels[j]), not the position of teacher_labels[j] in data_labels")
        if logits.shape[0] == logits.shape[1] and close(got, logits[perm]):
            raise Wrong("you reordered the rows (the reviews), not the columns (the classes): index the last dimension")
        if close(got.double().softmax(-1), expected.softmax(-1)) or close(got, expected.softmax(-1)):
            raise Wrong("return the reordered logits themselves, unchanged otherwise (no softmax, no shift)")
        raise Wrong(f"for teacher labels {teacher_labels} and data labels {data_labels} your columns are not the "
                    "teacher's columns in the data's order")
    for teacher_labels, data_labels in ((["negative", "positive"], ["bad", "good"]),
                                        (["negative", "positive"], ["negative", "neutral", "positive"]),
                                        (["negative", "neutral", "positive"], ["negative", "positive"])):
        logits = torch.zeros(2, len(teacher_labels))
        try:
            got = call(logits.clone(), list(teacher_labels), list(data_labels))
        except LearnerCrash as crash:
            if isinstance(crash.exc, ValueError):
                continue
            raise Wrong(f"for teacher labels {teacher_labels} and data labels {data_labels} raise a ValueError that "
                        f"says the two label sets differ (you raised {crash})") from None
        raise Wrong(f"teacher labels {teacher_labels} and data labels {data_labels} name different classes, and your "
                    "function returned logits anyway: a teacher that cannot be mapped must be refused "
                    "(raise ValueError), or it silently teaches the wrong classes")


q1 = Exercise(
    "ex04.q1", "Teacher logits: eval mode, no gradient", "teacher_logits", _check_teacher_logits,
    hints=(
        "The teacher's logits are targets, not something to train: they must be deterministic (no dropout) "
        'and must not record a computation graph. The model must also know which positions are padding.',
        'teacher.eval() switches dropout off; the `with torch.no_grad():` block stops autograd from '
        "recording; call the model with input_ids= and attention_mask= only (not labels or the batch's index)"
        ' and take the .logits of its output.',
        "Put the teacher in eval mode, run it inside no_grad on the batch's input_ids and attention_mask, and"
        ' return outputs.logits: raw logits at T = 1 (not softmax probabilities, not the whole output '
        'object).',
    ),
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
    "ex04.q2", "Padding waste of a batch order", "padding_waste_of_order", _check_waste,
    hints=(
        'Count what the model really processes: each review becomes a sequence with its special tokens, '
        'capped at the maximum length; consecutive reviews form a batch; a batch is as wide as its own '
        'longest sequence. The waste is the share of padding among all the positions of all batches together.',
        'min(n + 2, max_length) is the length of a review of n word pieces; [tokens[i:i + batch_size] for i in '
        'range(0, len(tokens), batch_size)] cuts the batches (the last may be shorter); len(batch) * max(batch) '
        'is the number of positions of one batch.',
        'Turn every word count into a token count (word pieces, plus [CLS] and [SEP], then capped by '
        'max_length); cut the list into consecutive batches; add up, over the batches, the batch size times '
        'that batch\'s longest token count; the waste is that total minus the real tokens, divided by that '
        'total (one fraction for all batches, not a mean of per-batch fractions).',
    ),
    solution='''
def padding_waste_of_order(word_counts, batch_size, max_length=512):
    """Fraction of padding when the reviews, in this order, are cut into consecutive padded batches."""
    ### BEGIN SOLUTION
    tokens = [min(n + 2, max_length) for n in word_counts]
    batches = [tokens[i:i + batch_size] for i in range(0, len(tokens), batch_size)]
    positions = sum(len(batch) * max(batch) for batch in batches)
    return (positions - sum(tokens)) / positions
    ### END SOLUTION
''',
    success="Correct! Now compare a random order with one sorted by length: every padding position costs "
            "as much compute as a real token.",
)

q3 = Exercise(
    "ex04.q3", "Batches grouped by length", "length_grouped_batches", _check_grouping,
    hints=(
        'Reviews of similar length in the same batch need little padding, but the order of the batches should'
        ' still be random, reproducible from the seed, and every review must appear exactly once (the last, '
        'shorter batch included).',
        'sorted(range(len(lengths)), key=lambda i: lengths[i]) orders the indices by length; [order[i:i + '
        'batch_size] for i in range(0, len(order), batch_size)] cuts them into batches; '
        'random.Random(seed).shuffle(batches) shuffles in place, reproducibly.',
        'Sort the indices by length, cut the sorted list into chunks of batch_size (keep the last chunk, even'
        ' if short), then shuffle the list of chunks (not the indices inside them) with a random.Random built'
        " from seed. (Sorting within large random 'mega-chunks' is fine too.)",
    ),
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

q4 = Exercise(
    "ex04.q4", "Teacher logits in the data's label order", "align_teacher_logits", _check_label_order,
    hints=(
        "A class id means nothing on its own: the teacher's column j is the class it calls teacher_labels[j], the "
        "data's label j the class data_labels[j]. The student learns in the data's order, so the teacher's "
        "columns must be put in that order, matching classes by name; a teacher whose classes cannot all be "
        "matched must be refused.",
        "tensor[:, index_list] reorders the columns of a (B, C) tensor; [n.lower() for n in names] and "
        "list.index(name) find where a class sits; sorted() or set() compare two label sets; raise "
        "ValueError('...') refuses.",
        "Lower-case both name lists; if they are not the same set of names (or not the same length), raise "
        "ValueError; otherwise, for each data label j find its position in the teacher's list, and index the "
        "teacher's columns (the last dimension, not the rows) with that list of positions.",
    ),
    solution='''
def align_teacher_logits(teacher_logits, teacher_labels, data_labels):
    """The teacher's logits with column j = the class data_labels[j] (names compared lower-cased)."""
    ### BEGIN SOLUTION
    teacher_names = [name.lower() for name in teacher_labels]
    data_names = [name.lower() for name in data_labels]
    if sorted(teacher_names) != sorted(data_names):
        raise ValueError(f"label sets differ: teacher {teacher_labels}, data {data_labels}")
    order = [teacher_names.index(name) for name in data_names]
    return teacher_logits[:, order]
    ### END SOLUTION
''',
    success="Correct! Same classes, same order: otherwise the teacher silently teaches the opposite of the truth.",
)

__all__ = ["q1", "q2", "q3", "q4", "toy_bert", "toy_batch"]
