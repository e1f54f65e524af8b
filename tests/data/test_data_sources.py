"""Calibration data sources: the event simulator, the DSEC/M3ED/MVSEC readers (on small files
written here in the layouts of ARCHITECTURE §7) and the §4.3 query sampler."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from eventspd_export.data.query_sampler import CATEGORIES, HardExampleMap, QuerySampler
from eventspd_export.data.simulator import Body, EventSimulator, SimulatorConfig, SyntheticSource
from eventspd_export.data.sources import open_source
from eventspd_export.data.windows import DataError, window_boundaries_us
from model_def import get_config

WINDOW_S = 1.0 / 120.0
try:
    import h5py
except ImportError:  # pragma: no cover - depends on the machine
    h5py = None
try:
    import hdf5plugin
except ImportError:  # pragma: no cover - depends on the machine
    hdf5plugin = None
try:
    import PIL
except ImportError:  # pragma: no cover - depends on the machine
    PIL = None

# the simulator and the sampler need numpy only; the dataset tests write HDF5 files
needs_h5py = pytest.mark.skipif(h5py is None, reason="the dataset readers need h5py "
                                                     "(pip install h5py)")
needs_pillow = pytest.mark.skipif(PIL is None, reason="DSEC disparity PNGs need Pillow "
                                                      "(pip install pillow)")


# =============================================================================================
# simulator


def _check_layout(win, w, h):
    ev = win.events
    assert ev.dtype == np.float32 and ev.ndim == 2 and ev.shape[1] == 4
    x, y, t, p = ev.T
    assert np.all((x >= 0) & (x < w) & (x == np.floor(x)))
    assert np.all((y >= 0) & (y < h) & (y == np.floor(y)))
    assert np.all((t >= 0) & (t < 1)) and np.all(np.diff(t) >= 0)
    assert set(np.unique(p).tolist()) <= {-1.0, 1.0}
    # timestamps are whole microseconds of the window
    t_us = t.astype(np.float64) * win.duration_us
    assert np.allclose(t_us, np.round(t_us), atol=2e-3 * max(1, win.duration_us / 8333))
    assert win.depth.shape == (h, w) and win.depth.dtype == np.float32


@pytest.mark.parametrize("name", ["tiny", "mvsec", "dsec"])
def test_simulator_sizes_layout_and_depth(name):
    cfg = get_config(name)
    src = open_source("synthetic:3", cfg.width, cfg.height, cfg.window_s, num_windows=3)
    assert isinstance(src, SyntheticSource) and len(src) == 3 and src.has_depth
    for win in src:
        _check_layout(win, cfg.width, cfg.height)
        d = win.depth
        assert np.isfinite(d).mean() == 1.0  # the background wall covers every pixel
        assert d.min() > 0.05 and d.max() < 100
        assert win.num_events > 100  # the camera moves in every random scene
        assert win.duration_us in (8333, 8334)
    assert src[1].t_start_us == src[0].t_end_us  # contiguous windows on one clock


def test_simulator_is_deterministic():
    a = SyntheticSource(256, 160, WINDOW_S, seed=5, num_windows=30)
    b = SyntheticSource(256, 160, WINDOW_S, seed=5, num_windows=30)
    c = SyntheticSource(256, 160, WINDOW_S, seed=6, num_windows=30)
    for i in (0, 25, 1):  # random access order does not matter
        wa, wb = a.window(i), b.window(i)
        np.testing.assert_array_equal(wa.events, wb.events)
        np.testing.assert_array_equal(wa.depth, wb.depth)
    assert not np.array_equal(a.window(0).events, c.window(0).events)


def _static_scene(sim: EventSimulator, card_velocity=(0.0, 0.0, 0.0), wall_z=10.0):
    """Static camera, a textured wall and one card at 4 m (optionally moving)."""
    rng = np.random.default_rng(0)
    from eventspd_export.data.simulator import _make_texture

    sc = sim.empty_scene()
    sc.add_texture(_make_texture(rng, 256))
    sc.add_texture(_make_texture(rng, 256))
    sc.add_plane(Body(np.array([0.0, 0.0, wall_z])), (1, 0, 0), (0, 1, 0), 0, 8.0 / 256)
    sc.add_plane(Body(np.array([0.0, 0.0, 4.0]), velocity=np.array(card_velocity)),
                 (1, 0, 0), (0, 1, 0), 1, 1.0 / 256, half_u=0.6, half_v=0.4)
    return sc


def test_depth_matches_rendered_geometry():
    w, h = 256, 160
    sim = EventSimulator(w, h, SimulatorConfig(), seed=0)
    sc = _static_scene(sim)
    _, depth = sim.render(sc, 0.0)
    f, cx, cy = sim.focal, (w - 1) / 2, (h - 1) / 2
    u = np.arange(w)[None, :]
    v = np.arange(h)[:, None]
    # the card spans |X| <= 0.6, |Y| <= 0.4 at Z = 4: inside its projection (minus a
    # one-pixel border) depth is 4 m, outside (plus a border) the wall's 10 m
    inside = (np.abs(u - cx) < f * 0.6 / 4 - 1) & (np.abs(v - cy) < f * 0.4 / 4 - 1)
    outside = (np.abs(u - cx) > f * 0.6 / 4 + 1) | (np.abs(v - cy) > f * 0.4 / 4 + 1)
    np.testing.assert_allclose(depth[inside], 4.0, rtol=1e-5)
    np.testing.assert_allclose(depth[outside], 10.0, rtol=1e-5)

    # a ground plane 1.5 m below the camera: z = 1.5 f / (v - cy) below the horizon
    sc2 = sim.empty_scene()
    sc2.add_texture(np.zeros((64, 64), np.float32))
    sc2.add_plane(Body(np.array([0.0, 0.0, 30.0])), (1, 0, 0), (0, 1, 0), 0, 0.05)
    sc2.add_plane(Body(np.array([0.0, 1.5, 0.0])), (1, 0, 0), (0, 0, 1), 0, 0.05)
    _, d2 = sim.render(sc2, 0.0)
    rows = np.arange(h)
    expect = np.where(rows > cy, 1.5 * f / np.maximum(rows - cy, 1e-9), np.inf)
    expect = np.minimum(expect, 30.0)
    np.testing.assert_allclose(d2[:, w // 2], expect, rtol=1e-4)


def test_events_only_where_things_move_and_zero_motion_gives_noise():
    w, h = 256, 160
    quiet = SimulatorConfig(background_rate_hz=0.0)
    sim = EventSimulator(w, h, quiet, seed=1)
    rng = np.random.default_rng(0)
    # static scene, no noise: no event at all
    x, y, t, p, depth, info = sim.simulate(_static_scene(sim), 0.0, WINDOW_S, rng)
    assert x.size == 0 and info.signal_events == 0

    # a card moving sideways at 3 m/s: events only around the card (start and end positions)
    sc = _static_scene(sim, card_velocity=(3.0, 0.0, 0.0))
    x, y, t, p, depth_end, info = sim.simulate(sc, 0.0, WINDOW_S, rng)
    assert x.size > 200
    _, depth_start = sim.render(sc, 0.0)
    card = (depth_start < 7) | (depth_end < 7)
    grown = card.copy()
    for dy in (-2, -1, 0, 1, 2):
        for dx in (-2, -1, 0, 1, 2):
            grown |= np.roll(np.roll(card, dy, 0), dx, 1)
    assert grown[y, x].all()
    assert grown.mean() < 0.5  # ... which is a small part of the image

    # zero motion with noise: only (about) the expected number of noise events, spread out
    noisy = EventSimulator(w, h, SimulatorConfig(background_rate_hz=2.0, shot_noise_gain=0.0),
                           seed=1)
    x, y, t, p, _, info = noisy.simulate(_static_scene(noisy), 0.0, WINDOW_S, rng)
    expected = 2.0 * WINDOW_S * w * h
    assert info.signal_events == 0
    assert abs(x.size - expected) < 5 * math.sqrt(expected)
    assert 0.3 < (p > 0).mean() < 0.7
    src = SyntheticSource(w, h, WINDOW_S, seed=2, num_windows=2,
                          sim=SimulatorConfig(motion_scale=0.0, background_rate_hz=1.0))
    win = src.window(0)
    assert src.last_info.signal_events == 0
    assert win.num_events == src.last_info.noise_events < 4 * 1.0 * WINDOW_S * w * h + 20


def test_events_concentrate_on_edges():
    w, h = 346, 260
    sim = EventSimulator(w, h, SimulatorConfig(background_rate_hz=0.0), seed=4)
    rng = np.random.default_rng(1)
    frac_events, frac_pixels = [], []
    for s in range(3):
        sc = sim.random_scene(s)
        lum, _ = sim.render(sc, 0.0)
        gx = np.abs(np.diff(lum, axis=1, append=lum[:, -1:]))
        gy = np.abs(np.diff(lum, axis=0, append=lum[-1:, :]))
        edge = np.maximum(gx, gy) > np.quantile(np.maximum(gx, gy), 0.9)
        grown = edge | np.roll(edge, 1, 0) | np.roll(edge, -1, 0) | np.roll(edge, 1, 1) | \
            np.roll(edge, -1, 1)
        x, y, *_ = sim.simulate(sc, 0.0, WINDOW_S, rng)
        frac_events.append(grown[y, x].mean())
        frac_pixels.append(grown.mean())
    # edge pixels (~1/4 of the image after growing) hold well over half of the events
    assert np.mean(frac_events) > 1.8 * np.mean(frac_pixels)
    assert np.mean(frac_events) > 0.5


def test_event_count_scales_with_contrast_and_motion():
    def count(**kw):
        cfg = SimulatorConfig(background_rate_hz=0.0, **kw)
        src = SyntheticSource(256, 160, WINDOW_S, seed=9, num_windows=40, windows_per_scene=10,
                              sim=cfg)
        return sum(src.window(i).num_events for i in (0, 10, 20, 30))

    c = [count(texture_contrast=k) for k in (0.25, 1.0, 2.0)]
    m = [count(motion_scale=k) for k in (0.25, 1.0, 2.0)]
    assert c[0] < c[1] < c[2]
    assert m[0] < m[1] < m[2]
    assert m[2] > 3 * m[0]


def test_refractory_period_holds_per_pixel():
    cfg = SimulatorConfig(background_rate_hz=0.0, refractory_s=1e-3, motion_scale=3.0)
    src = SyntheticSource(256, 160, WINDOW_S, seed=11, num_windows=1, sim=cfg)
    win = src.window(0)
    ev = win.events
    assert win.num_events > 100
    pix = ev[:, 1].astype(np.int64) * 256 + ev[:, 0].astype(np.int64)
    order = np.lexsort((ev[:, 2], pix))
    same = pix[order][1:] == pix[order][:-1]
    gaps = np.diff(ev[order, 2].astype(np.float64) * win.duration_us)[same]
    assert gaps.size > 0 and gaps.min() >= 1e3 - 1.0  # 1 ms, less the µs quantisation
    # without a refractory period the same scene fires more (bursts at strong edges)
    free = SyntheticSource(256, 160, WINDOW_S, seed=11, num_windows=1,
                           sim=SimulatorConfig(background_rate_hz=0.0, refractory_s=0.0,
                                               motion_scale=3.0)).window(0)
    assert free.num_events > win.num_events


# =============================================================================================
# open_source and the common window type


def test_open_source_errors(tmp_path):
    with pytest.raises(DataError, match="unknown event data source 'kitti:/x' in --data"):
        open_source("kitti:/x", 256, 160, WINDOW_S)
    f = tmp_path / "events.h5"
    f.write_bytes(b"")
    with pytest.raises(DataError, match="is a path: say which dataset"):
        open_source(str(f), 256, 160, WINDOW_S)
    with pytest.raises(DataError, match="seed must be an integer"):
        open_source("synthetic:abc", 256, 160, WINDOW_S)
    with pytest.raises(DataError, match="no path given"):
        open_source("dsec:", 640, 480, WINDOW_S)
    with pytest.raises(DataError, match="unknown option.*bogus"):
        open_source("synthetic", 256, 160, WINDOW_S, bogus=1)
    with pytest.raises(DataError, match="does not exist"):
        open_source(f"m3ed:{tmp_path / 'missing_data.h5'}", 1280, 720, WINDOW_S)
    with pytest.raises(DataError,
                       match="cannot open .* as HDF5" if h5py else "needs h5py"):
        open_source(f"dsec:{f}", 640, 480, WINDOW_S)  # an empty file is no HDF5 file
    src = open_source("synthetic:1", 256, 160, WINDOW_S, num_windows=2)
    with pytest.raises(DataError, match="5 windows requested.*only 2"):
        list(src.take(5))
    with pytest.raises(IndexError):
        src.window(2)


def test_window_boundaries_do_not_drift():
    b = window_boundaries_us(1000, WINDOW_S, 120)
    assert b[0] == 1000 and b[-1] == 1000 + 1_000_000
    assert set(np.diff(b).tolist()) == {8333, 8334}


# =============================================================================================
# dataset fixtures, written in the layouts of ARCHITECTURE §7


def _event_stream(rng, w, h, t_first, span_us, n):
    """Sorted µs timestamps with bursts, an empty stretch, and events exactly on window
    boundaries (to pin down inclusive/exclusive ends)."""
    t = np.sort(rng.integers(t_first, t_first + span_us, n))
    t[: n // 10] = t_first + (t[: n // 10] - t_first) // 7  # a dense burst at the start
    t = np.sort(t)
    gap = (t > t_first + span_us // 2) & (t < t_first + span_us // 2 + 3500)
    t = t[~gap]  # 3.5 ms without events: empty milliseconds in the index
    bounds = window_boundaries_us(t_first, WINDOW_S, int(span_us / (WINDOW_S * 1e6)))
    t = np.sort(np.concatenate([t, bounds, bounds[1:4] - 1]))
    m = t.size
    x = rng.integers(0, w, m)
    y = rng.integers(0, h, m)
    p = rng.integers(0, 2, m)
    return x, y, t, p


def _ms_index(t_rel):
    ms = np.arange(int(t_rel[-1]) // 1000 + 1)
    return np.searchsorted(t_rel, ms * 1000, side="left").astype(np.uint64)


def _compression(kind):
    if kind is None:
        return {}
    if kind == "gzip":
        return {"compression": "gzip"}
    if hdf5plugin is None:
        pytest.skip("hdf5plugin is not installed (pip install hdf5plugin): the compressed "
                    "layout of the real DSEC/M3ED files cannot be written or read")
    filt = hdf5plugin.Zstd() if kind == "zstd" else hdf5plugin.Blosc(cname="lz4")
    return dict(filt)


def _create(f, key, data, kw):
    """A 1-D dataset, chunked (as filters require) when compressed."""
    if kw:
        kw = dict(kw, chunks=(min(4096, data.shape[0]),))
    f.create_dataset(key, data=data, **kw)


def _write_dsec(root: Path, rng, *, compression=None, n=30000, span_us=150_000,
                t_offset=1_600_000_000_000, disparity=True, rectify=True):
    w, h = 640, 480
    x, y, t, p = _event_stream(rng, w, h, 20, span_us, n)
    ev_dir = root / "seq" / "events" / "left"
    ev_dir.mkdir(parents=True)
    kw = _compression(compression)
    with h5py.File(ev_dir / "events.h5", "w") as f:
        _create(f, "events/x", x.astype(np.uint16), kw)
        _create(f, "events/y", y.astype(np.uint16), kw)
        _create(f, "events/t", t.astype(np.uint32), kw)
        _create(f, "events/p", p.astype(np.uint8), kw)
        _create(f, "ms_to_idx", _ms_index(t), kw)
        f.create_dataset("t_offset", data=np.int64(t_offset))
    rmap = None
    if rectify:
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        rmap = np.stack([gx * 0.98 + 3.25, gy * 1.01 - 1.5], axis=-1)  # some map off-sensor
        with h5py.File(ev_dir / "rectify_map.h5", "w") as f:
            f.create_dataset("rectify_map", data=rmap)
    gt_ts = None
    if disparity:
        from PIL import Image

        ddir = root / "seq" / "disparity" / "event"
        ddir.mkdir(parents=True)
        gt_ts = t_offset + np.array([20 + 8333 * 3, 20 + 100_000 + 1000], np.int64)
        for j in range(gt_ts.size):
            disp = rng.integers(1, 60 * 256, (h, w)).astype(np.uint16)
            disp[:, : 100 * (j + 1)] = 0  # invalid
            Image.fromarray(disp).save(ddir / f"{j:06d}.png")
        np.savetxt(root / "seq" / "disparity" / "timestamps.txt", gt_ts, fmt="%d")
    return dict(x=x, y=y, t=t + t_offset, p=p, rmap=rmap, gt_ts=gt_ts,
                events=ev_dir / "events.h5", seq=root / "seq")


def _brute(d, start, end):
    sel = (d["t"] >= start) & (d["t"] < end)
    return d["x"][sel], d["y"][sel], d["t"][sel], d["p"][sel]


@needs_h5py
@needs_pillow
@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_dsec_windows_match_brute_force(tmp_path, compression):
    d = _write_dsec(tmp_path, np.random.default_rng(0), compression=compression)
    src = open_source(f"dsec:{d['seq']}", 640, 480, WINDOW_S, rectify=False,
                      baseline_focal=0.6 * 560)
    assert src.t_offset == 1_600_000_000_000 and not src.rectified
    assert len(src) == int((d["t"][-1] + 1 - d["t"][0]) // 8333.34)
    total = 0
    for i, win in enumerate(src):
        bx, by, bt, bp = _brute(d, win.t_start_us, win.t_end_us)
        assert win.t_start_us == d["t"][0] + round(i * 1e6 * WINDOW_S)
        np.testing.assert_array_equal(win.events[:, 0], bx)
        np.testing.assert_array_equal(win.events[:, 1], by)
        np.testing.assert_allclose(win.events[:, 2], (bt - win.t_start_us) / win.duration_us,
                                   rtol=0, atol=1e-7)
        np.testing.assert_array_equal(win.events[:, 3], np.where(bp > 0, 1, -1))
        total += win.num_events
    last = src[len(src) - 1]
    assert total == np.count_nonzero(d["t"] < last.t_end_us)  # nothing lost or repeated


@needs_h5py
@needs_pillow
def test_dsec_rectification_and_disparity_depth(tmp_path):
    d = _write_dsec(tmp_path, np.random.default_rng(1))
    src = open_source(f"dsec:{d['events']}", 640, 480, WINDOW_S, baseline_focal=336.0)
    assert src.rectified and src.has_depth
    win = src[2]
    bx, by, bt, _ = _brute(d, win.t_start_us, win.t_end_us)
    rx, ry = d["rmap"][by, bx, 0], d["rmap"][by, bx, 1]
    on = (rx >= 0) & (rx < 640) & (ry >= 0) & (ry < 480)
    assert 0 < on.sum() < on.size  # the map sends some events off the sensor: dropped
    np.testing.assert_allclose(win.events[:, 0], rx[on])
    np.testing.assert_allclose(win.events[:, 1], ry[on])
    # GT: window 2 ends at t0 + 25000 µs, 1 µs from the first disparity frame (t0 + 25019)
    assert win.depth_t_us == d["gt_ts"][0]
    from PIL import Image

    raw = np.asarray(Image.open(d["seq"] / "disparity" / "event" / "000000.png"))
    with np.errstate(divide="ignore"):
        expect = np.where(raw > 0, 336.0 / (raw / 256.0), np.nan)
    np.testing.assert_allclose(win.depth, expect, rtol=1e-6)
    assert np.isnan(win.depth[:, :100]).all()
    assert src[0].depth is None and src[5].depth is None  # no frame within half a window
    # GT-aligned windows end exactly at the disparity timestamps
    gt = open_source(f"dsec:{d['seq']}", 640, 480, WINDOW_S, baseline_focal=336.0, mode="gt")
    assert [w.t_end_us for w in gt] == d["gt_ts"].tolist()
    assert all(w.depth is not None for w in gt)


@needs_h5py
@needs_pillow
def test_dsec_without_calibration_says_so_and_errors(tmp_path, monkeypatch):
    d = _write_dsec(tmp_path, np.random.default_rng(2), compression="gzip")
    src = open_source(f"dsec:{d['seq']}", 640, 480, WINDOW_S)
    assert not src.has_depth and "no baseline_focal" in src.describe()
    assert src[3].depth is None
    with pytest.raises(DataError, match="mode='gt' needs depth"):
        open_source(f"dsec:{d['seq']}", 640, 480, WINDOW_S, mode="gt")
    # wrong sensor size for the configuration: file, key, shape and expectation named
    with pytest.raises(DataError,
                       match=r"rectify_map.h5 'rectify_map' is shape \(480, 640, 2\).*256x160"):
        open_source(f"dsec:{d['seq']}", 256, 160, WINDOW_S)
    # a filter the HDF5 library cannot decode names the dataset and the fix
    import eventspd_export.data.hdf5 as ds_mod

    monkeypatch.setattr(ds_mod, "filter_available", lambda code: code != 1)  # 1 = gzip
    with pytest.raises(DataError,
                       match=r"dsec: .*events.h5 dataset '/events/x' is compressed with HDF5 "
                             r"filter 1 .*pip install hdf5plugin"):
        open_source(f"dsec:{d['seq']}", 640, 480, WINDOW_S)


@needs_h5py
def test_dsec_bad_files(tmp_path):
    d = _write_dsec(tmp_path, np.random.default_rng(3), disparity=False, rectify=False)
    with pytest.raises(DataError, match="640x480 sensor.*expects 346x260"):
        open_source(f"dsec:{d['events']}", 346, 260, WINDOW_S)
    with h5py.File(d["events"], "a") as f:  # (the failed open above closed the file)
        del f["events/p"]
    with pytest.raises(DataError, match=r"has no dataset 'events/p'"):
        open_source(f"dsec:{d['events']}", 640, 480, WINDOW_S)

    # empty and too-short files
    for n_events, match in ((0, "contains no events"), (5, "too short for one window")):
        root = tmp_path / f"short{n_events}"
        root.mkdir()
        with h5py.File(root / "events.h5", "w") as f:
            t = np.arange(n_events, dtype=np.uint32) * 1000
            f.create_dataset("events/x", data=np.zeros(n_events, np.uint16))
            f.create_dataset("events/y", data=np.zeros(n_events, np.uint16))
            f.create_dataset("events/t", data=t)
            f.create_dataset("events/p", data=np.zeros(n_events, np.uint8))
            f.create_dataset("ms_to_idx", data=_ms_index(t) if n_events else np.zeros(0, np.uint64))
            f.create_dataset("t_offset", data=np.int64(0))
        with pytest.raises(DataError, match=match):
            open_source(f"dsec:{root}", 640, 480, WINDOW_S)

    # an index that does not mean "first event of the millisecond" is caught, not trusted
    root = tmp_path / "badidx"
    root.mkdir()
    x, y, t, p = _event_stream(np.random.default_rng(4), 640, 480, 0, 50_000, 5000)
    with h5py.File(root / "events.h5", "w") as f:
        f.create_dataset("events/x", data=x.astype(np.uint16))
        f.create_dataset("events/y", data=y.astype(np.uint16))
        f.create_dataset("events/t", data=t.astype(np.uint32))
        f.create_dataset("events/p", data=p.astype(np.uint8))
        f.create_dataset("ms_to_idx", data=_ms_index(t) // 2)
        f.create_dataset("t_offset", data=np.int64(0))
    src = open_source(f"dsec:{root}", 640, 480, WINDOW_S)
    with pytest.raises(DataError, match="'ms_to_idx' does not match the timestamps"):
        src.window(3)


def test_ms_index_reads_only_one_millisecond_per_lookup():
    from eventspd_export.data.hdf5 import MsIndex as _MsIndex

    t = np.sort(np.random.default_rng(0).integers(0, 2_000_000, 400_000))

    class Recorder:
        def __init__(self, a):
            self.a, self.shape, self.reads = a, a.shape, []

        def __getitem__(self, key):
            if isinstance(key, slice):
                self.reads.append(len(range(*key.indices(self.a.shape[0]))))
            return self.a[key]

    rec = Recorder(t)
    index = _MsIndex("test", Path("x"), rec, _ms_index(t), "ms_to_idx")
    for q in (0, 5, 999_999, 1_000_000, 1_234_567, 1_999_999, 2_000_000, 3_000_000):
        assert index.first(q) == np.searchsorted(t, q, side="left")
    assert max(rec.reads) < 1000  # ~200 events per ms, never the whole array


# ---- M3ED -----------------------------------------------------------------------------------


def _write_m3ed(root: Path, rng, *, compression=None, resolution=(1280, 720), depth=True,
                n=40000, span_us=120_000):
    w, h = 1280, 720
    x, y, t, p = _event_stream(rng, w, h, 3_000_000, span_us, n)
    kw = _compression(compression)
    data = root / "car_urban_day_data.h5"
    with h5py.File(data, "w") as f:
        g = "/prophesee/left"
        _create(f, f"{g}/x", x.astype(np.uint16), kw)
        _create(f, f"{g}/y", y.astype(np.uint16), kw)
        _create(f, f"{g}/t", t.astype(np.int64), kw)
        _create(f, f"{g}/p", p.astype(np.int8), kw)
        _create(f, f"{g}/ms_map_idx", _ms_index(t), kw)
        f.create_dataset(f"{g}/calib/intrinsics", data=np.array([1030.0, 1030.0, 640.0, 360.0]))
        f.create_dataset(f"{g}/calib/distortion_coeffs", data=np.zeros(4))
        f.create_dataset(f"{g}/calib/resolution", data=np.array(resolution, np.int64))
    gt_ts = None
    frames = None
    if depth:
        gt_ts = np.array([3_000_000 + 8333 * 2 + 300, 3_000_000 + 50_000, 3_000_000 + 99_990],
                         np.int64)
        frames = rng.uniform(1, 80, (3, h, w)).astype(np.float32)
        frames[:, :, :200] = 0  # M3ED marks pixels without LiDAR return as 0 / inf
        frames[1, :50] = np.inf
        with h5py.File(root / "car_urban_day_depth_gt.h5", "w") as f:
            f.create_dataset("/depth/prophesee/left", data=frames, chunks=(1, h, w),
                             compression="gzip", compression_opts=1)
            f.create_dataset("/ts", data=gt_ts)
            f.create_dataset("/ts_map_prophesee_left_t", data=np.searchsorted(t, gt_ts))
    return dict(x=x, y=y, t=t, p=p, gt_ts=gt_ts, frames=frames, data=data)


@needs_h5py
@pytest.mark.parametrize("compression", [None, "blosc"])
def test_m3ed_windows_depth_and_layout(tmp_path, compression):
    d = _write_m3ed(tmp_path, np.random.default_rng(5), compression=compression)
    src = open_source(f"m3ed:{tmp_path}", 1280, 720, WINDOW_S)
    assert src.has_depth and len(src) == 14
    for i in range(len(src)):
        win = src[i]
        bx, by, bt, bp = _brute(d, win.t_start_us, win.t_end_us)
        np.testing.assert_array_equal(win.events[:, 0], bx)
        np.testing.assert_array_equal(win.events[:, 1], by)
        np.testing.assert_array_equal(win.events[:, 3], np.where(bp > 0, 1, -1))
        assert win.events[:, 2].min(initial=0) >= 0 and win.events[:, 2].max(initial=0) < 1
    # window 2 ends at t0 + 25000 µs; the frame at t0 + 16966 is 8 ms away: none.
    # window 1 ends at t0 + 16667: 299 µs from that frame
    assert src[2].depth is None
    w1 = src[1]
    assert w1.depth_t_us == d["gt_ts"][0]
    f0 = d["frames"][0]
    np.testing.assert_array_equal(w1.depth, np.where(f0 > 0, f0, np.nan))
    w5 = src[5]  # ends at t0 + 50000: frame 1 exactly; its inf rows are invalid
    assert w5.depth_t_us == d["gt_ts"][1] and np.isnan(w5.depth[:50]).all()
    gt = open_source(f"m3ed:{d['data']}", 1280, 720, WINDOW_S, mode="gt")
    assert [w.t_end_us for w in gt] == d["gt_ts"].tolist()


@needs_h5py
def test_m3ed_errors(tmp_path):
    d = _write_m3ed(tmp_path, np.random.default_rng(6), resolution=(640, 480), depth=False)
    with pytest.raises(DataError,
                       match=r"'/prophesee/left/calib/resolution' is \[640, 480\].*1280x720"):
        open_source(f"m3ed:{d['data']}", 1280, 720, WINDOW_S)
    other = tmp_path / "b"
    other.mkdir()
    d = _write_m3ed(other, np.random.default_rng(7))
    small = tmp_path / "small_depth_gt.h5"
    with h5py.File(small, "w") as f:
        f.create_dataset("/depth/prophesee/left", data=np.ones((2, 480, 640), np.float32))
        f.create_dataset("/ts", data=np.array([3_000_000, 3_050_000]))
        f.create_dataset("/ts_map_prophesee_left_t", data=np.array([0, 10]))
    with pytest.raises(DataError, match=r"small_depth_gt.h5 '/depth/prophesee/left' "
                                                   r"is shape \(2, 480, 640\).*1280x720"):
        open_source(f"m3ed:{d['data']}", 1280, 720, WINDOW_S, depth_path=small)
    with pytest.raises(DataError, match="depth GT file .*nope.h5 does not exist"):
        open_source(f"m3ed:{d['data']}", 1280, 720, WINDOW_S, depth_path=other / "nope.h5")
    with h5py.File(d["data"], "a") as f:
        del f["/prophesee/left/ms_map_idx"]
    with pytest.raises(DataError, match="has no dataset '/prophesee/left/ms_map_idx'"):
        open_source(f"m3ed:{d['data']}", 1280, 720, WINDOW_S)


# ---- MVSEC ----------------------------------------------------------------------------------


def _write_mvsec(root: Path, rng, *, n=60000, span_s=0.25, gt_shape=(260, 346)):
    w, h = 346, 260
    t0 = 1504645177.4215
    t = np.sort(t0 + rng.uniform(0, span_s, n))
    t[100:110] = t[100]  # equal timestamps
    x = rng.integers(0, w, n).astype(np.float64)
    y = rng.integers(0, h, n).astype(np.float64)
    p = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    data = root / "outdoor_day1_data.hdf5"
    with h5py.File(data, "w") as f:
        f.create_dataset("davis/left/events", data=np.stack([x, y, t, p], 1),
                         chunks=(2048, 4), compression="gzip")
    gt_ts = t0 + np.array([0.05, 0.1, 0.2])
    frames = rng.uniform(2, 40, (3,) + gt_shape).astype(np.float32)
    frames[:, :30] = np.nan
    with h5py.File(root / "outdoor_day1_gt.hdf5", "w") as f:
        f.create_dataset("davis/left/depth_image_rect", data=frames)
        f.create_dataset("davis/left/depth_image_rect_ts", data=gt_ts)
    return dict(x=x, y=y, t=t, p=p, gt_ts=gt_ts, frames=frames, data=data)


@needs_h5py
def test_mvsec_windows_by_searchsorted_and_depth(tmp_path):
    d = _write_mvsec(tmp_path, np.random.default_rng(8))
    src = open_source(f"mvsec:{d['data']}", 346, 260, WINDOW_S)
    assert src.has_depth
    t_first_us = math.floor(d["t"][0] * 1e6)
    assert len(src) == int((math.floor(d["t"][-1] * 1e6) + 1 - t_first_us) // 8333.34)
    total = 0
    for win in src:
        sel = (d["t"] >= win.t_start_us / 1e6) & (d["t"] < win.t_end_us / 1e6)
        np.testing.assert_array_equal(win.events[:, 0], d["x"][sel])
        np.testing.assert_array_equal(win.events[:, 1], d["y"][sel])
        np.testing.assert_array_equal(win.events[:, 3], d["p"][sel])
        np.testing.assert_allclose(
            win.events[:, 2], (d["t"][sel] * 1e6 - win.t_start_us) / win.duration_us, atol=1e-6)
        total += win.num_events
        if win.depth is not None:
            j = int(np.argmin(np.abs(d["gt_ts"] * 1e6 - win.t_end_us)))
            assert abs(d["gt_ts"][j] * 1e6 - win.t_end_us) <= 8333 / 2 + 1
            np.testing.assert_array_equal(win.depth, d["frames"][j])
    assert total == np.count_nonzero(d["t"] < src[len(src) - 1].t_end_us / 1e6)
    assert sum(w.depth is not None for w in src) == 3
    gt = open_source(f"mvsec:{tmp_path}", 346, 260, WINDOW_S, mode="gt")
    assert [w.t_end_us for w in gt] == np.round(d["gt_ts"] * 1e6).astype(np.int64).tolist()


@needs_h5py
def test_mvsec_errors(tmp_path):
    d = _write_mvsec(tmp_path, np.random.default_rng(9), gt_shape=(180, 240))
    with pytest.raises(DataError,
                       match=r"outdoor_day1_gt.hdf5 'davis/left/depth_image_rect' is shape "
                             r"\(3, 180, 240\).*346x260"):
        open_source(f"mvsec:{d['data']}", 346, 260, WINDOW_S)
    bad = tmp_path / "x_data.hdf5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("davis/left/events", data=np.zeros((10, 3)))
    with pytest.raises(DataError, match=r"'davis/left/events' has shape \(10, 3\)"):
        open_source(f"mvsec:{bad}", 346, 260, WINDOW_S)
    with pytest.raises(DataError, match="several MVSEC data file"):
        open_source(f"mvsec:{tmp_path}", 346, 260, WINDOW_S)


# =============================================================================================
# query sampler


def _sampler_inputs(w=128, h=96):
    depth = np.full((h, w), np.nan, np.float32)
    depth[:, : w // 2] = 5.0
    depth[20:40, 10:30] = 2.0  # a nearer block: depth edges around it
    rng = np.random.default_rng(0)
    ex = rng.integers(80, 100, 3000)
    ey = rng.integers(10, 20, 3000)
    events = np.stack([ex, ey, rng.random(3000), np.ones(3000)], 1).astype(np.float32)
    return depth, events


def test_sampler_category_proportions_and_membership():
    w, h = 128, 96
    depth, events = _sampler_inputs(w, h)
    hard = HardExampleMap(w, h)
    hard.grid[5, 7] = 1.0
    sampler = QuerySampler(w, h, hard_map=hard)
    k = 40000
    q, cat = sampler.sample_with_categories(k, np.random.default_rng(1), events=events,
                                            depth=depth)
    assert q.dtype == np.float32 and q.shape == (k, 2)
    # pseudo labels are absent: their 20 % go to the others in proportion
    expect = {"gt_valid": 0.5, "event_dense": 0.1875, "depth_gradient": 0.1875, "hard": 0.125}
    for name, share in expect.items():
        got = np.mean(cat == CATEGORIES.index(name))
        assert abs(got - share) < 4 * math.sqrt(share * (1 - share) / k), (name, got)
    assert not np.any(cat == CATEGORIES.index("pseudo"))
    u = np.rint(q[:, 0]).astype(int)
    v = np.rint(q[:, 1]).astype(int)
    gt = cat == CATEGORIES.index("gt_valid")
    assert np.isfinite(depth[v[gt], u[gt]]).all()
    edges = sampler.depth_edges(depth)
    assert edges[v[cat == CATEGORIES.index("depth_gradient")],
                 u[cat == CATEGORIES.index("depth_gradient")]].all()
    ev = cat == CATEGORIES.index("event_dense")
    assert ((u[ev] >= 80) & (u[ev] < 100) & (v[ev] >= 10) & (v[ev] < 20)).all()
    hd = cat == CATEGORIES.index("hard")
    assert ((u[hd] // 16 == 7) & (v[hd] // 16 == 5)).all()
    # sub-pixel jitter stays inside the chosen pixel and on the sensor
    assert np.all(np.abs(q[:, 0] - u) <= 0.5) and np.all(np.abs(q[:, 1] - v) <= 0.5)
    assert q[:, 0].min() >= 0 and q[:, 0].max() <= w - 1 and q[:, 1].max() <= h - 1
    # deterministic with the generator
    again = sampler.sample(k, np.random.default_rng(1), events=events, depth=depth)
    np.testing.assert_array_equal(q, again)


def test_sampler_redistributes_empty_categories():
    w, h = 128, 96
    depth, events = _sampler_inputs(w, h)
    hard = HardExampleMap(w, h)
    hard.grid[0, 0] = 2.0
    s = QuerySampler(w, h, hard_map=hard)
    p = s.effective_weights(s.pools(events=events))  # no depth: GT and gradient are empty
    assert p == pytest.approx({"event_dense": 0.6, "hard": 0.4})
    pseudo = np.zeros((h, w), bool)
    pseudo[:, 100:] = True
    p = s.effective_weights(s.pools(events=events, depth=depth, pseudo_valid=pseudo))
    assert p["pseudo"] == pytest.approx(0.2) and p["gt_valid"] == pytest.approx(0.4)
    # nothing at all: uniform over the sensor
    empty = QuerySampler(w, h)
    q, cat = empty.sample_with_categories(5000, np.random.default_rng(2))
    assert (cat == CATEGORIES.index("uniform")).all()
    assert q[:, 0].std() > w / 4 and q[:, 1].std() > h / 4
    # an explicit uniform share is honoured
    s2 = QuerySampler(w, h, {"uniform": 0.25, "gt_valid": 0.75, "pseudo": 0, "event_dense": 0,
                             "depth_gradient": 0, "hard": 0})
    _, cat = s2.sample_with_categories(20000, np.random.default_rng(3), depth=depth)
    assert abs(np.mean(cat == CATEGORIES.index("uniform")) - 0.25) < 0.015
    with pytest.raises(ValueError, match="unknown categories"):
        QuerySampler(w, h, {"lidar": 1.0})
    with pytest.raises(ValueError, match=r"depth has shape \(10, 10\)"):
        s.sample(4, np.random.default_rng(0), depth=np.ones((10, 10)))


def test_sampler_event_density_weighting():
    w, h = 64, 64
    ev = np.array([[10, 10, 0.1, 1]] * 50 + [[50, 50, 0.2, -1]] * 5, np.float32)
    s = QuerySampler(w, h, {"event_dense": 1.0, "gt_valid": 0, "pseudo": 0,
                            "depth_gradient": 0, "hard": 0}, event_radius=1)
    q = s.sample(11000, np.random.default_rng(4), events=ev)
    at_a = np.mean(np.rint(q[:, 0]) == 10)
    assert abs(at_a - 50 / 55) < 0.02


def test_hard_example_map_ema_math_and_sampling():
    m = HardExampleMap(1280, 720, init=0.5)
    assert m.grid.shape == (45, 80)  # the seed's 80 x 45 grid at stride 16
    q = np.array([[3.0, 4.0], [10.0, 12.0], [20.0, 4.0], [1279.0, 719.0]])
    m.update(q, np.array([1.0, 3.0, 5.0, 7.0]))
    assert m.grid[0, 0] == pytest.approx(0.99 * 0.5 + 0.01 * 2.0)  # mean of 1 and 3
    assert m.grid[0, 1] == pytest.approx(0.99 * 0.5 + 0.01 * 5.0)
    assert m.grid[44, 79] == pytest.approx(0.99 * 0.5 + 0.01 * 7.0)
    assert m.grid[10, 10] == 0.5  # no query there: unchanged
    m.update(q[:1], np.array([4.0]))
    assert m.grid[0, 0] == pytest.approx(0.99 * (0.99 * 0.5 + 0.02) + 0.04)
    with pytest.raises(ValueError, match="losses must be >= 0"):
        m.update(q[:1], np.array([-1.0]))
    with pytest.raises(ValueError, match="2 queries but 1 losses"):
        m.update(q[:2], np.array([1.0]))

    s = HardExampleMap(64, 40)  # 4 x 3 cells, the bottom row clipped to 8 pixels
    s.grid[:] = 0
    s.grid[0, 0] = 1.0
    s.grid[2, 3] = 3.0
    px, py = s.sample_pixels(20000, np.random.default_rng(5))
    in_b = (px // 16 == 3) & (py // 16 == 2)
    assert abs(in_b.mean() - 0.75) < 0.015
    assert ((in_b) | ((px < 16) & (py < 16))).all()
    assert py.max() <= 39
