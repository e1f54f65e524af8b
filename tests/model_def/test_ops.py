"""The reference ops against independent implementations (they are the plugins' oracle)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model_def import get_config, ops


# ---- topr_route ----------------------------------------------------------------------------
def _topr_brute(attn, r, gw, stride):
    B, K, H, T = attn.shape
    idx = np.zeros((B, K, r), np.int64)
    for b in range(B):
        for k in range(K):
            s = attn[b, k, 0].clone()
            for h in range(1, H):
                s = s + attn[b, k, h]
            s = (s / H).tolist()
            idx[b, k] = sorted(range(T), key=lambda t: (-s[t], t))[:r]
    u = (idx % gw + 0.5) * stride - 0.5
    v = (idx // gw + 0.5) * stride - 0.5
    return idx, np.stack([u, v], -1)


@pytest.mark.parametrize("quantised", [False, True])
def test_topr_route_matches_brute_force_and_breaks_ties_by_lower_index(quantised):
    g = torch.Generator().manual_seed(0)
    B, K, H, gw, gh = 2, 5, 6, 8, 5
    attn = torch.rand(B, K, H, gw * gh, generator=g)
    if quantised:  # many exact ties
        attn = torch.floor(attn * 3) / 4
    idx, anchors = ops.topr_route(attn, 32, gw, gh, 32)
    ref_idx, ref_anchors = _topr_brute(attn, 32, gw, 32)
    assert idx.dtype == torch.int32 and anchors.dtype == torch.float32
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_array_equal(anchors.numpy(), ref_anchors.astype(np.float32))


def test_topr_route_all_equal_scores_pick_first_tokens():
    attn = torch.full((1, 1, 6, 40), 0.025)
    idx, anchors = ops.topr_route(attn, 32, 8, 5, 32)
    assert idx[0, 0].tolist() == list(range(32))
    assert anchors[0, 0, 9].tolist() == [1 * 32 + 15.5, 1 * 32 + 15.5]


def test_topr_route_rejects_bad_grid():
    with pytest.raises(ValueError, match="40 tokens, grid is 8x4"):
        ops.topr_route_reference(torch.rand(1, 1, 6, 40), 32, 8, 4, 32)


# ---- deform_read ---------------------------------------------------------------------------
def _deform_grid_sample(values, anchors, offsets, logits, strides):
    """Independent implementation with F.grid_sample (zeros padding, align_corners=False)."""
    B, C = values[0].shape[:2]
    _, K, R, Hh, L, M, _ = offsets.shape
    Ch = C // Hh
    a = torch.softmax(logits.reshape(B, K, R, Hh, L * M), -1).reshape(B, K, R, Hh, L, M)
    out = torch.zeros(B, K, R, Hh, Ch, dtype=values[0].dtype)
    for lvl, (v, s) in enumerate(zip(values, strides)):
        H, W = v.shape[-2:]
        x = ((anchors[..., 0] + 0.5) / s - 0.5)[..., None, None] + offsets[..., lvl, :, 0]
        y = ((anchors[..., 1] + 0.5) / s - 0.5)[..., None, None] + offsets[..., lvl, :, 1]
        grid = torch.stack([(x + 0.5) * 2 / W - 1, (y + 0.5) * 2 / H - 1], -1)  # [B,K,R,Hh,M,2]
        grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(B * Hh, K * R, M, 2)
        samp = F.grid_sample(v.reshape(B * Hh, Ch, H, W), grid, mode="bilinear",
                             padding_mode="zeros", align_corners=False)
        samp = samp.reshape(B, Hh, Ch, K, R, M).permute(0, 3, 4, 1, 5, 2)
        out = out + (a[..., lvl, :, None] * samp).sum(-2)
    return out.reshape(B, K, R, C)


def _deform_inputs(B=1, C=30, heads=6, K=3, R=4, sizes=((7, 5), (4, 3), (2, 2)), far=False,
                   dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = [torch.randn(B, C, h, w, generator=g, dtype=dtype) for h, w in sizes]
    anchors = torch.rand(B, K, R, 2, generator=g, dtype=dtype) * 70 - 5  # some on/over borders
    offsets = torch.randn(B, K, R, heads, 3, 4, 2, generator=g, dtype=dtype) * 2
    if far:
        offsets[..., 0, 0, :] = 1e6
        offsets[..., 1, 1, :] = -1e6
    logits = torch.randn(B, K, R, heads, 3, 4, generator=g, dtype=dtype)
    return values, anchors, offsets, logits


@pytest.mark.parametrize("K,far", [(1, False), (3, True), (257, False)])
def test_deform_read_matches_grid_sample(K, far):
    values, anchors, offsets, logits = _deform_inputs(K=K, far=far)
    got = ops.deform_read(*values, anchors, offsets, logits, (8, 16, 32))
    ref = _deform_grid_sample(values, anchors, offsets, logits, (8, 16, 32))
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_deform_read_non_finite_coordinates_read_nothing():
    values, anchors, offsets, logits = _deform_inputs(K=2)
    far = offsets.clone()
    far[..., 2, 3, :] = 1e9
    bad = offsets.clone()
    bad[..., 2, 3, 0] = float("nan")
    bad[..., 2, 3, 1] = float("inf")
    a = ops.deform_read(*values, anchors, far, logits, (8, 16, 32))
    b = ops.deform_read(*values, anchors, bad, logits, (8, 16, 32))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.isfinite(b).all()


def test_deform_read_fp32_keeps_dtype_and_chunks_consistently():
    values, anchors, offsets, logits = _deform_inputs(K=600, dtype=torch.float32, C=12)
    got = ops.deform_read(*values, anchors, offsets, logits, (8, 16, 32))
    assert got.dtype == torch.float32 and got.shape == (1, 600, 4, 12)
    one = ops.deform_read(*values, anchors[:, 555:556], offsets[:, 555:556], logits[:, 555:556],
                          (8, 16, 32))
    torch.testing.assert_close(got[:, 555:556], one, rtol=0, atol=0)


def test_deform_read_gradients_match_finite_differences():
    values, anchors, offsets, logits = _deform_inputs(K=2, R=2, C=6, heads=2,
                                                      sizes=((5, 4), (3, 3), (2, 2)))
    offsets = offsets[:, :, :, :2].contiguous()  # heads=2
    logits = logits[:, :, :, :2].contiguous()
    inputs = [t.clone().requires_grad_(True) for t in (*values, offsets, logits)]

    def fn(v2, v3, v4, off, lg):
        return ops.deform_read(v2, v3, v4, anchors, off, lg, (8, 16, 32))

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


# ---- event_splat ---------------------------------------------------------------------------
def _splat_naive(events, table, cfg):
    grid = np.zeros((8, cfg.height, cfg.width))
    tab = table.double().numpy()
    for x, y, t, _ in events.double().numpy():
        if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(t)):
            continue
        if not (0 <= x < cfg.width and 0 <= y < cfg.height):
            continue
        px, py = int(np.floor(x)), int(np.floor(y))
        coords = (px / cfg.width, py / cfg.height, min(min(max(t, 0.0), 1.0) * cfg.time_scale, 1.0))
        offset = 0
        for lvl, (rx, ry, rt) in enumerate(cfg.f3_resolutions):
            feat = np.zeros(2)
            base, frac = [], []
            for c, r in zip(coords, (rx, ry, rt)):
                s = c * r
                i0 = min(int(np.floor(s)), r - 1)
                base.append(i0)
                frac.append(s - i0)
            for dx in (0, 1):
                for dy in (0, 1):
                    for dt in (0, 1):
                        w = ((frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1])
                             * (frac[2] if dt else 1 - frac[2]))
                        row = offset + (base[0] + dx) + (rx + 1) * ((base[1] + dy) + (ry + 1) * (base[2] + dt))
                        feat += w * tab[row]
            grid[2 * lvl:2 * lvl + 2, py, px] += feat
            offset += (rx + 1) * (ry + 1) * (rt + 1)
    return grid[None]


def test_event_splat_matches_naive_loop_and_drops_bad_events():
    cfg = get_config("tiny")
    g = torch.Generator().manual_seed(0)
    ev = torch.rand(300, 4, generator=g, dtype=torch.float64) * torch.tensor(
        [cfg.width, cfg.height, 1.3, 1.0], dtype=torch.float64) - torch.tensor([0, 0, 0.15, 0], dtype=torch.float64)
    ev[:10, 0] = cfg.width  # just off the right edge
    ev[10:20, 1] = -0.5
    ev[20, 0] = float("nan")
    ev[21, 2] = float("inf")
    ev[22, 0] = cfg.width - 1e-3  # last column, fractional
    table = torch.randn(sum(cfg.f3_table_rows), 2, generator=g, dtype=torch.float64)
    res = [r for t in cfg.f3_resolutions for r in t]
    got = ops.event_splat(ev.float(), table.float(), cfg.width, cfg.height, res, cfg.time_scale)
    ref = _splat_naive(ev.float(), table.float(), cfg)
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert got.shape == (1, 8, cfg.height, cfg.width)


def test_event_splat_zero_events_and_gradient():
    cfg = get_config("tiny")
    res = [r for t in cfg.f3_resolutions for r in t]
    table = torch.randn(sum(cfg.f3_table_rows), 2, requires_grad=True)
    empty = ops.event_splat(torch.zeros(0, 4), table, cfg.width, cfg.height, res, cfg.time_scale)
    assert empty.shape == (1, 8, cfg.height, cfg.width) and not empty.any()
    ev = torch.tensor([[10.0, 20.0, 0.5, 1.0]])
    out = ops.event_splat(ev, table, cfg.width, cfg.height, res, cfg.time_scale)
    out.sum().backward()
    # each level's 8 corner weights sum to one, for each of the 2 features
    assert abs(table.grad.sum().item() - 4 * 2) < 1e-5


def test_event_splat_rejects_table_of_other_config():
    cfg = get_config("tiny")
    res = [r for t in cfg.f3_resolutions for r in t]
    with pytest.raises(ValueError, match="expected \\(28872, 2\\)"):
        ops.event_splat_reference(torch.zeros(1, 4), torch.zeros(10, 2), cfg.width, cfg.height,
                                  res, cfg.time_scale)


def test_plugin_backend_is_rejected_with_reason_when_not_built():
    try:
        import plugins.torch_ext  # noqa: F401
        pytest.skip("the compiled plugin extension is present; covered by the plugin tests")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="op backend 'plugin' needs the compiled"):
        ops.set_backend("plugin")
    assert ops.get_backend() == "reference"
