"""EventSPD forward behaviour: shapes vs the contract, query independence, recurrence,
determinism, and the handling of empty, off-sensor and non-finite events."""
import pytest
import torch

from eventspd_export.data.synthetic import random_queries, synthetic_window
from model_def import EventSPD, InputError, contract, get_config


def test_precompute_outputs_match_the_contract(tiny_cfg, tiny_pre):
    specs = contract.precompute_outputs(tiny_cfg)
    assert list(tiny_pre) == [s.name for s in specs]
    for s in specs:
        assert tuple(tiny_pre[s.name].shape) == s.shape, s.name
        assert str(tiny_pre[s.name].dtype) == f"torch.{s.dtype}"


def test_contract_rule_every_output_but_state_is_a_decoder_input(tiny_cfg):
    outs = {s.name: s for s in contract.precompute_outputs(tiny_cfg)}
    ins = {s.name: s for s in contract.decoder_inputs(tiny_cfg)}
    assert set(outs) - set(ins) == {"hidden_out"}
    assert set(ins) - set(outs) == {"queries"}
    for name in set(outs) & set(ins):
        assert outs[name] == ins[name]


def test_stage_shapes_tiny(tiny_model, tiny_cfg, tiny_events):
    with torch.inference_mode():
        f3 = tiny_model.encode_events(tiny_events)
        l1 = tiny_model.l1(tiny_model.stem(f3))
        l2 = tiny_model.l2(l1)
        l3 = tiny_model.l3(l2)
        l4 = tiny_model.l4(l3)
    assert tuple(f3.shape) == (1, 64, *tiny_cfg.f3_hw)
    for lvl, t in enumerate((l1, l2, l3, l4), start=1):
        assert tuple(t.shape) == (1, tiny_cfg.dims[lvl - 1], *tiny_cfg.level_hw(lvl))


def test_decode_shapes_and_range(tiny_model, tiny_pre, tiny_queries):
    with torch.inference_mode():
        depth, inv, routing = tiny_model.decode_with_routing(tiny_pre, tiny_queries)
    assert depth.shape == inv.shape == (1, 7)
    torch.testing.assert_close(depth * inv, torch.ones_like(depth))
    assert (inv >= tiny_model.cfg.depth_eps).all()
    assert routing["indices"].shape == (1, 7, 32)
    assert routing["attention"].shape == (1, 7, 6, tiny_model.cfg.grid_tokens)


def test_queries_are_independent(tiny_model, tiny_pre, tiny_cfg):
    q = random_queries(tiny_cfg, 9, seed=11)
    with torch.inference_mode():
        together, _ = tiny_model.decode(tiny_pre, q)
        alone = torch.cat([tiny_model.decode(tiny_pre, q[:, i:i + 1])[0] for i in range(9)], dim=1)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=0)


