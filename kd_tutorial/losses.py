"""Knowledge-distillation losses: pure functions of tensors.

Notation (the same as the notebooks): student logits ``z_s``, teacher logits
``z_t``, temperature ``T``, weight ``alpha``, hard labels ``y``, batch size ``B``::

    p_t^T = softmax(z_t / T)            q_s^T = softmax(z_s / T)
    L_soft = T^2 * KL(p_t^T || q_s^T)   averaged over the batch
    L_hard = CE(y, softmax(z_s))        at T = 1; unlabelled rows (y = -1) add 0
    L      = alpha * L_soft + (1 - alpha) * L_hard     every term averaged over the B rows

Intermediate layers (correctness note 13), with the attention mask ``m`` (1 for
real tokens) so that padding never changes a value: :func:`hidden_mse`,
:func:`hidden_cosine`, :func:`cls_mse`, :func:`attention_kl` and
:func:`value_relation_kl`.

Generative language models, one distribution per token and a ``loss_mask`` of the
tokens that count: :func:`token_cross_entropy`, :func:`token_kl` (forward),
:func:`reverse_token_kl`, :func:`topk_token_kl` (a teacher cached as its top k) and
:func:`topk_rest_token_kl` (its top k and the mass outside them).

Every function returns a scalar tensor, and none lets a gradient reach the
teacher's logits (they are detached).
"""
from __future__ import annotations

import contextlib
import math
import operator

import torch
import torch.nn.functional as F

IGNORE_LABEL = -1  # IMDB's ``unsupervised`` split: no label, never part of a cross-entropy


