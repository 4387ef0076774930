"""Edges of the recipes (kd_tutorial.recipes) and the layer mappings (kd_tutorial.layer_maps), from a mutation audit.

Each test pins a behaviour that a small change of either module left every other test passing: the refusals of
a layer mapping and their one-line messages, the MiniLM relation heads a recipe's value term uses, whether a
term needs the teacher at every step or its cached layers, and how a micro-batch weighs the per-token terms.
"""
import dataclasses

import pytest
import torch

from kd_tutorial import layer_maps, losses
from kd_tutorial.errors import UserError
from kd_tutorial.recipes import RECIPES, Intermediate, intermediate_terms

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- layer mappings: refusals

@pytest.mark.parametrize("kind", layer_maps.MAPPINGS)
@pytest.mark.parametrize("S", [0, -1, 7])
def test_a_student_of_no_layers_or_deeper_than_the_teacher_is_refused_with_the_rule(kind, S):
    """A 0-layer student mapped onto nothing (an empty mapping, every term then divided by 0 layers) and a student
    deeper than the teacher are refused, whatever the mapping, by one line that states the rule to meet."""
    with pytest.raises(ValueError, match=rf"^a {S}-layer student cannot map onto a 6-layer teacher "
                                         r"\(need 1 <= S <= T\)$"):
        layer_maps.layer_mapping(kind, S, 6)


@pytest.mark.parametrize("kind", ["Uniform", "Last", "SKIP", "skip ", "u", "unif", "l", ""])
def test_a_near_miss_mapping_name_is_refused_not_guessed(kind):
    """A mapping is a choice to state (correctness note 13): a misspelt or abbreviated one is refused, naming the
    three, rather than read as the one it looks like."""
    with pytest.raises(ValueError, match=r"^unknown layer mapping .*: choose one of uniform, skip, last$"):
        layer_maps.layer_mapping(kind, 2, 6)


# --------------------------------------------------------------------------- the terms a recipe computes

def _values(seed: int, layers: int, width: int = 8):
    """``layers`` value tensors (2, 5, width) and a mask with one padded review."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return [torch.randn(2, 5, width, generator=g) for _ in range(layers)], mask


@pytest.mark.parametrize("heads", [1, 4])
def test_the_value_term_splits_the_values_into_the_students_relation_heads(heads):
    """A student's ``relation_heads`` (StudentSpec, copied into its recipes' Intermediate) is what the value term
    splits the values into: its mean over the mapped layers, with that many heads, not the default two."""
    s_values, mask = _values(0, 2)
    t_values, _ = _values(1, 4)
    student, teacher = (_features(v) for v in (s_values, t_values))
    spec = Intermediate(value_relation=1.0, relation_heads=heads)
    got = intermediate_terms(spec, student, teacher, mask, [2, 4])["value_relation"]
    expected = sum(losses.value_relation_kl(s_values[i], t_values[t - 1], mask, heads)
                   for i, t in enumerate([2, 4])) / 2
    assert torch.allclose(got, expected, atol=1e-6)
    default = sum(losses.value_relation_kl(s_values[i], t_values[t - 1], mask, 2) for i, t in enumerate([2, 4])) / 2
    assert not torch.allclose(got, default, atol=1e-4)  # the inputs tell the head counts apart


def _features(values):
    """A forward pass's Features holding only value vectors."""
    from kd_tutorial.features import Features
    return Features(logits=torch.zeros(2, 2), values=values)



