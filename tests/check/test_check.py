"""`eventspd-export check` (issue 5): Polygraphy's comparator, ONNX Runtime against PyTorch, at
fp32 on the export and at fp16/int8 on graphs made by calibration.fp16/int8; a perturbed graph
fails with a table; the saved files are Polygraphy's formats; the README's `polygraphy run` lines
run exactly as written; the data-loader script makes valid feeds for any K."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from eventspd_export.check import tolerances
from eventspd_export.export.onnx_export import ExportOptions, export_onnx
from eventspd_export.data.synthetic import random_queries, synthetic_window
from eventspd_export.cli.trt_commands import check
from model_def import EventSPD, contract, get_config

REPO = Path(__file__).resolve().parents[2]
FAST = ["--k", "1,7", "--events", "1000", "--windows", "2"]

# The README's Polygraphy lines for ONNX Runtime, verbatim (run from the repository root after
# `eventspd-export check --save artifacts/check` and `eventspd-export calibrate`).
README_POLYGRAPHY_ONNXRT = """\
polygraphy run artifacts/precompute.onnx --onnxrt --load-inputs artifacts/check/precompute/inputs.json --load-outputs artifacts/check/precompute/reference.json --atol 1e-4 --rtol 1e-4
polygraphy run artifacts/decoder.onnx --onnxrt --load-inputs artifacts/check/decoder/inputs.json --load-outputs artifacts/check/decoder/reference.json --atol 0 --rtol 1e-4
EVENTSPD_K=1000 polygraphy run artifacts/decoder.onnx --onnxrt --data-loader-script eventspd_export/check/polygraphy_data_loader.py --save-inputs artifacts/check/k1000-inputs.json --save-outputs artifacts/check/k1000-fp32.json
polygraphy run artifacts/decoder.fp16.onnx --onnxrt --load-inputs artifacts/check/k1000-inputs.json --load-outputs artifacts/check/k1000-fp32.json --check-error-stat quantile --error-quantile 0.99 --atol 0 --rtol 1e-2
EVENTSPD_EVENTS=0 polygraphy run artifacts/precompute.onnx --onnxrt --data-loader-script eventspd_export/check/polygraphy_data_loader.py
"""


def make_precision_graphs(model: EventSPD, folder: Path, windows: int = 2, num_events: int = 1000, k: int = 64) -> None:
    """precompute/decoder .fp16.onnx and .int8.onnx next to the fp32 export, made the way the
    calibration issue makes them (calibration.fp16.convert_to_fp16; calibration.int8 ranges on
    real precompute/decoder feeds + quantize)."""
    from calibration import int8 as q8
    from calibration.fp16 import convert_to_fp16

    cfg = model.cfg
    pre_feeds, dec_feeds = [], []
    hidden = model.initial_state()
    for i in range(windows):
        ev = synthetic_window(cfg, num_events, seed=10 + i)
        with torch.inference_mode():
            pre = model.precompute(ev, hidden)
        pre_feeds.append({"events": ev.numpy(), "hidden": hidden.numpy()})
        feed = {n: pre[n].numpy() for n in contract.SHARED_NAMES}
        feed["queries"] = random_queries(cfg, k, seed=i).numpy()
        dec_feeds.append(feed)
        hidden = pre["hidden_out"]
    for graph, feeds in (("precompute", pre_feeds), ("decoder", dec_feeds)):
        path = folder / f"{graph}.onnx"
        onnx.save(convert_to_fp16(onnx.load(str(path))), str(folder / f"{graph}.fp16.onnx"))
        ranges, _ = q8.collect_ranges(path, feeds, "max")
        onnx.save(q8.quantize(path, ranges), str(folder / f"{graph}.int8.onnx"))


@pytest.fixture(scope="module")
def tiny():
    return EventSPD(get_config("tiny"), seed=0).eval()


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny):
    """A stand-in repository root: artifacts/ (tiny export + fp16/int8 graphs) and the
    eventspd_export package folder, so README lines run as written."""
    root = tmp_path_factory.mktemp("repo")
    export_onnx(tiny, ExportOptions(root / "artifacts"))
    make_precision_graphs(tiny, root / "artifacts")
    (root / "eventspd_export").symlink_to(REPO / "eventspd_export")
    return root


def _check(*args):
    return CliRunner().invoke(check, list(args))


def test_check_fp32_passes_and_saves_polygraphy_files(root):
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    art = root / "artifacts"
    r = _check("--onnx-dir", str(art), *FAST)
    assert r.exit_code == 0, r.output
    assert "onnxrt fp32 vs PyTorch fp32" in r.output and "PASSED: 22 of 22" in r.output
    for part, n in (("precompute", 14), ("decoder", 2), ("pipeline", 2)):
        assert sum(1 for ln in r.output.splitlines() if ln.strip().startswith(part)) == n * (1 if part == "precompute" else 2)
    inputs = load_json(str(art / "check" / "precompute" / "inputs.json"))
    assert len(inputs) == 2 and list(inputs[0]) == ["events", "hidden"]
    assert inputs[0]["events"].shape == (1000, 4)
    assert not inputs[0]["hidden"].any() and inputs[1]["hidden"].any()  # zeros, then the carried state
    dec_inputs = load_json(str(art / "check" / "decoder" / "inputs.json"))
    assert [f["queries"].shape for f in dec_inputs] == [(1, 1, 2), (1, 7, 2)]
    assert list(dec_inputs[0])[:-1] == list(contract.SHARED_NAMES)
    ref = RunResults.load(str(art / "check" / "decoder" / "reference.json"))
    ((runner, iterations),) = list(ref.items())
    assert runner == "torch" and [sorted(it) for it in iterations] == [["depth", "inv_depth"]] * 2
    pre_ref = RunResults.load(str(art / "check" / "precompute" / "reference.json"))
    assert list(list(pre_ref.items())[0][1][0]) == [s.name for s in contract.precompute_outputs(get_config("tiny"))]
    # the printed Polygraphy lines are the README's, with this folder
    assert f"polygraphy run {art}/precompute.onnx --onnxrt --load-inputs {art}/check/precompute/inputs.json" in r.output


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_check_calibrated_graphs_pass_their_tolerances(root, precision):
    r = _check("--onnx-dir", str(root / "artifacts"), "--precision", precision, "--save", str(root / precision), *FAST)
    assert r.exit_code == 0, r.output
    assert f"onnxrt {precision} vs PyTorch fp32" in r.output
    if precision == "int8":  # intermediate tensors are reported, depth is gated
        assert "reported only" in r.output and "median rel<=2e-2" in r.output


def _perturb_last_weight(path: Path, factor: float = 20.0) -> str:
    """Scale the weight of the graph's last MatMul/Conv (nearest the outputs; in a Q/DQ graph,
    the scale of that weight's DequantizeLinear). Returns the node's name."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def weight_of(node):
        w = node.input[1]
        if w in inits:
            return inits[w]
        dq = producer.get(w)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            return inits[dq.input[1]]  # int8 weight: scale its scale
        return None

    node = [n for n in model.graph.node if n.op_type in ("MatMul", "Conv") and weight_of(n) is not None][-1]
    weight = weight_of(node)
    array = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array((array * factor).astype(array.dtype), weight.name))
    onnx.save(model, str(path))
    return node.name


def _shift_initializer(path: Path, name: str, delta: float) -> None:
    """Add ``delta`` to a float initializer (the depth head's last bias: a Q/DQ graph keeps it in
    float, where a scaled weight would be clipped by the next QuantizeLinear's range)."""
    model = onnx.load(str(path))
    (init,) = [i for i in model.graph.initializer if i.name == name]
    array = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((array + delta).astype(array.dtype), name))
    onnx.save(model, str(path))


@pytest.fixture()
def plugin_emulation(tensorrt_include):
    """--backend emulated needs the CPU emulation with the TensorRT plugins (TENSORRT_INCLUDE)."""
    from test_plugin_kernels import load_emulation

    load_emulation()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_check_emulated_backend_runs_the_plugin_nodes_and_passes(root, plugin_emulation, precision):
    """The graphs TensorRT's parser reads, with their plugin nodes executed by the TensorRT plugins'
    code and emulated kernels (plugins/emulation/graph.py) instead of the function bodies ONNX
    Runtime inlines: the same tolerances as the onnxrt backend hold."""
    r = _check("--onnx-dir", str(root / "artifacts"), "--backend", "emulated", "--precision", precision,
               "--save", str(root / f"emulated-{precision}"), *FAST)
    assert r.exit_code == 0, r.output
    assert f"emulated {precision} vs PyTorch fp32" in r.output and "PASSED:" in r.output
    assert "polygraphy run" not in r.output  # Polygraphy has no runner for it: no line is printed


def test_check_emulated_backend_without_tensorrt_headers_is_one_sentence(root, monkeypatch):
    monkeypatch.delenv("TENSORRT_INCLUDE", raising=False)
    r = _check("--onnx-dir", str(root / "artifacts"), "--backend", "emulated", "--save",
               str(root / "emulated-no-headers"), *FAST)
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines()[-1].startswith("error: --backend emulated builds our TensorRT plugins")


def _rehash(folder: Path) -> None:
    """The manifest rewritten to match edited graphs (else the sha256 check refuses fp32 graphs
    before any comparison): what the tests using it check is that the numerical check catches a
    wrong graph."""
    import hashlib

    manifest = json.loads((folder / "eventspd.manifest.json").read_text())
    for g in ("precompute", "decoder"):
        manifest["graphs"][g]["sha256"] = hashlib.sha256((folder / f"{g}.onnx").read_bytes()).hexdigest()
    (folder / "eventspd.manifest.json").write_text(json.dumps(manifest))


def _edit_splat_attribute(folder: Path, name: str, edit) -> None:
    path = folder / "precompute.onnx"
    model = onnx.load(str(path))
    (node,) = [n for n in model.graph.node if n.op_type == "EventSPDEventSplat"]
    edit(next(a for a in node.attribute if a.name == name))
    onnx.save(model, str(path))
    _rehash(folder)


def test_only_the_emulated_backend_sees_a_wrong_plugin_field(root, tmp_path, plugin_emulation):
    """The mutation that tells the backends apart: the splat node's time_scale doubled. ONNX
    Runtime runs the node's function body, which has the export's value baked in, and passes; the
    emulated backend runs our plugin, which reads the field, and must fail on the precompute."""
    bad = tmp_path / "wrong-field"
    shutil.copytree(root / "artifacts", bad, ignore=shutil.ignore_patterns("check"))
    _edit_splat_attribute(bad, "time_scale", lambda a: setattr(a, "f", 2 * a.f))
    r = _check("--onnx-dir", str(bad), "--backend", "onnxrt", *FAST)
    assert r.exit_code == 0, r.output
    r = _check("--onnx-dir", str(bad), "--backend", "emulated", *FAST)
    assert r.exit_code == 1, r.output
    assert any(ln.split()[:1] == ["precompute"] and ln.split()[-1] == "FAIL" for ln in r.output.splitlines())


def test_a_plugin_that_refuses_its_node_is_a_failed_check_in_one_line(root, tmp_path, plugin_emulation):
    """A splat node whose resolutions do not match its table: the plugin refuses it in configurePlugin;
    the check says so (exit 1, one error line naming the node and the plugin's message)."""
    bad = tmp_path / "refused"
    shutil.copytree(root / "artifacts", bad, ignore=shutil.ignore_patterns("check"))
    _edit_splat_attribute(bad, "resolutions", lambda a: a.ints.__setitem__(0, a.ints[0] + 1))
    r = _check("--onnx-dir", str(bad), "--backend", "emulated", *FAST)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error: emulated-fp32 could not run a graph: plugin node") and "EventSPDEventSplat" in last
    assert "configurePlugin failed" in last and "for these resolutions" in last


@pytest.mark.parametrize("precision,backend", [("fp32", "onnxrt"), ("fp16", "onnxrt"), ("int8", "onnxrt"),
                                               ("fp32", "emulated")])
def test_check_fails_on_a_perturbed_graph_with_a_table(root, tmp_path, request, precision, backend):
    bad = tmp_path / "perturbed"
    shutil.copytree(root / "artifacts", bad, ignore=shutil.ignore_patterns("check"))
    suffix = "" if precision == "fp32" else f".{precision}"
    _perturb_last_weight(bad / f"precompute{suffix}.onnx")
    _shift_initializer(bad / f"decoder{suffix}.onnx", "model.b5.head.mlp.fc2.bias", 1.0)
    _rehash(bad)
    if backend == "emulated":
        request.getfixturevalue("plugin_emulation")
    r = _check("--onnx-dir", str(bad), "--precision", precision, "--backend", backend, *FAST)
    assert r.exit_code == 1, r.output
    rows = [ln.split() for ln in r.output.splitlines() if ln.strip().split()[:1] in (["precompute"], ["decoder"], ["pipeline"])]
    failed = {(row[0], row[1]) for row in rows if row[-1] == "FAIL"}
    assert {("decoder", "depth"), ("pipeline", "depth"), ("decoder", "inv_depth")} <= failed
    if precision != "int8":  # int8 features are reported, not gated
        assert any(part == "precompute" for part, _ in failed)
    assert "FAILED:" in r.output
    assert r.output.strip().splitlines()[-1].startswith("error: ")
    assert f"exceeded the {precision} tolerance" in r.output


def test_check_errors_exit_2(root, tmp_path):
    art = str(root / "artifacts")
    cases = [
        (["--onnx-dir", str(tmp_path / "none")], "does not exist"),
        (["--onnx-dir", art, "--k", "1,x"], "expected comma-separated integers"),
        (["--onnx-dir", art, "--k", "0"], "every K must be >= 1"),
        (["--onnx-dir", art, "--config", "dsec"], "are for configuration 'tiny'"),
        (["--onnx-dir", art, "--backend", "trt"], "build them with `eventspd-export trt --fp32"),
        (["--onnx-dir", art, "--data", "nosuch:thing"], "unknown event data source"),
        (["--onnx-dir", art, "--engine-dir", art, "--plugins", "x.so"],
         "--engine-dir and --plugins are for --backend trt (the engines); --backend onnxrt does not read them"),
    ]
    for args, message in cases:
        r = _check(*args)
        assert r.exit_code == 2, (args, r.output)
        assert r.output.startswith("error: ") and message in r.output, (args, r.output)
    # the reference must be the model the graphs came from
    from model_def.checkpoint import save_checkpoint

    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(EventSPD(get_config("tiny"), seed=1), ckpt)
    r = _check("--onnx-dir", art, "--checkpoint", str(ckpt))
    assert r.exit_code == 2 and "exported from the built-in default weights, not from" in r.output
    from_ckpt = tmp_path / "from-ckpt"
    shutil.copytree(root / "artifacts", from_ckpt, ignore=shutil.ignore_patterns("check", "*.fp16.onnx", "*.int8.onnx"))
    manifest = json.loads((from_ckpt / "eventspd.manifest.json").read_text())
    manifest["checkpoint"] = {"path": "trained.pt", "sha256": "0" * 64, "layout": "model+config"}
    (from_ckpt / "eventspd.manifest.json").write_text(json.dumps(manifest))
    r = _check("--onnx-dir", str(from_ckpt))
    assert r.exit_code == 2 and "exported from checkpoint trained.pt; pass it with --checkpoint" in r.output
    r = _check("--onnx-dir", str(from_ckpt), "--checkpoint", str(ckpt))
    assert r.exit_code == 2 and "is not the checkpoint the graphs in" in r.output
    fp32_only = tmp_path / "fp32"
    shutil.copytree(root / "artifacts", fp32_only, ignore=shutil.ignore_patterns("check", "*.fp16.onnx", "*.int8.onnx"))
    r = _check("--onnx-dir", str(fp32_only), "--precision", "fp16")
    assert r.exit_code == 2 and "eventspd-export calibrate --precision fp16" in r.output


def test_tolerance_table_and_polygraphy_lines():
    assert tolerances.tolerance_for("fp32", "depth") == tolerances.Tolerance("elemwise", 0.0, 1e-4)
    assert tolerances.tolerance_for("fp16", "l1_map").describe() == "median rel<=1e-2"
    assert tolerances.tolerance_for("fp16", "inv_depth").cli_args() == "--check-error-stat quantile --error-quantile 0.99 --atol 0 --rtol 1e-2"
    assert not tolerances.tolerance_for("int8", "hidden_out").gating
    lines = README_POLYGRAPHY_ONNXRT.splitlines()
    assert tolerances.polygraphy_commands("artifacts", "fp32") == lines[:2]


def test_readme_polygraphy_lines_run_as_written(root):
    """The README's ONNX Runtime lines, run by bash from the stand-in repository root after
    `check` saved its files to artifacts/check (the default)."""
    r = _check("--onnx-dir", str(root / "artifacts"), *FAST)
    assert r.exit_code == 0, r.output
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", README_POLYGRAPHY_ONNXRT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.count("PASSED | Runtime") + proc.stderr.count("PASSED | Runtime") == 5
    from polygraphy.json import load_json
    feeds = load_json(str(root / "artifacts" / "check" / "k1000-inputs.json"))
    assert feeds[0]["queries"].shape == (1, 1000, 2)


def test_readme_contains_the_tested_lines():
    text = (REPO / "README.md").read_text()
    if "polygraphy run" not in text:
        pytest.skip("README.md has no Polygraphy section yet (paste the lines of README_POLYGRAPHY_ONNXRT)")
    for line in README_POLYGRAPHY_ONNXRT.splitlines():
        assert line in text, f"README.md lacks the tested line: {line}"


def test_data_loader_yields_valid_feeds_for_any_k(root, monkeypatch, capsys):
    from eventspd_export.check import polygraphy_data_loader as dl
    cfg = get_config("tiny")
    art = root / "artifacts"
    monkeypatch.setenv("EVENTSPD_MODEL", str(art / "decoder.fp16.onnx"))
    monkeypatch.setenv("EVENTSPD_K", "5")
    monkeypatch.setenv("EVENTSPD_ITERATIONS", "2")
    monkeypatch.setenv("EVENTSPD_EVENTS", "300")
    feeds = list(dl.load_data())
    assert len(feeds) == 2
    for feed in feeds:
        assert list(feed) == [s.name for s in contract.decoder_inputs(cfg)]
        for spec in contract.decoder_inputs(cfg):
            want = tuple(5 if d == contract.NUM_QUERIES else d for d in spec.shape)
            assert feed[spec.name].shape == want and feed[spec.name].dtype == np.float32
    assert not np.array_equal(feeds[0]["l1_map"], feeds[1]["l1_map"])  # the state moves on
    monkeypatch.setenv("EVENTSPD_MODEL", str(art / "precompute.onnx"))
    monkeypatch.setenv("EVENTSPD_EVENTS", "0")
    (feed, second) = list(dl.load_data())
    assert feed["events"].shape == (0, 4) and feed["hidden"].shape == contract.hidden_spec(cfg, "hidden").shape
    # a user mistake: one error line and exit code 2, as the commands give
    for name, value, message in (("EVENTSPD_K", "zero", "error: $EVENTSPD_K='zero' is not an integer"),
                                 ("EVENTSPD_MODEL", str(art / "nope.onnx"),
                                  f"error: $EVENTSPD_MODEL={art / 'nope.onnx'} is not a file")):
        monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as stop:
            list(dl.load_data())
        assert stop.value.code == 2 and capsys.readouterr().err.startswith(message)


def test_check_trt_backend_without_tensorrt_is_one_sentence(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: this is the no-TensorRT path")
    except ImportError:
        pass
    from test_cpp_example import engines_folder

    art = engines_folder(tmp_path / "art")  # engines with manifest entries (stand-in plans)
    r = _check("--backend", "trt", "--onnx-dir", str(art), "--k", "1")
    assert r.exit_code == 2
    (line,) = [ln for ln in r.output.splitlines() if ln.strip()]
    assert line.startswith("error: TensorRT is not available to this Python") and "pip install tensorrt" in line
    r = _check("--backend", "trt", "--precision", "fp16", "--onnx-dir", str(art), "--k", "1")
    assert r.exit_code == 2 and "is a fp32 engine, --precision is fp16" in r.output
