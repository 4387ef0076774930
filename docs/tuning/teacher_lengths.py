"""e30: the profile's teacher on validation and test, cut to 256 and to 512 tokens (`head+tail`).

Usage: python docs/tuning/teacher_lengths.py OUT.json
   (KD_TUTORIAL_DATA_DIR: the IMDB parquet files; KD_TUTORIAL_HOME: the artifact cache that holds the `cpu`
   profile's teacher)

A student that reads 512 tokens (student_reads_more.py) is compared with the same teacher reading the same 512
tokens here; the whole-review reading is in cpu-teacher-whole-review.json.
"""
import json
import sys

from kd_tutorial import data, evaluate, teachers
from kd_tutorial.profiles import get_profile

profile = get_profile("cpu")


def main(out_path: str) -> None:
    teacher, prep, _ = teachers.ensure_teacher(profile, progress=False)
    out = {"teacher_weights": teachers.weights_hash(teacher), "accuracy": {}}
    for length in (256, 512):
        for split in ("validation", "test"):
            encoded = data.encode(getattr(prep.data, split), prep.tokenizer, length, profile.truncation)
            z = evaluate.predict_logits(teacher, encoded, batch_size=profile.eval_batch_size,
                                        precision=profile.precision)
            out["accuracy"][f"{split}, {length} tokens"] = evaluate.accuracy(z, encoded.labels)
            print(split, length, out["accuracy"][f"{split}, {length} tokens"], flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
