"""The README's "Distil your own model" block, run as it stands on the built-in corpus and tiny BERTs: a
practitioner's review had to read the source for each step it takes."""
import re
from pathlib import Path

import torch

from kd_tutorial import data, models, train

README = Path(__file__).resolve().parent.parent / "README.md"


def _block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Distil your own model"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_own_model_block_distils_and_keeps_the_best_validation_pass(capsys):
    imdb = data.load_imdb("tiny", n_train=96, n_transfer=64, val_size=48, n_test=8, seed=0)
    torch.manual_seed(0)
    teacher = models.load_teacher("tiny-bert")
    train.train(teacher, data.encode(imdb.train, data.get_tokenizer(), 64),
                config=train.TrainConfig(mode="ce", lr=1e-3, batch_size=16, epochs=2, precision="fp32"),
                device="cpu", progress=False)
    student = models.compact_student(1, 32, 2, max_position_embeddings=512)
    given = {"teacher": teacher, "student": student, "texts": imdb.train.texts, "labels": imdb.train.labels,
             "more_texts": imdb.transfer.texts, "val_texts": imdb.validation.texts,
             "val_labels": imdb.validation.labels}
    names = dict(given)
    exec(compile(_block(), "README.md", "exec"), names)  # noqa: S102 - the README's own code
    history = names["history"]
    assert names["train_rows"].labels.tolist() == list(imdb.train.labels) + [-1] * len(imdb.transfer.texts)
    assert not teacher.training and not student.training and history.best_step is not None
    assert len(history.steps) == -(-len(names["train_rows"]) // train.TrainConfig().batch_size)  # one epoch
    assert capsys.readouterr().out == (f"best validation accuracy {history.best_val_acc:.1%} at step "
                                       f"{history.best_step}\n")
