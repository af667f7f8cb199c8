import pytest
import torch

from gnn_transformer.tasks.demo import demo_batch, demo_model


def test_demo_model_is_seeded_and_names_unknown_words():
    state = torch.random.get_rng_state()
    (first, vocabulary), (second, _) = demo_model(), demo_model()
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is untouched
    batch = demo_batch(vocabulary)
    assert torch.equal(first(batch), second(batch)) and first(batch).shape == (3, len(vocabulary))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        demo_batch(vocabulary, ["the", "zebra"])
