"""Property-based input tests (issue 17, hypothesis): any float32 events [N, 4] (NaN, inf, huge,
negative, empty, unsorted) and queries [1, K, 2] give finite depths or a clear ``InputError`` /
``UserError`` -- never a crash, never a NaN depth -- in PyTorch (``EventSPD``, tiny) and in ONNX
Runtime (tiny exported once for the module, run through ``OrtPair``).

Finding (fixed): the graphs answer a NaN query with a NaN depth and an inf one with a border
pixel's, where PyTorch refuses both; the runtime layer (``ModelPair.decoder_feeds``) now refuses
them for every backend."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eventspd_export.data.synthetic import random_queries, synthetic_window
from eventspd_export.runtime.ort_pair import OrtPair
from model_def import EventSPD, contract, get_config
from model_def.errors import UserError

CFG = get_config("tiny")
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# in-range values mixed with every float32 (NaN, +-inf, huge, negative, subnormal)
_values = st.one_of(st.floats(0, CFG.width, width=32), st.floats(0, 1, width=32), st.floats(width=32))
EVENTS = st.integers(0, 48).flatmap(lambda n: arrays(np.float32, (n, 4), elements=_values))
QUERIES = st.integers(0, 12).flatmap(lambda k: arrays(np.float32, (1, k, 2), elements=_values))


@pytest.fixture(scope="module")
def model():
    return EventSPD(CFG, seed=0).eval()


@pytest.fixture(scope="module")
def ort_pair(model, tmp_path_factory):
    from eventspd_export.export.onnx_export import ExportOptions, export_onnx

    d = tmp_path_factory.mktemp("tiny-onnx")
    export_onnx(model, ExportOptions(d))
    return OrtPair.from_folder(CFG, d)


@pytest.fixture(scope="module")
def torch_pre(model):
    with torch.inference_mode():
        return model.precompute(synthetic_window(CFG, 2000, seed=1))


@pytest.fixture(scope="module")
def ort_pre(ort_pair):
    return ort_pair.precompute(synthetic_window(CFG, 2000, seed=1).numpy(), ort_pair.initial_state())


def _finite_depth(depth, k: int) -> None:
    depth = np.asarray(depth)
    assert depth.shape == (1, k)
    assert np.isfinite(depth).all() and (depth > 0).all(), depth


def _all_finite(tensors) -> None:
    bad = [n for n, t in tensors.items() if not np.isfinite(np.asarray(t)).all()]
    assert not bad, f"non-finite precompute outputs: {bad}"


FIXED_QUERIES = random_queries(CFG, 5, seed=2)


@SETTINGS
@given(events=EVENTS)
def test_torch_any_events_give_finite_depths_or_an_input_error(model, events):
    with torch.inference_mode():
        try:
            pre = model.precompute(torch.from_numpy(events))
        except UserError:
            return
        _all_finite({n: t.numpy() for n, t in pre.items()})
        depth, _ = model.decode(pre, FIXED_QUERIES)
    _finite_depth(depth.numpy(), FIXED_QUERIES.shape[1])


@SETTINGS
@given(queries=QUERIES)
def test_torch_any_queries_give_finite_depths_or_an_input_error(model, torch_pre, queries):
    with torch.inference_mode():
        try:
            depth, _ = model.decode(torch_pre, torch.from_numpy(queries))
        except UserError:
            assert not np.isfinite(queries).all()  # refused only for NaN/inf coordinates
            return
    _finite_depth(depth.numpy(), queries.shape[1])


@SETTINGS
@given(events=EVENTS)
def test_ort_any_events_give_finite_depths_or_an_input_error(ort_pair, events):
    try:
        pre = ort_pair.precompute(events, ort_pair.initial_state())
    except UserError:
        return
    _all_finite(pre)
    _finite_depth(ort_pair.decode(pre, FIXED_QUERIES.numpy())["depth"], FIXED_QUERIES.shape[1])


_finite = st.floats(width=32, allow_nan=False, allow_infinity=False)
FINITE_QUERIES = st.integers(0, 12).flatmap(
    lambda k: arrays(np.float32, (1, k, 2), elements=st.one_of(st.floats(0, CFG.width, width=32), _finite)))


@SETTINGS
@given(queries=FINITE_QUERIES)
def test_ort_any_finite_queries_give_finite_depths(ort_pair, ort_pre, queries):
    """Huge, negative and off-sensor queries included."""
    _finite_depth(ort_pair.decode(ort_pre, queries)["depth"], queries.shape[1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_ort_refuses_non_finite_queries_like_torch(model, torch_pre, ort_pair, ort_pre, bad):
    from model_def.model import InputError

    q = FIXED_QUERIES.numpy().copy()
    q[0, 2, 1] = bad
    with pytest.raises(InputError, match="queries: contain NaN or infinite coordinates"):
        model.decode(torch_pre, torch.from_numpy(q))
    with pytest.raises(InputError, match="queries: contain NaN or infinite coordinates"):
        ort_pair.decode(ort_pre, q)
    # the mutation: the graph itself, fed directly, gives the NaN depth the pair refuses
    raw = ort_pair.dec_session.run(None, {**{n: ort_pre[n] for n in contract.SHARED_NAMES}, "queries": q})[0]
    if np.isnan(bad):
        assert np.isnan(raw[0, 2]) and np.isfinite(np.delete(raw[0], 2)).all()
