"""model_def.packed: B2's and B5's K/V projections as one GEMM each, for inference.

The packed decoder must give the unpacked decoder's depths (fp32, CPU: measured exactly
equal; tolerance 1e-6 relative for other GEMM blockings) with 2·(b2 + b5 layers) - 2 fewer
linear calls, leave the unpacked model's state dict alone, and a wrongly packed one (keys and
values swapped) must fail the same comparison.
"""
import copy

import pytest
import torch
from torch import nn

from model_def import ops
from model_def.packed import PackedLinear, pack_decoder_projections

TOL = 1e-6


def linear_calls(model, pre, queries) -> tuple[torch.Tensor, int]:
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules()
             if isinstance(m, nn.Linear)]
    try:
        with torch.inference_mode():
            depth, _ = model.decode(pre, queries)
    finally:
        for h in hooks:
            h.remove()
    return depth, len(calls)


def max_rel(a, b):
    return ((a - b).abs() / b.abs().clamp_min(1e-12)).max().item()


@pytest.mark.parametrize("backend", ["reference", "plugin"])
def test_packed_decoder_matches_and_launches_fewer_gemms(tiny_model, tiny_pre, tiny_queries, backend):
    packed = pack_decoder_projections(copy.deepcopy(tiny_model))
    with ops.use_backend(backend):
        want, n_plain = linear_calls(tiny_model, tiny_pre, tiny_queries)
        got, n_packed = linear_calls(packed, tiny_pre, tiny_queries)
    cfg = tiny_model.cfg
    assert n_plain - n_packed == 2 * (cfg.b2_layers + cfg.b5_layers) - 2
    assert max_rel(got, want) <= TOL


def test_packing_owns_one_copy_of_each_weight(tiny_model):
    packed = pack_decoder_projections(copy.deepcopy(tiny_model))
    assert pack_decoder_projections(packed) is packed  # packing twice changes nothing
    keys = set(packed.state_dict())
    assert not any(k.endswith((".k.weight", ".v.weight")) for k in keys)
    assert {"b2.packed_kv.linear.weight", "b5.decoder.packed_kv.linear.weight"} <= keys
    # the unpacked model (and so every checkpoint) has no packed slot
    assert not any("packed_kv" in k for k in tiny_model.state_dict())
    torch.testing.assert_close(packed.b2.packed_kv.linear.weight[: tiny_model.cfg.d],
                               tiny_model.b2.layers[0].k.weight, rtol=0, atol=0)


def test_a_wrong_packing_is_rejected(tiny_model, tiny_pre, tiny_queries):
    # mutation: layer 0's keys and values swapped in the packed GEMM
    bad = copy.deepcopy(tiny_model)
    layer0 = bad.b2.layers[0]
    order = [layer0.v, layer0.k] + [lin for layer in bad.b2.layers[1:] for lin in (layer.k, layer.v)]
    bad.b2.packed_kv = PackedLinear(order)
    for layer in bad.b2.layers:
        del layer.k, layer.v
    want, _ = linear_calls(tiny_model, tiny_pre, tiny_queries)
    got, _ = linear_calls(bad, tiny_pre, tiny_queries)
    assert max_rel(got, want) > 100 * TOL


@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-5), ("fp16", 1e-2)])
def test_packed_decoder_on_a_gpu(tiny_model, tiny_pre, tiny_queries, precision, tol):
    # cuBLAS may block the wider GEMM differently: the last bits may move, within these bounds
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    model = copy.deepcopy(tiny_model).cuda()
    packed = pack_decoder_projections(copy.deepcopy(model))
    pre = {k: v.cuda() for k, v in tiny_pre.items()}
    with torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16"):
        want, _ = linear_calls(model, pre, tiny_queries.cuda())
        got, _ = linear_calls(packed, pre, tiny_queries.cuda())
    assert max_rel(got.float(), want.float()) <= tol


def test_packed_linear_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="same width"):
        PackedLinear([nn.Linear(4, 3), nn.Linear(5, 3)])
