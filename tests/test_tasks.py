import pytest
import torch

from gnn_transformer.tasks import CharCorpus, DigitTask, TranslationTask, Vocabulary, get_task, python_help_text


@pytest.mark.parametrize("name, source, target", [("copy", "3141", "3141"), ("reverse", "3141", "1413"),
                                                  ("sort", "3141", "1134")])
def test_digit_targets(name, source, target):
    assert DigitTask(name).transform(list(source)) == list(target)


@pytest.mark.parametrize("name", ["copy", "translate"])
def test_held_out_sources_are_never_trained_on_and_left_out_lengths_only_appear_held_out(name):
    task = get_task(name)
    train, test = task.splits(3000, 200, seed=1)
    assert len(train) == 3000 and len(test) == 200
    train_sources = {tuple(s) for s, _ in train}
    assert not train_sources & {tuple(s) for s, _ in test}
    assert len({tuple(s) for s, _ in test}) == 200  # distinct
    for length in task.left_out_lengths:
        assert all(len(s) != length for s, _ in train)
        assert any(len(s) == length for s, _ in test)
    if name == "copy":
        assert {len(s) for s, _ in test} == set(range(1, 13))
        assert all(s == t for s, t in train)


def test_translation_reorders_and_agrees():
    translate = TranslationTask.translate
    assert translate("the big red cats chased the small dog".split()) == \
        "los katoj rugaj grandaj ga lo hundo malgranda o casisu".split()
    assert translate("the mouse saw the old mice".split()) == "lo muso ga los musoj maljunaj o vidis".split()
    with pytest.raises(ValueError, match="not a sentence of the grammar"):
        translate("the cat the dog".split())
    task = TranslationTask()
    source, target = task.sample(__import__("random").Random(3))
    assert 5 <= len(source) <= 9 and 7 <= len(target) <= task.max_target_length
    assert task.encode((source, target))[1] == task.tgt_vocab.encode(target)


def test_vocabulary_round_trip_and_errors():
    vocab = Vocabulary(list("abc"))
    assert vocab.symbols[:2] == ["<s>", "</s>"] and len(vocab) == 5
    assert vocab.decode([2, 3, vocab.eos, 4]) == ["a", "b"]
    assert vocab.decode([2, vocab.eos], strip_end=False) == ["a", "</s>"]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode(["z"])
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="unknown task"):
        get_task("summarise")
    with pytest.raises(ValueError, match="unknown digit task"):
        DigitTask("shuffle")


def test_the_character_corpus_is_pythons_help_text():
    text = python_help_text()
    assert len(text) > 100_000 and "assert" in text
    corpus = CharCorpus(text[:2000], test_fraction=0.1)
    assert corpus.train.numel() == 1800 and corpus.test.numel() == 200
    assert corpus.decode(corpus.encode(text[:50]).tolist()) == text[:50]
    assert torch.equal(torch.cat([corpus.train, corpus.test]), corpus.encode(text[:2000]))
