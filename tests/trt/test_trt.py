"""`eventspd-export trt` (issue 5): build planning, every error path without TensorRT (one clear
sentence, exit code 2, no files left), the manifest entries, plugin-layer verification, the build
flow against a stand-in ``tensorrt`` module, and -- marked ``tensorrt``, skipped with the reason
where TensorRT or a GPU is missing -- real engine builds at each precision, ``check --backend trt``,
and the C++ example on the engines."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from eventspd_export.runtime import trt_flavour
from eventspd_export.trt import engine_build as trt_engine
from eventspd_export.trt import plugin_library
from eventspd_export.export.onnx_export import MANIFEST_FILE, plugin_ops_used
from eventspd_export.cli.trt_commands import trt
from eventspd_export.artifacts import onnx_file
from eventspd_export.trt.engine_build import BuildOptions, EngineBuildError, Profile, engine_entry, plan_build
from eventspd_export.trt.plugin_library import verify_plugin_layers
from eventspd_export.runtime.trt_flavour import FLAVOURS, GpuInfo, Runtime, Target, engine_problems
from model_def import contract, get_config, ops

REPO = Path(__file__).resolve().parents[2]

# The README's Polygraphy lines for TensorRT, verbatim (run from the repository root after
# `eventspd-export trt --fp32` and `eventspd-export check --backend trt`; calibrate for fp16).
README_POLYGRAPHY_TRT = """\
polygraphy run artifacts/precompute.engine --model-type engine --trt --plugins artifacts/libeventspd_plugins.so --load-inputs artifacts/check/precompute/inputs.json --load-outputs artifacts/check/precompute/reference.json --atol 1e-4 --rtol 1e-4
polygraphy run artifacts/decoder.engine --model-type engine --trt --plugins artifacts/libeventspd_plugins.so --load-inputs artifacts/check/decoder/inputs.json --load-outputs artifacts/check/decoder/reference.json --atol 0 --rtol 1e-4
EVENTSPD_K=4096 polygraphy run artifacts/decoder.onnx --onnxrt --trt --plugins artifacts/libeventspd_plugins.so --onnx-flags enable_plugin_override --trt-min-shapes 'queries:[1,1,2]' --trt-opt-shapes 'queries:[1,256,2]' --trt-max-shapes 'queries:[1,4096,2]' --data-loader-script eventspd_export/check/polygraphy_data_loader.py --atol 0 --rtol 1e-4
EVENTSPD_EVENTS=20000 polygraphy run artifacts/precompute.onnx --onnxrt --trt --plugins artifacts/libeventspd_plugins.so --onnx-flags enable_plugin_override --trt-min-shapes 'events:[0,4]' --trt-opt-shapes 'events:[100000,4]' --trt-max-shapes 'events:[2000000,4]' --data-loader-script eventspd_export/check/polygraphy_data_loader.py --atol 1e-4 --rtol 1e-4
EVENTSPD_K=4096 polygraphy run artifacts/decoder.fp16.onnx --onnxrt --trt --strongly-typed --plugins artifacts/libeventspd_plugins.so --onnx-flags enable_plugin_override --trt-min-shapes 'queries:[1,1,2]' --trt-opt-shapes 'queries:[1,256,2]' --trt-max-shapes 'queries:[1,4096,2]' --data-loader-script eventspd_export/check/polygraphy_data_loader.py --check-error-stat quantile --error-quantile 0.99 --atol 0 --rtol 1e-2
EVENTSPD_K=4096 polygraphy run artifacts/decoder.int8.onnx --onnxrt --trt --strongly-typed --plugins artifacts/libeventspd_plugins.so --onnx-flags enable_plugin_override --trt-min-shapes 'queries:[1,1,2]' --trt-opt-shapes 'queries:[1,256,2]' --trt-max-shapes 'queries:[1,4096,2]' --data-loader-script eventspd_export/check/polygraphy_data_loader.py --check-error-stat median --atol 0 --rtol 2e-2
"""


# ---- a small stand-in export: real manifest, small ONNX files carrying the plugin nodes ------

def _graph_with_plugin_nodes(graph: str, cfg) -> onnx.ModelProto:
    specs_in = contract.precompute_inputs(cfg) if graph == "precompute" else contract.decoder_inputs(cfg)
    specs_out = contract.precompute_outputs(cfg) if graph == "precompute" else contract.decoder_outputs(cfg)
    vi = lambda s: helper.make_tensor_value_info(s.name, TensorProto.FLOAT, list(s.shape))  # noqa: E731
    nodes = [helper.make_node(op, [specs_in[0].name], [f"{op}_out"], name=f"/x/{op}", domain=ops.PLUGIN_DOMAIN,
                              plugin_version="1", plugin_namespace="eventspd")
             for op in plugin_library.PLUGIN_NODES[graph]]
    nodes += [helper.make_node("Identity", [specs_in[0].name], [s.name]) for s in specs_out]
    model = helper.make_model(helper.make_graph(nodes, graph, [vi(s) for s in specs_in], [vi(s) for s in specs_out]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.PLUGIN_DOMAIN, 1)])
    model.ir_version = 10
    helper.set_model_props(model, {"eventspd.graph": graph, "eventspd.config": json.dumps(cfg.to_dict())})
    return model


def fake_export(folder: Path, cfg=None, plugins: bool = True, precisions=("fp32",)) -> Path:
    """A folder shaped like `eventspd-export onnx` output (+ calibrate's files for precisions)."""
    cfg = cfg or get_config("tiny")
    folder.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for g in ("precompute", "decoder"):
        blob = _graph_with_plugin_nodes(g, cfg).SerializeToString()
        for p in precisions:
            (folder / onnx_file(g, p)).write_bytes(blob)
        graphs[g] = {"file": f"{g}.onnx", "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
                     "opset": 17, "ir_version": 10, "plugins": plugins}
    manifest = {"format": "eventspd-export/manifest-1", "config": cfg.to_dict(),
                "checkpoint": {"default_seed": 0}, "graphs": graphs,
                "dynamic_axes": {contract.NUM_EVENTS: {"min": 0, "max": 2_000_000},
                                 contract.NUM_QUERIES: {"min": 0, "max": 4096}},
                "plugin_ops": plugin_ops_used(SimpleNamespace(cfg=cfg)) if plugins else []}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return folder


@pytest.fixture()
def export(tmp_path):
    d = fake_export(tmp_path / "art", precisions=("fp32", "fp16"))
    (d / trt_engine.PLUGIN_LIBRARY).write_bytes(b"\x7fELF not really a library")
    return d


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


# ---- planning and option errors ---------------------------------------------------------------

def test_plan_uses_the_matching_onnx_and_profile(export):
    plan = plan_build(BuildOptions(export, export, precision="fp16"))
    assert {g: p.name for g, p in plan.onnx.items()} == {"precompute": "precompute.fp16.onnx",
                                                           "decoder": "decoder.fp16.onnx"}
    assert plan.plugins is None  # searched only once TensorRT and a GPU are there
    assert plugin_library.resolve_plugin_library(None, export / "engines", export) == export / trt_engine.PLUGIN_LIBRARY
    assert plan.profile == Profile(0, 256, 4096, 100_000, 2_000_000, 0)
    cfg = plan.cfg
    assert plan.profile.shapes("precompute", cfg) == {"events": ((0, 4), (100_000, 4), (2_000_000, 4))}
    assert plan.profile.shapes("decoder", cfg) == {"queries": ((1, 0, 2), (1, 256, 2), (1, 4096, 2))}
    # TensorRT 10's weak typing builds fp16 from the fp32 graph
    weak = plan_build(BuildOptions(export, export, precision="fp16", weakly_typed=True))
    assert weak.onnx["decoder"].name == "decoder.onnx"


@pytest.mark.parametrize("args, message", [
    (["--fp16", "--int8"], "--fp16 and --int8: choose one precision"),
    (["--int8"], "precompute.int8.onnx, decoder.int8.onnx not found in"),
    (["--k-min", "8", "--k-opt", "4"], "need 0 <= k-min <= k-opt <= k-max"),
    (["--k-min", "-1"], "need 0 <= k-min <= k-opt <= k-max"),
    (["--runtime", "tensorrt-rtx", "--compute-capability", "eight"], "expected comma-separated M.m values"),
    (["--runtime", "tensorrt-rtx", "--compute-capability", " "], "--compute-capability is empty"),
    (["--k-max", "8192"], "--k-max 8192 is above the 4096 the graphs were exported for"),
    (["--k-max", "100000"], "--k-max 100000 is above what the graphs support"),
    (["--events-opt", "10", "--events-max", "5"], "need 0 <= events-opt <= events-max"),
    (["--events-max", "3000000"], "--events-max 3000000 is above the 2000000 the graphs were exported for"),
    (["--workspace", "0"], "--workspace 0 MiB: must be at least 1"),
    (["--timing-cache", "/nonexistent/dir/cache.bin"], "folder /nonexistent/dir does not exist"),
    (["--fp32", "--weakly-typed"], "--weakly-typed only changes fp16/int8 builds"),
    (["--plugins", "/nonexistent/libx.so"], "plugin library /nonexistent/libx.so not found"),
])
def test_trt_option_errors_exit_2_with_one_line_and_leave_no_files(export, tmp_path, args, message):
    out = tmp_path / "engines"
    before = _snapshot(export)
    result = CliRunner().invoke(trt, ["--onnx-dir", str(export), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0]
    assert not out.exists() and _snapshot(export) == before


def test_trt_file_errors(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(trt, ["--onnx-dir", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "ONNX folder" in missing.output and "eventspd-export onnx" in missing.output
    (tmp_path / "empty").mkdir()
    no_manifest = runner.invoke(trt, ["--onnx-dir", str(tmp_path / "empty")])
    assert no_manifest.exit_code == 2 and "holds no export" in no_manifest.output
    (tmp_path / "graphs-only").mkdir()
    (tmp_path / "graphs-only" / "decoder.onnx").write_bytes(b"x")
    no_manifest = runner.invoke(trt, ["--onnx-dir", str(tmp_path / "graphs-only")])
    assert no_manifest.exit_code == 2 and "eventspd.manifest.json not found" in no_manifest.output
    inline = fake_export(tmp_path / "inline", plugins=False)
    r = runner.invoke(trt, ["--onnx-dir", str(inline)])
    assert r.exit_code == 2 and "exported with --no-plugins" in r.output
    changed = fake_export(tmp_path / "changed")
    (changed / "decoder.onnx").write_bytes(b"something else")
    r = runner.invoke(trt, ["--onnx-dir", str(changed)])
    assert r.exit_code == 2 and "does not match the sha256" in r.output
    for d in (tmp_path / "empty", inline, changed):
        assert not list(d.glob("*.engine"))


def test_missing_plugin_library_names_the_build_command(tmp_path, monkeypatch, fake_trt):
    fake_trt()
    d = fake_export(tmp_path / "art")
    monkeypatch.setattr(plugin_library, "DEFAULT_PLUGIN_BUILD", tmp_path / "build" / trt_engine.PLUGIN_LIBRARY)
    r = CliRunner().invoke(trt, ["--onnx-dir", str(d), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "libeventspd_plugins.so not found" in r.output and "eventspd-export build-plugins" in r.output
    assert not (tmp_path / "o").exists()


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed here: this is the no-TensorRT path")
def test_without_tensorrt_one_sentence_exit_2_no_files(export, tmp_path):
    out = tmp_path / "engines"
    r = CliRunner().invoke(trt, ["--fp16", "--runtime", "tensorrt", "--onnx-dir", str(export), "--out", str(out)])
    assert r.exit_code == 2
    (line,) = [ln for ln in r.output.splitlines() if ln.strip()]
    assert line.startswith("error: TensorRT is not available to this Python")
    assert "pip install tensorrt" in line and line.count(". ") == 0  # one sentence
    assert not out.exists()


def test_auto_without_any_flavour_names_both(export, tmp_path, monkeypatch):
    monkeypatch.setattr(trt_flavour, "_importable", lambda module: False)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    r = CliRunner().invoke(trt, ["--onnx-dir", str(export), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    (line,) = [ln for ln in r.output.splitlines() if ln.strip()]
    assert line.startswith("error: neither TensorRT nor TensorRT-RTX is available to this Python")
    assert "pip install tensorrt" in line and ".[tensorrt-rtx]" in line
    assert not (tmp_path / "o").exists()


class _Trt(types.ModuleType):
    """Just enough of a tensorrt module for the version gate."""

    def __init__(self, version):
        super().__init__("tensorrt")
        self.__version__ = version


def test_old_tensorrt_and_weak_typing_on_11_are_refused(export, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _Trt("8.6.1"))
    r = CliRunner().invoke(trt, ["--onnx-dir", str(export)])
    assert r.exit_code == 2 and "TensorRT 8.6.1 is too old (10.0 or newer needed)" in r.output
    monkeypatch.setitem(sys.modules, "tensorrt", _Trt("11.1.0.106"))
    r = CliRunner().invoke(trt, ["--fp16", "--weakly-typed", "--onnx-dir", str(export)])
    assert r.exit_code == 2 and "--weakly-typed needs TensorRT 10's precision builder flags" in r.output
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", _Trt("1.6.0"))
    r = CliRunner().invoke(trt, ["--runtime", "tensorrt-rtx", "--onnx-dir", str(export)])
    assert r.exit_code == 2 and "TensorRT-RTX 1.6.0 is too old (1.7 or newer needed)" in r.output


def test_without_gpu_one_sentence_exit_2(export, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _Trt("11.1.0.106"))

    def no_gpu(index=0):
        raise trt_flavour.NoGpuError("no CUDA GPU is visible (the NVIDIA driver library libcuda.so.1 is not "
                                    "installed); build engines on the machine with the NVIDIA GPU and driver "
                                    "that will run them")

    monkeypatch.setattr(trt_flavour, "gpu_info", no_gpu)
    out = tmp_path / "engines"
    r = CliRunner().invoke(trt, ["--runtime", "tensorrt", "--onnx-dir", str(export), "--out", str(out)])
    assert r.exit_code == 2 and r.output.startswith("error: no CUDA GPU is visible")
    assert not out.exists()


def test_gpu_info_without_a_driver_raises_no_gpu_error():
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        with pytest.raises(trt_flavour.NoGpuError, match="no CUDA GPU is visible"):
            trt_flavour.gpu_info()
    else:
        pytest.skip("an NVIDIA driver is installed here")


# ---- manifest entries and compatibility ---------------------------------------------------------

def _runtime(name="tensorrt", version="11.1.0.106"):
    return Runtime(FLAVOURS[name], types.ModuleType(FLAVOURS[name].module), version)


def test_engine_entry_and_compatibility(export):
    plan = plan_build(BuildOptions(export, export, precision="fp16", workspace_mib=512))
    gpu = GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0")
    entry = engine_entry("decoder", plan, "ab" * 32, 1234, _runtime().manifest_entry(), Target(("9.0",), gpu),
                         "cd" * 32, "ef" * 32, ["EventSPDTopRRoute", "EventSPDDeformRead"], 12.34, "strongly typed")
    assert entry["file"] == "decoder.engine" and entry["precision"] == "fp16"
    assert entry["tensorrt"] == {"flavour": "tensorrt", "version": "11.1.0.106", "major": 11, "minor": 1, "patch": 0}
    assert entry["gpu"] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert entry["target"] == {"compute_capabilities": ["9.0"], "built_on": entry["gpu"]}
    assert entry["onnx"] == {"file": "decoder.fp16.onnx", "sha256": "ef" * 32}
    assert entry["plugin_library"]["sha256"] == "cd" * 32
    assert entry["profiles"] == [{"queries": {"min": [1, 0, 2], "opt": [1, 256, 2], "max": [1, 4096, 2]}}]
    cfg = plan.cfg
    assert [t["name"] for t in entry["inputs"]] == [s.name for s in contract.decoder_inputs(cfg)]
    assert entry["outputs"][0] == {"name": "depth", "dtype": "float32", "shape": [1, "num_queries"]}
    json.dumps(entry)  # serialisable
    assert engine_problems(entry, "tensorrt", "11.1.0.200", gpu) == []  # the build number does not matter
    (p,) = engine_problems(entry, "tensorrt", "10.15.1", gpu)
    assert "built with TensorRT 11.1.0.106, this is TensorRT 10.15.1" in p
    (p,) = engine_problems(entry, "tensorrt", "11.1.0", GpuInfo(0, "NVIDIA A100-SXM4-80GB", "8.0"))
    assert "built for NVIDIA H100 80GB HBM3 (compute capability 9.0), this GPU is NVIDIA A100-SXM4-80GB" in p
    assert "on this GPU" in p
    (p,) = engine_problems(entry, "tensorrt", "11.1.0", GpuInfo(0, "NVIDIA H100 PCIe", "9.0"))
    assert "TensorRT tuned it for the other model" in p
    (p,) = engine_problems(entry, "tensorrt-rtx", "1.7.1.116", gpu)  # the other flavour: one sentence
    assert p == ("decoder.engine was built with TensorRT 11.1.0.106, this is TensorRT-RTX 1.7.1.116: rebuild it "
                 "with `eventspd-export trt --runtime tensorrt-rtx` (an engine runs only on the flavour that built it)")
    # a TensorRT-RTX engine: targets, not a build GPU
    rtx = engine_entry("decoder", plan, "ab" * 32, 1234, _runtime("tensorrt-rtx", "1.7.1.116").manifest_entry(),
                       Target(("8.6", "8.9", "12.0")), "cd" * 32, "ef" * 32, [], 1.0, "strongly typed")
    assert rtx["gpu"] is None and rtx["target"] == {"compute_capabilities": ["8.6", "8.9", "12.0"], "built_on": None}
    assert engine_problems(rtx, "tensorrt-rtx", "1.7.1.116", GpuInfo(0, "NVIDIA GeForce RTX 4090", "8.9")) == []
    (p,) = engine_problems(rtx, "tensorrt-rtx", "1.7.1.116", GpuInfo(0, "NVIDIA RTX A6000", "8.0"))
    assert p == ("decoder.engine was built for compute capabilities 8.6, 8.9, 12.0, this GPU is NVIDIA RTX A6000 "
                 "(8.0): rebuild it with `eventspd-export trt --runtime tensorrt-rtx --compute-capability 8.0`")
    (p,) = engine_problems(rtx, "tensorrt-rtx", "1.7.1.116", gpu)
    assert "TensorRT-RTX has no target for it: build with enterprise TensorRT on this GPU" in p
    (p,) = engine_problems(rtx, "tensorrt", "11.1.0", gpu)
    assert "was built with TensorRT-RTX 1.7.1.116, this is TensorRT 11.1.0" in p
    (p,) = engine_problems(rtx, "tensorrt-rtx", "1.8.0", GpuInfo(0, "NVIDIA GeForce RTX 4090", "8.9"))
    assert "built with TensorRT-RTX 1.7.1.116, this is TensorRT-RTX 1.8.0" in p


def test_verify_plugin_layers():
    nodes = {"/b3/EventSPDTopRRoute": "EventSPDTopRRoute", "/b4/EventSPDDeformRead": "EventSPDDeformRead"}
    by_name = [("/b3/EventSPDTopRRoute", "EventSPDTopRRoute"), ("/b4/EventSPDDeformRead", "EventSPDDeformRead")]
    assert sorted(verify_plugin_layers("decoder", by_name, nodes)) == ["EventSPDDeformRead", "EventSPDTopRRoute"]
    # bindings that do not expose the plugin name: the layer carries the node's name
    unnamed = [("/b3/EventSPDTopRRoute", None), ("/b4/EventSPDDeformRead", None)]
    assert len(verify_plugin_layers("decoder", unnamed, nodes)) == 2
    with pytest.raises(EngineBuildError, match="inlined the model-local function"):
        verify_plugin_layers("decoder", [], nodes)  # the parser used the function bodies
    with pytest.raises(EngineBuildError, match="EventSPDDeformRead"):
        verify_plugin_layers("decoder", by_name[:1], nodes)

    # --fused-blocks precompute: the splat once, any number of block nodes, each its own layer
    block, splat = "EventSPDConvNeXtBlock", "EventSPDEventSplat"
    pre_nodes = {"/f3/EventSPDEventSplat": splat, **{f"/f3/stage1.{i}/{block}": block for i in range(3)}}
    layers = [(n, t) for n, t in pre_nodes.items()]
    assert verify_plugin_layers("precompute", layers, pre_nodes) == [block, splat]
    assert verify_plugin_layers("precompute", layers[:1], {"/f3/EventSPDEventSplat": splat}) == [splat]
    # one block inlined: two layers cannot stand for three nodes
    with pytest.raises(EngineBuildError, match=f"1 of the 3 {block} node"):
        verify_plugin_layers("precompute", layers[:3], pre_nodes)
    with pytest.raises(EngineBuildError, match=splat):
        verify_plugin_layers("precompute", layers[1:], pre_nodes)
    with pytest.raises(EngineBuildError):  # the block is not a decoder plugin
        verify_plugin_layers("decoder", [*by_name, ("/x", block)], {**nodes, "/x": block})


# ---- the build flow against a stand-in tensorrt module --------------------------------------------

class FakeTensorRT(types.ModuleType):
    """A stand-in for the TensorRT Python API calls trt_engine makes (names as documented for
    TensorRT 10/11). ``inline=True`` makes the parser inline the plugin functions."""

    def __init__(self, version="11.1.0.106", inline=False, build_fails=False):
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls = []
        fake = self
        enum = lambda *names: SimpleNamespace(**{n: n for n in names})  # noqa: E731
        self.LayerType = enum("PLUGIN_V3", "PLUGIN_V2", "TOPK", "MATRIX_MULTIPLY")
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=0)
        self.OnnxParserFlag = enum("ENABLE_PLUGIN_OVERRIDE", "NATIVE_INSTANCENORM")
        self.BuilderFlag = enum("TF32", "FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS")
        self.float32, self.float16 = "float32", "float16"
        self.MemoryPoolType = enum("WORKSPACE")
        self.TensorIOMode = enum("INPUT", "OUTPUT")
        self.DataType = enum("FLOAT", "HALF")
        self.PluginCapabilityType = enum("CORE")

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Layer:  # TensorRT 10's ILayer: precision and output types settable (weakly typed builds)
            num_outputs = 1

            def __init__(self, name, type_, plugin=None):
                self.name, self.type, self._plugin = name, type_, plugin
                self.precision, self.output_types = None, {}

            def get_output(self, j):
                return SimpleNamespace(dtype=fake.float32)

            def set_output_type(self, j, dtype):
                self.output_types[j] = dtype

        class Network:
            def __init__(self, flags):
                fake.calls.append(("create_network", flags))
                self.layers, self.inputs, self.outputs, self.graph = [], [], [], None

            @property
            def num_layers(self):
                return len(self.layers)

            def get_layer(self, i):
                return self.layers[i]

            num_inputs = property(lambda self: len(self.inputs))
            num_outputs = property(lambda self: len(self.outputs))

            def get_input(self, i):
                return SimpleNamespace(name=self.inputs[i], dtype="DataType.FLOAT")

            def get_output(self, i):
                return SimpleNamespace(name=self.outputs[i], dtype="DataType.FLOAT")

        class Parser:
            def __init__(self, network, logger):
                self.network = network
                self.num_errors = 0

            def set_flag(self, flag):
                fake.calls.append(("parser_flag", flag))

            def parse_from_file(self, path):
                model = onnx.load(path)
                net = self.network
                net.graph = model.graph.name
                for n in model.graph.node:
                    if n.domain == ops.PLUGIN_DOMAIN:
                        net.layers.append(Layer(n.name + "/TopK", "TOPK") if inline else Layer(n.name, "PLUGIN_V3"))
                net.inputs = [i.name for i in model.graph.input]
                net.outputs = [o.name for o in model.graph.output]
                return True

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return memoryview(self.data + b"+")

        class Config:
            def __init__(self):
                self.flags, self.profiles, self.pool, self.cache = set(["TF32"]), [], {}, None

            def set_memory_pool_limit(self, pool, size):
                self.pool[pool] = size

            def set_flag(self, f):
                self.flags.add(f)

            def clear_flag(self, f):
                self.flags.discard(f)

            def add_optimization_profile(self, p):
                self.profiles.append(p)

            def create_timing_cache(self, data):
                return Cache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return Network(flags)

            def create_optimization_profile(self):
                return Profile()

            def create_builder_config(self):
                return Config()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build", network.graph, sorted(config.flags), config.pool,
                                   [p.shapes for p in config.profiles],
                                   {l.name: (l.precision, l.output_types) for l in network.layers if l.precision}))
                if build_fails:
                    return None
                return memoryview(json.dumps({"graph": network.graph, "inputs": network.inputs,
                                              "outputs": network.outputs}).encode())

        class Engine:
            def __init__(self, blob):
                d = json.loads(bytes(blob))
                self.names = d["inputs"] + d["outputs"]
                self.inputs = set(d["inputs"])

            @property
            def num_io_tensors(self):
                return len(self.names)

            def get_tensor_name(self, i):
                return self.names[i]

            def get_tensor_mode(self, name):
                return "INPUT" if name in self.inputs else "OUTPUT"

            def get_tensor_dtype(self, name):
                return "DataType.FLOAT"

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, blob):
                return Engine(blob)

        self.Logger, self.Builder, self.OnnxParser, self.Runtime = Logger, Builder, Parser, Runtime
        creators = [SimpleNamespace(name=spec.plugin_name, plugin_version=spec.plugin_version,
                                    plugin_namespace=ops.PLUGIN_NAMESPACE) for spec in ops.PLUGIN_SPECS.values()]
        self.get_plugin_registry = lambda: SimpleNamespace(all_creators=creators)


def install_fake_tensorrt(monkeypatch, **kwargs) -> "FakeTensorRT":
    """TensorRT faked for the build flow: the fake module, an H100 as the visible GPU, and the
    plugin library's loading skipped (other test folders use this too)."""
    fake = FakeTensorRT(**kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_flavour, "gpu_info", lambda index=0: GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0"))
    monkeypatch.setattr(trt_engine, "load_plugins", lambda trt, path: None)
    return fake


@pytest.fixture()
def fake_trt(monkeypatch):
    return lambda **kwargs: install_fake_tensorrt(monkeypatch, **kwargs)


def test_build_flow_writes_engines_library_cache_and_manifest(export, tmp_path, fake_trt):
    fake = fake_trt()
    out = tmp_path / "engines"
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    r = CliRunner().invoke(trt, ["--fp16", "--onnx-dir", str(export), "--out", str(out), "--k-max", "1024",
                                 "--events-opt", "5000", "--events-max", "50000", "--workspace", "256",
                                 "--timing-cache", str(cache)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["decoder.engine", "eventspd.manifest.json",
                                                    "libeventspd_plugins.so", "precompute.engine"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left
    builds = [c for c in fake.calls if c[0] == "build"]
    assert [b[1] for b in builds] == ["precompute", "decoder"]
    assert all("TF32" in b[2] and "FP16" not in b[2] for b in builds)  # fp16 comes from the ONNX
    assert builds[0][3] == {"WORKSPACE": 256 << 20}
    assert builds[0][4] == [{"events": ((0, 4), (5000, 4), (50000, 4))}]
    assert builds[1][4] == [{"queries": ((1, 0, 2), (1, 256, 2), (1, 1024, 2))}]
    assert ("create_network", 0) in fake.calls  # TensorRT 11: always strongly typed, no flag
    assert ("parser_flag", "ENABLE_PLUGIN_OVERRIDE") in fake.calls
    assert cache.read_bytes() == b"old++"  # loaded, then saved after each build
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["graphs"] == json.loads((export / MANIFEST_FILE).read_text())["graphs"]
    for g in ("precompute", "decoder"):
        e = manifest["engines"][g]
        assert e["sha256"] == hashlib.sha256((out / e["file"]).read_bytes()).hexdigest()
        assert e["onnx"]["sha256"] == hashlib.sha256((export / f"{g}.fp16.onnx").read_bytes()).hexdigest()
        assert e["plugin_library"]["sha256"] == hashlib.sha256((out / "libeventspd_plugins.so").read_bytes()).hexdigest()
        assert e["precision"] == "fp16" and e["typing"] == "strongly typed"
        assert e["dynamic_axes"]["num_events"] == {"min": 0, "opt": 5000, "max": 50000}
    assert manifest["engines"]["precompute"]["plugin_library"]["plugins"] == ["EventSPDEventSplat"]
    # the engine file is the plan as TensorRT serialised it: no header in front
    assert (out / "decoder.engine").read_bytes().startswith(b"{\"graph\": \"decoder\"")


def test_build_flow_fp32_clears_tf32_and_tensorrt10_sets_strong_typing(export, tmp_path, fake_trt):
    fake = fake_trt(version="10.15.1.29")
    r = CliRunner().invoke(trt, ["--fp32", "--onnx-dir", str(export), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert ("create_network", 1 << 0) in fake.calls
    assert all("TF32" not in b[2] for b in fake.calls if b[0] == "build")
    fake = fake_trt(version="10.15.1.29")
    r = CliRunner().invoke(trt, ["--fp16", "--weakly-typed", "--onnx-dir", str(export), "--out", str(tmp_path / "w")])
    assert r.exit_code == 0, r.output
    builds = [b for b in fake.calls if b[0] == "build"]
    assert ("create_network", 0) in fake.calls and all("FP16" in b[2] for b in builds)
    assert json.loads((tmp_path / "w" / MANIFEST_FILE).read_text())["engines"]["decoder"]["typing"] == \
        "builder flags FP16, fp32 layer constraints"
    # what calibration/fp16.py keeps in fp32 (here: the plugin nodes) is constrained to fp32, obeyed
    for b in builds:
        assert "OBEY_PRECISION_CONSTRAINTS" in b[2]
        want = {f"/x/{op}" for op in plugin_library.PLUGIN_NODES[b[1]]}
        assert b[5] == {name: ("float32", {0: "float32"}) for name in want}, b[5]
    # strongly typed builds set no constraint: the types are the ONNX's
    fake = fake_trt(version="10.15.1.29")
    r = CliRunner().invoke(trt, ["--fp16", "--onnx-dir", str(export), "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    strong = [b for b in fake.calls if b[0] == "build"]
    assert strong and all(b[5] == {} and "OBEY_PRECISION_CONSTRAINTS" not in b[2] for b in strong)


@pytest.mark.parametrize("kwargs, message", [({"inline": True}, "inlined the model-local function"),
                                              ({"build_fails": True}, "TensorRT 11.1.0.106 failed to build the engine")])
def test_build_failures_exit_1_and_write_nothing(export, tmp_path, fake_trt, kwargs, message):
    fake_trt(**kwargs)
    out = tmp_path / "o"
    before = _snapshot(export)
    r = CliRunner().invoke(trt, ["--onnx-dir", str(export), "--out", str(out)])
    assert r.exit_code == 1 and message in r.output
    assert not out.exists() and _snapshot(export) == before


# ---- real enterprise TensorRT on a GPU (skipped with the reason where either is absent; the
# ---- TensorRT-RTX builds that run everywhere are in test_trt_rtx.py) ----------------------------------

def _real_tensorrt_and_gpu():
    try:
        runtime = trt_flavour.load_runtime("tensorrt")
        gpu = trt_flavour.gpu_info()
    except trt_engine.UserError as exc:
        pytest.skip(str(exc))
    return runtime, gpu


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """tiny exported, calibrated (fp16/int8 graphs), and engines of each precision."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install tensorrt)")
    _real_tensorrt_and_gpu()
    from plugins.trt_build import PluginBuildError, build_plugins

    from test_check import make_precision_graphs

    art = tmp_path_factory.mktemp("trt")
    try:
        lib = build_plugins(build_dir=art / "plugin-build", runtime="tensorrt")
    except PluginBuildError as exc:
        pytest.skip(f"cannot build the plugin library here: {exc}")
    from eventspd_export.export.onnx_export import ExportOptions, export_onnx
    from model_def import EventSPD

    model = EventSPD(get_config("tiny"), seed=0).eval()
    export_onnx(model, ExportOptions(art / "onnx"))
    make_precision_graphs(model, art / "onnx")
    dirs = {}
    for precision in ("fp32", "fp16", "int8"):
        out = art / precision
        trt_engine.build_engines(BuildOptions(art / "onnx", out, precision=precision, runtime="tensorrt",
                                              profile=Profile(0, 64, 4096, 2000, 200_000), plugins=lib))
        dirs[precision] = out
    return art, dirs, lib


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engines_build_with_plugins_and_pass_check(built, precision):
    from eventspd_export.cli.trt_commands import check

    art, dirs, lib = built
    manifest = json.loads((dirs[precision] / MANIFEST_FILE).read_text())
    assert manifest["engines"]["precompute"]["plugin_library"]["plugins"] == ["EventSPDEventSplat"]
    assert sorted(manifest["engines"]["decoder"]["plugin_library"]["plugins"]) == ["EventSPDDeformRead",
                                                                                   "EventSPDTopRRoute"]
    r = CliRunner().invoke(check, ["--backend", "trt", "--precision", precision, "--onnx-dir", str(art / "onnx"),
                                   "--engine-dir", str(dirs[precision]), "--k", "1,7,4096", "--events", "2000",
                                   "--save", str(art / f"check-{precision}")])
    assert r.exit_code == 0, r.output


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_cpp_example_runs_the_engines(built, tmp_path):
    from eventspd_export.data.event_file import write_from_source

    art, dirs, lib = built
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found")
    root = os.environ.get("TENSORRT_ROOT")
    if not root:
        pytest.skip("set TENSORRT_ROOT to build examples/cpp against TensorRT")
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(REPO / "examples" / "cpp"), "-B", str(build), f"-DTENSORRT_ROOT={root}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True)
    events = tmp_path / "events.bin"
    write_from_source(events, get_config("tiny"), windows=3, k=64)
    depths = tmp_path / "depths.bin"
    proc = subprocess.run([str(build / "eventspd_run"), str(dirs["fp32"]), str(events), "--save-depths", str(depths)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "window 2:" in proc.stdout and "precompute" in proc.stdout
    got = np.fromfile(depths, dtype=np.float32)
    assert got.shape == (3 * 64,) and np.all(np.isfinite(got)) and np.all(got > 0)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_readme_polygraphy_trt_lines_run_as_written(built, tmp_path):
    from eventspd_export.check.tolerances import polygraphy_commands
    from eventspd_export.cli.trt_commands import check

    art, dirs, lib = built
    root = tmp_path / "repo"
    shutil.copytree(art / "onnx", root / "artifacts")
    for f in dirs["fp32"].iterdir():  # engines, plugin library, manifest with the engine entries
        shutil.copy2(f, root / "artifacts" / f.name)
    (root / "eventspd_export").symlink_to(REPO / "eventspd_export")
    r = CliRunner().invoke(check, ["--backend", "trt", "--onnx-dir", str(root / "artifacts"), "--k", "1,7",
                                   "--events", "2000"])
    assert r.exit_code == 0, r.output
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", README_POLYGRAPHY_TRT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert polygraphy_commands("artifacts", "fp32", "trt") == README_POLYGRAPHY_TRT.splitlines()[:2]


def test_readme_trt_lines_match_check_output():
    from eventspd_export.check.tolerances import polygraphy_commands

    assert polygraphy_commands("artifacts", "fp32", "trt") == README_POLYGRAPHY_TRT.splitlines()[:2]
    rtx = polygraphy_commands("artifacts", "fp32", "trt", flavour="tensorrt-rtx")
    assert rtx == [f"POLYGRAPHY_USE_TENSORRT_RTX=1 {line}" for line in README_POLYGRAPHY_TRT.splitlines()[:2]]
    assert polygraphy_commands("artifacts", "fp32", "onnxrt", flavour="tensorrt-rtx")[0].startswith("polygraphy run")
    text = (REPO / "README.md").read_text()
    if "--model-type engine --trt" not in text:
        pytest.skip("README.md has no TensorRT Polygraphy section yet (paste README_POLYGRAPHY_TRT)")
    for line in README_POLYGRAPHY_TRT.splitlines():
        assert line in text, f"README.md lacks the line: {line}"


def test_load_plugins_checks_the_registry(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to make a stand-in shared library")
    lib = tmp_path / "libstandin.so"
    src = tmp_path / "standin.cpp"
    src.write_text("extern \"C\" int standin() { return 1; }\n")
    subprocess.run([cxx, "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    registered = {"EventSPDTopRRoute", "EventSPDEventSplat", "EventSPDConvNeXtBlock"}
    # bindings without all_creators: get_creator
    fake = SimpleNamespace(get_plugin_registry=lambda: SimpleNamespace(
        get_creator=lambda name, version, ns: object() if name in registered and ns == "eventspd" else None))
    runtime = Runtime(FLAVOURS["tensorrt"], fake, "10.15.1")
    with pytest.raises(plugin_library.PluginLibraryError, match="registry has no creator for EventSPDDeformRead"):
        plugin_library.load_plugins(runtime, lib)
    registered.add("EventSPDDeformRead")
    plugin_library.load_plugins(runtime, lib)  # all four: fine
    # all_creators and the keyed get_creator, as TensorRT-RTX has both
    version = {s.plugin_name: s.plugin_version for s in ops.PLUGIN_SPECS.values()}
    listed = [SimpleNamespace(name=n, plugin_version=version[n], plugin_namespace="eventspd")
              for n in ("EventSPDTopRRoute", "EventSPDEventSplat", "EventSPDConvNeXtBlock")]

    def registry(creators, keyed=True):
        def get_creator(name, version, ns):
            hit = any((c.name, c.plugin_version, c.plugin_namespace) == (name, version, ns) for c in creators)
            return object() if hit and keyed else None
        return Runtime(FLAVOURS["tensorrt-rtx"], SimpleNamespace(get_plugin_registry=lambda: SimpleNamespace(
            all_creators=creators, get_creator=get_creator)), "1.7.1.116")

    with pytest.raises(plugin_library.PluginLibraryError, match="no creator for EventSPDDeformRead.*--runtime tensorrt-rtx"):
        plugin_library.load_plugins(registry(listed), lib)
    listed.append(SimpleNamespace(name="EventSPDDeformRead", plugin_version=version["EventSPDDeformRead"],
                                  plugin_namespace="eventspd"))
    plugin_library.load_plugins(registry(listed), lib)
    # listed but not found by key (a library registered under namespace "", as REGISTER_TENSORRT_PLUGIN
    # does): its engines could not be deserialised, so it is refused
    with pytest.raises(plugin_library.PluginLibraryError,
                       match=r"registers EventSPDTopRRoute version 1, .*get_creator\(name, version, 'eventspd'\) does "
                             r"not find them.*another namespace; rebuild"):
        plugin_library.load_plugins(registry(listed, keyed=False), lib)
    # a library built before the splat's version 2 (every creator at version 1): named, with the version
    stale = [SimpleNamespace(name=c.name, plugin_version="1", plugin_namespace="eventspd") for c in listed]
    with pytest.raises(plugin_library.PluginLibraryError, match="no creator for EventSPDEventSplat version 2"):
        plugin_library.load_plugins(registry(stale), lib)
    not_a_library = tmp_path / "libbroken.so"
    not_a_library.write_bytes(b"not an ELF file")
    with pytest.raises(plugin_library.PluginLibraryError, match="cannot load the plugin library"):
        plugin_library.load_plugins(runtime, not_a_library)


def test_graphs_of_an_older_export_keep_k_min_1(tmp_path):
    """Exports from before K = 0 support record num_queries min 1 (their Reshapes fail at K = 0):
    the default --k-min 0 is refused in one line, --k-min 1 plans."""
    d = fake_export(tmp_path / "old")
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    manifest["dynamic_axes"][contract.NUM_QUERIES]["min"] = 1
    (d / MANIFEST_FILE).write_text(json.dumps(manifest))
    r = CliRunner().invoke(trt, ["--onnx-dir", str(d), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.output.startswith("error: --k-min 0 is below the 1 the graphs were exported for")
    assert "--k-min 1" in r.output and not (tmp_path / "o").exists()
    assert plan_build(BuildOptions(d, d, profile=Profile(k_min=1))).profile.k_min == 1


def test_trt_refuses_an_out_folder_holding_another_export(export, tmp_path):
    """The engines' manifest (the export's, plus the engines) would replace the other export's."""
    other = fake_export(tmp_path / "other")
    manifest = json.loads((other / MANIFEST_FILE).read_text())
    manifest["graphs"]["decoder"]["sha256"] = "00" * 32  # graphs of another export
    (other / MANIFEST_FILE).write_text(json.dumps(manifest))
    before = _snapshot(other)
    r = CliRunner().invoke(trt, ["--onnx-dir", str(export), "--out", str(other)])
    assert r.exit_code == 2 and f"--out {other} holds another export (its graphs and {MANIFEST_FILE})" in r.output, \
        r.output
    assert _snapshot(other) == before
    # a folder of engines only, built from an earlier export (a re-export changed the graphs since),
    # is what `trt --out` rebuilds: not refused
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / MANIFEST_FILE).write_text(json.dumps({**manifest, "engines": {}, "onnx_dir": str(other)}))
    from eventspd_export.trt.engine_build import BuildOptions, plan_build

    plan_build(BuildOptions(export, engines))
