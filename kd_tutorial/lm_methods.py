"""The ways of distilling a language model that notebook 09 compares, each a loss for :func:`kd_tutorial.lm.train_lm`.

A method is a function ``loss(student, batch_rows) -> scalar tensor``, where ``batch_rows`` is a list of
token rows (``<bos>`` ... ``<eos>``):

* :func:`data_only` - the student alone on the data: next-token cross-entropy (the baseline).
* :func:`token_kd` - word-level KD on the data: ``alpha * T^2 KL(teacher || student) + (1 - alpha) * CE``
  at every position; ``reverse=True`` uses ``KL(student || teacher)``. The teacher's logits come from
  :func:`online` (run alongside) or :func:`cached` (:func:`cache_logits`, computed once).
* :func:`topk_kd` - the same forward KL against a cache of only the teacher's top k tokens per position
  (:func:`cache_logits` with ``top_k``): what a 50k-entry vocabulary forces. The plain top-k KL teaches the
  student that the other tokens are impossible (over-confidence); a cache with ``rest=True`` keeps the teacher's
  mass outside its top k as one more number per position, and the loss is then :func:`kd_tutorial.losses.topk_rest_token_kl`.
* :func:`sequence_kd_rows` - sequence-level KD (Kim & Rush 2016, who took the teacher's beam-search output; here
  sampled at T = 1, where TRL's ``seq_kd`` samples at ``GKDConfig.temperature``, 0.9 by default): the teacher
  writes reviews from the student's prompts, and the student trains on them with :func:`data_only` (prompt
  masked).
* :func:`on_policy_kd` - on-policy distillation (GKD, MiniLLM): the student writes continuations, the
  teacher scores every position of them, and the student moves towards the teacher's distribution
  there, where its own mistakes lead it.

Teacher and student must read the same token ids (one tokenizer). The methods that read the teacher's logits
refuse logits, or cached top-k ids, that do not fit the student's vocabulary, and :func:`on_policy_kd` checks the
two models with :func:`kd_tutorial.models.check_same_vocab` before the student writes. Two tokenizers of one size that number the
tokens differently show only in the tokenizers: compare them with ``check_same_vocab(teacher, student,
teacher_tokenizer=..., student_tokenizer=...)`` before distilling.
"""
from __future__ import annotations

import torch

from . import losses
from .lm import collate, fitting_rows, logits_of, next_token, sample
from .models import VocabularyMismatchError, check_same_vocab

topk_rest_token_kl = losses.topk_rest_token_kl  # moved to losses; older copies of notebook 09 call it here


def data_only(device: str = "cpu", prompt_tokens: int = 1):
    """Next-token cross-entropy on the rows (from ``prompt_tokens`` on; 1 = everything after ``<bos>``)."""
    def loss(student, rows):
        batch = collate(rows, prompt_tokens)
        z, y, m = next_token(logits_of(student, batch, device), batch)
        return losses.token_cross_entropy(z, y, m.to(z.device))
    return loss


def online(teacher, device: str = "cpu"):
    """The teacher's side of a batch, computed now: ``side(rows) -> logits (B, L - 1, V)`` under no_grad, with the
    teacher in eval mode (no dropout: its targets are not noise)."""
    @torch.no_grad()
    def side(rows):
        teacher.eval()  # at every batch: a teacher put back in train mode between batches is caught too
        batch = collate(rows)
        return next_token(logits_of(teacher, batch, device), batch)[0]
    return side


@torch.no_grad()
def cache_logits(teacher, rows: list[list[int]], top_k: int | None = None, batch_size: int | None = None,
                 device: str = "cpu", rest: bool = False) -> dict:
    """The teacher's next-token logits at every position of every row, computed once, kept on the CPU.

    Keyed by the row (as a tuple): ``logits (len - 1, V)``, or with ``top_k`` only the k largest,
    ``(logits (len - 1, k), ids (len - 1, k))``: 2k numbers per token instead of the vocabulary's V (50,257
    for GPT-2: a review of 256 tokens would need 51 MB in fp32, against 98 kB for k = 32, its ids being int64).
    With ``top_k`` and ``rest=True`` a third tensor ``log_rest (len - 1,)`` holds the log of the teacher's
    probability outside its top k (at temperature 1), for :func:`kd_tutorial.losses.topk_rest_token_kl`. The top k are chosen on
    ``device``: only they travel to the CPU. ``batch_size`` None: as many rows as :func:`~kd_tutorial.lm.fitting_rows`
    allows.
    """
    if rest and not top_k:
        raise ValueError("rest=True caches the teacher's mass outside its top k: give top_k too")
    cache, batch_size = {}, fitting_rows(teacher, rows, batch_size)
    for start in range(0, len(rows), batch_size):
        part = rows[start: start + batch_size]
        z = online(teacher, device)(part).float()
        if top_k:
            values, ids = z.topk(top_k, dim=-1)
            kept = (values, ids, _log_outside(z, ids)) if rest else (values, ids)
            z = tuple(t.cpu() for t in kept)
        else:
            z = (z.cpu(),)
        for b, row in enumerate(part):
            kept = tuple(t[b, : len(row) - 1] for t in z)
            cache[tuple(row)] = kept if top_k else kept[0]
    return cache


