"""Distilling a generative language model (notebook 09): data, GPT-style models, one training loop, metrics.

The bridge from BERT: a classifier makes one prediction per review, a language model one per token, so
the soft targets become one teacher distribution per position over the whole vocabulary.

* :class:`WordTokenizer` - a word-level vocabulary of the built-in review corpus, built the same way in
  every process (sorted by count, then alphabetically).
* :class:`LMProfile` and :data:`LM_PROFILES` - ``tiny`` (a GPT trained from scratch on the built-in
  reviews, CPU, seconds) and ``full`` (GPT-2 fine-tuned on IMDB reviews, distilled into a
  distilGPT-2-sized student whose layers are every other layer of the teacher; needs the Hub and a GPU).
* :func:`load_texts`, :func:`tokenizer_for`, :func:`encode_texts`, :func:`collate`, :func:`batches` - padded batches
  with an attention mask and a **loss mask** (1 for target tokens that count: no padding, no prompt).
* :func:`next_token` - position t predicts token t + 1: shift logits, targets and mask together.
* :func:`teacher_model`, :func:`student_model` - GPT-2 models (transformers) for a profile.
* :func:`train_lm` - one loop for every method; a method is a function ``loss(student, batch)``.
* :func:`sample` - the model writes continuations of prompts (sequence-level and on-policy KD).
* :func:`perplexity`, :func:`perplexity_ratio` (with a paired bootstrap interval), :func:`agreement`,
  :func:`mean_entropy` - the held-out metrics of the method comparison.

The losses themselves are in :mod:`kd_tutorial.losses` (:func:`~kd_tutorial.losses.token_kl`,
:func:`~kd_tutorial.losses.reverse_token_kl`, :func:`~kd_tutorial.losses.topk_token_kl`); the methods
that combine them are in :mod:`kd_tutorial.lm_methods`. transformers is imported inside the functions
that build models, so importing this module stays light.
"""
from __future__ import annotations

import inspect
import math
import os
import re
from collections import Counter
from dataclasses import dataclass

import torch

from .corpus import generate_corpus
from .errors import model_source_error

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


# ----------------------------------------------------------------------------- profiles

@dataclass(frozen=True)
class LMProfile:
    """Sizes and budgets of one generative-LM setting (presets in :data:`LM_PROFILES`)."""

    name: str
    teacher: str | None  # a Hub name or path of a pretrained GPT-2, or None: train one from scratch
    teacher_layers: int
    teacher_width: int
    teacher_heads: int
    student_layers: int
    student_width: int
    student_heads: int
    max_length: int  # tokens per review, <bos> and <eos> included
    prompt_tokens: int  # the prompt of sequence-level and on-policy KD: <bos> and the review's first words
    teacher_steps: int
    student_steps: int
    batch_size: int
    lr: float
    student_reviews: int | None  # reviews the student trains on (the teacher sees them all); None: all
    top_k: int  # teacher distribution cached as its k most likely tokens


LM_PROFILES = {
    "tiny": LMProfile("tiny", teacher=None, teacher_layers=2, teacher_width=96, teacher_heads=4,
                      student_layers=1, student_width=48, student_heads=2, max_length=64, prompt_tokens=4,
                      teacher_steps=250, student_steps=200, batch_size=32, lr=3e-3, student_reviews=600,
                      top_k=8),
    "full": LMProfile("full", teacher="gpt2", teacher_layers=12, teacher_width=768, teacher_heads=12,
                      student_layers=6, student_width=768, student_heads=12, max_length=256, prompt_tokens=16,
                      teacher_steps=1000, student_steps=4000, batch_size=16, lr=5e-5, student_reviews=None,
                      top_k=32),
}


def profile_for(course_profile: str) -> LMProfile:
    """The generative-LM setting that goes with a course profile: ``full`` on a GPU, ``tiny`` everywhere else."""
    return LM_PROFILES["full" if course_profile == "full" else "tiny"]


def hub_models(course_profile: str) -> list[str]:
    """The Hub models notebook 09 loads with ``course_profile`` (``kd-tutorial prefetch`` and ``env`` list them)."""
    teacher = profile_for(course_profile).teacher
    return [teacher] if teacher else []


