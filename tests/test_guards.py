"""The distillation guards: same token -> id map, same label order (correctness items 8 and 9).

Two tokenizers of the same size that give a word different ids, or two models
whose label 0 means different classes, used to pass the size-only checks.
"""
import copy

import pytest
import torch

from kd_tutorial import data, models


@pytest.fixture(scope="module")
def tokenizer():
    return data.get_tokenizer()


@pytest.fixture(scope="module")
def swapped_tokenizer(tmp_path_factory, tokenizer):
    """The committed vocabulary with two lines swapped: same size, 'good' and 'bad' trade ids."""
    lines = data.VOCAB_PATH.read_text(encoding="utf-8").splitlines()
    good, bad = lines.index("good"), lines.index("bad")
    lines[good], lines[bad] = lines[bad], lines[good]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from transformers import BertTokenizerFast
    swapped = BertTokenizerFast(str(path), do_lower_case=True)  # positional: vocab_file= is ignored in transformers 5
    assert len(swapped) == len(tokenizer)
    assert swapped.convert_tokens_to_ids("good") == tokenizer.convert_tokens_to_ids("bad")
    return swapped


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return models.load_teacher("tiny-bert", config_overrides={"num_hidden_layers": 2, "hidden_size": 32,
                                                              "intermediate_size": 64})


def named(model, names):
    """A copy of ``model`` whose config names its classes ``names`` by id (both maps, as transformers keeps them)."""
    model = copy.deepcopy(model)
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: i for i, name in enumerate(names)}
    return model


def test_identical_tokenizers_pass(tokenizer):
    models.check_same_vocab(tokenizer, data.get_tokenizer())


def test_same_size_tokenizers_with_swapped_ids_are_refused(tokenizer, swapped_tokenizer):
    with pytest.raises(models.VocabularyMismatchError, match=r"same size \(30522\) but 2 token\(s\).*teacher's tokenizer"):
        models.check_same_vocab(tokenizer, swapped_tokenizer)


def test_models_are_compared_through_their_tokenizers_when_given(teacher, tokenizer, swapped_tokenizer):
    student = models.build_student(models.StudentSpec("s", "compact", 1, hidden_size=32, num_heads=2), teacher)
    models.check_same_vocab(teacher, student)  # models alone: sizes agree, and a model holds no token map
    models.check_same_vocab(teacher, student, teacher_tokenizer=tokenizer, student_tokenizer=tokenizer)
    with pytest.raises(models.VocabularyMismatchError, match="map to other ids"):
        models.check_same_vocab(teacher, student, teacher_tokenizer=tokenizer, student_tokenizer=swapped_tokenizer)


def test_a_model_and_a_tokenizer_still_compare_sizes(teacher, tokenizer):
    models.check_same_vocab(teacher, tokenizer)  # what teachers.ensure_teacher does before training
    small = models.compact_student(1, 32, 2, 64, vocab_size_=1000)
    with pytest.raises(models.VocabularyMismatchError, match="tokenizer mismatch.*1000.*30522"):
        models.check_same_vocab(small, tokenizer)


def test_identical_label_orders_pass(teacher):
    a, b = named(teacher, ["negative", "positive"]), named(teacher, ["Negative", "Positive"])  # case does not matter
    models.check_same_labels(a, b)
    models.check_same_vocab(a, b)
    models.check_same_labels(a, ["negative", "positive"])  # against the data's order
    models.check_same_labels(teacher, a)  # transformers' placeholders LABEL_0, LABEL_1 name nothing: not refused


def test_swapped_label_order_is_refused(teacher):
    teacher_ = named(teacher, ["positive", "negative"])  # a teacher whose label 0 means positive
    student = named(teacher, ["negative", "positive"])
    with pytest.raises(models.LabelOrderMismatchError,
                       match="label order mismatch: label 0 is 'positive' for the teacher and 'negative' for the student.*one order"):
        models.check_same_labels(teacher_, student)
    with pytest.raises(models.LabelOrderMismatchError, match="label order mismatch"):
        models.check_same_vocab(teacher_, student)  # build_student's guard checks the labels too
    with pytest.raises(models.LabelOrderMismatchError, match="'positive' for the teacher and 'negative' for the data"):
        models.check_same_labels(teacher_, ["negative", "positive"])


def test_build_student_refuses_a_pretrained_student_with_other_labels(teacher, monkeypatch):
    teacher_ = named(teacher, ["positive", "negative"])
    compact = models.compact_student(1, 32, 2, 64)
    compact.config.id2label, compact.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    monkeypatch.setattr(models, "compact_student", lambda *a, **k: compact)
    with pytest.raises(models.LabelOrderMismatchError):
        models.build_student(models.StudentSpec("s", "compact", 1, hidden_size=32, num_heads=2), teacher_)
    # a layer-copied student copies the teacher's config, labels included: accepted
    models.build_student(models.StudentSpec("d", "distil", 1), teacher_)


def test_label_guard_errors_are_one_line_and_catchable_as_the_vocabulary_error(teacher):
    cases = [(named(teacher, ["negative", "positive"]), named(teacher, ["negative", "positive", "neutral"])),
             (named(teacher, ["neg", "pos"]), named(teacher, ["negative", "positive"]))]
    for a, b in cases:
        with pytest.raises(models.VocabularyMismatchError) as err:
            models.check_same_labels(a, b)
        assert isinstance(err.value, models.LabelOrderMismatchError) and "\n" not in str(err.value)
    assert issubclass(models.LabelOrderMismatchError, models.UserError)


def test_a_config_whose_two_maps_disagree_is_refused(teacher):
    broken = named(teacher, ["negative", "positive"])
    broken.config.label2id = {"negative": 1, "positive": 0}
    with pytest.raises(models.LabelOrderMismatchError, match="contradicts itself"):
        models.check_same_labels(broken, named(teacher, ["negative", "positive"]))


def test_a_different_number_of_classes_is_refused_even_under_placeholder_names(teacher):
    """Placeholder names (LABEL_0, LABEL_1...) skip the id-by-id comparison, not the count: a 3-class teacher
    distilled into a 2-class student would compare logits of different widths."""
    three = named(teacher, ["LABEL_0", "LABEL_1", "LABEL_2"])
    with pytest.raises(models.LabelOrderMismatchError, match="label-space mismatch: the teacher has 3 labels, "
                                                             "the student 2"):
        models.check_same_labels(three, teacher)
    with pytest.raises(models.LabelOrderMismatchError, match="the teacher has 3 labels, the data 2"):
        models.check_same_labels(three, ["negative", "positive"])
