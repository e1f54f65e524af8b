"""`eventspd-export onnx --fused-blocks`: every ConvNeXt-V2 block (F^3's, L1's, L2's) becomes one
EventSPDConvNeXtBlock plugin node whose model-local function is the block in standard ops.

Checked here (CPU, ONNX Runtime): one node per block with the block's fields, the decoder and
the default export unchanged, ONNX Runtime's run of the function bodies against PyTorch (and a
wrong body rejected by the same check), every supported opset, the fp16 graph (the block's map in
fp16, its weights fp32), the refusal of --no-plugins with it, the manifest. The TensorRT plugin
that replaces the node is built into engines in tests/trt/test_trt_rtx.py."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import onnx
import pytest
import torch
from click.testing import CliRunner

from calibration.fp16 import convert_to_fp16
from eventspd_export.check.ort_check import relative_error, verify
from eventspd_export.cli import main
from eventspd_export.data.synthetic import synthetic_window
from eventspd_export.export import onnx_export, onnx_functions
from eventspd_export.export.onnx_export import MANIFEST_FILE, ExportOptions, export_onnx
from eventspd_export.runtime.ort_pair import OrtPair
from helpers import one_error_line
from model_def import EventSPD, get_config, ops
from model_def.layers import ConvNeXtV2Block

BLOCK = ops.PLUGIN_SPECS["convnext_block"].plugin_name
TOL = 1e-4  # the ORT check's tolerance for fp32 graphs (ort_check.DEFAULT_TOLERANCE)


def _randomised(model: EventSPD) -> EventSPD:
    """The seeded model with non-trivial block weights: the seeded GRN gamma/beta are zero and
    the LayerNorm weights one, under which a body that swaps or drops them would still pass."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for block in _blocks(model):
            for p in (block.grn.gamma, block.grn.beta, block.norm.bias):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            block.norm.weight.copy_(1 + 0.3 * torch.randn(block.norm.weight.shape, generator=g))
    return model


def _blocks(model):
    return [m for m in model.modules() if isinstance(m, ConvNeXtV2Block)]


@pytest.fixture(scope="module")
def tiny():
    return _randomised(EventSPD(get_config("tiny"), seed=0).eval())


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny):
    """tiny exported twice: {"default": dir, "fused": dir}."""
    out = {}
    for name, fused in (("default", False), ("fused", True)):
        out[name] = tmp_path_factory.mktemp(name)
        export_onnx(tiny, ExportOptions(out[name], fused_blocks=fused))
    return out


def _nodes(path, op_type=BLOCK):
    return [n for n in onnx.load(str(path)).graph.node if n.op_type == op_type]


def test_one_plugin_node_per_block_with_its_fields_and_the_decoder_unchanged(exports, tiny):
    nodes = _nodes(exports["fused"] / "precompute.onnx")
    blocks = _blocks(tiny)
    assert len(nodes) == len(blocks) == sum(tiny.cfg.f3_depths) + tiny.cfg.depths[0] + tiny.cfg.depths[1]
    for node, block in zip(nodes, blocks):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == ops.PLUGIN_DOMAIN and len(node.input) == 11 and len(node.output) == 1
        assert attrs["channels"] == block.dwconv.in_channels
        assert attrs["eps"] == pytest.approx(block.norm.eps)
        assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"eventspd"
    model = onnx.load(str(exports["fused"] / "precompute.onnx"))
    assert [f.name for f in model.functions if f.name == BLOCK] == [BLOCK]
    # the default export has no such node, and the decoder (no blocks) is byte-identical
    assert _nodes(exports["default"] / "precompute.onnx") == []
    assert ((exports["fused"] / "decoder.onnx").read_bytes() == (exports["default"] / "decoder.onnx").read_bytes())
    manifest = json.loads((exports["fused"] / MANIFEST_FILE).read_text())
    entry = next(p for p in manifest["plugin_ops"] if p["op"] == "convnext_block")
    assert entry["graph"] == "precompute" and entry["nodes"] == len(blocks)
    assert entry["fields"]["channels"] == [b.dwconv.in_channels for b in blocks]
    assert manifest["graphs"]["precompute"]["fused_blocks"] is True
    assert manifest["graphs"]["decoder"]["fused_blocks"] is False
    default = json.loads((exports["default"] / MANIFEST_FILE).read_text())
    assert "convnext_block" not in {p["op"] for p in default["plugin_ops"]}