# ----------------------------------------------------------------------------- text and tokens

class WordTokenizer:
    """Lower-cased words and punctuation; ids 0-3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``."""

    def __init__(self, texts: list[str]):
        counts = Counter(w for t in texts for w in self.words(t))
        self.vocab = [PAD, BOS, EOS, UNK] + sorted(counts, key=lambda w: (-counts[w], w))
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad_token_id, self.bos_token_id, self.eos_token_id, self.unk_token_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    @staticmethod
    def words(text: str) -> list[str]:
        """``text`` split into lower-cased words and punctuation marks."""
        return _WORD.findall(text.lower())

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """``[<bos>, words..., <eos>]`` as ids (unknown words become ``<unk>``)."""
        return [BOS_ID] + [self.ids.get(w, UNK_ID) for w in self.words(text)] + [EOS_ID]

    def convert_ids_to_tokens(self, ids) -> list[str]:
        """The vocabulary entry of each id, special tokens included (as a Hugging Face tokenizer names them)."""
        return [self.vocab[int(i)] for i in ids]

    def decode(self, ids) -> str:
        """The words of ``ids``, special tokens dropped, up to the first ``<eos>``."""
        out = []
        for i in (int(x) for x in ids):
            if i == EOS_ID:
                break
            if i >= UNK_ID:
                out.append(self.vocab[i])
        return re.sub(r" ([.,!?;:])", r"\1", " ".join(out))


@dataclass
class LMData:
    """Token rows of the teacher's reviews, the student's reviews (a subset) and held-out reviews."""

    tokenizer: object
    teacher: list[list[int]]
    student: list[list[int]]
    held_out: list[list[int]]


def load_texts(profile: LMProfile, data_dir: str | None = None, seed: int = 0) -> dict[str, list[str]]:
    """Review texts: ``train`` (teacher and student) and ``held_out`` (never trained on, for perplexity).

    ``tiny``: the built-in corpus (offline). A profile with a pretrained teacher: IMDB (``data_dir``, else
    ``$KD_TUTORIAL_DATA_DIR``, else the Hub), its train and unsupervised reviews for training and 2,000 of its test
    reviews held out.
    """
    if profile.teacher is None:
        corpus = generate_corpus(seed=seed)
        return {"train": [r["text"] for r in corpus["train"] + corpus["unsupervised"]],
                "held_out": [r["text"] for r in corpus["test"]]}
    from .data import DATA_DIR_ENV, load_imdb
    # no choice is tuned here: the smallest validation split load_imdb accepts, so that nearly every labelled review
    # is text to learn from
    imdb = load_imdb(data_dir or os.environ.get(DATA_DIR_ENV) or "hub", n_test=2000, val_size=2, seed=seed,
                     prefetch_profile=profile.name)  # full: its prefetch fetches gpt2 and IMDB
    return {"train": imdb.train.texts + imdb.transfer.texts, "held_out": imdb.test.texts}


def tokenizer_for(profile: LMProfile, texts: dict[str, list[str]]):
    """:class:`WordTokenizer` of the training texts (``tiny``), else the pretrained teacher's own tokenizer."""
    if profile.teacher is None:
        return WordTokenizer(texts["train"])
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(profile.teacher)
    except OSError as err:  # offline and not cached, or no such name: one line, naming prefetch
        raise model_source_error(profile.teacher, "tokenizer", ", here --profile full") from err


def encode_texts(profile: LMProfile, texts: dict[str, list[str]], tokenizer=None) -> LMData:
    """Tokenize ``texts`` (see :func:`load_texts`); the student gets the first ``student_reviews``."""
    tokenizer = tokenizer or tokenizer_for(profile, texts)
    rows = {name: [_encode(tokenizer, t)[: profile.max_length] for t in part] for name, part in texts.items()}
    return LMData(tokenizer, rows["train"], rows["train"][: profile.student_reviews], rows["held_out"])


