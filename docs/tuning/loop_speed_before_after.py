"""Course loop vs naive loop on the cpu profile's distil-3L, 40 KD steps each, for whichever kd_tutorial is first on sys.path.

Run for issue 9 against the commit before the loop changes (a29518e) and after them, alternating, on 2 idle cores
(KD_TUTORIAL_DATA_DIR=../shared/data/imdb HF_HUB_OFFLINE=1); the records are in loop-speed-before-after.jsonl.
"""
import json, sys, time
import kd_tutorial
from kd_tutorial.profiles import PROFILES
from kd_tutorial.artifacts import prepare
from kd_tutorial.data import Encoded, concat_encoded
from kd_tutorial.seeding import seed_everything
from kd_tutorial.train import TrainConfig, freeze, train
from kd_tutorial.evaluate import predict_logits
from kd_tutorial.models import build_student, teacher_for_profile
profile = PROFILES["cpu"]; steps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
prep = prepare(profile)
both = concat_encoded(prep.encoded["train"], prep.encoded["transfer"], "both")
n = 2 * steps * profile.batch_size
rows = Encoded(both.input_ids[:n], both.labels[:n], "rows")
teacher = freeze(teacher_for_profile(profile))
spec = profile.students[0]
common = dict(max_steps=steps, mode="kd", batch_size=profile.batch_size, lr=1e-4)
seed_everything(0)
naive_s = build_student(spec, teacher); ours_s = build_student(spec, teacher, attention_dropout=0.0, freeze_embeddings=True)
ours_s.load_state_dict(naive_s.state_dict())
naive = train(naive_s, rows, teacher=teacher, device="cpu", progress=False,
              config=TrainConfig(precision="fp32", group_by_length=False, pad_to_max=profile.max_length, **common))
t = time.perf_counter(); cached = predict_logits(teacher, rows, batch_size=64, device="cpu"); cache_s = time.perf_counter() - t
ours = train(ours_s, rows, teacher_logits=cached, device="cpu", progress=False, config=TrainConfig(**common))
print(json.dumps({"code": kd_tutorial.__file__, "naive": naive.tokens_per_s, "ours": ours.tokens_per_s,
                  "ratio": ours.tokens_per_s / naive.tokens_per_s, "cache_s": cache_s, "ours_s": ours.seconds}))
