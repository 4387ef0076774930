"""The teacher's mapped layers, cached on disk in bf16 and read back by row: per-token targets without the teacher.

An intermediate recipe matches the teacher's hidden states (``("hidden", t)``:
``hidden_states[t]``) or value vectors (``("values", t)``: layer ``t``'s V) at its
mapped layers ``t``. Computed online, they cost a frozen teacher's forward pass at
every step. Cached, they cost disk instead: reviews x tokens x width x 2 bytes per
(kind, layer), about 2 GB per layer for the cpu profile's 10,000 reviews, written
once per teacher and read by every seed and student. Attention maps (heads x L x L
per review) stay online. numpy has no bf16, so the arrays hold its bits as int16
(``.npy`` files, opened as memory maps: only the rows of a batch are read).

:func:`kd_tutorial.teachers.ensure_teacher_layers` writes them;
:func:`kd_tutorial.train.train` reads them through :class:`LayerStates`;
:mod:`kd_tutorial.teacher_layers` decides which runs do.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

Key = tuple[str, int]  # ("hidden" or "values", teacher layer)
ROOM_TO_SPARE = 2 * 1024 ** 3  # bytes a cache must leave free on its disk


def nbytes(rows: int, length: int, width: int, keys) -> int:
    """Bytes on disk of ``keys`` layers cached for ``rows`` reviews of up to ``length`` tokens."""
    return rows * length * width * 2 * len(keys)


def has_room(folder: Path, size: int) -> bool:
    """Whether ``size`` more bytes fit in ``folder``'s disk with :data:`ROOM_TO_SPARE` left over."""
    return shutil.disk_usage(folder).free - size >= ROOM_TO_SPARE


class LayerWriter:
    """Writes ``keys`` layers of ``rows`` reviews into ``.npy`` files, each renamed into place only when complete.

    Until then each is a ``.NAME.kd-TAG.tmp`` file (:func:`_partial`), its disk space reserved up front (a full disk
    then fails here, not halfway); :meth:`discard` removes them, and :func:`kd_tutorial.store.clean_stale` what a
    killed process left, at once when ``tag`` (:func:`kd_tutorial.store.writer_tag`, default ``pid-PID``) shows it
    ran on this host in this PID namespace (its writer must hold the folder's lock, :func:`kd_tutorial.store.locked`,
    for the writer's life).
    """

    def __init__(self, paths: dict[Key, Path], rows: int, length: int, width: int, tag: str | None = None):
        self.paths, self.arrays = paths, {}
        self.partial = {key: _partial(path, tag) for key, path in paths.items()}
        try:
            for key in paths:
                self.arrays[key] = np.lib.format.open_memmap(self.partial[key], mode="w+", dtype=np.int16,
                                                             shape=(rows, length, width))
                _reserve(self.partial[key])
        except BaseException:
            self.discard()
            raise

    def write(self, key: Key, index: torch.Tensor, states: torch.Tensor) -> None:
        """Store ``states`` (B, L, width) as rows ``index`` (their first L positions), narrowed to bf16 on a CUDA
        device (half the bytes copied) and on the CPU elsewhere (:func:`bf16_host`)."""
        bits = bf16_host(states.detach()).view(torch.int16).numpy()
        self.arrays[key][index.cpu().numpy(), : bits.shape[1]] = bits

    def close(self) -> None:
        """Flush every file to disk and move it into place."""
        for array in self.arrays.values():
            array.flush()
        self.arrays = {}  # unmapped before the rename (Windows refuses to rename a mapped file)
        for key, path in self.paths.items():
            os.replace(self.partial[key], path)

    def discard(self) -> None:
        """Remove the unfinished files (after an error or an interruption)."""
        self.arrays = {}
        for partial in self.partial.values():
            partial.unlink(missing_ok=True)


def bf16_host(x: torch.Tensor) -> torch.Tensor:
    """``x`` as bf16 on the CPU, narrowed where it lies only on CUDA: Apple's MPS refuses every bf16 tensor before
    macOS 14 ("MPS BFloat16 is only supported on MacOS 14 or newer"), so elsewhere ``x`` is copied first."""
    if x.device.type == "cuda":
        return x.to(torch.bfloat16).cpu()
    return x.cpu().to(torch.bfloat16)