def test_onnxruntime_runs_the_function_bodies_as_pytorch(exports, tiny):
    report = verify(tiny, exports["fused"], windows=2, num_events=5000, ks=(7,))
    assert report.failures() == {}
    pre_errors = {k: v for k, v in report.errors.items() if "/precompute/" in k}
    assert pre_errors and max(pre_errors.values()) <= TOL
    # and as the default export's standard ops, output by output
    events = synthetic_window(tiny.cfg, 5000, seed=3).numpy()
    hidden = tiny.initial_state().numpy()
    fused = OrtPair.from_folder(tiny.cfg, exports["fused"]).precompute(events, hidden)
    default = OrtPair.from_folder(tiny.cfg, exports["default"]).precompute(events, hidden)
    for name in default:
        assert relative_error(fused[name], default[name]) <= 1e-5, name


def _mutated(kind):
    """A convnext_block function builder with one deliberate error."""
    def build(cfg, opset):
        f = onnx_functions.convnext_block_function(cfg, opset)
        for node in f.node:
            if kind == "gamma-beta":
                node.input[:] = [{"gamma": "beta", "beta": "gamma"}.get(x, x) for x in node.input]
        if kind == "no-residual":
            last_add = [n for n in f.node if n.op_type == "Add"][-1]
            last_add.op_type = "Max"  # x + y -> max(x, y)
        return f
    return build


@pytest.mark.parametrize("kind", ["gamma-beta", "no-residual"])
def test_the_check_rejects_a_wrong_function_body(tiny, tmp_path, monkeypatch, kind):
    monkeypatch.setitem(onnx_export.FUNCTION_BUILDERS, BLOCK, _mutated(kind))
    export_onnx(tiny, ExportOptions(tmp_path, fused_blocks=True))
    report = verify(tiny, tmp_path, windows=1, num_events=5000, ks=(7,))
    bad = report.failures()
    assert any("/precompute/" in k for k in bad), report.errors
    assert max(v for k, v in report.errors.items() if "/precompute/" in k) > 100 * TOL


@pytest.mark.parametrize("opset", [18])
def test_function_body_at_every_opset(tiny, exports, tmp_path, opset):
    """ReduceMean's axes are an attribute at opset 17 (the other tests) and an input from 18 on
    (19 writes the same body)."""
    export_onnx(tiny, ExportOptions(tmp_path, opset=opset, fused_blocks=True))
    onnx.checker.check_model(onnx.load(str(tmp_path / "precompute.onnx")), full_check=True)
    events = synthetic_window(tiny.cfg, 3000, seed=4).numpy()
    hidden = tiny.initial_state().numpy()
    got = OrtPair.from_folder(tiny.cfg, tmp_path).precompute(events, hidden)
    want = OrtPair.from_folder(tiny.cfg, exports["default"]).precompute(events, hidden)
    for name in want:
        assert relative_error(got[name], want[name]) <= 1e-5, name


