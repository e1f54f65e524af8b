"""The EventSPDConvNeXtBlock TensorRT plugin in real TensorRT-RTX builds (no GPU: engines are built,
never run). The parser must map every block node of an `onnx --fused-blocks` export to the plugin
(not inline the function body), the plugin's build-time code (shapes, formats kHWC / kHWC8,
configurePlugin's checks, workspace) must accept the model's blocks at fp32 and fp16, and refuse
a node that does not match its inputs with our message. What the plugin computes (enqueue) needs
a GPU and is not claimed here."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.fp16 import convert_to_fp16
from eventspd_export.export.onnx_export import ExportOptions, export_onnx
from eventspd_export.export.onnx_functions import convnext_block_function
from eventspd_export.trt import engine_build as trt_engine
from eventspd_export.trt import plugin_library
from model_def import EventSPD, get_config, ops
from model_def.layers import ConvNeXtV2Block

BLOCK = ops.PLUGIN_SPECS["convnext_block"].plugin_name
SPLAT = ops.PLUGIN_SPECS["event_splat"].plugin_name


@pytest.fixture(scope="module")
def fused_export(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-fused")
    model = EventSPD(get_config("tiny"), seed=0).eval()
    export_onnx(model, ExportOptions(d, fused_blocks=True))
    for graph in ("precompute", "decoder"):
        onnx.save(convert_to_fp16(onnx.load(str(d / f"{graph}.onnx"))), str(d / f"{graph}.fp16.onnx"))
    return d, sum(isinstance(m, ConvNeXtV2Block) for m in model.modules())


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fused_export_parses_to_one_plugin_layer_per_block_and_builds(fused_export, rtx_runtime, rtx_plugin_library,
                                                             tmp_path, capfd, precision):
    d, n_blocks = fused_export
    t = rtx_runtime.trt
    plugin_library.load_plugins(rtx_runtime, rtx_plugin_library)
    logger = t.Logger(t.Logger.ERROR)
    src = d / ("precompute.onnx" if precision == "fp32" else "precompute.fp16.onnx")
    network, _parser = trt_engine._parse(rtx_runtime, logger, t.Builder(logger), "precompute", src, True)
    names = [name for _layer, name in plugin_library.plugin_layers(t, network)]
    assert names.count(BLOCK) == n_blocks and names.count(SPLAT) == 1, names
    if precision == "fp32":
        return  # the full build (both engines, the manifest) once, in fp16; fp32 blocks build below

    out = tmp_path / "engines"
    manifest = trt_engine.build_engines(trt_engine.BuildOptions(
        d, out, precision=precision, runtime="tensorrt-rtx", plugins=rtx_plugin_library,
        compute_capabilities=("8.9",), profile=trt_engine.Profile(events_opt=2000)), log_fn=lambda msg: None)
    pre = manifest["engines"]["precompute"]
    assert pre["plugin_library"]["plugins"] == sorted([BLOCK, SPLAT])
    assert (out / pre["file"]).stat().st_size == pre["bytes"] > 1_000_000
    err = capfd.readouterr().err
    assert "[eventspd plugins]" not in err and "[E]" not in err, err


def _one_block_model(C=64, E=128, k=7, H=12, W=20, channels=None, x_type=TensorProto.FLOAT) -> onnx.ModelProto:
    """One EventSPDConvNeXtBlock node on x [1, C, H, W] with fp32 weights and its function."""
    rng = np.random.default_rng(0)
    shapes = {"dw_weight": (C, 1, k, k), "dw_bias": (C,), "ln_weight": (C,), "ln_bias": (C,), "w1": (E, C),
              "b1": (E,), "gamma": (1, 1, 1, E), "beta": (1, 1, 1, E), "w2": (C, E), "b2": (C,)}
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in shapes.items()]
    node = helper.make_node(BLOCK, ["x", *shapes], ["out"], domain=ops.PLUGIN_DOMAIN, name="block",
                            channels=C if channels is None else channels, eps=1e-6, plugin_version="1",
                            plugin_namespace=ops.PLUGIN_NAMESPACE)
    graph = helper.make_graph([node], "one_block", [helper.make_tensor_value_info("x", x_type, [1, C, H, W])],
                              [helper.make_tensor_value_info("out", x_type, [1, C, H, W])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(ops.PLUGIN_DOMAIN, 1)],
                              functions=[convnext_block_function(get_config("tiny"), 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _build(rtx_runtime, rtx_plugin_library, model: onnx.ModelProto, tmp_path):
    """(serialised engine or None, the plugin layers) of a one-block model."""
    t = rtx_runtime.trt
    plugin_library.load_plugins(rtx_runtime, rtx_plugin_library)
    path = tmp_path / "block.onnx"
    onnx.save(model, str(path))
    logger = t.Logger(t.Logger.ERROR)
    builder = t.Builder(logger)
    network, _parser = trt_engine._parse(rtx_runtime, logger, builder, "precompute", path, True)
    layers = plugin_library.plugin_layers(t, network)
    return builder.build_serialized_network(network, builder.create_builder_config()), layers


@pytest.mark.parametrize("shape", [dict(C=64, E=128, k=7), dict(C=128, E=512, k=13), dict(C=24, E=48, k=3)],
                         ids=["F3", "L2", "small"])
@pytest.mark.parametrize("x_type", [TensorProto.FLOAT, TensorProto.FLOAT16], ids=["fp32", "fp16"])
def test_one_block_builds_for_the_models_shapes(rtx_runtime, rtx_plugin_library, tmp_path, capfd, shape, x_type):
    engine, layers = _build(rtx_runtime, rtx_plugin_library, _one_block_model(**shape, x_type=x_type), tmp_path)
    assert [name for _l, name in layers] == [BLOCK]
    assert engine is not None and engine.nbytes > 0
    assert "[eventspd plugins]" not in capfd.readouterr().err


@pytest.mark.parametrize("case, message", [
    (dict(channels=32), "x has 64 channels, the node says 32"),
    (dict(C=64, E=1024), "C 64, E 1024, k 7 exceed the kernels' limits"),
    (dict(C=256, E=256, k=13), "C 256, E 256, k 13 exceed the kernels' limits"),  # 13 * 13 * 256 taps > 22528
    (dict(C=20, E=40, k=3, x_type=TensorProto.FLOAT16), None),  # fp16 needs C % 8 == 0 (kHWC8 = NHWC)
])
def test_a_block_the_kernels_cannot_run_is_refused_at_build(rtx_runtime, rtx_plugin_library, tmp_path, capfd,
                                                            case, message):
    engine, layers = _build(rtx_runtime, rtx_plugin_library, _one_block_model(**case), tmp_path)
    assert [name for _l, name in layers] == [BLOCK]  # the parser took the plugin, the build refused
    assert engine is None
    err = capfd.readouterr().err
    if message is not None:
        assert f"[eventspd plugins] {BLOCK}: {message}" in err, err
