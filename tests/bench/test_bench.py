"""`eventspd-export bench` (eventspd_export/bench/, cli/bench_command.py) and the dense baseline.

Fast CPU checks on the `tiny` config: one end-to-end run shared by several tests (small K,
few events, a small dense input), the fit on synthetic timings, skipped backends, the CLI's
option errors. No timed assertions: the figures are measured, only their shape is checked.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import eventspd_export.bench
from eventspd_export.bench import options as bench
from eventspd_export.runtime import registry
from eventspd_export.bench.options import BenchOptions
from eventspd_export.bench.report import format_table, write_json, write_plot
from eventspd_export.bench.runner import run_bench
from eventspd_export.bench.timing import crossover_k, fit_latency, fit_linear, summarize
from eventspd_export.cli.bench_command import bench as bench_command
from model_def import get_config
from model_def.dense_baseline import (DAV2_S_PARAMS, RGB_PATCH_EMBED_PARAMS, DenseBaseline,
                                      dav2_input_hw)

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KS = (1, 8)
# A small ViT input for the tests (4x6 and 4x4 patches); the real runs use 518-row inputs.
SMALL_DENSE = {"dav2": (56, 84), "square": (56, 56)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Other suites run beside this one on 2 cores; one torch thread avoids OpenMP barrier
    # stalls that made the same calls 10x slower with 2 threads under load.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


# ---- fit, statistics, crossover -----------------------------------------------------------
def test_fit_recovers_exact_values():
    ks = [1, 64, 256, 1024, 4096]
    t_pre, beta = 6.15e-3, 5e-6  # the seed's projection: 6.15 ms + 5 us per query
    seconds = [t_pre + beta * k for k in ks]
    assert fit_linear(ks, seconds) == pytest.approx((t_pre, beta), rel=1e-9)
    fit = fit_latency(ks, seconds)
    assert fit["t_pre_ms"] == pytest.approx(6.15, rel=1e-9)
    assert fit["beta_us"] == pytest.approx(5.0, rel=1e-9)
    assert fit["r2"] == pytest.approx(1.0) and fit["rmse_ms"] == pytest.approx(0.0, abs=1e-9)
    assert fit["ks"] == ks


def test_fit_recovers_values_under_noise():
    rng = np.random.default_rng(0)
    ks = [1, 64, 256, 1024, 4096] * 4  # several samples per K, as repeated timings give
    t_pre, beta, sigma = 2.5e-3, 1.5e-6, 50e-6  # 50 us of timing noise
    seconds = [t_pre + beta * k + rng.normal(0, sigma) for k in ks]
    fit = fit_latency(ks, seconds)
    # standard errors here are ~0.017 ms (T_pre) and ~0.008 us (beta): 6-sigma bounds
    assert fit["t_pre_ms"] == pytest.approx(2.5, abs=0.1)
    assert fit["beta_us"] == pytest.approx(1.5, abs=0.05)
    assert fit["r2"] > 0.99


def test_fit_needs_two_distinct_k():
    with pytest.raises(ValueError, match="two distinct K"):
        fit_linear([64, 64], [1.0, 1.1])


def test_crossover():
    k, note = crossover_k(6.15, 5.0, 23.0)  # (23 - 6.15) ms / 5 us
    assert k == pytest.approx(3370.0) and "faster below" in note
    assert crossover_k(25.0, 5.0, 23.0)[0] is None  # T_pre alone exceeds the dense time
    assert crossover_k(6.0, 0.0, 23.0)[0] is None  # flat T(K) never reaches it
    assert crossover_k(6.0, -1.0, 23.0)[0] is None


def test_summarize():
    s = summarize([0.004, 0.001, 0.003, 0.002])
    assert set(s) == set(bench.STATS_FIELDS)
    assert s["median_ms"] == pytest.approx(2.5) and s["min_ms"] == pytest.approx(1.0)
    assert s["max_ms"] == pytest.approx(4.0) and s["n"] == 4
    assert s["iqr_ms"] == pytest.approx(s["p75_ms"] - s["p25_ms"])


def test_k_limit_matches_exporter():
    """bench accepts exactly the K the exported graphs support (model_def.contract.K_LIMIT)."""
    from model_def.contract import K_LIMIT
    from model_def.errors import UserError

    assert BenchOptions(config="tiny", ks=(1, K_LIMIT)).resolved().ks == (1, K_LIMIT)
    with pytest.raises(UserError, match=f"1..{K_LIMIT}"):
        BenchOptions(config="tiny", ks=(1, K_LIMIT + 1)).resolved()


def test_packed_kv_survives_resolution_and_needs_a_graph_backend():
    from model_def.errors import UserError

    opts = BenchOptions(config="tiny", backends=("torch", "torch-plugins-cudagraph"), packed_kv=True)
    assert opts.resolved().packed_kv is True
    assert BenchOptions(config="tiny", backends=("torch",)).resolved().packed_kv is False
    with pytest.raises(UserError, match="--packed-kv changes only the CUDA-graph backends"):
        BenchOptions(config="tiny", backends=("torch", "torch-plugins"), packed_kv=True).resolved()


def test_cpu_script_uses_the_shared_fit():
    spec = importlib.util.spec_from_file_location("bench_model_cpu", ROOT / "scripts" / "bench_model_cpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.fit_linear is fit_linear


def test_docstring_documents_every_field():
    doc = eventspd_export.bench.__doc__
    for name in (*bench.TOP_FIELDS, *bench.OK_BACKEND_FIELDS):
        assert f"``{name}``" in doc, name
    for name in bench.STATS_FIELDS:
        assert name in doc, name


# ---- dense baseline -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def dense_small():
    return DenseBaseline(get_config("tiny"), input_hw=SMALL_DENSE["dav2"]).eval()


def test_dense_parameter_count(dense_small):
    p = dense_small.parameter_counts()
    assert abs(p["vit_dpt"] - 24.8e6) <= 0.1 * 24.8e6
    # the layers add up to DAv2-S exactly once its RGB patch embedding is put back
    assert p["vit_dpt"] + RGB_PATCH_EMBED_PARAMS == DAV2_S_PARAMS
    assert p["patch_embed_64ch"] == 64 * 14 * 14 * 384 + 384
    assert p["dense_total"] == p["f3"] + p["patch_embed_64ch"] + p["vit_dpt"]


def test_dense_input_sizes():
    assert dav2_input_hw(720, 1280) == (518, 924)  # HD, as the issue states
    assert dav2_input_hw(720, 1280, "square") == (518, 518)
    for cfg in ("dsec", "mvsec", "tiny"):
        c = get_config(cfg)
        h, w = dav2_input_hw(c.height, c.width)
        assert min(h, w) == 518 and h % 14 == 0 and w % 14 == 0
    with pytest.raises(ValueError, match="mode"):
        dav2_input_hw(720, 1280, "nope")


def test_dense_forward_shape(dense_small, tiny_events):
    with torch.inference_mode():
        depth = dense_small(tiny_events)
    assert depth.shape == (1, 160, 256)
    assert torch.isfinite(depth).all() and (depth >= 0).all()


# ---- one end-to-end run on `tiny` -----------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    opts = BenchOptions(config="tiny", device="cpu", backends=bench.BACKENDS, ks=KS, events=500,
                        repeat=2, warmup=0, dense_input_hw=SMALL_DENSE, threads=1)
    result = run_bench(opts, log=lambda msg: None)
    result["plot"] = write_plot(result, out / "bench.png")
    write_json(result, out / "bench.json")
    return result, out


def _expected_status(name: str) -> str:
    if name == "trt" or name in bench.GRAPH_BACKENDS:  # no TensorRT; CUDA graphs need CUDA
        return "skipped"
    if name == "torch-plugins" and registry.why_not("torch-plugins", "cpu") is not None:
        return "skipped"
    if name == "onnxrt" and not _has_onnxruntime():
        return "skipped"
    return "ok"


def test_run_statuses(run):
    result, _ = run
    assert list(result["backends"]) == list(bench.BACKENDS)
    for name, entry in result["backends"].items():
        assert entry["status"] == _expected_status(name), (name, entry.get("reason"))
        if entry["status"] != "ok":
            assert entry["reason"]
    assert "tensorrt" in result["backends"]["trt"]["reason"]
    for name in bench.GRAPH_BACKENDS:
        assert result["backends"][name]["reason"] == "CUDA graphs need --device cuda"


def test_json_has_every_field(run):
    result, out = run
    loaded = json.loads((out / "bench.json").read_text())
    assert set(bench.TOP_FIELDS) <= set(loaded)
    assert loaded["schema"] == bench.SCHEMA
    assert loaded["settings"]["ks"] == list(KS) and loaded["settings"]["threads"] == 1
    for name, e in loaded["backends"].items():
        if e["status"] != "ok":
            continue
        assert set(bench.OK_BACKEND_FIELDS) <= set(e), name
        assert set(e["precompute"]) == set(bench.STATS_FIELDS)
        assert e["precompute"]["n"] == 2
        for k in map(str, KS):
            assert set(e["decoder"][k]) == set(bench.STATS_FIELDS)
            assert set(e["end_to_end"][k]) == set(bench.STATS_FIELDS)
            assert e["speedup"][k] > 0 and e["speedup_square"][k] > 0
        assert e["fit"]["ks"] == list(KS) and math.isfinite(e["fit"]["beta_us"])
        assert math.isfinite(e["fit_end_to_end"]["t_pre_ms"])
        assert set(e["crossover"]) == {"dav2", "square"}
        assert e["dense"]["mode"] == "dav2" and e["dense"]["median_ms"] > 0
        assert e["memory"]["host_peak_rss_mb"] > 0 and e["memory"]["device_peak_mb"] is None
    # every row of the summary, ok or not
    assert [r["backend"] for r in loaded["summary"]] == list(bench.BACKENDS)


def test_dense_timed_in_the_same_run(run):
    result, _ = run
    assert "torch" in result["dense"] and result["dense_errors"] == {}
    for name, d in result["dense"].items():
        assert d["params"]["dav2_s_reference"] == DAV2_S_PARAMS
        for mode, hw in SMALL_DENSE.items():
            m = d["modes"][mode]
            assert m["input_hw"] == list(hw)
            assert set(m["stages"]) == set(bench.DENSE_STAGES)
            # each pass's total is the sum of its stages (the three calls of forward)
            per_pass = zip(*(m["stages"][s]["samples_ms"] for s in bench.DENSE_STAGES))
            assert m["total"]["samples_ms"] == pytest.approx([sum(p) for p in per_pass])
    # ONNX Runtime is compared against PyTorch's dense time
    if result["backends"]["onnxrt"]["status"] == "ok":
        assert result["backends"]["onnxrt"]["dense"]["entry"] in result["dense"]


def test_stage_breakdown(run):
    result, _ = run
    e = result["backends"]["torch"]
    assert set(e["stages"]["precompute"]) == set(bench.PRECOMPUTE_STAGES)
    for k in map(str, KS):
        assert set(e["stages"]["decoder"][k]) == set(bench.DECODER_STAGES)
    # the staged passes compute exactly what the model computes
    assert e["stages"]["check"]["precompute_max_abs_diff"] <= 1e-6
    assert e["stages"]["check"]["decoder_max_abs_diff"] <= 1e-6
    if result["backends"]["onnxrt"]["status"] == "ok":
        assert result["backends"]["onnxrt"]["stages"] is None
        assert result["backends"]["onnxrt"]["stages_reason"]


def test_png_written(run):
    result, out = run
    assert result["plot"]["status"] == "written"
    data = (out / "bench.png").read_bytes()
    assert data.startswith(PNG_MAGIC)
    from PIL import Image

    with Image.open(out / "bench.png") as img:
        img.verify()
        assert img.size[0] > 300 and img.size[1] > 200


def test_table(run):
    result, _ = run
    table = format_table(result)
    assert "backend trt: SKIPPED: tensorrt does not import" in table
    assert "fit T(K) = T_pre + beta*K" in table and "crossover vs dense dav2" in table
    for stage in (*bench.PRECOMPUTE_STAGES, *bench.DECODER_STAGES):
        assert bench.STAGE_LABELS[stage] in table


# ---- skipped backends ---------------------------------------------------------------------
def test_plugins_forced_unavailable_are_skipped(monkeypatch, tmp_path):
    # a None entry makes `import plugins.torch_ext` raise ImportError, as on an unbuilt tree
    monkeypatch.setitem(sys.modules, "plugins.torch_ext", None)
    opts = BenchOptions(config="tiny", backends=("torch-plugins", "trt"), ks=KS, events=100,
                        repeat=1, warmup=0, dense=False, threads=1)
    result = run_bench(opts, log=lambda msg: None)
    plug = result["backends"]["torch-plugins"]
    assert plug["status"] == "skipped" and "plugins.torch_ext does not import" in plug["reason"]
    assert result["backends"]["trt"]["status"] == "skipped"
    assert [r["status"] for r in result["summary"]] == ["skipped", "skipped"]
    assert "backend torch-plugins: SKIPPED: plugins.torch_ext" in format_table(result)
    # a plot with nothing measured is still a valid PNG that names what did not run
    assert write_plot(result, tmp_path / "empty.png")["status"] == "written"
    assert (tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = {"backends": {}, "dense": {}, "settings": {"ks": [1, 2]}}
    plot = write_plot(result, tmp_path / "x.png")
    assert plot["status"] == "skipped" and "matplotlib" in plot["reason"]
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not _has_onnxruntime(), reason="onnxruntime is not installed")
def test_onnxrt_fp16_is_skipped():
    opts = BenchOptions(config="tiny", backends=("onnxrt",), ks=KS, events=100, repeat=1,
                        warmup=0, precision="fp16", dense=False, threads=1)
    result = run_bench(opts, log=lambda msg: None)
    assert result["backends"]["onnxrt"]["status"] == "skipped"
    assert "fp32" in result["backends"]["onnxrt"]["reason"]


# ---- the click command --------------------------------------------------------------------
def test_cli_runs_and_writes(tmp_path):
    res = CliRunner().invoke(bench_command, [
        "--config", "tiny", "--backends", "torch,trt", "--k", "1,4", "--events", "300",
        "--repeat", "1", "--warmup", "0", "--no-dense", "--no-stages", "--threads", "1",
        "--json", str(tmp_path / "out" / "b.json"), "--plot", str(tmp_path / "out" / "b.png")])
    assert res.exit_code == 0, res.output
    assert "backend torch: PyTorch" in res.output and "backend trt: SKIPPED" in res.output
    data = json.loads((tmp_path / "out" / "b.json").read_text())
    assert data["backends"]["torch"]["status"] == "ok" and data["dense"] == {}
    assert data["backends"]["torch"]["speedup"] is None  # nothing to compare with
    assert data["plot"]["path"] == str(tmp_path / "out" / "b.png")
    assert (tmp_path / "out" / "b.png").read_bytes().startswith(PNG_MAGIC)


def test_cli_times_a_checkpoint(tmp_path):
    from model_def import EventSPD, get_config
    from model_def.checkpoint import save_checkpoint

    ckpt = tmp_path / "demo.pt"
    save_checkpoint(EventSPD(get_config("demo"), seed=5), ckpt)
    res = CliRunner().invoke(bench_command, [
        "--checkpoint", str(ckpt), "--backends", "torch", "--k", "1,4", "--events", "300",
        "--repeat", "1", "--warmup", "0", "--no-dense", "--no-stages", "--threads", "1",
        "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["config"]["name"] == "demo"  # the configuration comes from the checkpoint
    assert data["settings"]["checkpoint"] == str(ckpt)
    assert data["eventspd_params"]["total"] == EventSPD(get_config("demo")).stage_parameters()["total"]
    for args, message in ((["--config", "tiny"], "configuration 'demo'"),
                          ([], "no such file")):
        target = str(ckpt) if args else str(tmp_path / "none.pt")
        res = CliRunner().invoke(bench_command, ["--checkpoint", target, *args, "--json",
                                                 str(tmp_path / "c.json")])
        assert res.exit_code == 2 and message in res.output, res.output
        assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--k", "64"], "at least two distinct K"),
    (["--k", "1,abc"], "comma-separated integers"),
    (["--k", "0,64"], "every K must be in"),
    (["--backends", "torch,tensorflow"], "tensorflow: choose from"),
    (["--backends", ","], "no backend given"),
    (["--precision", "int8"], "int8"),
    (["--events", "0"], "--events"),
    (["--onnx-dir", "/nonexistent/graphs", "--backends", "onnxrt"], "missing precompute.onnx"),
])
def test_cli_option_errors(args, message, tmp_path):
    res = CliRunner().invoke(bench_command, ["--config", "tiny", "--json", str(tmp_path / "b.json"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "b.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_cuda_without_device():
    res = CliRunner().invoke(bench_command, ["--device", "cuda"])
    assert res.exit_code == 2 and "no CUDA device" in res.output


# ---- CUDA graphs (GPU only) ----------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("packed_kv", [False, True])
def test_graphed_backends_replay_what_eager_computes(packed_kv):
    # torch-plugins-compiled is left to scripts/bench_gpu.sh: compiling takes minutes.
    names = ("torch-cudagraph", "torch-plugins-cudagraph")
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # true fp32, so the check can be tight
    try:
        opts = BenchOptions(config="tiny", device="cuda", backends=names, ks=(1, 7), events=500,
                            repeat=2, warmup=1, dense_input_hw=SMALL_DENSE, packed_kv=packed_kv)
        result = run_bench(opts, log=lambda msg: None)
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    for name in names:
        e = result["backends"][name]
        if name == "torch-plugins-cudagraph" and registry.why_not("torch-plugins-cudagraph", "cuda"):
            assert e["status"] == "skipped"
            continue
        assert e["status"] == "ok", (name, e.get("reason"))
        assert e["stages"] is None and "replay whole phases" in e["stages_reason"]
        assert ("packed K/V" in e["runtime"]) == packed_kv, e["runtime"]
        # channels-last F^3 and atomics in the splat round differently from eager, nothing more
        assert e["graph_check"]["precompute_max_rel"] <= 1e-3, e["graph_check"]
        assert e["graph_check"]["decoder_max_rel"] <= 1e-3, e["graph_check"]
        assert result["dense"][name]["cuda_graphs"] is True
        assert result["dense"][name]["modes"]["dav2"]["total"]["median_ms"] > 0


def test_onnx_dir_of_other_weights_is_refused(tmp_path):
    # onnxrt's accuracy columns compare the graphs with the model the other backends run: graphs
    # exported from other weights would read as a broken export, so they are refused up front.
    from eventspd_export.cli import main
    from model_def import EventSPD
    from model_def.checkpoint import save_checkpoint

    export = tmp_path / "tiny"
    res = CliRunner().invoke(main, ["onnx", "--config", "tiny", "--no-verify", "--out", str(export)])
    assert res.exit_code == 0, res.output
    bench.check_onnx_dir(export, "tiny")  # the built-in default weights: what the benchmark runs
    ckpt = tmp_path / "other.pt"
    save_checkpoint(EventSPD(get_config("tiny"), seed=5), ckpt)
    with pytest.raises(bench.UserError, match="exported from the built-in default weights, not from --checkpoint"):
        bench.check_onnx_dir(export, "tiny", ckpt)
    res = CliRunner().invoke(bench_command, ["--checkpoint", str(ckpt), "--onnx-dir", str(export), "--backends",
                                             "onnxrt", "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 2 and "error: --onnx-dir: the graphs in" in res.output, res.output
    assert not (tmp_path / "b.json").exists()