def _full(x: torch.Tensor) -> torch.Tensor:
    """Compute losses in at least float32, even when autocast produced bf16 / fp16 logits."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def softmax_with_temperature(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softened class probabilities: ``softmax(z / T)`` over the last dimension.

    ``T = 1`` is the ordinary softmax; ``T > 1`` flattens the distribution and
    reveals the teacher's "dark knowledge"; ``T -> 0`` tends to one-hot.
    """
    if not torch.is_tensor(logits):  # a list failed on '/' with "unsupported operand type(s)"
        _float_logits(logits, "softmax_with_temperature", "the")
    return F.softmax(logits / check_temperature(temperature), dim=-1)


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float, refused unless it is a finite number above 0 (T <= 0 gave nan or a sign flip,
    T = inf a loss of nan)."""
    try:
        T = float(temperature)
    except (TypeError, ValueError, RuntimeError):  # a word, None, a tensor of several values
        T = math.nan
    if not (math.isfinite(T) and T > 0):
        raise ValueError(f"temperature must be a finite number above 0, got {temperature!r}")
    return T


def _float_logits(logits, what: str, whose: str) -> None:
    """Refuse logits that are not a floating-point tensor, in one line: a list failed on ``.dim()``, an integer
    tensor inside log_softmax ("not implemented for 'Long'")."""
    if torch.is_tensor(logits) and logits.is_floating_point():
        return
    got = f"a {logits.dtype} tensor" if torch.is_tensor(logits) else f"a {type(logits).__name__}"
    raise ValueError(f"{what}: {whose} logits are {got}; give a float tensor of logits, e.g. "
                     "torch.tensor(logits, dtype=torch.float32)")


def _check_rows_present(logits: torch.Tensor, what: str) -> None:
    """Refuse an empty batch: a mean over 0 rows is 0 / 0, a loss of nan."""
    if logits.shape[0] == 0:
        raise ValueError(f"{what}: the batch has no rows (logits {tuple(logits.shape)}), so it has no mean loss; "
                         "give at least one row (skip empty batches)")


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(p_t^T || q_s^T)``, averaged over the batch (``reduction="batchmean"``).

    ``KL(p || q) = sum_c p_c (log p_c - log q_c)``. ``F.kl_div`` takes the
    student's *log*-probabilities first and the teacher's probabilities second.
    """
    T = check_temperature(temperature)
    _check_logits(student_logits, teacher_logits, "kl_divergence")
    log_q = F.log_softmax(_full(student_logits) / T, dim=-1)
    log_p = F.log_softmax(_full(teacher_logits.detach()) / T, dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * T * T


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, what: str) -> None:
    """Refuse logits that are not both ``(B, C)`` of one shape. ``F.kl_div`` broadcasts a teacher's ``(B, 1)`` or
    ``(1, C)`` against the student's, and ``batchmean`` divides one row's ``(C,)`` by ``C``: a number, no error.
    Refuse too logits that are not float tensors, and a batch of no rows (a loss of nan); shapes and dtypes only,
    so no check makes a GPU wait."""
    for whose, logits in (("student", student_logits), ("teacher", teacher_logits)):
        if not torch.is_tensor(logits):
            _float_logits(logits, what, whose)
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"{what}: student logits {tuple(student_logits.shape)}, teacher logits "
                         f"{tuple(teacher_logits.shape)}; give both as (rows, classes), the teacher's for the same "
                         "rows and classes (one row: logits[None]; per-token logits: token_kl)")
    _float_logits(student_logits, what, "student")
    _float_logits(teacher_logits, what, "teacher")
    _check_rows_present(student_logits, what)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * H(p_t^T, q_s^T) = -T^2 * mean_b sum_c p_t^T log q_s^T``.

    It differs from :func:`kl_divergence` by ``T^2 * H(p_t^T)``, the teacher's
    entropy, which does not depend on the student: the gradients are identical,
    the logged values are not (this one is never below the teacher's entropy).
    """
    T = check_temperature(temperature)
    _check_logits(student_logits, teacher_logits, "soft_cross_entropy")
    log_q = F.log_softmax(_full(student_logits) / T, dim=-1)
    p = F.softmax(_full(teacher_logits.detach()) / T, dim=-1)
    return -(p * log_q).sum(dim=-1).mean() * T * T


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``mean over b, c of (z_s - z_t)^2``: equals ``F.mse_loss(z_s, z_t)`` (mean reduction).

    The high-temperature limit of distillation: for zero-mean logits and ``C``
    classes, ``T^2 * KL -> (1 / 2C) * sum_c (z_s - z_t)^2``, so averaged over the
    batch ``T^2 * KL -> 0.5 * logit_mse`` as ``T -> inf`` (Hinton et al. 2015,
    section 2.1; Tang et al. 2019 train on this loss directly).
    """
    _check_logits(student_logits, teacher_logits, "logit_mse")
    return F.mse_loss(_full(student_logits), _full(teacher_logits.detach()), reduction="mean")


def hard_cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(1/B) * sum over labelled rows b of CE(y_b, softmax(z_s,b))`` at ``T = 1``.

    One normalisation everywhere: every review in a batch of ``B`` weighs ``1/B``,
    and an unlabelled review (``y = -1``; any negative label, transformers' -100 too) adds 0. So a labelled review weighs the
    same whatever the mix of labelled and transfer reviews in its batch, and on a
    fully labelled batch this is the ordinary mean cross-entropy.
    """
    _float_logits(student_logits, "hard_cross_entropy", "student")
    _check_labels(student_logits, labels)
    labelled = labels >= 0
    try:
        per_row = F.cross_entropy(_full(student_logits), labels.clamp_min(0), reduction="none")
    except IndexError:  # "Target 2 is out of bounds", on the CPU; read the labels only then, never on the way
        classes = student_logits.shape[1]
        raise ValueError(f"labels: class id {int(labels.max())} for the student's logits of {classes} classes; give "
                         f"ids from 0 to {classes - 1} (-1: unlabelled), or a student of more classes") from None
    return (per_row * labelled).sum() / max(1, labels.numel())


def _check_labels(student_logits: torch.Tensor, labels) -> None:
    """Refuse labels that are not one ``torch.long`` class id per row of ``(B, C)`` logits, and a batch of no rows
    (shape and dtype only: reading the values would make a GPU wait at every step; a class id ``>= C`` is caught
    where torch refuses it, on the CPU, and the training loop checks every label once before its first step:
    :func:`kd_tutorial.models.check_rows`)."""
    if student_logits.dim() == 2 and torch.is_tensor(labels) and labels.dtype == torch.long \
            and labels.shape == student_logits.shape[:1]:
        _check_rows_present(student_logits, "hard_cross_entropy")
        return
    got = (f"a {labels.dtype} tensor of shape {tuple(labels.shape)}" if torch.is_tensor(labels)
           else f"a {type(labels).__name__}")
    raise ValueError(f"labels: give a torch.long tensor of shape ({len(student_logits)},), one class id per row of the "
                     f"student's logits {tuple(student_logits.shape)} (-1: unlabelled), e.g. "
                     f"torch.tensor(labels, dtype=torch.long); got {got}")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor | None, temperature: float = 2.0,
                      alpha: float = 0.5) -> torch.Tensor:
    """Hinton, Vinyals & Dean (2015)::

        L = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))    (batch mean)
          + (1 - alpha) * CE(y, softmax(z_s))                          (labelled rows)

    Rows labelled ``-1`` (unlabelled transfer reviews) contribute only to the
    soft term; both terms are means over all ``B`` rows (see
    :func:`hard_cross_entropy`). ``labels=None`` means no row is labelled. With
    ``alpha=1`` the hard term is skipped entirely.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    soft = kl_divergence(student_logits, teacher_logits, temperature)
    if labels is None or alpha == 1.0:
        return alpha * soft
    return alpha * soft + (1.0 - alpha) * hard_cross_entropy(student_logits, labels)


