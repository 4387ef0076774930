"""Per-step cost of each recipe on the cpu profile: the same student, the same rows, the same number of steps.

Measures what an intermediate term costs over logit KD from the cache: the online teacher forward
(hidden states, [CLS] from the cache), and eager attention for the attention term. Alternating, best of 2.
Run with KD_TUTORIAL_HOME pointing at a home whose cpu teacher and logits are cached.
"""
import copy, dataclasses, json, sys, time
from kd_tutorial import plan, teachers
from kd_tutorial.profiles import get_profile
from kd_tutorial.models import DistillationStudent, build_student
from kd_tutorial.recipes import get_recipe
from kd_tutorial.seeding import seed_everything
from kd_tutorial.train import train

STEPS = 24
profile = get_profile("cpu")
teacher, prep, _ = teachers.ensure_teacher(profile, device="cpu", progress=False)
logits = {s: teachers.ensure_teacher_logits(profile, s, teacher_model=teacher, progress=False)
          for s in ("train", "transfer")}
cls = {s: teachers.ensure_teacher_cls(profile, s, teacher_model=teacher, progress=False) for s in ("train", "transfer")}
sets = plan.student_data(profile, prep, logits, cls)
rows, t_logits, t_cls = sets["transfer"]
out = {"steps": STEPS, "batch_size": profile.batch_size, "max_length": profile.max_length, "seconds_per_step": {}}
RECIPES = {"distil-3L": ["kd+transfer", "kd+transfer+pkd", "kd+transfer+cosine", "kd+transfer+hidden",
                         "kd+transfer+attn", "kd+transfer+values"],
           "compact-2L-H128": ["kd+transfer", "kd+transfer+cosine", "kd+transfer+attn", "kd+transfer+values"]}
for spec in profile.students:
    seed_everything(0)
    base = build_student(spec, teacher, attention_dropout=profile.attention_dropout,
                         freeze_embeddings=profile.freeze_word_embeddings)
    best = {}
    for repeat in range(2):
        for name in RECIPES[spec.name]:
            recipe = get_recipe(name)
            if not plan.applicable(recipe, spec, teacher.config.num_attention_heads):
                continue
            config = plan.run_config(profile, spec, recipe, STEPS, 0)
            config = dataclasses.replace(config, eval_every=None, keep_best=False, patience=None)
            student = copy.deepcopy(base)
            spec_i = recipe.intermediate
            model = (DistillationStudent(student, teacher.config.hidden_size)
                     if spec_i is not None and spec_i.needs_projection else student)
            online = spec_i is not None and spec_i.needs_token_internals
            t = time.perf_counter()
            train(model, rows, config=config, teacher_logits=t_logits, teacher=teacher if online else None,
                  teacher_cls=t_cls if spec_i is not None and spec_i.cls else None, device="cpu", progress=False)
            s = (time.perf_counter() - t) / STEPS
            best[name] = min(best.get(name, 1e9), s)
            print(spec.name, name, f"{s:.3f} s/step", flush=True)
    out["seconds_per_step"][spec.name] = best
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(json.dumps(out, indent=1))