def _encode(tokenizer, text: str) -> list[int]:
    """Ids of ``text`` framed by begin and end of sequence, for this course's and Hugging Face tokenizers.

    A Hugging Face tokenizer encodes without its own special tokens (a Llama-style one would add a second
    ``<bos>``), and one without a begin- or end-of-sequence token is refused: the loss mask leaves out the first
    token of every row, and sampling stops at the end token."""
    if isinstance(tokenizer, WordTokenizer):
        return tokenizer.encode(text)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise ValueError(f"the tokenizer has no {'bos' if bos is None else 'eos'}_token_id: set tokenizer.bos_token "
                         "and tokenizer.eos_token (GPT-2 uses '<|endoftext|>' for both) before encoding the reviews")
    return [bos] + tokenizer.encode(text, add_special_tokens=False) + [eos]


# ----------------------------------------------------------------------------- batches

def collate(rows: list[list[int]], prompt_lengths=1, pad_id: int = PAD_ID) -> dict:
    """Pad ``rows`` into a batch: ``input_ids``, ``attention_mask`` and ``loss_mask``, each (B, L).

    ``loss_mask[b, t]`` is 1 when token ``t`` of row ``b`` is a target that counts: a real token
    (not padding) at or after the row's prompt (``prompt_lengths``: one int for all rows, or one each).
    With ``prompt_lengths=1`` only ``<bos>`` is left out: the model learns the whole review.
    """
    width = max(len(r) for r in rows)
    prompts = [prompt_lengths] * len(rows) if isinstance(prompt_lengths, int) else list(prompt_lengths)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
        attention[b, : len(row)] = 1
    positions = torch.arange(width)[None, :]
    loss_mask = attention * (positions >= torch.tensor(prompts)[:, None]).long()
    return {"input_ids": ids, "attention_mask": attention, "loss_mask": loss_mask}


def batches(rows: list[list[int]], batch_size: int, generator: torch.Generator):
    """Endless shuffled batches of ``rows`` (reshuffled every pass), as lists of rows."""
    if batch_size < 1:  # range() below stops on "arg 3 must not be zero", or, below 0, yields nothing for ever
        raise ValueError(f"batch_size={batch_size}: give a whole number of rows >= 1")
    if len(rows) < batch_size:  # no full batch in a pass: the loop below would spin for ever
        raise ValueError(f"{len(rows)} rows cannot fill one batch of {batch_size}: give more rows or a batch_size "
                         f"of at most {len(rows)}")
    while True:
        order = torch.randperm(len(rows), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [rows[i] for i in order[start: start + batch_size]]


def next_token(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits[:, :-1], input_ids[:, 1:], loss_mask[:, 1:])``: the prediction at t is scored on token t + 1. The
    targets and the mask come on the logits' device (a GPU's logits, a batch collated on the CPU), where every loss
    takes them."""
    device = logits.device
    return logits[:, :-1], batch["input_ids"][:, 1:].to(device), batch["loss_mask"][:, 1:].to(device)


def to_device(batch: dict, device: str) -> dict:
    """Every tensor of ``batch`` on ``device``."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# ----------------------------------------------------------------------------- models

def gpt(vocab_size: int, layers: int, width: int, heads: int, max_length: int, seed: int = 0):
    """A GPT-2 language model with random weights (``transformers.GPT2LMHeadModel``), seeded."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=max_length, n_embd=width, n_layer=layers, n_head=heads,
                        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def teacher_model(profile: LMProfile, vocab_size: int, seed: int = 0):
    """The profile's teacher before training: GPT-2 from ``profile.teacher``, or a new one of its size."""
    if profile.teacher is None:
        return gpt(vocab_size, profile.teacher_layers, profile.teacher_width, profile.teacher_heads,
                   profile.max_length, seed)
    from transformers import GPT2LMHeadModel
    try:
        return GPT2LMHeadModel.from_pretrained(profile.teacher)
    except OSError as err:
        raise model_source_error(profile.teacher, "model", ", here --profile full") from err


def student_model(profile: LMProfile, teacher, seed: int = 1):
    """The profile's student: a new, smaller GPT next to a teacher trained from scratch, or, next to a
    pretrained teacher, ``student_layers`` of its layers, every other one from the first (0, 2, ..., 10 of GPT-2's 12;
    distilGPT-2 itself was initialised from layers 0, 2, 4, 7, 9 and 11)."""
    if profile.teacher is None:
        return gpt(teacher.config.vocab_size, profile.student_layers, profile.student_width,
                   profile.student_heads, teacher.config.n_positions, seed)
    return copy_layers(teacher, list(range(0, teacher.config.n_layer, 2))[: profile.student_layers])