def _fp16_block_inputs(model: onnx.ModelProto):
    """(x's type, [each weight's type as the node reads it]) of every block node."""
    types = {i.name: i.data_type for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for vi in onnx.shape_inference.infer_shapes(model).graph.value_info:
        types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    out = []
    for node in model.graph.node:
        if node.op_type == BLOCK:
            weights = []
            for w in node.input[1:]:
                src = producer.get(w)
                if src is not None and src.op_type == "Identity":  # a shared weight: its source's type
                    w = src.input[0]
                weights.append((types.get(w), producer[w].op_type if w in producer else "initializer"))
            out.append((types.get(node.input[0]), types.get(node.output[0]), weights))
    return out


@pytest.mark.parametrize("weights", ["seeded", "randomised"])
def test_fp16_graph_runs_the_block_map_in_fp16_and_keeps_its_weights_fp32(tmp_path, exports, tiny, weights):
    """The seeded model's equal weights (LayerNorm ones, zero biases) are shared through Identity
    nodes by torch's exporter: they, too, must reach the node in fp32, not round-trip through fp16."""
    if weights == "randomised":
        model, folder = tiny, exports["fused"]
    else:
        model, folder = EventSPD(get_config("tiny"), seed=0).eval(), tmp_path
        export_onnx(model, ExportOptions(folder, fused_blocks=True))
    fp16 = convert_to_fp16(onnx.load(str(folder / "precompute.onnx")))
    found = _fp16_block_inputs(fp16)
    assert len(found) == len(_blocks(model))
    F, H = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    for x_type, out_type, weight_types in found:
        assert (x_type, out_type) == (H, H)
        assert weight_types == [(F, "initializer")] * 10, weight_types
    # and it runs, close to PyTorch's fp32 (the fp16 bound)
    events = synthetic_window(model.cfg, 5000, seed=5)
    hidden = model.initial_state()
    with torch.inference_mode():
        ref = model.precompute(events, hidden)
    pair = OrtPair(model.cfg, fp16, folder / "decoder.onnx")
    got = pair.precompute(events.numpy(), hidden.numpy())
    for name in ("l4_tokens", "value_l2", "hidden_out"):
        assert relative_error(got[name], ref[name].numpy()) <= 1e-2, name


def test_fp16_identity_rule_keeps_default_graphs_layernorm_weights_fp32(tmp_path):
    """The same rule on the default export: no LayerNormalization reads a weight that was
    rounded to fp16 (an fp16 Identity output cast back to fp32)."""
    model = EventSPD(get_config("tiny"), seed=0).eval()
    export_onnx(model, ExportOptions(tmp_path))
    fp16 = convert_to_fp16(onnx.load(str(tmp_path / "precompute.onnx")))
    producer = {o: n for n in fp16.graph.node for o in n.output}
    for node in fp16.graph.node:
        if node.op_type == "LayerNormalization":
            for w in node.input[1:]:
                src = producer.get(w)
                assert src is None or src.op_type != "Cast", f"{node.name} reads {w} through a Cast"


def test_cli_flag_and_its_refusal(tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["onnx", "--config", "tiny", "--out", str(out), "--fused-blocks", "--no-verify"])
    assert r.exit_code == 0, r.output
    assert "fused ConvNeXt-V2 blocks" in r.output
    assert len(_nodes(out / "precompute.onnx")) == len(_blocks(EventSPD(get_config("tiny"), seed=0)))
    r = CliRunner().invoke(main, ["onnx", "--config", "tiny", "--out", str(tmp_path / "p"), "--fused-blocks",
                                  "--no-plugins"])
    line = one_error_line(r)
    assert "--fused-blocks" in line and "--no-plugins" in line
    assert not (tmp_path / "p").exists()


def test_default_export_bytes_do_not_depend_on_the_fused_export(exports, tiny, tmp_path):
    """Exporting with --fused-blocks leaves no state behind: a default export after it (the
    fixture exported the default first, then the fused) is the same file."""
    export_onnx(tiny, ExportOptions(tmp_path))
    digest = lambda d: hashlib.sha256((d / "precompute.onnx").read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path) == digest(exports["default"]) != digest(exports["fused"])


def test_a_block_the_kernels_cannot_run_is_refused_before_anything_is_written(tmp_path):
    """A configuration whose L2 block is wider than the kernels take (E = 4 * 192 = 768 > 512)."""
    cfg = get_config("tiny")
    wide = EventSPD(dataclasses.replace(cfg, dims=(cfg.dims[0], 192, *cfg.dims[2:])), seed=0).eval()
    with pytest.raises(onnx_export.UserError, match=r"--fused-blocks: block .* \(C 192, E 768, k 13\) exceeds"):
        export_onnx(wide, ExportOptions(tmp_path / "o", fused_blocks=True))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
