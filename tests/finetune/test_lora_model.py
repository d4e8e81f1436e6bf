"""The classifier a fine-tune trains: its split, packed forward equals the plain model's, and the model the
app shares is never changed (mechanics on a tiny random Llama)."""

from __future__ import annotations

import pytest
import torch

from llm_levels.core import BackendError
from llm_levels.finetune.lora_model import LoraClassifier, LoraSettings, pack
from llm_levels.finetune.train import FinetuneConfig, seeded_classifier, train_adapter

from .conftest import LABELS


def _plain_logits(loaded, clf, examples):
    with torch.inference_mode():
        return torch.stack(
            [
                loaded.model(input_ids=torch.tensor([clf.prompt_ids(e.text)])).logits[0, -1, clf.label_ids]
                for e in examples
            ]
        )


@pytest.mark.parametrize("layers", [1, 0])  # the top layer only (frozen part run once), or every layer
def test_packed_split_forward_equals_the_plain_model(tiny_loaded, tiny_train, layers):
    clf = LoraClassifier(tiny_loaded, LABELS, LoraSettings(layers=layers), "instruct")
    enc = clf.encode(tiny_train, batch_size=4)
    assert enc.prefix.shape[0] > 10  # the shared instructions are computed once per batch
    with torch.inference_mode():
        packed = clf.label_logits(enc)
    # Fresh adapters add zero: the classifier reads exactly the plain model's logits at the answer.
    assert torch.allclose(packed, _plain_logits(tiny_loaded, clf, tiny_train), atol=1e-5)


def test_pack_lets_each_row_see_the_prefix_and_itself_only():
    x, mask, pos, spans = pack(torch.tensor([7, 8]), [torch.tensor([1, 2]), torch.tensor([3])])
    assert x.tolist() == [[7, 8, 1, 2, 3]] and pos.tolist() == [[0, 1, 2, 3, 2]] and spans == [(2, 4), (4, 5)]
    m = mask[0, 0].int().tolist()
    assert m[3] == [1, 1, 1, 1, 0]  # row 1's second token: prefix + row 1
    assert m[4] == [1, 1, 0, 0, 1]  # row 2: prefix + itself, never row 1


def test_training_leaves_the_shared_model_unchanged(tiny_loaded, tiny_train):
    clf = seeded_classifier(tiny_loaded, LABELS, FinetuneConfig(examples=None, epochs=2, learning_rate=1e-2))
    before = _plain_logits(tiny_loaded, clf, tiny_train[:3])
    result = train_adapter(clf, tiny_train, FinetuneConfig(examples=None, epochs=2, learning_rate=1e-2))
    assert result.steps == 4 and not result.stopped
    with torch.inference_mode():
        assert not torch.allclose(clf.label_logits(clf.encode(tiny_train[:3])), before)  # the adapter learnt
    assert torch.equal(_plain_logits(tiny_loaded, clf, tiny_train[:3]), before)
    assert not any("lora" in name for name, _ in tiny_loaded.model.named_modules())
    # The weights are shared, not copied.
    w = tiny_loaded.model.model.layers[0].mlp.up_proj.weight
    assert clf.peft.base_model.model.model.layers[0].mlp.up_proj.weight.data_ptr() == w.data_ptr()


def test_labels_that_start_with_the_same_token_are_refused(tiny_loaded):
    with pytest.raises(BackendError, match="same token"):
        LoraClassifier(tiny_loaded, ("negative", "neutral"), LoraSettings(), "instruct")


def test_a_seq2seq_model_is_refused(tiny_seq2seq):
    with pytest.raises(BackendError, match="decoder-only"):
        LoraClassifier(tiny_seq2seq, LABELS, LoraSettings(), "instruct")


def test_training_rows_carry_their_answer_which_the_answer_position_never_sees(tiny_loaded, tiny_train):
    clf = LoraClassifier(tiny_loaded, LABELS, LoraSettings(layers=1), "instruct")
    plain, answered = clf.encode(tiny_train[:4]), clf.encode(tiny_train[:4], with_answers=True)
    assert [r.shape[0] + 1 for r in plain.rows] == [r.shape[0] for r in answered.rows]
    with torch.inference_mode():
        both = clf.answer_states(answered, after=True)
        assert torch.allclose(both[0], clf.answer_states(plain), atol=1e-5)  # causal: blind to its own answer
        assert not torch.allclose(both[1], both[0])