def test_batch_of_windows_equals_windows_one_by_one(tiny_model, tiny_cfg):
    evs = [synthetic_window(tiny_cfg, 3000, seed=s) for s in (5, 6)]
    q = random_queries(tiny_cfg, 4, seed=7, batch=2)
    with torch.inference_mode():
        d_batch, _, h_batch = tiny_model(evs, q)
        for i in range(2):
            d_i, _, h_i = tiny_model(evs[i], q[i:i + 1])
            torch.testing.assert_close(d_batch[i:i + 1], d_i, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(h_batch[i:i + 1], h_i, rtol=1e-5, atol=1e-6)


def test_recurrent_state_over_three_windows(tiny_model, tiny_cfg):
    windows = [synthetic_window(tiny_cfg, 4000, seed=20 + i) for i in range(3)]
    q = random_queries(tiny_cfg, 5, seed=9)
    with torch.inference_mode():
        hidden = tiny_model.initial_state()
        states, depths = [], []
        for ev in windows:
            depth, _, hidden = tiny_model(ev, q, hidden)
            states.append(hidden)
            depths.append(depth)
        # the state evolves and is carried: window 3 from a zero state gives other results
        assert not torch.equal(states[0], states[1]) and not torch.equal(states[1], states[2])
        cold, _, _ = tiny_model(windows[2], q)
        assert (cold - depths[2]).abs().max() > 1e-6
        # the precompute phase alone reproduces the chain
        pre = tiny_model.precompute(windows[2], states[1])
        torch.testing.assert_close(pre["hidden_out"], states[2], rtol=0, atol=0)
        torch.testing.assert_close(tiny_model.decode(pre, q)[0], depths[2], rtol=0, atol=0)


def test_determinism_under_a_fixed_seed(tiny_cfg, tiny_events, tiny_queries):
    a, b = EventSPD(tiny_cfg, seed=3).eval(), EventSPD(tiny_cfg, seed=3).eval()
    c = EventSPD(tiny_cfg, seed=4).eval()
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    with torch.inference_mode():
        da, _, _ = a(tiny_events, tiny_queries)
        db, _, _ = b(tiny_events, tiny_queries)
    assert torch.equal(da, db)


def test_seeding_does_not_disturb_the_global_rng(tiny_cfg):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    EventSPD(tiny_cfg, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_empty_event_window(tiny_model, tiny_queries):
    with torch.inference_mode():
        depth, inv, hidden = tiny_model(torch.zeros(0, 4), tiny_queries)
    assert torch.isfinite(depth).all() and torch.isfinite(hidden).all()


def test_off_sensor_and_non_finite_events_are_dropped(tiny_model, tiny_cfg, tiny_events, tiny_queries):
    bad = torch.tensor([
        [-1.0, 5.0, 0.5, 1.0], [tiny_cfg.width, 5.0, 0.5, 1.0], [5.0, tiny_cfg.height + 3.0, 0.5, -1.0],
        [float("nan"), 5.0, 0.5, 1.0], [5.0, float("inf"), 0.5, 1.0], [5.0, 5.0, float("nan"), 1.0],
    ])
    mixed = torch.cat([tiny_events[:100], bad, tiny_events[100:]])
    with torch.inference_mode():
        clean, _, _ = tiny_model(tiny_events, tiny_queries)
        dirty, _, _ = tiny_model(mixed, tiny_queries)
        grid_clean = tiny_model.f3.splat(tiny_events)
        grid_dirty = tiny_model.f3.splat(mixed)
    torch.testing.assert_close(grid_dirty, grid_clean, rtol=0, atol=1e-6)
    torch.testing.assert_close(dirty, clean, rtol=1e-5, atol=1e-6)


def test_event_time_outside_window_is_clamped(tiny_model, tiny_cfg):
    early = torch.tensor([[10.0, 10.0, -0.5, 1.0]])
    start = torch.tensor([[10.0, 10.0, 0.0, 1.0]])
    with torch.inference_mode():
        assert torch.equal(tiny_model.f3.splat(early), tiny_model.f3.splat(start))


@pytest.mark.parametrize("events,match", [
    (torch.zeros(5, 3), r"events: shape \(5, 3\), expected \[N, 4\]"),
    (torch.zeros(5, 4, dtype=torch.int64), "events: dtype torch.int64, expected a floating"),
    ([], "an empty list"),
])
def test_bad_events_raise_input_error(tiny_model, events, match):
    with pytest.raises(InputError, match=match):
        tiny_model.precompute(events)


def test_bad_hidden_and_queries_raise_input_error(tiny_model, tiny_events, tiny_pre):
    with pytest.raises(InputError, match=r"hidden: shape \(1, 384, 4, 4\), expected \(1, 384, 5, 8\)"):
        tiny_model.precompute(tiny_events, torch.zeros(1, 384, 4, 4))
    with pytest.raises(InputError, match=r"queries: shape \(1, 3\)"):
        tiny_model.decode(tiny_pre, torch.zeros(1, 3))
    with pytest.raises(InputError, match="missing: calib"):
        tiny_model.decode({k: v for k, v in tiny_pre.items() if k != "calib"}, torch.zeros(1, 2, 2))


def test_training_forward_reaches_every_stage(tiny_cfg):
    """bf16-free CPU training step: gradients flow into F^3, the backbone, the STE-routed
    attention and the zero-initialised deformable heads."""
    from model_def import training as T

    model = EventSPD(tiny_cfg, training_heads=True, seed=0).train()
    ev = synthetic_window(tiny_cfg, 2000, seed=1)
    q = random_queries(tiny_cfg, 16, seed=2)
    pre, feats = model.precompute(ev, return_features=True)
    depth, inv = model.decode(pre, q)
    gt = torch.full_like(depth, 5.0)
    valid = torch.ones_like(depth, dtype=torch.bool)
    dense = model.train_heads.dense_inverse_depth(feats["l2"], feats["l3"])
    loss = (T.point_loss(inv, 1 / gt, valid) + T.LAMBDA_SI * T.silog_loss(depth, gt, valid)
            + T.dense_loss(dense, {k: torch.full_like(v, 0.2) for k, v in dense.items()},
                           {k: torch.ones_like(v, dtype=torch.bool) for k, v in dense.items()},
                           T.dense_weight(0, 10)))
    loss.backward()
    for name in ("f3.table", "l2.blocks.0.dwconv.weight", "b3.layers.1.q.weight",
                 "b4.w_offset.weight", "b4.w_weight.weight", "b1.adaptive.weight", "a4.w_s.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.slow
def test_one_hd_forward():
    cfg = get_config("hd")
    model = EventSPD(cfg, seed=0).eval()
    ev = synthetic_window(cfg, 50_000, seed=0)
    q = random_queries(cfg, 16, seed=0)
    with torch.inference_mode():
        pre = model.precompute(ev)
        depth, _ = model.decode(pre, q)
    for s in contract.precompute_outputs(cfg):
        assert tuple(pre[s.name].shape) == s.shape
    assert pre["b3_key1"].shape == (1, 880, 192)
    assert depth.shape == (1, 16) and torch.isfinite(depth).all()


@pytest.mark.parametrize("backend", ["reference", "plugin"])
def test_channels_last_value_maps_change_memory_not_numbers(tiny_model, tiny_events, tiny_pre, tiny_queries,
                                                           backend):
    # The GPU benchmark emits B4's value maps channels-last (read in place by the CUDA
    # deform_read); the maps' values and the decoder's depths must be exactly those of the default.
    import copy

    from model_def import ops

    model = copy.deepcopy(tiny_model)
    model.a3.value_maps_channels_last = True
    with torch.inference_mode(), ops.use_backend(backend):
        pre = model.precompute(tiny_events)
        depth, _ = model.decode(pre, tiny_queries)
        want, _ = tiny_model.decode(tiny_pre, tiny_queries)
    for name in ("value_l2", "value_l3", "value_l4"):
        assert pre[name].is_contiguous(memory_format=torch.channels_last) and not pre[name].is_contiguous(), name
        assert torch.equal(pre[name], tiny_pre[name]), name
    assert torch.equal(depth, want)


@pytest.mark.gpu
def test_channels_last_value_maps_on_a_gpu(tiny_model, tiny_events, tiny_queries):
    # The CUDA deform_read reads channel-last maps in place (a different indexing path from the
    # per-call copy): the whole decoder must agree with the NCHW maps' within fp32 rounding.
    import copy

    from model_def import ops
    from plugins import torch_ext

    if not torch.cuda.is_available() or not torch_ext.has_cuda_kernels():
        pytest.skip("needs a CUDA device and the extension built with CUDA kernels")
    plain = copy.deepcopy(tiny_model).cuda()
    cl = copy.deepcopy(plain)
    cl.a3.value_maps_channels_last = True
    events, queries = tiny_events.cuda(), tiny_queries.cuda()
    with torch.inference_mode(), ops.use_backend("plugin"):
        want, _ = plain.decode(plain.precompute(events), queries)
        pre = cl.precompute(events)
        assert pre["value_l2"].is_contiguous(memory_format=torch.channels_last)
        got, _ = cl.decode(pre, queries)
    assert ((got - want).abs() / want.abs()).max().item() <= 1e-4
