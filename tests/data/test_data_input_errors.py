"""The dataset readers on malformed files: every user mistake (a bad file, a dataset in the
wrong layout) is a DataError naming the file, the dataset and what was expected; off-sensor
events are dropped, never moved. The files are tiny, written here with h5py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eventspd_export.data.sources import check_spec, open_source
from eventspd_export.data.windows import DataError

h5py = pytest.importorskip("h5py", reason="the dataset readers need h5py (pip install h5py)")

WINDOW_S = 1.0 / 120.0


def _ms_index(t_rel):
    ms = np.arange(int(t_rel[-1]) // 1000 + 1)
    return np.searchsorted(t_rel, ms * 1000, side="left").astype(np.uint64)


def _dsec(root: Path, x, y, t, *, idx=None, t_offset=np.int64(0), t_dtype=np.uint32,
          xy_dtype=np.uint16, rmap=None) -> Path:
    """A DSEC events.h5 (and rectify_map.h5 when ``rmap`` is given) in folder ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    t = np.asarray(t)
    with h5py.File(root / "events.h5", "w") as f:
        f.create_dataset("events/x", data=np.asarray(x, xy_dtype))
        f.create_dataset("events/y", data=np.asarray(y, xy_dtype))
        f.create_dataset("events/t", data=t.astype(t_dtype))
        f.create_dataset("events/p", data=np.ones(t.size, np.uint8))
        f.create_dataset("ms_to_idx", data=_ms_index(np.sort(t)) if idx is None else idx)
        f.create_dataset("t_offset", data=t_offset)
    if rmap is not None:
        with h5py.File(root / "rectify_map.h5", "w") as f:
            f.create_dataset("rectify_map", data=rmap)
    return root / "events.h5"


def _identity_rmap(w=640, h=480):
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.stack([gx, gy], axis=-1)


def _stream(n=4000, span_us=40_000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, span_us, n))
    return rng.integers(0, 640, n), rng.integers(0, 480, n), t


# ---- 1. off-sensor events are dropped, not wrapped to the opposite edge --------------------


def test_dsec_rectified_negative_coordinates_are_dropped(tmp_path):
    n = 2000
    t = np.linspace(0, 20_000, n).astype(np.int64)
    x = np.full(n, 10, np.int16)
    y = np.full(n, 20, np.int16)
    x[::4] = -1   # off-sensor: numpy's index -1 is the last column (x = 639)
    y[1::4] = -3  # ... and row 477
    ev = _dsec(tmp_path, x, y, t, xy_dtype=np.int16, rmap=_identity_rmap())
    src = open_source(f"dsec:{ev}", 640, 480, WINDOW_S)
    assert src.rectified
    win = src[0]
    assert win.num_events > 0
    assert np.all(win.events[:, 0] == 10) and np.all(win.events[:, 1] == 20)
    sel = (t >= win.t_start_us) & (t < win.t_end_us)
    assert win.num_events == np.count_nonzero(sel & (x >= 0) & (y >= 0))


def test_dsec_unrectified_m3ed_and_mvsec_drop_negative_coordinates(tmp_path):
    # (these go through the shared on-sensor test of DatasetSource.window: checked here)
    n = 2000
    t = np.linspace(0, 20_000, n).astype(np.int64)
    x = np.full(n, 10, np.int16)
    x[::2] = -1
    ev = _dsec(tmp_path / "dsec", x, np.full(n, 5, np.int16), t, xy_dtype=np.int16)
    win = open_source(f"dsec:{ev}", 640, 480, WINDOW_S)[0]
    assert win.num_events > 0 and np.all(win.events[:, 0] == 10)

    m3 = tmp_path / "m3ed"
    m3.mkdir()
    with h5py.File(m3 / "a_data.h5", "w") as f:
        g = "/prophesee/left"
        f.create_dataset(f"{g}/x", data=x)
        f.create_dataset(f"{g}/y", data=np.full(n, 5, np.int16))
        f.create_dataset(f"{g}/t", data=t)
        f.create_dataset(f"{g}/p", data=np.ones(n, np.int8))
        f.create_dataset(f"{g}/ms_map_idx", data=_ms_index(t))
        f.create_dataset(f"{g}/calib/resolution", data=np.array([1280, 720]))
    win = open_source(f"m3ed:{m3}", 1280, 720, WINDOW_S)[0]
    assert win.num_events > 0 and np.all(win.events[:, 0] == 10)

    mv = tmp_path / "mvsec"
    mv.mkdir()
    ts = 100.0 + t / 1e6
    with h5py.File(mv / "a_data.hdf5", "w") as f:
        f.create_dataset("davis/left/events",
                         data=np.stack([x.astype(float), np.full(n, -2.0), ts, np.ones(n)], 1))
    win = open_source(f"mvsec:{mv}", 346, 260, WINDOW_S)[0]
    assert win.num_events == 0  # every y is -2: all off the sensor