def widened(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` (bf16 on the CPU, as :meth:`LayerStates.read` gives it) as float32 on ``device``: widened there on CUDA
    (half the bytes copied), on the CPU first elsewhere, since MPS before macOS 14 holds no bf16 tensor."""
    if torch.device(device).type == "cuda":
        return x.to(device, non_blocking=True).float()
    return x.float().to(device)


def _partial(path: Path, tag: str | None = None) -> Path:
    """The temporary name of ``path`` while it is written. "kd-" is store.MARK (a leaf does not import store):
    store.clean_stale removes what a crash left, and only that; ``tag`` (store.writer_tag: ``pid-PID@HOST_nsN``)
    lets it remove the file at once when that process is gone, judged only where the PID means that process."""
    return path.with_name(f".{path.name}.kd-{tag or f'pid-{os.getpid()}'}.tmp")


class Reservation:
    """Disk space held in ``folder`` for layer files not written yet: ``sizes[name]`` bytes under each name, in a
    ``.layers-NAME.reserved.kd-pid-….tmp`` file whose blocks are allocated (:func:`_reserve`). Every later pass's
    space is thus secured before the first pass runs; :meth:`release` gives one name's back just before its pass
    reserves it for real (:class:`LayerWriter`; ``tag`` as there). A full disk or a quota raises OSError here,
    holding nothing."""

    def __init__(self, folder: Path, sizes: dict[str, int], tag: str | None = None):
        self.paths: dict[str, Path] = {}
        try:
            for name, size in sizes.items():
                if size:
                    self.paths[name] = _partial(Path(folder) / f"layers-{name}.reserved", tag)
                    with open(self.paths[name], "wb") as f:
                        f.truncate(size)
                    _reserve(self.paths[name])
        except BaseException:
            self.release()
            raise

    def release(self, name: str | None = None) -> None:
        """Free the space held for ``name``, or for every name when None."""
        for key in list(self.paths) if name is None else [name]:
            path = self.paths.pop(key, None)
            if path is not None:
                path.unlink(missing_ok=True)


def _reserve(path: Path) -> None:
    """Allocate the file's blocks now (a memory map otherwise gets them on first write, and a full disk then
    kills the process instead of raising)."""
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


class LayerStates:
    """Cached layers of some reviews, in row order: ``read(index, length)`` gives them as float32 tensors.

    Row ``i`` is row ``where[i, 1]`` of part ``where[i, 0]``; :meth:`subset` and
    :meth:`concat` make new row orders over the same files (as the students' data
    takes some labelled reviews and then the transfer reviews).
    """

    def __init__(self, parts: list[dict[Key, np.ndarray]], where: torch.Tensor, depth: int):
        self.parts, self.where, self.depth = parts, where, depth  # depth: the teacher's number of layers

    @classmethod
    def open(cls, paths: dict[Key, Path], depth: int) -> "LayerStates":
        """The cached files ``paths``, read lazily (memory maps)."""
        arrays = {key: np.load(path, mmap_mode="r") for key, path in paths.items()}
        rows = {a.shape[0] for a in arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"cached layers of one split hold different numbers of rows: {sorted(rows)}")
        n = rows.pop()
        return cls([arrays], torch.stack([torch.zeros(n, dtype=torch.long), torch.arange(n)], 1), depth)

    @property
    def keys(self) -> set[Key]:
        """The (kind, layer) pairs every row has."""
        return set.intersection(*(set(part) for part in self.parts))

    def __len__(self) -> int:
        return len(self.where)

    def subset(self, rows) -> "LayerStates":
        """Rows ``rows``, in that order."""
        return LayerStates(self.parts, self.where[torch.as_tensor(rows, dtype=torch.long)], self.depth)

    def concat(self, other: "LayerStates") -> "LayerStates":
        """These rows, then ``other``'s."""
        shifted = other.where + torch.tensor([len(self.parts), 0])
        return LayerStates(self.parts + other.parts, torch.cat([self.where, shifted]), self.depth)

    def read(self, index: torch.Tensor, length: int, keys) -> dict[Key, torch.Tensor]:
        """``{key: (B, length, width) bfloat16}`` for rows ``index`` (a batch's ``index``), on the CPU, as stored: the
        step widens them to float32 on its device, so a GPU run pins and copies half the bytes."""
        where = self.where[index.cpu()]
        out = {}
        for key in keys:
            width = self.parts[0][key].shape[2]
            bits = np.zeros((len(where), length, width), dtype=np.int16)
            for p, part in enumerate(self.parts):
                mine = (where[:, 0] == p).nonzero().flatten()
                if len(mine):
                    bits[mine.numpy(), : part[key].shape[1]] = part[key][where[mine, 1].numpy(), :length]
            out[key] = torch.from_numpy(bits).view(torch.bfloat16)
        return out
