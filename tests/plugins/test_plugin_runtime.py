"""The TensorRT plugins' own code (plugins/<op>/plugin.cpp: fields, shapes, formats, workspace,
serialisation, enqueue) executed without TensorRT or a GPU: plugins/emulation/plugin_runtime.cpp
drives each plugin through its IPluginV3 build and runtime phases as TensorRT does and runs its
kernels in the CPU emulation (``plugin_run``).

* one plugin node at a time (``PluginOps``: the node the exporter writes for each op) against the
  reference ops, with the emulation's tolerances (fp32 1e-5, fp16 1e-2 relative; routing exact);
* what TensorRT would refuse (an unknown version, a missing field, a format the plugin does not
  take, shapes its enqueue rejects) fails with the plugin's own message;
* whole exported graphs (tiny: the decoder, the precompute with and without --fused-blocks) with
  every plugin node run this way and the rest in ONNX Runtime (``PluginGraph``), against PyTorch at
  the fp32 check's tolerance (1e-4), and a graph with a wrong plugin attribute that this rejects.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

import test_plugin_kernels as kt
from model_def import EventSPD, contract, get_config
from model_def import ops as ref_ops
from plugins.emulation.graph import run_plugin_node
from plugins.emulation.plugin_ops import plugin_node

F32, F16 = torch.float32, torch.float16
TOL = kt.TOL["emu"]
GRAPH_TOL = 1e-4  # eventspd_export.check.ort_check.DEFAULT_TOLERANCE: fp32 graphs against fp32 PyTorch
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plugin_ops(tensorrt_include):
    from plugins import emulation
    from plugins.emulation.plugin_ops import PluginOps

    emu = kt.load_emulation()
    if not emulation.has_plugin_runtime():
        pytest.fail(f"TENSORRT_INCLUDE={tensorrt_include} is set, but the emulation was built without the plugins "
                    "(was TENSORRT_INCLUDE unset when this process first loaded it?)")
    emu.reset(0, 0)
    return PluginOps()


def last_run() -> str:
    from plugins import emulation

    return "\n".join(emulation.load().plugin_log())


# ---- one node at a time ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [F32, F16])
def test_topr_route_plugin(plugin_ops, dtype):
    attn = torch.randn(2, 9, 6, 40, generator=kt.gen(1)).to(dtype)
    attn[0, 0, :, 3:9] = attn[0, 0, :, 20:26]  # ties, broken by token index
    idx, anchors = plugin_ops.topr_route(attn, 32, 8, 5, 32)
    want_idx, want_anchors = ref_ops.topr_route_reference(attn, 32, 8, 5, 32)
    assert torch.equal(idx, want_idx) and torch.equal(anchors, want_anchors)
    assert "formats LINEAR,LINEAR,LINEAR; workspace 0 bytes" in last_run()


@pytest.mark.parametrize("values,params", [(F32, F32), (F16, F16), (F16, F32)])
def test_deform_read_plugin(plugin_ops, values, params):
    vals, anchors, offsets, logits = kt.deform_inputs(2, 48, 6, 9, 7, 4, kt.SIZES_ODD, F32, seed=3)
    vals = [v.to(values) for v in vals]
    offsets, logits = offsets.to(params), logits.to(params)
    got = plugin_ops.deform_read(*vals, anchors, offsets, logits, kt.STRIDES)
    want = ref_ops.deform_read_reference(*vals, anchors, offsets, logits, kt.STRIDES)
    assert kt.rel_err(got, want) <= TOL[values]


@pytest.mark.parametrize("table_dtype", [F32, F16])
def test_event_splat_plugin(plugin_ops, table_dtype):
    events = kt.random_events(3000, 40, 30, seed=2, margin=3.0).float()  # some outside: dropped
    table = kt.table_for(kt.RES_TINY, table_dtype, seed=3)
    got = plugin_ops.event_splat(events, table, 40, 30, kt.RES_TINY, 0.4)
    want = ref_ops.event_splat_reference(events, table, 40, 30, kt.RES_TINY, 0.4)
    assert kt.rel_err(got, want) <= TOL[F32]
    levels = len(kt.RES_TINY) // 3  # the channels-last scratch grid: 8 * L * W * H bytes
    assert f"workspace {8 * levels * 40 * 30} bytes" in last_run()


def test_event_splat_plugin_without_events(plugin_ops):
    table = kt.table_for(kt.RES_TINY, F32, seed=3)
    got = plugin_ops.event_splat(torch.zeros(0, 4), table, 40, 30, kt.RES_TINY, 0.4, max_shapes=[(5000, 4), (table.shape)])
    assert torch.equal(got, torch.zeros(1, 2 * len(kt.RES_TINY) // 3, 30, 40))


@pytest.mark.parametrize("dtype,layout", [(F32, "HWC"), (F16, "HWC8")])
def test_convnext_block_plugin_negotiates_channels_last(plugin_ops, dtype, layout):
    block = kt.random_block(64, 7, 2, seed=21)
    x = torch.randn(2, 64, 9, 13, generator=kt.gen(5), dtype=torch.float64).to(dtype)
    want = block(x.double())
    got = plugin_ops.convnext_block(x, *[w.float() for w in kt.block_args(block)], block.norm.eps)
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    assert ((got.double() - want).abs().max() / want.abs().max()).item() <= kt.BLOCK_TOL[dtype]
    assert f"formats {layout},{','.join(['LINEAR'] * 10)},{layout};" in last_run()


def test_workspace_is_planned_at_the_profile_maximum(plugin_ops):
    """TensorRT sizes the workspace once, for the profile's largest shapes, and then runs any
    smaller shape with it: the deformable read (whose workspace holds channels-last copies of the
    value maps) planned for maps twice as large and 64 queries runs these maps and 9 queries."""
    vals, anchors, offsets, logits = kt.deform_inputs(1, 48, 6, 9, 7, 4, kt.SIZES_ODD, F32, seed=4)
    plugin_ops.deform_read(*vals, anchors, offsets, logits, kt.STRIDES)
    at_run = int(last_run().rsplit("workspace ", 1)[1].split()[0])
    big = [(1, 48, 2 * h, 2 * w) for h, w in kt.SIZES_ODD] + [(1, 64, 7, 2), (1, 64, 7, 6, 3, 4, 2), (1, 64, 7, 6, 3, 4)]
    got = plugin_ops.deform_read(*vals, anchors, offsets, logits, kt.STRIDES, max_shapes=big)
    planned = int(last_run().rsplit("workspace ", 1)[1].split()[0])
    assert planned > at_run
    want = ref_ops.deform_read_reference(*vals, anchors, offsets, logits, kt.STRIDES)
    assert kt.rel_err(got, want) <= TOL[F32]


DEFORM_ERROR = """
import sys; sys.path.insert(0, "tests/plugins")
import test_plugin_kernels as kt
from model_def import ops
from plugins.emulation.plugin_ops import PluginOps
vals, anchors, offsets, logits = kt.deform_inputs(1, 48, 6, 9, 7, 4, kt.SIZES_ODD, kt.F32, seed=8)
got = PluginOps().deform_read(*vals, anchors, offsets, logits, kt.STRIDES)
print(kt.rel_err(got, ops.deform_read_reference(*vals, anchors, offsets, logits, kt.STRIDES)))
"""


def _deform_error_built_from(tmp_path, edit=None) -> float:
    """The deformable read plugin's error against the reference, in a fresh process whose
    emulation is built from a copy of plugins/ (with ``edit(text) -> text`` applied to
    deform_read/plugin.cpp) into its own folder."""
    from plugins import emulation

    src = tmp_path / "plugins"
    shutil.copytree(REPO / "plugins", src, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    if edit is not None:
        glue = src / "deform_read" / "plugin.cpp"
        glue.write_text(edit(glue.read_text()))
    env = {**os.environ, emulation.SOURCES_ENV: str(src), "EVENTSPD_EMULATION_BUILD": str(tmp_path / "build")}
    run = subprocess.run([sys.executable, "-c", DEFORM_ERROR], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return float(run.stdout.split()[-1])


def test_a_wrong_stride_in_the_plugins_own_code_is_rejected(plugin_ops, tmp_path):
    """The mutation of the glue itself, not of its inputs: deform_read/plugin.cpp's fillArgs giving
    every level L2's stride. Built from an edited copy of plugins/ (about a minute), the same
    comparison as test_deform_read_plugin must fail."""
    old = "a.stride[l] = strides[l];"

    def edit(text: str) -> str:
        assert text.count(old) == 1, "deform_read/plugin.cpp no longer sets the strides this way: update the mutation"
        return text.replace(old, "a.stride[l] = strides[0];")

    assert _deform_error_built_from(tmp_path, edit) > 100 * TOL[F32]


# ---- what TensorRT would refuse ----------------------------------------------------------------------
def test_an_unknown_plugin_version_finds_no_creator(plugin_ops):
    node = plugin_node("topr_route", 1, 2, top_r=4, grid_w=8, grid_h=5, stride=32)
    next(a for a in node.attribute if a.name == "plugin_version").s = b"9"
    with pytest.raises(RuntimeError, match=r"EventSPDTopRRoute v9 .*no creator .*EventSPDTopRRoute v1"):
        run_plugin_node(node, [torch.randn(1, 2, 6, 40)])


def test_a_missing_field_fails_in_create_plugin_with_the_plugins_message(plugin_ops):
    node = plugin_node("deform_read", 6, 1, strides=[8, 16, 32])
    kept = [a for a in node.attribute if a.name != "strides"]  # plugin_version and plugin_namespace stay
    del node.attribute[:]
    node.attribute.extend(kept)
    vals, anchors, offsets, logits = kt.deform_inputs(1, 12, 6, 2, 3, 4, kt.SIZES_ODD, F32, seed=5)
    with pytest.raises(RuntimeError, match=r"EventSPDDeformRead v1 .*createPlugin\(kBUILD\) returned null[\s\S]*missing plugin field 'strides'"):
        run_plugin_node(node, [*vals, anchors, offsets, logits])


def test_a_format_the_plugin_does_not_take_is_refused(plugin_ops):
    """fp16 blocks need kHWC8 without padding: 12 channels cannot be laid out so."""
    block = kt.random_block(12, 7, 2, seed=22)
    x = torch.randn(1, 12, 5, 6, generator=kt.gen(6)).half()
    with pytest.raises(RuntimeError, match=r"supportsFormatCombination accepts no format .* for input 0"):
        plugin_ops.convnext_block(x, *[w.float() for w in kt.block_args(block)], block.norm.eps)


def test_shapes_a_plugin_rejects_fail_at_build_time_with_the_plugins_message(plugin_ops):
    # configurePlugin (when TensorRT builds the engine) judges the shapes, not only enqueue on a GPU
    table = kt.table_for(kt.RES_TINY, F32, seed=3)[:-1]  # one row short for these resolutions
    with pytest.raises(RuntimeError, match=r"configurePlugin failed[\s\S]*the table \[\d+, 2\] for these resolutions"):
        plugin_ops.event_splat(torch.zeros(5, 4), table, 40, 30, kt.RES_TINY, 0.4)
    with pytest.raises(RuntimeError, match=r"configurePlugin failed[\s\S]*EventSPDTopRRoute: the attention weights "
                                           r"have 40 tokens, grid_w \* grid_h = 42"):
        plugin_ops.topr_route(torch.randn(1, 2, 6, 40), 4, 7, 6, 32)
    vals, anchors, offsets, logits = kt.deform_inputs(1, 12, 6, 2, 3, 4, kt.SIZES_ODD, F32, seed=5)
    with pytest.raises(RuntimeError, match=r"configurePlugin failed[\s\S]*EventSPDDeformRead: unexpected input shapes"):
        plugin_ops.deform_read(*vals, anchors, offsets[..., :-1], logits, [8, 16, 32])


def test_shapes_above_the_profile_maximum_are_refused(plugin_ops):
    with pytest.raises(RuntimeError, match=r"input 0 \[1, 2, 6, 40\] exceeds its profile maximum in dimension 1"):
        plugin_ops.topr_route(torch.randn(1, 2, 6, 40), 4, 8, 5, 32, max_shapes=[(1, 1, 6, 40)])


# ---- whole exported graphs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    """The tiny model with non-trivial GRN and LayerNorm parameters, exported with and without
    --fused-blocks: (model, {"default": dir, "fused": dir})."""
    from test_fused_blocks import _randomised

    from eventspd_export.export.onnx_export import ExportOptions, export_onnx

    model = _randomised(EventSPD(get_config("tiny"), seed=0).eval())
    out = {}
    for name, fused in (("default", False), ("fused", True)):
        out[name] = tmp_path_factory.mktemp(f"plugin-runtime-{name}")
        export_onnx(model, ExportOptions(out[name], fused_blocks=fused))
    return model, out


def _precompute_errors(model, folder, events) -> dict[str, float]:
    from plugins.emulation.graph import PluginGraph

    from eventspd_export.check.ort_check import relative_error
    from eventspd_export.runtime.torch_pair import TorchPair

    torch_pair = TorchPair(model)
    hidden = torch_pair.initial_state()
    want = torch_pair.precompute(events, hidden)
    got = PluginGraph(folder / "precompute.onnx").run({"events": events, "hidden": hidden})
    return {name: relative_error(got[name], want[name]) for name in want}


@pytest.mark.parametrize("export", ["default", "fused"])
def test_precompute_graph_on_emulated_plugins_equals_pytorch(plugin_ops, tiny_exports, export):
    """The splat plugin (and with --fused-blocks the 11 ConvNeXt-V2 block plugins, channels-last in
    and out) inside the exported precompute graph: every output within 1e-4 of PyTorch."""
    from eventspd_export.data.synthetic import synthetic_window

    model, folders = tiny_exports
    events = synthetic_window(model.cfg, 8000, seed=11).numpy()
    errors = _precompute_errors(model, folders[export], events)
    assert set(errors) == {s.name for s in contract.precompute_outputs(model.cfg)}
    assert max(errors.values()) <= GRAPH_TOL, errors


def _decoder_errors(model, decoder: onnx.ModelProto | str, ks=(0, 1, 37)) -> dict[str, float]:
    """Depth and inverse depth, and the plugin nodes' own outputs (routing and the deformable read,
    compared as ``check`` compares ONNX Runtime's: a tied routing may differ), against PyTorch."""
    from plugins.emulation.graph import PluginGraph

    from eventspd_export.check.ort_check import compare_plugin_ops, plugin_op_tensors, relative_error, torch_decode
    from eventspd_export.data.synthetic import random_queries, synthetic_window
    from eventspd_export.runtime.torch_pair import TorchPair

    torch_pair = TorchPair(model)
    pre = torch_pair.precompute(synthetic_window(model.cfg, 8000, seed=12).numpy(), torch_pair.initial_state())
    graph = PluginGraph(decoder)
    op_values = plugin_op_tensors(graph.model)
    assert len(op_values) == 3, op_values
    errors = {}
    for k in ks:
        queries = random_queries(model.cfg, k, seed=13 + k).numpy()
        want = torch_decode(model, pre, queries)
        got = graph.run(torch_pair.decoder_feeds(pre, queries), ["depth", "inv_depth", *op_values.values()])
        for name in ("depth", "inv_depth"):
            assert got[name].shape == want[name].shape, (name, k, got[name].shape, want[name].shape)
            errors[f"K={k}/{name}"] = relative_error(got[name], want[name], elementwise=True)
        ops_got = {report: got[value] for report, value in op_values.items()}
        errors.update({f"K={k}/{name}": err for name, err in compare_plugin_ops(ops_got, want).items()})
    return errors


