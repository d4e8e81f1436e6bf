"""The quantized linear layers: close to float32, and each row's result independent of the batch."""

from __future__ import annotations

import pytest
import torch

from llm_levels.fastpath.qlinear import available_kinds, int8_per_row, make_linear


def test_int8_per_row_round_trips_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(70, 48)
    q, s = int8_per_row(w)
    assert q.dtype == torch.int8 and s.shape == (70,)
    assert (w - q.float() * s[:, None]).abs().max() <= s.max() / 2 + 1e-6


@pytest.mark.parametrize("kind", ["int8", "int8wo", "float32"])
def test_kinds_are_close_to_float32(kind):
    if kind not in available_kinds():
        pytest.skip(f"{kind} kernels are not in this torch build")
    torch.manual_seed(1)
    w = torch.randn(96, 64) / 8
    x = torch.randn(5, 64)
    ref = x @ w.T
    y = make_linear(w, kind)(x)
    assert y.shape == (5, 96) and y.dtype == torch.float32
    rel = (y - ref).norm() / ref.norm()
    assert rel < (1e-6 if kind == "float32" else 0.03), rel


def test_int8_rows_do_not_depend_on_the_rest_of_the_batch():
    """fbgemm quantizes a whole input with one range; the layer gives every row its own, so batching changes nothing."""
    if "int8" not in available_kinds():
        pytest.skip("no int8 kernels")
    torch.manual_seed(2)
    lin_weight = torch.randn(40, 32)
    lin = make_linear(lin_weight, "int8")
    x = torch.randn(4, 32)
    x[2] *= 1000  # an outlier row would ruin the other rows' precision with one shared range
    batched = lin(x)
    for i in range(4):
        # In any other batch the row comes out bit for bit the same...
        other = torch.stack([torch.randn(32) * 50, x[i], torch.randn(32) * 1e-3])
        assert torch.equal(lin(other)[1], batched[i])
        # ...and alone (the one-row form: fbgemm's own [min, max] range of the row) about as close to the
        # float32 product.
        ref = x[i] @ lin_weight.T
        alone = lin(x[i:i + 1])[0]
        for y in (alone, batched[i]):
            assert (y - ref).norm() <= 0.03 * ref.norm(), i


def test_int8_one_row_and_an_all_zero_row_stay_finite():
    if "int8" not in available_kinds():
        pytest.skip("no int8 kernels")
    lin = make_linear(torch.randn(8, 16), "int8")
    for x in (torch.zeros(1, 16), torch.zeros(3, 16)):
        y = lin(x)
        assert torch.isfinite(y).all() and torch.equal(y, torch.zeros_like(y))
    w = torch.randn(8, 16)
    x = torch.randn(1, 16)
    rel = (make_linear(w, "int8")(x) - x @ w.T).norm() / (x @ w.T).norm()
    assert rel < 0.03, rel


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown quantization"):
        make_linear(torch.zeros(2, 2), "int3")