# ---- 2. a time index that does not match the timestamps; negative timestamps --------------


def test_dsec_all_zero_ms_to_idx_is_refused(tmp_path):
    x, y, t = _stream()
    ev = _dsec(tmp_path, x, y, t, idx=np.zeros(t[-1] // 1000 + 1, np.uint64))
    src = open_source(f"dsec:{ev}", 640, 480, WINDOW_S)
    with pytest.raises(DataError, match=r"events.h5 'ms_to_idx' does not match the timestamps"):
        for win in src:  # before the fix: windows of 0 events, no error
            assert win.num_events > 0


def test_dsec_ms_to_idx_pointing_too_early_is_refused(tmp_path):
    # entries of empty milliseconds that point 5 events too early: before the fix the lookup
    # trusted them, and window 1 lost its last 5 events to window 2 (with t clipped to 0)
    x, y, t = _stream()
    keep = (t < 15_000) | (t >= 18_000)  # ms 15..17 empty; window 1 ends in ms 16
    x, y, t = x[keep], y[keep], t[keep]
    idx = _ms_index(t)
    idx[15:18] -= 5
    ev = _dsec(tmp_path, x, y, t, idx=idx)
    src = open_source(f"dsec:{ev}", 640, 480, WINDOW_S)
    assert src.window_bounds(1)[1] // 1000 == 16
    with pytest.raises(DataError, match="'ms_to_idx' does not match the timestamps"):
        src.window(1)


def test_dsec_negative_relative_timestamps_are_refused(tmp_path):
    x, y, t = _stream()
    ev = _dsec(tmp_path, x, y, t - 20_000, idx=_ms_index(t), t_dtype=np.int64,
               t_offset=np.int64(1_000_000))
    with pytest.raises(DataError, match=r"events.h5 'events/t' starts at -\d+ µs.*>= 0"):
        open_source(f"dsec:{ev}", 640, 480, WINDOW_S)


def test_m3ed_negative_timestamps_are_refused(tmp_path):
    n = 3000
    t = np.linspace(-10_000, 30_000, n).astype(np.int64)
    with h5py.File(tmp_path / "a_data.h5", "w") as f:
        g = "/prophesee/left"
        f.create_dataset(f"{g}/x", data=np.zeros(n, np.uint16))
        f.create_dataset(f"{g}/y", data=np.zeros(n, np.uint16))
        f.create_dataset(f"{g}/t", data=t)
        f.create_dataset(f"{g}/p", data=np.ones(n, np.int8))
        f.create_dataset(f"{g}/ms_map_idx", data=_ms_index(np.maximum(t, 0)))
        f.create_dataset(f"{g}/calib/resolution", data=np.array([1280, 720]))
    with pytest.raises(DataError, match=r"a_data.h5 '/prophesee/left/t' starts at -10000 µs"):
        open_source(f"m3ed:{tmp_path}", 1280, 720, WINDOW_S)


# ---- 3. malformed values: DataErrors, not tracebacks ----------------------------------------


def _m3ed_with_resolution(root: Path, resolution) -> Path:
    n = 3000
    t = np.linspace(0, 30_000, n).astype(np.int64)
    data = root / "a_data.h5"
    with h5py.File(data, "w") as f:
        g = "/prophesee/left"
        f.create_dataset(f"{g}/x", data=np.zeros(n, np.uint16))
        f.create_dataset(f"{g}/y", data=np.zeros(n, np.uint16))
        f.create_dataset(f"{g}/t", data=t)
        f.create_dataset(f"{g}/p", data=np.ones(n, np.int8))
        f.create_dataset(f"{g}/ms_map_idx", data=_ms_index(t))
        f.create_dataset(f"{g}/calib/resolution", data=resolution)
    return data


@pytest.mark.parametrize("resolution", [np.array([b"256", b"abc"]), np.array([b"256", b"160"]),
                                        np.array([256.5, 160.0]), np.array([np.nan, 160.0])])
def test_m3ed_resolution_not_integers(tmp_path, resolution):
    data = _m3ed_with_resolution(tmp_path, resolution)
    with pytest.raises(DataError, match=r"a_data.h5 '/prophesee/left/calib/resolution' holds "
                                        r".*expected 2 integers \(width, height\)"):
        open_source(f"m3ed:{data}", 256, 160, WINDOW_S)


@pytest.mark.parametrize("resolution", [[256, 160, 1], [256]])
def test_m3ed_resolution_wrong_count(tmp_path, resolution):
    data = _m3ed_with_resolution(tmp_path, np.array(resolution, np.int64))
    with pytest.raises(DataError, match=r"'/prophesee/left/calib/resolution' holds "
                                        rf"{len(resolution)} value.*expected 2 integers"):
        open_source(f"m3ed:{data}", 256, 160, WINDOW_S)


def test_m3ed_integral_float_resolution_is_accepted(tmp_path):
    data = _m3ed_with_resolution(tmp_path, np.array([1280.0, 720.0]))
    assert len(open_source(f"m3ed:{data}", 1280, 720, WINDOW_S)) == 3


@pytest.mark.parametrize("t_offset", [np.bytes_(b"abc"), np.array([1, 2], np.int64),
                                      np.float64(np.nan), np.float64(1.5)])
def test_dsec_t_offset_not_one_integer(tmp_path, t_offset):
    x, y, t = _stream()
    ev = _dsec(tmp_path, x, y, t, t_offset=t_offset)
    with pytest.raises(DataError, match=r"events.h5 't_offset' holds .*expected one integer"):
        open_source(f"dsec:{ev}", 640, 480, WINDOW_S)


def test_dsec_float_timestamps_are_refused(tmp_path):
    # float µs with a NaN: int() of it raised ValueError (and a cast made it -2**63)
    x, y, t = _stream()
    t = t.astype(np.float64)
    t[0] = np.nan
    ev = _dsec(tmp_path, x, y, t, idx=_ms_index(np.arange(40_000)), t_dtype=np.float64)
    with pytest.raises(DataError, match=r"events.h5 dataset 'events/t' is float64, expected "
                                        r"integer microseconds"):
        open_source(f"dsec:{ev}", 640, 480, WINDOW_S)


def _mvsec(root: Path, t) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    n = len(t)
    data = root / "a_data.hdf5"
    with h5py.File(data, "w") as f:
        f.create_dataset("davis/left/events",
                         data=np.stack([np.ones(n), np.ones(n), np.asarray(t, float),
                                        np.ones(n)], 1))
    return data


@pytest.mark.parametrize("where", ["first", "last", "middle"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_mvsec_non_finite_timestamps_are_refused(tmp_path, where, value):
    t = 100.0 + np.linspace(0, 0.05, 3000)
    t[{"first": 0, "last": -1, "middle": 1500}[where]] = value
    data = _mvsec(tmp_path, t)
    with pytest.raises(DataError, match=r"a_data.hdf5 '/?davis/left/events' .*t.* "
                                        r"(non-finite|not finite)"):
        src = open_source(f"mvsec:{data}", 346, 260, WINDOW_S)
        for win in src:  # before the fix: a NaN in the middle was written out
            assert np.isfinite(win.events).all()


@pytest.mark.parametrize("scale, start", [(1e6, 1504645177.4215), (1e9, 0.0), (1.0, 1504645177.4215e3),
                                          (1e3, 0.0)])  # µs, ns from 0, Unix ms, ms from 0
def test_mvsec_times_not_in_seconds_are_refused(tmp_path, scale, start):
    # µs (or ns) times are finite and sorted: before, they were read as a recording of years
    t = (start + np.linspace(0, 60.0, 3000)) * scale
    data = _mvsec(tmp_path, t)
    with pytest.raises(DataError, match=r"a_data.hdf5 'davis/left/events' column t runs from .* read as "
                                        r"seconds; .* were the times written in µs or ns"):
        open_source(f"mvsec:{data}", 346, 260, WINDOW_S)
    # the same minute in seconds opens
    src = open_source(f"mvsec:{_mvsec(tmp_path / 's', 1504645177.4215 + np.linspace(0, 60.0, 3000))}",
                      346, 260, WINDOW_S)
    try:
        assert len(src) == 7200  # 60 s of 1/120 s windows
    finally:
        src.close()


# ---- 4. unsorted timestamps say so ----------------------------------------------------------

# one message wherever the disorder is found (open, the time index, a window's events)
UNSORTED = r"dsec: events \d+\.\.\d+ of .*events.h5 are not sorted by time"


def test_dsec_fully_unsorted_timestamps_say_not_sorted(tmp_path):
    x, y, t = _stream(n=20_000, span_us=200_000)
    t = np.random.default_rng(1).permutation(t)
    t[0], t[-1] = 50_000, 53_243  # a first/last pair 3.243 ms apart
    ev = _dsec(tmp_path, x, y, t, idx=_ms_index(np.sort(t)))
    with pytest.raises(DataError, match=UNSORTED):
        open_source(f"dsec:{ev}", 640, 480, WINDOW_S)
    rev = _dsec(tmp_path / "rev", x, y, np.sort(t)[::-1], idx=_ms_index(np.sort(t)))
    with pytest.raises(DataError, match=UNSORTED):
        open_source(f"dsec:{rev}", 640, 480, WINDOW_S)
    # shuffled, but with a first/last pair that spans many windows: found when read
    t[0], t[-1] = 0, 199_999
    wide = _dsec(tmp_path / "wide", x, y, t, idx=_ms_index(np.sort(t)))
    src = open_source(f"dsec:{wide}", 640, 480, WINDOW_S)
    with pytest.raises(DataError, match=UNSORTED):
        src.window(0)


def test_dsec_partly_unsorted_timestamps_say_not_sorted(tmp_path):
    x, y, t = _stream(n=20_000, span_us=200_000)
    t = t.copy()
    inside = t.copy()
    inside[5000:5050] = inside[5000:5050][::-1]  # inside a window, between index lookups
    at_lookup = t.copy()
    i = int(np.searchsorted(t, 8333))  # around window 1's start: found by the time index
    at_lookup[i - 20:i + 20] = at_lookup[i - 20:i + 20][::-1]
    for name, tt in (("inside", inside), ("at_lookup", at_lookup)):
        ev = _dsec(tmp_path / name, x, y, tt, idx=_ms_index(np.sort(tt)))
        src = open_source(f"dsec:{ev}", 640, 480, WINDOW_S)
        with pytest.raises(DataError, match=UNSORTED):
            for _ in src:
                pass


def test_short_sorted_file_still_says_too_short(tmp_path):
    t = np.arange(0, 5000, 10)
    ev = _dsec(tmp_path, np.zeros(t.size), np.zeros(t.size), t)
    with pytest.raises(DataError, match="holds 500 events over 4.990 ms, too short"):
        open_source(f"dsec:{ev}", 640, 480, WINDOW_S)


# ---- 5. --data spec errors name the option, not "calibration data" --------------------------


@pytest.mark.parametrize("spec, match", [
    ("h5/good", r"unknown event data source 'h5/good' in --data"),
    ("", r"empty --data spec"),
    ("   ", r"empty --data spec")])
def test_data_spec_errors_name_the_option(spec, match):
    with pytest.raises(DataError, match=match) as info:
        check_spec(spec)
    assert "calibration" not in str(info.value)