def copy_layers(teacher, layers: list[int]):
    """A GPT-2 made of the teacher's embeddings, the blocks ``layers`` and its final norm (as distilGPT-2 was
    initialised, from six of GPT-2's blocks)."""
    import copy
    student = copy.deepcopy(teacher).requires_grad_(True).train()  # a frozen teacher's copy is frozen too
    student.transformer.h = torch.nn.ModuleList([student.transformer.h[i] for i in layers])
    student.config.n_layer = len(layers)
    for new_index, block in enumerate(student.transformer.h):
        block.attn.layer_idx = new_index
    return student


# ----------------------------------------------------------------------------- training and metrics

def train_lm(model, rows: list[list[int]], loss_fn, *, steps: int, batch_size: int, lr: float, seed: int = 0,
             device: str = "cpu", progress=None) -> list[float]:
    """Train ``model`` for ``steps`` AdamW steps on batches of ``rows``; return the loss of every step.

    ``loss_fn(model, batch)`` is the method: data alone, a KD loss, ... (see :mod:`kd_tutorial.lm_methods`).
    The learning rate warms up over the first 10 % of the steps, then decays linearly to 0.
    """
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    stream, history = batches(rows, batch_size, torch.Generator().manual_seed(seed)), []
    for _ in range(steps):
        loss = loss_fn(model, next(stream))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        history.append(loss.detach())
        if progress is not None:
            progress.update(1)
    model.eval()
    return [float(x) for x in history]


def logits_of(model, batch: dict, device: str = "cpu") -> torch.Tensor:
    """The model's logits (B, L, V) on a batch (a dict from :func:`collate`)."""
    batch = to_device(batch, device)
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


# the most logits one evaluation batch may hold (B x L x V numbers, 256 MB in fp32): 128 reviews of a small
# vocabulary's, but 5 of 256 tokens for GPT-2's 50,257, whose 128 would take 6.6 GB a copy (a T4 has 16 GB)
LOGIT_BUDGET = 2 ** 26