def _log_outside(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``log sum_{v not in ids} softmax(logits)_v`` per position, from the full logits (-inf when ``ids`` covers
    the vocabulary). Where the rest holds most of the mass it is ``log(1 - P(ids))``, from the top mass: summed
    directly, a nearly flat vocabulary of 250k tokens rounds it to 0 or above in float32; where the top holds
    most, it is summed directly, which keeps a small rest exact."""
    logits = logits.float()
    total = logits.logsumexp(-1)
    log_top = (logits.gather(-1, ids).logsumexp(-1) - total).clamp(max=0.0)
    direct = (logits.scatter(-1, ids, float("-inf")).logsumexp(-1) - total).clamp(max=0.0)
    return torch.where(log_top > -0.6931471805599453, direct, losses.log1mexp(log_top))


def cached(cache: dict):
    """The teacher's side of a batch from :func:`cache_logits` (full logits), padded to the batch's width."""
    def side(rows):
        width = max(len(r) for r in rows) - 1
        out = torch.zeros(len(rows), width, next(iter(cache.values())).shape[-1])
        for b, row in enumerate(rows):
            z = cache[tuple(row)]
            out[b, : len(z)] = z
        return out
    return side


def token_kd(teacher_side, *, alpha: float = 0.5, temperature: float = 1.0, reverse: bool = False,
             device: str = "cpu"):
    """Word-level KD on the data: ``alpha * (forward or reverse) token KL + (1 - alpha) * cross-entropy``.

    ``teacher_side`` gives the teacher's logits for a batch: :func:`online` or :func:`cached`.
    """
    divergence = losses.reverse_token_kl if reverse else losses.token_kl

    def loss(student, rows):
        batch = collate(rows)
        z, y, m = next_token(logits_of(student, batch, device), batch)
        zt, m = teacher_side(rows).to(z.device), m.to(z.device)
        _same_vocab(z.shape[-1], zt.shape[-1])
        return alpha * divergence(z, zt, m, temperature) + (1 - alpha) * losses.token_cross_entropy(z, y, m)
    return loss


def _same_vocab(student_size: int, teacher_size: int) -> None:
    """Refuse teacher logits over a vocabulary of another size than the student's: not one tokenizer's ids."""
    if student_size != teacher_size:
        raise VocabularyMismatchError(
            f"the teacher's logits cover {teacher_size} tokens, the student's {student_size}: distil between models "
            "of one tokenizer (check them with kd_tutorial.models.check_same_vocab)")


def topk_kd(cache: dict, *, alpha: float = 0.5, temperature: float = 1.0, device: str = "cpu"):
    """:func:`token_kd` (forward) against a top-k cache (:func:`cache_logits` with ``top_k``).

    A plain top-k cache gives :func:`kd_tutorial.losses.topk_token_kl`, which drives the student's mass outside
    the teacher's top k to zero; a cache with ``rest=True`` gives :func:`kd_tutorial.losses.topk_rest_token_kl` (temperature 1 only:
    the cached rest mass is the teacher's at temperature 1).
    """
    first = next(iter(cache.values()))
    if not isinstance(first, tuple):
        raise ValueError("topk_kd reads a top-k cache: build it with cache_logits(..., top_k=k), or use "
                         "token_kd(cached(cache)) for full logits")
    rest = len(first) == 3
    if rest and float(temperature) != 1.0:
        raise ValueError(f"temperature={temperature}: the cache's rest mass is the teacher's at temperature 1; "
                         "give temperature=1.0, or a cache without rest=True")

    def loss(student, rows):
        batch = collate(rows)
        z, y, m = next_token(logits_of(student, batch, device), batch)
        cached_side = _padded_topk(cache, rows, z.shape[1])
        if int(cached_side[1].max()) >= z.shape[-1]:
            raise VocabularyMismatchError(
                f"the cached teacher ids reach {int(cached_side[1].max())}, the student's vocabulary has {z.shape[-1]} "
                "tokens: distil between models of one tokenizer (check them with kd_tutorial.models.check_same_vocab)")
        cached_side = [t.to(z.device) for t in cached_side]
        m = m.to(z.device)
        kl = losses.topk_rest_token_kl(z, *cached_side, m) if rest else losses.topk_token_kl(z, *cached_side, m, temperature)
        return alpha * kl + (1 - alpha) * losses.token_cross_entropy(z, y, m)
    return loss


def _padded_topk(cache: dict, rows: list[list[int]], width: int) -> tuple[torch.Tensor, ...]:
    """The cached top-k logits and ids of ``rows`` (and the rest's log-mass, if cached), padded to ``width``
    positions (padding is masked out)."""
    first = next(iter(cache.values()))
    k = first[0].shape[-1]
    out = [torch.zeros(len(rows), width, k), torch.zeros(len(rows), width, k, dtype=torch.long)]
    if len(first) == 3:
        out.append(torch.zeros(len(rows), width))
    for b, row in enumerate(rows):
        for padded, cached_part in zip(out, cache[tuple(row)]):
            padded[b, : len(cached_part)] = cached_part
    return tuple(out)


def prompts_of(rows: list[list[int]], prompt_tokens: int) -> list[list[int]]:
    """The first ``prompt_tokens`` tokens of every row long enough to have a continuation."""
    return [row[:prompt_tokens] for row in rows if len(row) > prompt_tokens]


def sequence_kd_rows(teacher, rows: list[list[int]], *, prompt_tokens: int, max_length: int, copies: int = 1,
                     seed: int = 0, batch_size: int = 256, device: str = "cpu") -> list[list[int]]:
    """Sequence-level KD's training set: ``copies`` teacher continuations of each row's prompt, sampled at T = 1."""
    generator = torch.Generator().manual_seed(seed)
    prompts = prompts_of(rows, prompt_tokens) * copies
    out = []
    for start in range(0, len(prompts), batch_size):
        out += sample(teacher, prompts[start: start + batch_size], max_length=max_length, generator=generator,
                      device=device)
    return out


def on_policy_kd(teacher, prompts: list[list[int]], data_side, *, max_length: int, mix: float = 0.5,
                 refresh_every: int = 25, pool_size: int = 256, reverse: bool = False, seed: int = 0,
                 device: str = "cpu", max_cache_gb: float = 4.0):
    """On-policy distillation: a token KL on the student's own continuations, mixed with the same KL on the data.

    Every ``refresh_every`` steps the student writes ``pool_size`` continuations of ``prompts`` (all of one
    length, e.g. :func:`prompts_of` the data) and the teacher scores every position of them once. GKD
    samples at every step; here a sample is at most ``refresh_every`` steps old, which costs a forward
    pass per written token 1 / ``refresh_every`` as often. Each step's loss is ``mix * KL on a batch of
    the pool`` (prompt masked out) ``+ (1 - mix) * KL on the data batch`` (``data_side``: the teacher on
    the data, :func:`online` or :func:`cached`). The pool's teacher logits are cached while they fit in
    ``max_cache_gb`` (fp32); above that (GPT-2's 50,257-token vocabulary: 6.6 GB for 128 rows of 256 tokens) the
    teacher scores each batch drawn from the pool instead.
    """
    divergence = losses.reverse_token_kl if reverse else losses.token_kl
    generator, state = torch.Generator().manual_seed(seed), {"step": 0}
    pool_gb = pool_size * max_length * teacher.config.vocab_size * 4 / 1e9
    score = (lambda pool: cached(cache_logits(teacher, pool, device=device))) if pool_gb < max_cache_gb else \
        (lambda pool: online(teacher, device))

    def kl(student, rows, prompt, side):
        batch = collate(rows, prompt)
        z, _, m = next_token(logits_of(student, batch, device), batch)
        zt = side(rows).to(z.device)
        _same_vocab(z.shape[-1], zt.shape[-1])
        return divergence(z, zt, m.to(z.device))

    def loss(student, rows):
        if state["step"] % refresh_every == 0:
            check_same_vocab(teacher, student)  # before the teacher reads ids the student wrote
            picks = torch.randint(len(prompts), (pool_size,), generator=generator).tolist()
            state["pool"] = sample(student, [prompts[i] for i in picks], max_length=max_length,
                                   generator=generator, device=device)
            state["side"] = score(state["pool"])
        state["step"] += 1
        pool = state["pool"]
        mine = [pool[i] for i in torch.randint(len(pool), (len(rows),), generator=generator).tolist()]
        return mix * kl(student, mine, len(prompts[0]), state["side"]) + (1 - mix) * kl(student, rows, 1, data_side)
    return loss