# --------------------------------------------------------------------------- intermediate layers

def _real_tokens(attention_mask: torch.Tensor) -> torch.Tensor:
    """The mask as floats of shape (B, L): 1 for real tokens, 0 for padding."""
    return attention_mask.to(torch.float32)


_STATES = "(batch, length, width)"
_PROJECT = "project the student's states to the teacher's width first (models.DistillationStudent)"


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor, what: str, dims: int = 3,
                      layout: str = _STATES, rows: tuple = (0, 1), fix: str = _PROJECT) -> None:
    """The same shape, or a one-line refusal naming what differs: the number of dimensions (both must have ``dims``,
    as ``layout`` says), the sequences (the ``rows`` dimensions: batch and positions), or else the rest, with ``fix`` (a
    projection, for states of other widths)."""
    shapes = f"{what}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)}"
    if student.dim() != dims or teacher.dim() != dims:
        raise ValueError(f"{shapes}: give both as {layout}")
    if student.shape == teacher.shape:
        return
    if any(student.shape[d] != teacher.shape[d] for d in rows):
        raise ValueError(f"{shapes} hold different sequences; compute both on the same batch")
    raise ValueError(f"{shapes} differ; {fix}")


def _check_mask(mask: torch.Tensor, batch: int, length: int, what: str) -> None:
    """A mask must be (B, L), one row per sequence: a (1, L) mask broadcast over the batch would count one row's
    padding for every row, and divide by the wrong number of tokens, with no error."""
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"{what}: the mask is {tuple(mask.shape)} for a batch of {batch} sequences of {length} "
                         f"tokens; pass one mask row per sequence, of shape ({batch}, {length})")