def fitting_rows(model, rows: list[list[int]], batch_size: int | None = None) -> int:
    """``batch_size`` when given; else the most rows (128 at most) whose logits, ``(B, longest row, V)``, stay
    within :data:`LOGIT_BUDGET`."""
    if batch_size is not None:
        return batch_size
    longest = max(1, max((len(row) for row in rows), default=1))
    return max(1, min(128, LOGIT_BUDGET // (longest * model.config.vocab_size)))


@torch.no_grad()
def _predictions(model, rows: list[list[int]], batch_size: int | None, device: str):
    """Batches of ``rows`` through ``model`` in eval mode: ``(logits, targets, mask)`` shifted (:func:`next_token`)."""
    model.eval()
    batch_size = fitting_rows(model, rows, batch_size)
    for start in range(0, len(rows), batch_size):
        batch = to_device(collate(rows[start: start + batch_size]), device)
        yield next_token(logits_of(model, batch, device), batch)


def review_nll(model, rows: list[list[int]], batch_size: int | None = None,
               device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per review: the summed negative log-likelihood of every token after ``<bos>``, and how many there are."""
    nll, counts = [], []
    for z, y, m in _predictions(model, rows, batch_size, device):
        per_token = -torch.log_softmax(z.float(), -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        nll.append((per_token * m).sum(1).cpu())
        counts.append(m.sum(1).cpu())
    return torch.cat(nll), torch.cat(counts)


def perplexity(model, rows: list[list[int]], batch_size: int | None = None, device: str = "cpu") -> float:
    """``exp`` of the mean negative log-likelihood over every token after ``<bos>`` (``<eos>`` included)."""
    nll, counts = review_nll(model, rows, batch_size, device)
    return math.exp(float(nll.sum() / counts.sum()))


def perplexity_ratio(nll_a: torch.Tensor, nll_b: torch.Tensor, counts: torch.Tensor, n_boot: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """``ppl_a / ppl_b`` on the same reviews, with a 95 % paired bootstrap interval over reviews.

    ``ppl = exp(sum nll / sum tokens)``, so the ratio is ``exp((sum nll_a - sum nll_b) / sum tokens)``;
    each bootstrap draw resamples reviews (a review's tokens stay together). Below 1: a beats b.
    """
    g = torch.Generator().manual_seed(seed)
    diff, n = (nll_a - nll_b).double(), len(counts)
    draws = torch.randint(n, (n_boot, n), generator=g)
    boot = diff[draws].sum(1) / counts.double()[draws].sum(1)
    lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return math.exp(float(diff.sum() / counts.sum())), math.exp(lo), math.exp(hi)


def mean_entropy(model, rows: list[list[int]], batch_size: int | None = None, device: str = "cpu") -> float:
    """The model's next-token entropy in nats, averaged over the held-out positions (low: peaked, mode-seeking)."""
    total, count = 0.0, 0.0
    for z, _, m in _predictions(model, rows, batch_size, device):
        log_q = torch.log_softmax(z.float(), -1)
        total += float((-(log_q.exp() * log_q).sum(-1) * m).sum())
        count += float(m.sum())
    return total / count


def agreement(student, teacher, rows: list[list[int]], batch_size: int | None = None, device: str = "cpu") -> float:
    """The share of held-out positions where student and teacher predict the same most likely next token.

    The two must read one tokenizer (their ids name the same tokens); a vocabulary padded beyond the tokenizer's
    (to a multiple of 64, say) is fine, since the padded ids are never the most likely."""
    same, count = 0.0, 0.0
    if batch_size is None:  # one batching for both: two vocabularies' budgets would pair other rows
        batch_size = min(fitting_rows(student, rows), fitting_rows(teacher, rows))
    pairs = zip(_predictions(student, rows, batch_size, device), _predictions(teacher, rows, batch_size, device))
    for (zs, _, m), (zt, _, _) in pairs:
        same += float(((zs.argmax(-1) == zt.argmax(-1)) * m).sum())
        count += float(m.sum())
    return same / count


@torch.no_grad()
def sample(model, prompts: list[list[int]], *, max_length: int, generator: torch.Generator,
           temperature: float = 1.0, device: str = "cpu") -> list[list[int]]:
    """Continue each prompt (all of one length) by sampling token by token until end of sequence or ``max_length``.

    Returns the rows, prompt included, the end-of-sequence token included when the model wrote one. The
    model's key/value cache makes each new token one position of work, not the whole prefix again. Tokens are
    drawn on ``device`` (:func:`generator_on`): the vocabulary's probabilities never travel to the host.
    """
    was_training, eos = model.training, model.config.eos_token_id
    generator = generator_on(generator, device)
    model.eval()
    ids = torch.tensor(prompts, dtype=torch.long, device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    step_input, past, cache_arg = ids, None, _cache_argument(model)
    while ids.shape[1] < max_length and not bool(done.all()):
        out = model(input_ids=step_input, use_cache=True, **({} if past is None else {cache_arg: past}))
        # "cache" first: reading the deprecated "past_key_values" alongside it logs a warning at every step
        logits, past = out.logits[:, -1].float() / temperature, out["cache"] if "cache" in out else out.get(
            "past_key_values")
        nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
        step_input = torch.where(done, torch.full_like(nxt, eos), nxt)[:, None]
        ids = torch.cat([ids, step_input], dim=1)
        done |= nxt == eos
    model.train(was_training)
    start = len(prompts[0])
    return [row[:start] + _until(row[start:], eos) for row in ids.tolist()]


def generator_on(generator: torch.Generator, device: str) -> torch.Generator:
    """``generator`` where it lives on ``device``'s kind; else a generator there, seeded by one draw from it (so a
    seed still fixes every sample). Drawn on the host, GPT-2's 50,257 probabilities for 256 rows were 51 MB to copy
    and over a second of CPU sampling per token: hours for sequence-level KD on the ``full`` profile."""
    if generator.device.type == torch.device(device).type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _cache_argument(model) -> str:
    """How the model's ``forward`` names its key/value cache: ``cache`` (transformers >= 5.24) or
    ``past_key_values`` (before)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _until(tokens: list[int], eos: int) -> list[int]:
    """``tokens`` up to and including the first ``eos``."""
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens
