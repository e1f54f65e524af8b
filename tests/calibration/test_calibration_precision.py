"""FP16 conversion, INT8 Q/DQ calibration (ranges, cache, TensorRT rules), sensitivity logic."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from calibration import int8 as q8
from calibration.fp16 import convert_to_fp16
from calibration.sensitivity import choose_float_layers, group_of, groups
from eventspd_export.export.onnx_export import ExportOptions, export_onnx
from eventspd_export.check.ort_check import relative_error
from eventspd_export.data.synthetic import random_queries, synthetic_window
from model_def import EventSPD, contract, get_config


@pytest.fixture(scope="module")
def tiny():
    return EventSPD(get_config("tiny"), seed=0).eval()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, tiny):
    d = tmp_path_factory.mktemp("fp32")
    export_onnx(tiny, ExportOptions(d))
    return d


@pytest.fixture(scope="module")
def feeds(tiny):
    """Precompute and decoder feeds of 3 chained synthetic windows, plus a held-out one."""
    cfg = tiny.cfg
    pre_feeds, dec_feeds = [], []
    hidden = tiny.initial_state()
    for i in range(4):
        ev = synthetic_window(cfg, 3000, seed=i)
        with torch.inference_mode():
            pre = tiny.precompute(ev, hidden)
        pre_feeds.append({"events": ev.numpy(), "hidden": hidden.numpy()})
        dec = {n: pre[n].numpy() for n in contract.SHARED_NAMES}
        dec["queries"] = random_queries(cfg, 64, seed=i).numpy()
        dec_feeds.append(dec)
        hidden = pre["hidden_out"]
    return pre_feeds, dec_feeds


def _session(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_fp16_graphs_are_valid_mixed_precision_and_accurate(graphs, tiny, feeds):
    pre16 = convert_to_fp16(onnx.load(graphs / "precompute.onnx"))
    dec16 = convert_to_fp16(onnx.load(graphs / "decoder.onnx"))
    for m in (pre16, dec16):
        onnx.checker.check_model(m, full_check=True)
        kinds = [i.data_type for i in m.graph.initializer]
        assert kinds.count(TensorProto.FLOAT16) > 20
        assert all(v.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.INT32)
                   for v in (*m.graph.input, *m.graph.output))
        inferred = onnx.shape_inference.infer_shapes(m)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
        types.update({v.name: v.type.tensor_type.elem_type for v in (*m.graph.input, *m.graph.output)})
        for node in m.graph.node:
            # the keep-fp32 list and the coordinate path
            if node.op_type in ("LayerNormalization", "Softmax", "Softplus", "Sin", "Cos", "GridSample"):
                assert types.get(node.input[0]) == TensorProto.FLOAT, (node.name, node.op_type)
            if node.op_type in ("MatMul", "Conv") and not node.name.startswith("/b1/"):
                assert types.get(node.output[0]) == TensorProto.FLOAT16, node.name
            # A4's calibration scalars, pooling and Gemms included (one bias for every depth)
            if node.name.startswith("/a4/"):
                assert all(types.get(x) == TensorProto.FLOAT for x in (*node.input[:1], *node.output)), node.name
    assert sum(n.name.startswith("/a4/") for n in pre16.graph.node) >= 5
    pre_feed, dec_feed = feeds[0][3], feeds[1][3]
    names = [s.name for s in contract.precompute_outputs(tiny.cfg)]
    with torch.inference_mode():
        ref = tiny.precompute(torch.from_numpy(pre_feed["events"]), torch.from_numpy(pre_feed["hidden"]))
        depth, _ = tiny.decode({n: torch.from_numpy(dec_feed[n]) for n in contract.SHARED_NAMES},
                               torch.from_numpy(dec_feed["queries"]))
    for name, value in zip(names, _session(pre16).run(None, pre_feed)):
        assert relative_error(value, ref[name].numpy()) < 5e-3, name
    d16 = _session(dec16).run(None, dec_feed)[0]
    assert relative_error(d16, depth.numpy(), elementwise=True) < 2e-3


def _half_constant_arithmetic_of_sampling_grids(model):
    """fp16 tensors computed from constants alone (not a Cast or Identity of a weight) that a
    GridSample's grid is computed from."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *model.graph.output)}
    const = {i.name for i in model.graph.initializer}
    computed = set()
    for node in model.graph.node:
        if node.op_type == "Constant" or (node.input and all(x in const for x in node.input if x)):
            const.update(node.output)
            if node.op_type not in ("Constant", "Cast", "Identity"):
                computed.update(node.output)
    producers = _producers(model)
    stack, seen, found = [n.input[1] for n in model.graph.node if n.op_type == "GridSample"], set(), set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if x in computed and types.get(x) == TensorProto.FLOAT16:
            found.add(x)
        if x in producers and producers[x].domain in ("", "ai.onnx"):
            stack.extend(i for i in producers[x].input if i)
    return found


def test_fp16_keeps_the_sampling_grids_constant_arithmetic_in_fp32(graphs, monkeypatch):
    # B1 normalises pixel coordinates with 2 / W, which the exporter leaves as Reciprocal(W) * 2:
    # in fp16, 1/40 is 0.02499 (2.4e-4 off: 0.08 cells at the far edge of a 320-wide map).
    # ONNX Runtime's CPU provider computes such fp16 nodes in fp32, so it cannot show the error:
    # the test checks the types.
    from calibration import fp16

    model = onnx.load(graphs / "decoder.onnx")
    assert any(n.op_type == "Reciprocal" and n.name.startswith("/b1/") for n in model.graph.node)
    assert _half_constant_arithmetic_of_sampling_grids(convert_to_fp16(model)) == set()
    # the mutation: without the constant sweep those nodes follow the default, fp16
    monkeypatch.setattr(fp16, "_constant_arithmetic_read_by", lambda model, keep, producer: set())
    found = _half_constant_arithmetic_of_sampling_grids(fp16.convert_to_fp16(model))
    assert "/b1/Reciprocal_1_output_0" in found, found


def test_fp16_headroom_finds_a_tensor_that_would_overflow(graphs, feeds, tmp_path):
    from calibration.fp16_headroom import Fp16Overflow, fp16_headroom

    path = graphs / "decoder.onnx"
    fp32 = onnx.load(path)
    ok = fp16_headroom(path, convert_to_fp16(fp32), feeds[1][:2])
    assert ok["tensors"] > 20 and ok["headroom"] > 4, ok
    # the mutations: one MatMul weight of the depth head scaled so that its output (x 5e5: the
    # weights stay below 65504) or the weight itself (x 1e6) is far above fp16's range (what
    # ONNX Runtime's CPU rows of the fp16 graph would not show: it computes them in fp32)
    head = next(n for n in fp32.graph.node if n.op_type == "MatMul" and n.name.startswith("/b5/head/"))
    weight = next(i for i in fp32.graph.initializer if i.name in head.input)
    w = onnx.numpy_helper.to_array(weight)
    for factor, culprit in ((5e5, head.output[0]), (1e6, weight.name)):
        weight.CopyFrom(onnx.numpy_helper.from_array(w * factor, weight.name))
        assert (np.abs(w * factor).max() < 65504) == (factor == 5e5)
        bad = tmp_path / f"x{factor:g}" / "decoder.onnx"
        bad.parent.mkdir()
        onnx.save(fp32, bad)
        with np.errstate(over="ignore"):
            half = convert_to_fp16(fp32)
        with pytest.raises(Fp16Overflow, match=r"fp16 decoder: \d+ tensor\(s\) held in fp16 exceed fp16's "
                                               r"largest value 65504 on the calibration data \('") as caught:
            fp16_headroom(bad, half, feeds[1][:2])
        assert culprit in caught.value.tensors, caught.value.tensors
    weight.CopyFrom(onnx.numpy_helper.from_array(w, weight.name))
    # a weight kept in fp32 for its fp32 readers and cast for its fp16 ones (W__to_fp16) counts too
    half = convert_to_fp16(fp32)
    cast = next(n.input[0] for n in half.graph.node if n.op_type == "Cast" and n.output[0].endswith("__to_fp16")
                and n.input[0] in {i.name for i in fp32.graph.initializer})
    shared = next(i for i in fp32.graph.initializer if i.name == cast)
    shared.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(shared) * 0 + 1e5, shared.name))
    onnx.save(fp32, bad)
    with pytest.raises(Fp16Overflow) as caught:
        fp16_headroom(bad, convert_to_fp16(fp32), feeds[1][:2])
    assert cast in caught.value.tensors, caught.value.tensors


def test_int8_ranges_cache_and_tensorrt_rules(graphs, feeds, tmp_path, monkeypatch, tiny):
    path = graphs / "decoder.onnx"
    ranges, cached = q8.collect_ranges(path, feeds[1][:3], "max", tmp_path)
    assert not cached and len(ranges) > 50
    assert all(lo <= hi for lo, hi in ranges.values())
    # the second run with the same model and data uses the cache, without running anything
    import onnxruntime.quantization.calibrate as cal
    monkeypatch.setattr(cal, "create_calibrator", lambda *a, **k: pytest.fail("recollected"))
    again, cached = q8.collect_ranges(path, feeds[1][:3], "max", tmp_path)
    assert cached and again == ranges
    monkeypatch.undo()

    model = q8.quantize(path, ranges)
    assert q8.check_tensorrt_rules(model) == []
    # zero ranges: the seeded model's zero-initialised projections' outputs are 0 everywhere, but
    # they are no quantised op's input, so they get no Q/DQ and no warning; an input that is 0 is named
    assert q8.zero_range_inputs(model, ranges) == []
    zero_outputs = [k for k, (lo, hi) in ranges.items() if lo == hi == 0.0]
    assert zero_outputs
    q_input = next(n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"
                   and n.input[0] in ranges)
    assert q8.zero_range_inputs(model, {**ranges, q_input: (0.0, 0.0)}) == [q_input]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 20 and ops.count("DequantizeLinear") > 40
    inits = {i.name: i for i in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weight_dq
    for n in weight_dq:  # per-channel: one scale per output channel of the weight
        w = onnx.numpy_helper.to_array(inits[n.input[0]])
        axis = next(a.i for a in n.attribute if a.name == "axis")
        assert onnx.numpy_helper.to_array(inits[n.input[1]]).size == w.shape[axis], n.name
    # Q/DQ stop at the quantised ops: no other node (a plugin, LayerNorm, a residual Add, the
    # routing's Transpose of the attention weights) and no graph output reads a DequantizeLinear
    producers = _producers(model)
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm", "QuantizeLinear", "DequantizeLinear"):
            assert all(producers.get(x) is None or producers[x].op_type != "DequantizeLinear"
                       for x in node.input), node.name
    assert all(producers[o.name].op_type != "DequantizeLinear" for o in model.graph.output)
    # the mutation: ONNX Runtime's own placement (every reader of a quantised tensor rewired to
    # its DequantizeLinear) is what check_tensorrt_rules rejects
    monkeypatch.setattr(q8, "_dequantised_only_for_quantised_ops", lambda model, exclude: None)
    problems = q8.check_tensorrt_rules(q8.quantize(path, ranges))
    monkeypatch.undo()
    assert any("LayerNormalization" in p and "not only by quantised Conv/MatMul/Gemm" in p for p in problems), problems
    dec_feed = feeds[1][3]
    with torch.inference_mode():
        depth, _ = tiny.decode({n: torch.from_numpy(dec_feed[n]) for n in contract.SHARED_NAMES},
                               torch.from_numpy(dec_feed["queries"]))
    d8 = _session(model).run(None, dec_feed)[0]
    rel = np.abs(d8 - depth.numpy()) / depth.numpy()
    assert np.median(rel) < 1e-2

    # excluded nodes stay in float
    excluded = [n.name for n in onnx.load(path).graph.node if n.name.startswith("/b5/")
                and n.op_type == "MatMul"]
    partial = q8.quantize(path, ranges, exclude=excluded)
    prod = _producers(partial)
    for node in partial.graph.node:
        if node.name in excluded:
            assert all(prod.get(x) is None or prod[x].op_type != "DequantizeLinear" for x in node.input)
    assert q8.check_tensorrt_rules(partial, excluded) == []
    # one of two MatMuls reading the same activation kept in float: it reads the float tensor, its
    # neighbour the DequantizeLinear; the mutation, the rewiring blind to the exclusions, leaves
    # the float MatMul reading the int8 copy, and the check (told the exclusions) rejects it
    fp32 = onnx.load(path)
    inits = {i.name for i in fp32.graph.initializer}
    matmul_readers: dict[str, list[str]] = {}
    for n in fp32.graph.node:
        if n.op_type == "MatMul":
            for x in n.input:
                if x not in inits:
                    matmul_readers.setdefault(x, []).append(n.name)
    one = [next(names[0] for names in matmul_readers.values() if len(names) > 1)]
    assert q8.check_tensorrt_rules(q8.quantize(path, ranges, exclude=one), one) == []
    rewire = q8._dequantised_only_for_quantised_ops
    monkeypatch.setattr(q8, "_dequantised_only_for_quantised_ops", lambda model, exclude: rewire(model, set()))
    problems = q8.check_tensorrt_rules(q8.quantize(path, ranges, exclude=one), one)
    monkeypatch.undo()
    assert any(f"{one[0]!r} (kept in float), not only by quantised" in p for p in problems), problems


def test_int8_precompute_outputs_and_state_stay_float(graphs, feeds, monkeypatch):
    # graph outputs (the ConvGRU state, the value maps the deformable read samples) are written by
    # their float producers, not by a DequantizeLinear: nothing leaves the graph int8-rounded
    path = graphs / "precompute.onnx"
    ranges, _ = q8.collect_ranges(path, feeds[0][:2], "max", None)
    model = q8.quantize(path, ranges)
    assert q8.check_tensorrt_rules(model) == []
    producers = _producers(model)
    fp32 = _producers(onnx.load(path))
    for out in model.graph.output:
        assert producers[out.name].op_type == fp32[out.name].op_type, out.name
    # the dropped Q/DQ pairs leave no scale or zero point behind: every initializer is read
    read = {x for n in model.graph.node for x in n.input}
    assert [i.name for i in model.graph.initializer if i.name not in read] == []
    monkeypatch.setattr(q8, "_dequantised_only_for_quantised_ops", lambda model, exclude: None)
    problems = q8.check_tensorrt_rules(q8.quantize(path, ranges))
    assert any("writes the graph output" in p for p in problems), problems


def test_percentile_ranges_are_inside_max_ranges(graphs, feeds, tmp_path):
    path = graphs / "decoder.onnx"
    mx, _ = q8.collect_ranges(path, feeds[1][:2], "max", None)
    pc, _ = q8.collect_ranges(path, feeds[1][:2], "percentile", None)
    common = set(mx) & set(pc)
    assert common
    assert all(max(abs(pc[k][0]), abs(pc[k][1])) <= max(abs(mx[k][0]), abs(mx[k][1])) * 1.0001
               for k in common)


def test_calibration_errors(graphs):
    with pytest.raises(q8.CalibrationError, match="no calibration data"):
        q8.collect_ranges(graphs / "decoder.onnx", [], "max", None)
    with pytest.raises(q8.CalibrationError, match="unknown calibration method 'kl'"):
        q8.collect_ranges(graphs / "decoder.onnx", [{"x": np.zeros(1)}], "kl", None)


def test_groups_follow_model_scopes(graphs):
    assert group_of("/b2/layers.0/q/MatMul") == "b2/layers.0"
    assert group_of("/b5/decoder/layers.2/ffn/fc1/MatMul") == "b5/decoder/layers.2"
    assert group_of("/l3/blocks.1/qkv/MatMul") == "l3/blocks.1"
    assert group_of("/f3/stage1/stage1.0/pwconv1/MatMul") == "f3"
    assert group_of("/w_v2/Conv") == "b1"
    dec = groups(onnx.load(graphs / "decoder.onnx"))
    assert {"b1", "b2/layers.0", "b2/layers.1", "b3/layers.0", "b3/layers.1", "b4",
            "b5/decoder/layers.0", "b5/decoder/layers.2", "b5"} <= set(dec)
    assert sum(len(v) for v in dec.values()) == len(q8.quantisable_nodes(onnx.load(graphs / "decoder.onnx")))


def test_sensitivity_keeps_the_most_sensitive_groups_until_the_budget_holds():
    all_groups = {"decoder": {"a": ["a1"], "b": ["b1", "b2"], "c": ["c1"]}, "precompute": {"p": ["p1"]}}
    cost = {"a1": 0.001, "b1": 0.004, "b2": 0.004, "c1": 0.002, "p1": 0.0005}

    def evaluate(exclude):  # error = sum of the quantised nodes' costs
        quantised = [n for g, grps in all_groups.items() for names in grps.values() for n in names
                     if n not in exclude[g]]
        return sum(cost[n] for n in quantised)

    res = choose_float_layers(all_groups, evaluate, budget=0.004)
    assert res.errors_alone == pytest.approx({"decoder:a": 0.001, "decoder:b": 0.008,
                                              "decoder:c": 0.002, "precompute:p": 0.0005})
    assert res.error_all_int8 == pytest.approx(0.0115)
    assert res.kept_float == ["decoder:b"] and res.error_final == pytest.approx(0.0035)
    assert res.excluded_nodes("decoder", all_groups) == ["b1", "b2"]
    scoped = choose_float_layers(all_groups, evaluate, budget=0.0, scope=("precompute",))
    assert list(scoped.errors_alone) == ["precompute:p"] and scoped.kept_float == ["precompute:p"]


# ---- the whole pipeline on the built-in simulator ------------------------------------------
from click.testing import CliRunner  # noqa: E402

from calibration.pipeline import CalibrationOptions, calibrate  # noqa: E402
from eventspd_export.cli import main  # noqa: E402


def _run_pipeline(tiny, graphs, out, cache, budget=None, scope=None):
    return calibrate(tiny, CalibrationOptions(graphs, out, calib_windows=2, eval_windows=2,
                                              budget=budget, sensitivity_scope=scope,
                                              k_calib=64, k_eval=(32, 96), cache_dir=cache))


def test_pipeline_writes_graphs_and_report_and_reuses_statistics(tiny, graphs, tmp_path):
    import json
    out, cache = tmp_path / "out", tmp_path / "cache"
    report = _run_pipeline(tiny, graphs, out, cache)
    for precision in ("fp16", "int8"):
        for g in ("precompute", "decoder"):
            model = onnx.load(out / f"{g}.{precision}.onnx")
            onnx.checker.check_model(model, full_check=True)
    assert report["ground_truth"] is True  # the simulator renders depth
    rows = {(r["precision"], r["k"]): r for r in report["rows"]}
    assert set(rows) == {(p, k) for p in ("torch-fp32", "onnx-fp32", "onnx-fp16", "onnx-int8")
                         for k in (32, 96)}
    for k in (32, 96):
        assert rows[("onnx-fp32", k)]["vs_fp32"]["max_rel"] < 1e-4
        assert rows[("onnx-fp16", k)]["vs_fp32"]["median_rel"] < 1e-3
        assert rows[("onnx-int8", k)]["vs_fp32"]["median_rel"] < 2e-2
        for key in ("abs_rel", "rmse", "delta1", "silog"):
            assert np.isfinite(rows[("onnx-int8", k)]["vs_gt"][key])
    saved = json.loads((out / "accuracy_report.json").read_text())
    assert saved["calibration"]["ranges_from_cache"] == {"precompute": False, "decoder": False}
    md = (out / "accuracy_report.md").read_text()
    assert "| onnx-int8 | 96 |" in md and "AbsRel" in md
    assert "fp32 arithmetic" in md  # what ONNX Runtime's CPU rows of an fp16 graph measure
    for g in ("precompute", "decoder"):
        h = saved["calibration"]["fp16_headroom"][g]
        assert h["tensors"] > 20 and 0 < h["max_abs"] < 65504 and h["headroom"] > 1, h
        assert f"FP16 headroom, {g}: the largest of its {h['tensors']} fp16 tensors" in md
    again = _run_pipeline(tiny, graphs, tmp_path / "out2", cache)
    assert again["calibration"]["ranges_from_cache"] == {"precompute": True, "decoder": True}


@pytest.mark.slow
def test_pipeline_sensitivity_keeps_groups_in_float_for_a_tight_budget(tiny, graphs, tmp_path):
    report = _run_pipeline(tiny, graphs, tmp_path / "out", tmp_path / "cache", budget=1e-7,
                           scope=("decoder",))
    sens = report["calibration"]["sensitivity"]
    # a 1e-7 budget holds nowhere, and the report says so for the held-out windows
    from calibration.report import to_markdown
    assert "On the held-out windows the budget is NOT met: int8 median" in to_markdown(report)
    assert len(sens["errors_alone"]) >= 9 and all(k.startswith("decoder:") for k in sens["errors_alone"])
    assert sens["kept_float"], "a 1e-7 budget must keep some groups in float"
    assert sens["error_final"] <= sens["error_all_int8"]
    kept_nodes = [n for g in sens["kept_float"] for n in
                  groups(onnx.load(graphs / "decoder.onnx"))[g.split(":", 1)[1]]]
    model = onnx.load(tmp_path / "out" / "decoder.int8.onnx")
    prod = _producers(model)
    for node in model.graph.node:
        if node.name in kept_nodes:
            assert all(prod.get(x) is None or prod[x].op_type != "DequantizeLinear" for x in node.input)


def test_calibrate_cli_errors(tmp_path, graphs):
    bad_data = CliRunner().invoke(main, ["calibrate", "--config", "tiny", "--onnx-dir", str(graphs),
                                         "--out", str(tmp_path), "--data", "kitti:/x"])
    assert bad_data.exit_code == 2 and "kitti" in bad_data.output and "Traceback" not in bad_data.output
    wrong = CliRunner().invoke(main, ["calibrate", "--config", "dsec", "--onnx-dir", str(graphs),
                                      "--out", str(tmp_path)])
    assert wrong.exit_code == 2 and "graphs are for configuration 'tiny'" in wrong.output


@pytest.mark.parametrize("damage", ["truncated", "nan", "not-json-ranges"])
def test_a_corrupt_range_cache_is_ignored_recomputed_and_rewritten(graphs, feeds, tmp_path, caplog, damage):
    """A truncated cache file was a JSONDecodeError, NaN ranges an ORT 'scale issue' assertion in
    quantize: such a file is ignored with a warning naming it, and replaced atomically."""
    import json
    path = graphs / "decoder.onnx"
    ranges, _ = q8.collect_ranges(path, feeds[1][:2], "max", tmp_path)
    (cache,) = tmp_path.glob("ranges-decoder-max-*.json")
    text = cache.read_text()
    if damage == "truncated":
        cache.write_text(text[:len(text) // 2])
    elif damage == "nan":
        data = json.loads(text)
        data["ranges"] = {k: [float("nan"), float("nan")] for k in data["ranges"]}
        cache.write_text(json.dumps(data))
    else:
        cache.write_text(json.dumps({"ranges": ["x"]}))
    with caplog.at_level("WARNING", logger="calibration.int8"):
        again, cached = q8.collect_ranges(path, feeds[1][:2], "max", tmp_path)
    assert not cached and again == ranges
    assert any(str(cache) in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert cache.read_text() == text  # rewritten whole: the next run reads it
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]  # no temporary file left
    assert q8.collect_ranges(path, feeds[1][:2], "max", tmp_path) == (ranges, True)
    assert q8.check_tensorrt_rules(q8.quantize(path, again)) == []


def test_a_cache_folder_under_a_file_is_refused_before_the_collection(graphs, feeds, tmp_path, monkeypatch):
    from model_def.errors import UserError
    import onnxruntime.quantization.calibrate as cal
    monkeypatch.setattr(cal, "create_calibrator", lambda *a, **k: pytest.fail("collected first"))
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match="--cache-dir .*is a file, not a folder"):
        q8.collect_ranges(graphs / "decoder.onnx", feeds[1][:1], "max", tmp_path / "afile" / "sub")