def test_decoder_graph_on_emulated_plugins_equals_pytorch(plugin_ops, tiny_exports):
    """Routing and the deformable read as plugins inside the exported decoder, at K = 0 (an empty
    query set: the profile minimum), 1 and 37: depth and inverse depth within 1e-4 of PyTorch."""
    model, folders = tiny_exports
    errors = _decoder_errors(model, str(folders["default"] / "decoder.onnx"))
    assert max(errors.values()) <= GRAPH_TOL, errors  # routing: no untied index may differ (count 0)


def test_a_wrong_plugin_attribute_in_the_graph_is_rejected(plugin_ops, tiny_exports):
    """The mutation: the decoder's deformable read told that L4's stride is 16, not 32 (a wrong
    field the exporter could write). The same comparison must then fail: the read itself moves
    far off, although this untrained model's depth moves only by ~1e-5."""
    model, folders = tiny_exports
    decoder = onnx.load(str(folders["default"] / "decoder.onnx"))
    node = next(n for n in decoder.graph.node if n.op_type == ref_ops.PLUGIN_SPECS["deform_read"].plugin_name)
    strides = next(a for a in node.attribute if a.name == "strides")
    assert list(strides.ints) == [8, 16, 32]
    strides.ints[2] = 16
    errors = _decoder_errors(model, decoder, ks=(37,))
    assert errors["K=37/deform_read/out"] > GRAPH_TOL * 10, errors
