"""The runtime layer: PyTorch, ONNX Runtime and Polygraphy pairs behind one interface, and the
stream that carries the ConvGRU state across windows."""

from __future__ import annotations

import numpy as np
import pytest

from eventspd_export.data.synthetic import random_queries, synthetic_window
from eventspd_export.export.onnx_export import ExportOptions, export_onnx
from eventspd_export.runtime import availability
from eventspd_export.runtime.ort_pair import OrtPair, ort_session
from eventspd_export.runtime.pair import ModelPair, Stream, stream, stream_depths
from eventspd_export.runtime.torch_pair import TorchPair
from model_def import contract

TOL = 1e-4  # fp32 ONNX Runtime vs fp32 PyTorch, as the export's own check


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("pairs")
    export_onnx(tiny_model, ExportOptions(out, k_max=64))
    return out


@pytest.fixture(scope="module")
def windows(tiny_cfg):
    return [synthetic_window(tiny_cfg, n, seed=40 + i).numpy() for i, n in enumerate((3000, 0, 5000))]


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def test_torch_and_ort_pairs_agree_over_a_stream(tiny_model, tiny_cfg, export_dir, windows):
    torch_pair, ort_pair = TorchPair(tiny_model), OrtPair.from_folder(tiny_cfg, export_dir)
    names = [s.name for s in contract.precompute_outputs(tiny_cfg)]
    queries = [random_queries(tiny_cfg, k, seed=k).numpy() for k in (1, 7, 0)]
    for ref, got in zip(stream(torch_pair, windows), stream(ort_pair, windows)):
        assert list(ref) == names and list(got) == names  # every output, in the contract's order
        for n in names:
            assert got[n].shape == ref[n].shape and _rel(got[n], ref[n]) <= TOL, n
        for q in queries:
            d_ref, d_got = torch_pair.decode(ref, q), ort_pair.decode(ref, q)
            assert d_ref["depth"].shape == d_got["depth"].shape == (1, q.shape[1])
            if q.shape[1]:
                assert _rel(d_got["depth"], d_ref["depth"]) <= TOL


def test_stream_carries_the_state_and_reset_starts_over(tiny_model, windows):
    pair = TorchPair(tiny_model)
    carried = Stream(pair)
    first = carried.step(windows[0])
    second = carried.step(windows[2])
    fresh = pair.precompute(windows[2], pair.initial_state())
    # the state matters: window 2 after window 0 is not window 2 from zeros
    assert _rel(second["hidden_out"], fresh["hidden_out"]) > 1e-3
    np.testing.assert_array_equal(second["hidden_out"], pair.precompute(windows[2], first["hidden_out"])["hidden_out"])
    carried.reset()
    np.testing.assert_array_equal(carried.step(windows[2])["hidden_out"], fresh["hidden_out"])


class _Recorder(ModelPair):
    """A pair that records the state it is fed (to see what the stream passes on)."""

    def __init__(self, cfg):
        self.cfg, self.name, self.seen = cfg, "recorder", []

    def precompute(self, events, hidden):
        self.seen.append(hidden)
        return {"hidden_out": hidden + 1.0}

    def decode(self, shared, queries):
        return {"depth": np.full((1, queries.shape[1]), float(shared["hidden_out"].mean()), np.float32)}


def test_stream_feeds_each_window_the_previous_hidden_out(tiny_cfg):
    rec = _Recorder(tiny_cfg)
    h0 = np.full(contract.hidden_spec(tiny_cfg, "hidden").shape, 5.0, np.float32)
    depths = stream_depths(rec, [None] * 3, [np.zeros((1, 2, 2), np.float32)] * 3, h0)
    assert [float(h.mean()) for h in rec.seen] == [5.0, 6.0, 7.0]
    assert [float(d[0, 0]) for d in depths] == [6.0, 7.0, 8.0]
    rec.seen.clear()
    list(stream(rec, [None, None]))  # no state given: zeros of the contract's shape first
    assert rec.seen[0].shape == contract.hidden_spec(tiny_cfg, "hidden").shape and not rec.seen[0].any()


def test_polygraphy_runner_pair_equals_ort_pair(tiny_cfg, export_dir, windows):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    from eventspd_export.runtime.polygraphy_pair import RunnerPair

    def make(graph):
        return OnnxrtRunner(SessionFromOnnx(str(export_dir / f"{graph}.onnx"), providers=["cpu"]))

    ort_pair = OrtPair.from_folder(tiny_cfg, export_dir)
    q = random_queries(tiny_cfg, 5, seed=2).numpy()
    with RunnerPair(tiny_cfg, make, "polygraphy-onnxrt") as pair:
        for a, b in zip(stream(pair, windows), stream(ort_pair, windows)):
            assert _rel(a["hidden_out"], b["hidden_out"]) <= 1e-5
            assert _rel(pair.decode(a, q)["depth"], ort_pair.decode(b, q)["depth"]) <= 1e-5


def test_ort_session_takes_paths_bytes_and_protos(export_dir):
    import onnx

    path = export_dir / "decoder.onnx"
    for source in (path, str(path), path.read_bytes(), onnx.load(str(path))):
        assert [i.name for i in ort_session(source).get_inputs()][-1] == "queries"


def test_availability_says_why_not():
    # this machine: the CPU kernels are built, ONNX Runtime has no CUDA provider, no GPU
    assert availability.torch_plugins("cpu") is None
    providers, reason = availability.onnxruntime_providers("cpu")
    assert providers == ["CPUExecutionProvider"] and reason is None
    import onnxruntime as ort

    providers, reason = availability.onnxruntime_providers("cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert providers[0] == "CUDAExecutionProvider"
    else:
        assert providers is None and "CUDAExecutionProvider" in reason
    from eventspd_export.runtime.trt_flavour import NoGpuError, gpu_info

    try:
        gpu_info()
    except NoGpuError:
        assert "GPU" in (availability.tensorrt_engines() or "")