def test_a_cosine_only_recipe_computes_its_cosine_term():
    """The DistilBERT-style recipe (kd+transfer+cosine) has the cosine term alone, without the MSE beside it."""
    from kd_tutorial.features import Features
    g = torch.Generator().manual_seed(0)
    hidden = [torch.randn(2, 5, 8, generator=g) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    student, teacher = Features(torch.zeros(2, 2), hidden=tuple(hidden)), Features(torch.zeros(2, 2),
                                                                                    hidden=tuple(hidden[::-1]))
    terms = intermediate_terms(RECIPES["kd+transfer+cosine"].intermediate, student, teacher, mask, [1, 2])
    assert set(terms) == {"hidden_cosine"}
    expected = (losses.hidden_cosine(hidden[1], hidden[1], mask) + losses.hidden_cosine(hidden[2], hidden[0], mask)) / 2
    assert float(expected) > 0 and torch.allclose(terms["hidden_cosine"], expected)


def test_the_cls_term_compares_the_projected_student_cls_with_the_cached_teacher_cls():
    """PKD's [CLS] term goes through student layer i's projection to the teacher's width (a narrower student's
    [CLS] states meet the teacher's only so), and reads cached [CLS] states of shape (B, H) as they are."""
    from kd_tutorial.features import Features
    g = torch.Generator().manual_seed(0)
    s_hidden = tuple(torch.randn(2, 5, 4, generator=g) for _ in range(3))
    t_cls = tuple(torch.randn(2, 8, generator=g) for _ in range(5))
    widen = [torch.randn(4, 8, generator=g) for _ in range(2)]
    projections = [lambda x, w=w: x @ w for w in widen]
    mask = torch.ones(2, 5, dtype=torch.long)
    terms = intermediate_terms(RECIPES["kd+transfer+pkd"].intermediate, Features(torch.zeros(2, 2), hidden=s_hidden),
                               Features(torch.zeros(2, 2), hidden=t_cls), mask, [2, 4], projections)
    expected = sum(losses.cls_mse(s_hidden[i][:, 0] @ widen[i - 1], t_cls[t]) for i, t in ((1, 2), (2, 4))) / 2
    assert set(terms) == {"cls"} and torch.allclose(terms["cls"], expected)


@pytest.mark.parametrize("recipe", ["kd+transfer+cosine", "kd+transfer+hidden", "kd+transfer+values",
                                    "kd+transfer+pkd"])
def test_token_scale_weighs_the_per_token_terms_and_leaves_the_cls_term_a_mean_over_rows(recipe):
    """In a micro-batch, ``token_scale`` (its share of the step's real tokens over its share of the rows) weighs the
    terms that are means over real tokens, and only those: the logit loss and PKD's [CLS] term are means over rows."""
    from kd_tutorial import models
    from kd_tutorial.train import TrainConfig, freeze, recipe_loss
    small = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
             "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    torch.manual_seed(0)
    teacher = freeze(models.load_teacher("tiny-bert", config_overrides=small))
    student = models.load_teacher("tiny-bert", config_overrides=small).eval()
    ids = torch.randint(5, 100, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[2, 6:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([1, 0, -1]), "index": torch.arange(3)}
    config = TrainConfig(mode="kd", intermediate=RECIPES[recipe].intermediate)
    cached = torch.randn(3, 2)
    (one, _, terms), (three, _, _) = (recipe_loss(student, batch, config, teacher_logits=cached, teacher=teacher,
                                                  token_scale=scale) for scale in (1.0, 3.0))
    per_token = sum(value for name, value in terms.items() if name != "cls")
    assert all(float(value.detach()) > 0 for value in terms.values())
    torch.testing.assert_close(three - one, 2 * per_token if recipe != "kd+transfer+pkd" else torch.zeros(()))



@pytest.mark.parametrize("term, online, cacheable", [
    ("attention", True, False), ("value_relation", True, True), ("hidden_mse", True, True),
    ("hidden_cosine", True, True), ("cls", False, False)])
def test_each_term_alone_says_whether_it_needs_the_teacher_per_token_and_whether_cached_layers_serve(
        term, online, cacheable):
    """One term on its own (a learner's Intermediate in notebook 07): attention maps need the teacher called at every
    step and no cache holds them; hidden states and values need it per token, or its cached layers; PKD's [CLS] term
    needs neither (the cached [CLS] states serve)."""
    spec = Intermediate(**{term: 1.0})
    assert (spec.needs_token_internals, spec.cacheable) == (online, cacheable)
    assert RECIPES["kd+transfer"].with_(intermediate=spec).needs_token_internals is online


# --------------------------------------------------------------------------- defects found by the audit

def test_a_misspelt_student_mapping_is_refused_before_the_teacher_is_fine_tuned():
    """A mapping name that is none of uniform, skip, last was refused by layer_mapping's plain ValueError in
    student_plan, after the teacher was fine-tuned (and as a traceback from the command line): the student itself
    refuses it now, in one line, as it refuses a student of no layers or of no relation heads."""
    from kd_tutorial.profiles import get_profile, ProfileOverrideError
    tiny = get_profile("tiny")
    assert any(RECIPES[name].intermediate for name in tiny.students[0].recipes)  # it runs an intermediate recipe
    for change, said in [({"mapping": "Skip"}, "mapping='Skip': give one of uniform, skip, last"),
                         ({"num_layers": 0}, "num_layers=0: give a whole number of layers >= 1"),
                         ({"relation_heads": 0}, "relation_heads=0: give a whole number of heads >= 1 that divides")]:
        with pytest.raises(ProfileOverrideError) as refused:
            dataclasses.replace(tiny.students[0], **change)
        assert isinstance(refused.value, UserError) and str(refused.value).startswith(f"student distil-2L: {said}")


def test_the_students_mapping_names_are_the_layer_mappings():
    """profiles (a leaf) keeps its own copy of the names layer_maps (a leaf) maps with."""
    from kd_tutorial import profiles
    assert profiles.LAYER_MAPPINGS == layer_maps.MAPPINGS


@pytest.mark.parametrize("fields, said", [
    ({"targets": "hard"}, "recipe 'mine': targets='hard': give one of 'labels', 'soft', 'pseudo'"),
    ({"targets": "labels", "intermediate": Intermediate(hidden_mse=1.0)},
     "recipe 'mine' trains on the labels alone and reads no intermediate terms: give targets='soft' (or 'pseudo') to "
     "distil with them, or intermediate=None")], ids=["unknown-target", "terms-on-labels"])
def test_a_recipe_that_cannot_train_as_written_is_refused_when_it_is_made(fields, said):
    """A notebook's own recipe: an unknown target stopped on a KeyError at its first run's .mode, and terms on the
    labels alone were refused by the loop only after the teacher was fine-tuned."""
    from kd_tutorial.recipes import Recipe
    with pytest.raises(UserError) as refused:
        Recipe("mine", **fields)
    assert str(refused.value) == said and isinstance(refused.value, ValueError)


@pytest.mark.parametrize("fields, said", [
    ({"mapping": "Skip"}, "mapping='Skip': give one of uniform, skip, last"),
    ({"relation_heads": 0}, "relation_heads=0: give a whole number of heads >= 1 that divides the student's width "
                            "and the teacher's")], ids=["misspelt-mapping", "no-relation-heads"])
def test_intermediate_terms_built_in_a_notebook_refuse_what_cannot_map_or_split(fields, said):
    """Notebook 07 builds an Intermediate directly: a misspelt mapping was refused only at the first step, and 0
    relation heads stopped the value term on a ZeroDivisionError."""
    with pytest.raises(UserError) as refused:
        Intermediate(**fields)
    assert str(refused.value) == said


def test_a_recipe_target_that_is_no_name_is_refused_in_one_line():
    from kd_tutorial.recipes import Recipe
    with pytest.raises(UserError, match=r"^recipe 'x': targets=\['soft'\]: give one of 'labels', 'soft', 'pseudo'$"):
        Recipe("x", targets=["soft"])  # was a TypeError: unhashable type: 'list'


def test_a_profile_field_it_does_not_have_is_refused_naming_the_ones_meant():
    """profile.replace(lr=...) in a notebook was Python's TypeError, "unexpected keyword argument 'lr'", naming no
    field that exists."""
    from kd_tutorial.profiles import get_profile, ProfileOverrideError
    tiny = get_profile("tiny")
    with pytest.raises(ProfileOverrideError) as refused:
        tiny.replace(lr=1e-4)
    assert str(refused.value) == "a profile has no field 'lr': did you mean 'teacher_lr' or 'student_lr'?"
    with pytest.raises(ProfileOverrideError, match="^a profile has no field 'batch_sise': did you mean 'batch_size'"):
        tiny.replace(batch_sise=8)
    with pytest.raises(ProfileOverrideError, match="^a profile has no field 'zzz': give one of name, description, "):
        tiny.replace(zzz=1)


def test_a_numpy_whole_number_is_told_to_become_a_python_int():
    """np.int64(8) was told to "give a whole number >= 1", which it is: the refusal stays (a config holding one would
    not save as JSON), and says what to change."""
    import numpy as np
    from kd_tutorial.profiles import get_profile, ProfileOverrideError
    tiny = get_profile("tiny")
    with pytest.raises(ProfileOverrideError) as refused:
        tiny.replace(batch_size=np.int64(8))
    assert str(refused.value) == ("batch_size=np.int64(8): give a whole number >= 1 (a Python int: int(x), not "
                                  "NumPy's int64)")
    with pytest.raises(ProfileOverrideError, match=r"num_layers=np.int64\(2\): give a whole number of layers >= 1 \(a "
                                                   r"Python int: int\(x\), not NumPy's int64\)$"):
        dataclasses.replace(tiny.students[0], num_layers=np.int64(2))
    with pytest.raises(ProfileOverrideError, match=r"^batch_size=True: give a whole number >= 1$"):
        tiny.replace(batch_size=True)