def _check_rows(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    """Student and teacher must hold the same sequences: the same batch and length (their widths may differ)."""
    if student.shape[:2] != teacher.shape[:2]:
        raise ValueError(f"{what}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} hold different "
                         "sequences (batch, length); compute both on the same batch")


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
               attention_mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT's hidden-state loss: ``sum_{b,i} m_bi * ||h_s,bi - h_t,bi||^2 / (sum_{b,i} m_bi * H)``.

    States are ``(B, L, H)``: the squared error averaged over real (unpadded)
    tokens and hidden units. When the widths differ, pass the student's states
    through its learned projection first (the projection belongs to the student).
    """
    _check_same_shape(student_hidden, teacher_hidden, "hidden_mse")
    _check_mask(attention_mask, *student_hidden.shape[:2], "hidden_mse")
    m = _real_tokens(attention_mask)
    sq = (_full(student_hidden) - _full(teacher_hidden.detach())).pow(2).sum(-1)
    return torch.where(m > 0, sq, 0.0).sum() / (m.sum() * student_hidden.shape[-1]).clamp_min(1)


def hidden_cosine(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                  attention_mask: torch.Tensor) -> torch.Tensor:
    """DistilBERT's cosine loss: ``sum_{b,i} m_bi * (1 - cos(h_s,bi, h_t,bi)) / sum_{b,i} m_bi``.

    The mean over real tokens of one minus the cosine similarity; it aligns the
    directions of the states and ignores their lengths.
    """
    _check_same_shape(student_hidden, teacher_hidden, "hidden_cosine")
    _check_mask(attention_mask, *student_hidden.shape[:2], "hidden_cosine")
    m = _real_tokens(attention_mask)
    cos = F.cosine_similarity(_full(student_hidden), _full(teacher_hidden.detach()), dim=-1, eps=1e-8)
    return torch.where(m > 0, 1 - cos, 0.0).sum() / m.sum().clamp_min(1)


def cls_mse(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """Patient KD's intermediate [CLS] loss: ``mean_b || h_s/||h_s|| - h_t/||h_t|| ||^2``.

    ``(B, H)`` [CLS] states of one mapped layer, each normalised to unit length
    (Sun et al. 2019). [CLS] is never padding, so no mask is needed.
    """
    # (B, L, H) states would average every token, padding included
    _check_same_shape(student_cls, teacher_cls, "cls_mse", 2, "(batch, width), each row's [CLS] state (hidden[:, 0] "
                      "of (batch, length, width) states)", rows=(0,))
    s = F.normalize(_full(student_cls), dim=-1)
    t = F.normalize(_full(teacher_cls.detach()), dim=-1)
    return (s - t).pow(2).sum(-1).mean()


def _masked_row_kl(log_p: torch.Tensor, log_q: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` of (B, heads, L, L) rows over real keys, averaged over heads and real queries."""
    m = _real_tokens(attention_mask)
    keys = m[:, None, None, :]
    p = log_p.exp() * keys
    kl_rows = (p * (log_p - log_q)).masked_fill(keys == 0, 0.0).sum(-1)  # (B, heads, L)
    queries = m[:, None, :].expand_as(kl_rows)
    return torch.where(queries > 0, kl_rows, 0.0).sum() / queries.sum().clamp_min(1)


def attention_kl(student_attn: torch.Tensor, teacher_attn: torch.Tensor, attention_mask: torch.Tensor,
                 eps: float = 1e-12) -> torch.Tensor:
    """MiniLM's attention transfer: ``KL(A_t[b,h,i,:] || A_s[b,h,i,:])`` over real keys ``j``.

    Averaged over heads and real query positions ``i``::

        sum_{b,h,i} m_bi * sum_j m_bj * A_t log(A_t / A_s)  /  (heads * sum_{b,i} m_bi)

    Inputs are attention *probabilities* ``(B, heads, L, L)`` with the same
    number of heads (``attn_implementation="eager"`` returns them). ``eps``
    keeps ``log A_s`` finite where a probability underflowed to 0.
    """
    _check_same_shape(student_attn, teacher_attn, "attention_kl", 4, "(batch, heads, length, length)", rows=(0, 2, 3),
                      fix="attention maps are compared head by head: give the student the teacher's number of "
                          "heads, or compare values with value_relation_kl, which takes any heads")
    _check_mask(attention_mask, student_attn.shape[0], student_attn.shape[-1], "attention_kl")
    log_p = _full(teacher_attn.detach()).clamp_min(eps).log()
    log_q = _full(student_attn).clamp_min(eps).log()
    return _masked_row_kl(log_p, log_q, attention_mask)


@contextlib.contextmanager
def _fp32(device: torch.device):
    """A region of full fp32 on ``device``: autocast off (none where torch has no autocast for it at all: torch
    before 2.5 refuses even a disabled one on Apple's MPS), and fp32 matmuls without TF32, which the training loop
    turns on from CUDA capability 8.0 and which keeps 10 bits of mantissa (the flag is global; it is put back)."""
    try:
        no_autocast = torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # "User specified an unsupported autocast device_type 'mps'"
        no_autocast = contextlib.nullcontext()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with no_autocast:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _count(value, what: str, also: str) -> int:
    """``value`` as an int (NumPy's and a 0-d tensor's whole numbers too), or a one-line refusal below 1."""
    try:
        count = operator.index(value) if not isinstance(value, bool) else 0
    except TypeError:
        count = 0
    if count < 1:
        raise ValueError(f"{what}={value!r}: give a whole number >= 1 that {also}")
    return count


def _relation_log_probs(values: torch.Tensor, attention_mask: torch.Tensor, heads: int) -> torch.Tensor:
    """``log softmax(V_r V_r^T / sqrt(d_r))`` per relation head ``r``, padded keys masked: (B, heads, L, L)."""
    b, length, width = values.shape
    if width % heads:
        raise ValueError(f"value_relation_kl: width {width} is not divisible by relation_heads={heads}")
    v = _full(values).view(b, length, heads, width // heads).transpose(1, 2)  # (B, heads, L, d_r)
    with _fp32(values.device):  # a KL of near-equal rows needs fp32
        scores = v @ v.transpose(-1, -2) / math.sqrt(width // heads)
    keys = attention_mask[:, None, None, :].bool()
    return scores.masked_fill(~keys, float("-inf")).log_softmax(-1).masked_fill(~keys, 0.0)


def value_relation_kl(student_values: torch.Tensor, teacher_values: torch.Tensor, attention_mask: torch.Tensor,
                      relation_heads: int) -> torch.Tensor:
    """MiniLM's value-relation transfer, with MiniLMv2's relation heads.

    Split the values ``V`` (B, L, width) into ``R = relation_heads`` chunks and
    compare ``VR = softmax(V_r V_r^T / sqrt(d_r))`` (B, R, L, L) row by row::

        KL(VR_t[b,r,i,:] || VR_s[b,r,i,:]) over real keys, averaged over R and real queries i

    Student and teacher may differ in width and in attention heads: only ``R``
    must divide both widths, so a 128-wide student learns from a 384-wide teacher.
    """
    _check_rows(student_values, teacher_values, "value_relation_kl")
    _check_mask(attention_mask, *student_values.shape[:2], "value_relation_kl")
    relation_heads = _count(relation_heads, "value_relation_kl: relation_heads", "divides both widths")
    log_p = _relation_log_probs(teacher_values.detach(), attention_mask, relation_heads)
    log_q = _relation_log_probs(student_values, attention_mask, relation_heads)
    return _masked_row_kl(log_p, log_q, attention_mask)


# ----------------------------------------------------------------------------- generative language models
# A language model predicts a distribution over the vocabulary at every position: logits (B, L, V), where the
# row at position t is the prediction of token t + 1 (kd_tutorial.lm.next_token shifts them). ``loss_mask``
# (B, L) is 1 for the target tokens that count: not padding, and not the prompt when the model is only
# taught to continue it. Every loss below is a mean over those tokens, so every counted token of the batch
# weighs the same and a long review weighs by its length.

def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``sum_v p_v (log p_v - log q_v)`` over the last axis, with ``0 log 0 = 0``: a token the teacher rules out
    (logit -inf) adds nothing, where the plain product gave ``0 * -inf = nan``."""
    return torch.where(log_p > float("-inf"), log_p.exp() * (log_p - log_q), 0.0).sum(-1)


def _check_token_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, loss_mask: torch.Tensor,
                        what: str) -> None:
    """Refuse logits that are not both (B, L, V) float tensors of one shape (a (1, L, V) teacher broadcasts over the
    batch, with no error), and a mask that is not (B, L)."""
    _float_logits(student_logits, what, "student")
    _float_logits(teacher_logits, what, "teacher")
    if student_logits.dim() != 3 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"{what}: student logits {tuple(student_logits.shape)}, teacher logits "
                         f"{tuple(teacher_logits.shape)}; give both as (batch, length, vocabulary), for the same "
                         "sequences and the same vocabulary")
    _check_mask(loss_mask, *student_logits.shape[:2], what)


def _check_topk(student_logits: torch.Tensor, topk_logits: torch.Tensor, topk_ids: torch.Tensor,
                loss_mask: torch.Tensor, what: str) -> None:
    """A top-k cache for the student's sequences: its logits and ids of one shape (B, L, k), and a (B, L) mask."""
    _check_rows(student_logits, topk_logits, what)
    if topk_ids.shape != topk_logits.shape:
        raise ValueError(f"{what}: the teacher's top-k ids {tuple(topk_ids.shape)} and logits "
                         f"{tuple(topk_logits.shape)} differ; give both from one topk() of the teacher's logits")
    _check_mask(loss_mask, *student_logits.shape[:2], what)


def _token_mean(per_token: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """``sum_{b,t} m_bt x_bt / sum_{b,t} m_bt`` (0 when no token counts)."""
    m = _real_tokens(loss_mask)
    return torch.where(m > 0, per_token, 0.0).sum() / m.sum().clamp_min(1.0)  # a masked nan or inf stays out


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Training on the data alone: ``-sum_{b,t} m_bt log q(y_bt) / sum_{b,t} m_bt``.

    ``logits`` (B, L, V), ``targets`` (B, L) token ids; exp of this value is the perplexity.
    """
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"token_cross_entropy: targets {tuple(targets.shape)} for logits {tuple(logits.shape)}; "
                         f"give one target id per position, of shape {tuple(logits.shape[:2])}")
    _check_mask(loss_mask, *logits.shape[:2], "token_cross_entropy")
    log_q = F.log_softmax(_full(logits), dim=-1)
    nll = -log_q.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return _token_mean(nll, loss_mask * (targets >= 0))  # a target of -100 (Hugging Face's "ignore") never counts


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, loss_mask: torch.Tensor,
             temperature: float = 1.0) -> torch.Tensor:
    """Forward KL per token: ``T^2 * sum_{b,t} m_bt KL(p_t,bt^T || q_s,bt^T) / sum_{b,t} m_bt``.

    ``KL(p || q) = sum_v p_v (log p_v - log q_v)`` over the vocabulary. Mean-seeking: the student is
    punished wherever the teacher puts mass and it puts none, so it spreads over all the teacher's modes.
    """
    _check_token_logits(student_logits, teacher_logits, loss_mask, "token_kl")
    T = check_temperature(temperature)
    log_q = F.log_softmax(_full(student_logits) / T, dim=-1)
    log_p = F.log_softmax(_full(teacher_logits.detach()) / T, dim=-1)
    return _token_mean(_kl_rows(log_p, log_q), loss_mask) * T * T


def reverse_token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, loss_mask: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
    """Reverse KL per token: ``T^2 * sum_{b,t} m_bt KL(q_s,bt^T || p_t,bt^T) / sum_{b,t} m_bt``.

    ``KL(q || p) = sum_v q_v (log q_v - log p_v)``: the student's own distribution weighs the terms.
    Mode-seeking: putting mass where the teacher has little is what costs, so the student may drop a
    mode of the teacher altogether (MiniLLM, GKD). The gradient flows through both ``q`` and ``log q``. A token
    both models rule out (logit -inf on both sides) adds nothing: ``0 log 0 = 0``.
    """
    _check_token_logits(student_logits, teacher_logits, loss_mask, "reverse_token_kl")
    T = check_temperature(temperature)
    log_q = F.log_softmax(_full(student_logits) / T, dim=-1)
    log_p = F.log_softmax(_full(teacher_logits.detach()) / T, dim=-1)
    gap = torch.where(log_q > float("-inf"), log_q - log_p, 0.0)  # -inf - (-inf) would be nan, and its gradient too
    return _token_mean((log_q.exp() * gap).sum(-1), loss_mask) * T * T


def topk_token_kl(student_logits: torch.Tensor, teacher_topk_logits: torch.Tensor, teacher_topk_ids: torch.Tensor,
                  loss_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Forward KL against a teacher cached as its ``k`` most likely next tokens per position.

    With ``S`` the cached ids (B, L, k) and ``p~ = softmax(z_t[S] / T)`` renormalised over them::

        T^2 * sum_{b,t} m_bt sum_{v in S} p~_v (log p~_v - log q_s,v^T) / sum_{b,t} m_bt

    where ``q_s^T`` is the student's full softmax over the vocabulary, not renormalised over ``S``. Equals
    :func:`token_kl` when ``k = V``, and the cache shrinks from V to 2k numbers per token. For ``k < V`` the
    per-token term is ``KL(p~ || q~) - log sum_{v in S} q_s,v^T`` (``q~`` the student renormalised over ``S``):
    it is smallest when the student puts all its mass on ``S``. Minimising it teaches the student that every
    token outside the teacher's top k is impossible, however much mass the teacher gave them together: an
    over-confident student, with all its mass where the teacher put only part of its own. The way out is to cache
    the teacher's mass outside its top k as well and add a "rest" bucket
    (:func:`topk_rest_token_kl`).
    """
    _check_topk(student_logits, teacher_topk_logits, teacher_topk_ids, loss_mask, "topk_token_kl")
    T = check_temperature(temperature)
    log_q = F.log_softmax(_full(student_logits) / T, dim=-1).gather(-1, teacher_topk_ids)
    log_p = F.log_softmax(_full(teacher_topk_logits.detach()) / T, dim=-1)
    return _token_mean(_kl_rows(log_p, log_q), loss_mask) * T * T


def topk_rest_token_kl(student_logits: torch.Tensor, teacher_topk_logits: torch.Tensor,
                       teacher_topk_ids: torch.Tensor, teacher_log_rest: torch.Tensor,
                       loss_mask: torch.Tensor) -> torch.Tensor:
    """Forward KL against a top-k cache plus a "rest" bucket: the teacher's mass outside its top k (temperature 1).

    With ``S`` the cached ids, ``p_rest`` the teacher's probability outside ``S`` (``exp(teacher_log_rest)``),
    ``p_v = (1 - p_rest) softmax(z_t[S])_v`` the teacher's own probabilities on ``S``, ``q`` the student's
    full softmax and ``q_rest = 1 - sum_{v in S} q_v``::

        sum_{b,t} m_bt [sum_{v in S} p_v (log p_v - log q_v) + p_rest (log p_rest - log q_rest)] / sum_{b,t} m_bt

    The exact KL between the two distributions coarsened to k + 1 outcomes (the top k, everything else): the
    student keeps the teacher's mass outside the top k instead of being taught that those tokens are impossible.
    """
    _check_topk(student_logits, teacher_topk_logits, teacher_topk_ids, loss_mask, "topk_rest_token_kl")
    if teacher_log_rest.shape != loss_mask.shape:
        raise ValueError(f"topk_rest_token_kl: teacher_log_rest is {tuple(teacher_log_rest.shape)}; give one log "
                         f"mass per token, of shape {tuple(loss_mask.shape)} (batch, length)")
    log_q = F.log_softmax(_full(student_logits), dim=-1)
    outside = log_q.scatter(-1, teacher_topk_ids, torch.finfo(log_q.dtype).min)  # finite: no nan gradient if k = V
    log_q_buckets = torch.cat([log_q.gather(-1, teacher_topk_ids), outside.logsumexp(-1, keepdim=True)], -1)
    log_rest = _full(teacher_log_rest).clamp(max=0.0)[..., None]
    log_p_top = F.log_softmax(_full(teacher_topk_logits), dim=-1) + log1mexp(log_rest)
    # both are normalised log-probabilities over the k + 1 buckets, which log_softmax leaves as they are:
    # token_kl on them is the KL above, with its masking and 0 log 0 = 0 for an empty rest
    return token_kl(log_q_buckets, torch.cat([log_p_top, log_rest], -1), loss_mask)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends (Maechler 2012): ``log(-expm1(x))`` near 0,
    ``log1p(-exp(x))`` below -log 2; -inf at 0."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
