"""Real TensorRT engines without a GPU (issue 13): TensorRT-RTX builds both graphs with the plugin
library built here (TensorRT 11.1 headers + libtensorrt_rtx), at fp32, fp16 and int8 on `tiny` and
fp16 on `dsec`; the parser maps every plugin node to our plugin; the manifest records flavour,
version, targets, profiles and hashes; every refusal is one line, exit 2, nothing half-written; the
README's TensorRT-RTX lines (eventspd-export trt, polygraphy convert) run as written; the C++
program links against TensorRT-RTX. What still needs a GPU (running an engine) is not claimed.

The builds run in this process (the plugin library is dlopened once; TensorRT's log goes to the
process's stderr, which capfd reads)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from eventspd_export.runtime import trt_flavour
from eventspd_export.trt import engine_build as trt_engine
from eventspd_export.trt import plugin_library
from eventspd_export.export.onnx_export import MANIFEST_FILE, ExportOptions, export_onnx
from eventspd_export.cli.trt_commands import check, trt
from eventspd_export.trt.engine_build import PLUGIN_LIBRARY
from helpers import one_error_line
from model_def import EventSPD, get_config, ops

REPO = Path(__file__).resolve().parents[2]

# The README's TensorRT-RTX lines, verbatim (run from the repository root after `eventspd-export
# onnx --config tiny` and build-plugins, the library copied into artifacts/).
README_TENSORRT_RTX = """\
eventspd-export trt --runtime tensorrt-rtx --fp32 --out artifacts/rtx
POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy convert artifacts/decoder.onnx --plugins artifacts/libeventspd_plugins.so --onnx-flags enable_plugin_override --trt-min-shapes 'queries:[1,0,2]' --trt-opt-shapes 'queries:[1,256,2]' --trt-max-shapes 'queries:[1,4096,2]' -o artifacts/rtx/decoder.polygraphy.engine
POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy convert artifacts/precompute.onnx --plugins artifacts/libeventspd_plugins.so --onnx-flags enable_plugin_override --trt-min-shapes 'events:[0,4]' --trt-opt-shapes 'events:[100000,4]' --trt-max-shapes 'events:[2000000,4]' -o artifacts/rtx/precompute.polygraphy.engine
"""


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """tiny exported with plugin nodes, plus its fp16 and Q/DQ int8 graphs."""
    from test_check import make_precision_graphs

    d = tmp_path_factory.mktemp("tiny-onnx")
    model = EventSPD(get_config("tiny"), seed=0).eval()
    export_onnx(model, ExportOptions(d))
    make_precision_graphs(model, d)
    return d


@pytest.fixture(scope="module")
def tiny_engines(tiny_export, rtx_plugin_library, tmp_path_factory):
    """{precision: (out dir, CLI output, TensorRT's stderr)} — built once, checked by the tests below."""
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        d = tmp_path_factory.mktemp(f"engines-{precision}")
        err_log = d.parent / f"{d.name}.stderr"
        # TensorRT writes its log to fd 2: route it to a file for the assertions
        saved = os.dup(2)
        with open(err_log, "wb") as f:
            os.dup2(f.fileno(), 2)
            try:
                r = CliRunner().invoke(trt, [f"--{precision}", "--runtime", "tensorrt-rtx", "--onnx-dir",
                                             str(tiny_export), "--out", str(d), "--plugins",
                                             str(rtx_plugin_library), "--events-opt", "2000"])
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        out[precision] = (d, r, err_log.read_text(errors="replace"))
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tiny_engines_build_with_the_plugins_at_every_precision(tiny_engines, tiny_export, rtx_plugin_library,
                                                                 rtx_runtime, precision):
    d, r, trt_log = tiny_engines[precision]
    assert r.exit_code == 0, r.output + trt_log
    # progress: what it builds, then size and seconds per engine
    src = {"fp32": "{}.onnx", "fp16": "{}.fp16.onnx", "int8": "{}.int8.onnx"}[precision]
    for graph in ("precompute", "decoder"):
        assert (f"building {graph}.engine from {src.format(graph)} ({precision}, strongly typed, TensorRT-RTX "
                f"{rtx_runtime.version}, for compute capabilities 8.6, 8.9, 12.0) ...") in r.output
        assert f"built {graph}.engine: " in r.output and " MB in " in r.output
    assert "not deserialised: no GPU of its targets here" in r.output
    # the profile minimum of 0 queries / 0 events is consistent, and nothing else went wrong
    assert "self-consistent" not in trt_log and "Error" not in trt_log and "[E]" not in trt_log, trt_log

    manifest = json.loads((d / MANIFEST_FILE).read_text())
    assert sorted(p.name for p in d.iterdir()) == ["decoder.engine", "eventspd.manifest.json", PLUGIN_LIBRARY,
                                                   "precompute.engine"]
    lib_sha = hashlib.sha256(rtx_plugin_library.read_bytes()).hexdigest()
    for graph, plugins in (("precompute", ["EventSPDEventSplat"]),
                           ("decoder", ["EventSPDTopRRoute", "EventSPDDeformRead"])):
        e = manifest["engines"][graph]
        blob = (d / e["file"]).read_bytes()
        assert len(blob) > 1_000_000 and e["bytes"] == len(blob)
        assert e["sha256"] == hashlib.sha256(blob).hexdigest()
        assert e["onnx"] == {"file": src.format(graph),
                             "sha256": hashlib.sha256((tiny_export / src.format(graph)).read_bytes()).hexdigest()}
        # every plugin node became our plugin layer (the parser did not inline the function body)
        assert sorted(e["plugin_library"]["plugins"]) == sorted(plugins)
        assert e["plugin_library"]["sha256"] == lib_sha
        assert e["tensorrt"] == {"flavour": "tensorrt-rtx", **{k: v for k, v in rtx_runtime.manifest_entry().items()
                                                             if k != "flavour"}}
        assert e["target"] == {"compute_capabilities": ["8.6", "8.9", "12.0"], "built_on": None}
        assert e["gpu"] is None and e["precision"] == precision and e["typing"] == "strongly typed"
    assert manifest["engines"]["decoder"]["profiles"] == [
        {"queries": {"min": [1, 0, 2], "opt": [1, 256, 2], "max": [1, 4096, 2]}}]
    assert manifest["engines"]["precompute"]["profiles"] == [
        {"events": {"min": [0, 4], "opt": [2000, 4], "max": [2_000_000, 4]}}]


def test_dsec_fp16_engines_build(rtx_plugin_library, tmp_path):
    from calibration.fp16 import convert_to_fp16

    onnx_dir = tmp_path / "onnx"
    export_onnx(EventSPD(get_config("dsec"), seed=0).eval(), ExportOptions(onnx_dir))
    for graph in ("precompute", "decoder"):
        onnx.save(convert_to_fp16(onnx.load(str(onnx_dir / f"{graph}.onnx"))), str(onnx_dir / f"{graph}.fp16.onnx"))
    out = tmp_path / "engines"
    manifest = trt_engine.build_engines(trt_engine.BuildOptions(
        onnx_dir, out, precision="fp16", runtime="tensorrt-rtx", plugins=rtx_plugin_library,
        compute_capabilities=("8.9",)), log_fn=lambda msg: None)
    for graph in ("precompute", "decoder"):
        e = manifest["engines"][graph]
        assert e["precision"] == "fp16" and e["target"]["compute_capabilities"] == ["8.9"]
        assert (out / e["file"]).stat().st_size == e["bytes"] > 1_000_000
    assert manifest["config"]["name"] == "dsec"


def test_without_the_plugin_library_the_decoder_builds_from_function_bodies_but_the_splat_cannot(
        rtx_runtime, tmp_path):
    """What `trt`'s refusal of --no-plugins exports rests on: TensorRT-RTX builds the standard-op
    decoder (TopK, GridSample, ...) but rejects the splat's ScatterElements(reduction="add")."""
    t = rtx_runtime.trt
    d = tmp_path / "inline"
    export_onnx(EventSPD(get_config("tiny"), seed=0).eval(), ExportOptions(d, plugins=False))
    logger = t.Logger(t.Logger.ERROR)
    builder = t.Builder(logger)
    network, _ = trt_engine._parse(rtx_runtime, logger, builder, "decoder", d / "decoder.onnx", True)
    assert plugin_library.plugin_layers(t, network) == []
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("queries", (1, 0, 2), (1, 64, 2), (1, 256, 2))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None
    with pytest.raises(trt_engine.EngineBuildError, match="ONNX parser rejected .*precompute.onnx"):
        trt_engine._parse(rtx_runtime, logger, builder, "precompute", d / "precompute.onnx", True)
    r = CliRunner().invoke(trt, ["--runtime", "tensorrt-rtx", "--onnx-dir", str(d), "--out",
                                           str(tmp_path / "o")])
    line = one_error_line(r)
    assert "exported with --no-plugins" in line and 'ScatterElements with reduction="add"' in line
    assert not (tmp_path / "o").exists()


# ---- refusals: one line, exit 2, nothing half-written -------------------------------------------------

@pytest.fixture()
def export_copy(tiny_export, tmp_path):
    d = tmp_path / "onnx"
    shutil.copytree(tiny_export, d)
    return d


def _refused(args, out: Path, *must):
    r = CliRunner().invoke(trt, ["--runtime", "tensorrt-rtx", *args, "--out", str(out)])
    line = one_error_line(r)
    for m in must:
        assert m in line, line
    assert not out.exists() or not any(out.iterdir())
    return line


def test_refusals_before_any_build(export_copy, tmp_path, rtx_plugin_library, monkeypatch):
    d, lib = export_copy, str(rtx_plugin_library)
    out = tmp_path / "out"
    _refused(["--onnx-dir", str(d), "--plugins", lib, "--compute-capability", "9.0"], out,
             "has no target for it (H100/H200 engines need enterprise TensorRT")
    _refused(["--onnx-dir", str(d), "--plugins", lib, "--timing-cache", str(tmp_path / "t.cache")], out,
             "--timing-cache needs a GPU")
    assert not (tmp_path / "t.cache").exists()
    _refused(["--fp16", "--weakly-typed", "--onnx-dir", str(d), "--plugins", lib], out,
             "--weakly-typed needs TensorRT 10's precision builder flags")
    _refused(["--onnx-dir", str(d), "--plugins", lib], Path("/proc/eventspd-engines"), "is not writable")
    # no plugin library anywhere we look
    monkeypatch.setattr(plugin_library, "DEFAULT_PLUGIN_BUILD", tmp_path / "nowhere" / PLUGIN_LIBRARY)
    _refused(["--onnx-dir", str(d)], out, "libeventspd_plugins.so not found", "eventspd-export build-plugins")
    # a library that is not ours / not loadable
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"\x7fELF but not really")
    _refused(["--onnx-dir", str(d), "--plugins", str(bogus)], out, "cannot load the plugin library")


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_corrupt_or_truncated_onnx_is_refused(export_copy, tmp_path, rtx_plugin_library, damage):
    target = export_copy / "decoder.fp16.onnx"
    blob = target.read_bytes()
    target.write_bytes(np.random.default_rng(0).bytes(5000) if damage == "random" else blob[: len(blob) // 3])
    _refused(["--fp16", "--onnx-dir", str(export_copy), "--plugins", str(rtx_plugin_library)], tmp_path / "out",
             "decoder.fp16.onnx is not a readable ONNX file")
    # the fp32 graphs are also held to the manifest's sha256
    (export_copy / "precompute.onnx").write_bytes(b"\0" * 100)
    _refused(["--onnx-dir", str(export_copy), "--plugins", str(rtx_plugin_library)], tmp_path / "out",
             "does not match the sha256")


def test_check_backend_trt_refuses_another_version_and_says_a_gpu_is_needed(tiny_engines, tiny_export, tmp_path,
                                                                             monkeypatch):
    """`check --backend trt` on TensorRT-RTX engines: the version guard needs no GPU; with the right
    version the engines need a GPU among their targets (none here: a stand-in says so). The
    other-flavour refusal is tested on engine_problems (test_trt.py): check always loads the
    flavour that built the engines."""
    d = tmp_path / "engines"
    shutil.copytree(tiny_engines["fp32"][0], d)
    args = ["--backend", "trt", "--onnx-dir", str(tiny_export), "--engine-dir", str(d), "--k", "1,7"]

    def no_gpu(index=0):
        raise trt_flavour.NoGpuError("no CUDA GPU is visible (stand-in); build engines on the machine with the GPU")

    monkeypatch.setattr(trt_flavour, "gpu_info", no_gpu)
    line = one_error_line(CliRunner().invoke(check, args))
    assert line == ("error: running the engines needs an NVIDIA GPU among their targets (compute capability 8.6, "
                    "8.9, 12.0), and no CUDA GPU is visible (stand-in)")
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    for g in manifest["engines"].values():
        g["tensorrt"].update(version="1.6.0.1", minor=6, patch=0)
    (d / MANIFEST_FILE).write_text(json.dumps(manifest))
    line = one_error_line(CliRunner().invoke(check, args))
    assert line.startswith("error: precompute.engine was built with TensorRT-RTX 1.6.0.1, this is TensorRT-RTX 1.7.1")
    for g in manifest["engines"].values():
        g["tensorrt"]["flavour"] = "tensorrt-xyz"
    (d / MANIFEST_FILE).write_text(json.dumps(manifest))
    line = one_error_line(CliRunner().invoke(check, args))
    assert "names an unknown TensorRT flavour 'tensorrt-xyz'" in line
    assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in tiny_engines["fp32"][0].iterdir())


# ---- the README's lines, Polygraphy and the C++ program ------------------------------------------------

def test_readme_tensorrt_rtx_lines_run_as_written(tiny_export, rtx_plugin_library, tmp_path):
    text = (REPO / "README.md").read_text()
    for line in README_TENSORRT_RTX.splitlines():
        assert line in text, f"README.md lacks the line: {line}"
    root = tmp_path / "repo"
    art = root / "artifacts"
    art.mkdir(parents=True)
    for name in ("precompute.onnx", "decoder.onnx", MANIFEST_FILE):
        shutil.copy2(tiny_export / name, art / name)
    shutil.copy2(rtx_plugin_library, art / PLUGIN_LIBRARY)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", README_TENSORRT_RTX], cwd=root, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "self-consistent" not in proc.stdout + proc.stderr
    for name in ("precompute.engine", "decoder.engine", "decoder.polygraphy.engine", "precompute.polygraphy.engine"):
        assert (art / "rtx" / name).stat().st_size > 1_000_000, name
    manifest = json.loads((art / "rtx" / MANIFEST_FILE).read_text())
    assert manifest["engines"]["decoder"]["tensorrt"]["flavour"] == "tensorrt-rtx"


def test_cpp_program_links_against_tensorrt_rtx_and_refuses_to_run_without_a_gpu(
        tiny_engines, rtx_runtime, tensorrt_include, tmp_path):
    from eventspd_export.data.event_file import write_from_source

    from helpers import skip_or_fail

    cmake = shutil.which("cmake")
    if cmake is None:
        skip_or_fail("cmake not found")
    lib = trt_flavour.rtx_libs_dir() / trt_flavour.RTX_LIBRARY
    build = tmp_path / "build"
    proc = subprocess.run([cmake, "-S", str(REPO / "examples" / "cpp"), "-B", str(build),
                           f"-DTENSORRT_INCLUDE_DIR={tensorrt_include}", f"-DTENSORRT_LIBRARY={lib}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "eventspd_run links TensorRT-RTX" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run([cmake, "--build", str(build), "-j", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ldd = subprocess.run(["ldd", str(build / "eventspd_run")], capture_output=True, text=True).stdout
    assert "libtensorrt_rtx.so.1" in ldd
    events = tmp_path / "events.bin"
    write_from_source(events, get_config("tiny"), windows=2, k=16)
    run = subprocess.run([str(build / "eventspd_run"), str(tiny_engines["fp32"][0]), str(events)],
                         capture_output=True, text=True)
    if trt_flavour.visible_gpu() is None:
        # it read the manifest, files and events, loaded the plugins and found each creator by key
        # (TensorRT-RTX's runtime, no GPU needed); running needs a GPU
        assert run.returncode == 2 and run.stderr.strip() == "error: no CUDA GPU 0 is visible (check nvidia-smi and " \
            "CUDA_VISIBLE_DEVICES)", run.stdout + run.stderr
    run = subprocess.run([str(build / "eventspd_run"), str(tiny_engines["fp32"][0]), str(events), "--device", "-1"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip() == "error: --device takes a whole number >= 0, not '-1'", run.stderr
    # the creator check can fail: a plugin version the library does not register
    unknown = tmp_path / "unknown-version"
    shutil.copytree(tiny_engines["fp32"][0], unknown)
    manifest = json.loads((unknown / MANIFEST_FILE).read_text())
    op = next(o for o in manifest["plugin_ops"] if o["plugin_name"] == "EventSPDTopRRoute")
    op["plugin_version"] = "9"
    (unknown / MANIFEST_FILE).write_text(json.dumps(manifest))
    run = subprocess.run([str(build / "eventspd_run"), str(unknown), str(events)], capture_output=True, text=True)
    assert run.returncode == 2 and ("libeventspd_plugins.so is loaded but TensorRT finds no creator "
                                    "eventspd::EventSPDTopRRoute version 9: rebuild") in run.stderr, run.stderr
    # the flavour and version guard needs no GPU: an engine of the other flavour is refused first
    other = tmp_path / "other"
    shutil.copytree(tiny_engines["fp32"][0], other)
    manifest = json.loads((other / MANIFEST_FILE).read_text())
    for e in manifest["engines"].values():
        e["tensorrt"].update(flavour="tensorrt", version="11.1.0.106", major=11, minor=1, patch=0)
    (other / MANIFEST_FILE).write_text(json.dumps(manifest))
    run = subprocess.run([str(build / "eventspd_run"), str(other), str(events)], capture_output=True, text=True)
    assert run.returncode == 2
    assert ("error: precompute.engine was built with TensorRT 11.1.0.106, this program runs TensorRT-RTX 1.7.1: "
            "rebuild the engines with `eventspd-export trt --runtime tensorrt-rtx`") in run.stderr, run.stderr
    preflight = subprocess.run([str(build / "eventspd_preflight"), str(tiny_engines["fp32"][0]), str(events),
                                "--runtime", "tensorrt-rtx", "--tensorrt", rtx_runtime.version, "--gpu",
                                "NVIDIA GeForce RTX 4090", "--capability", "8.9"], capture_output=True, text=True)
    assert preflight.returncode == 0 and preflight.stdout.rstrip().endswith("ok"), preflight.stderr


# ---- TensorRT-RTX's missing libtensorrt_rtx.so, and plugin registration -----------------------------

def test_parser_library_link_is_created_or_refused_in_one_sentence(tmp_path, monkeypatch):
    libs = tmp_path / "tensorrt_rtx_libs"
    libs.mkdir()
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    with pytest.raises(trt_flavour.TensorRTUnavailableError, match="libtensorrt_rtx.so.1 is missing"):
        trt_flavour.ensure_rtx_parser_library(libs)
    (libs / "libtensorrt_rtx.so.1").write_bytes(b"stand-in")
    assert trt_flavour.ensure_rtx_parser_library(libs) == f"created {libs / 'libtensorrt_rtx.so'} -> libtensorrt_rtx.so.1"
    assert os.readlink(libs / "libtensorrt_rtx.so") == "libtensorrt_rtx.so.1"
    assert trt_flavour.ensure_rtx_parser_library(libs).endswith("present")
    (libs / "libtensorrt_rtx.so").unlink()

    def read_only(self, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "symlink_to", read_only)
    with pytest.raises(trt_flavour.TensorRTUnavailableError) as info:
        trt_flavour.ensure_rtx_parser_library(libs)
    message = str(info.value)
    assert "not writable here (Permission denied)" in message and f"ln -s libtensorrt_rtx.so.1 {libs}" in message
    assert "LD_LIBRARY_PATH" in message and message.count(". ") == 0
    elsewhere = tmp_path / "ld"
    elsewhere.mkdir()
    os.symlink(libs / "libtensorrt_rtx.so.1", elsewhere / "libtensorrt_rtx.so")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(elsewhere))
    assert trt_flavour.ensure_rtx_parser_library(libs).endswith("on LD_LIBRARY_PATH")


def test_dlopen_registers_each_creator_once_under_its_namespace(rtx_runtime, rtx_plugin_library):
    """Measured in a fresh process (README, Plugin registration): a plain dlopen registers the four
    creators once, under namespace eventspd, so the registry's keyed lookup get_creator -- the one
    deserialising a plan's plugin layers uses -- finds each (with TensorRT's REGISTER_TENSORRT_PLUGIN,
    which registers under "", it found none). loadLibrary of the same file works on a runtime's own
    registry (what trtexec --dynamicPlugins calls) and is refused by the global one, whose creators the
    load registered already (TensorRT's contract: it fails "if any of the plugins are already
    registered"); the global registry still lists each creator once."""
    idents = [(s.plugin_name, s.plugin_version, ops.PLUGIN_NAMESPACE) for s in ops.PLUGIN_SPECS.values()]
    script = f"""
import ctypes, tensorrt_rtx as trt
reg = trt.get_plugin_registry()
count = lambda: sum(1 for c in reg.all_creators if c.plugin_namespace == "eventspd")
ctypes.CDLL({str(rtx_plugin_library)!r})
once = count()
keyed = all(reg.get_creator(*ident) is not None for ident in {idents!r})
unnamespaced = reg.get_creator({idents[0][0]!r}, {idents[0][1]!r}, "") is not None
local = trt.Runtime(trt.Logger(trt.Logger.ERROR)).get_plugin_registry().load_library({str(rtx_plugin_library)!r})
refused = reg.load_library({str(rtx_plugin_library)!r}) is None
print(once, count(), keyed, unnamespaced, local is not None, refused)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    once, after_load_library, keyed, unnamespaced, local_loaded, global_refused = proc.stdout.split()
    assert len(idents) == 4 and (once, after_load_library) == ("4", "4")
    assert (keyed, unnamespaced) == ("True", "False")
    assert (local_loaded, global_refused) == ("True", "True")


def test_plugin_creators_match_plugin_specs(rtx_plugin_library):
    """Each creator's name, version, namespace and field names, as TensorRT-RTX's registry reports
    them from the built library, are model_def.ops.PLUGIN_SPECS (what the exporter writes as node
    attributes): a field renamed on one side only would drop the attribute silently at parse."""
    from model_def import ops

    script = f"""
import ctypes, json, tensorrt_rtx as trt
ctypes.CDLL({str(rtx_plugin_library)!r})
print(json.dumps([[c.name, c.plugin_version, c.plugin_namespace, [f.name for f in c.field_names]]
                  for c in trt.get_plugin_registry().all_creators if c.plugin_namespace == "eventspd"]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = sorted(map(tuple, (tuple(c[:3]) + (tuple(c[3]),) for c in json.loads(proc.stdout))))
    want = sorted((s.plugin_name, s.plugin_version, ops.PLUGIN_NAMESPACE, tuple(s.fields))
                  for s in ops.PLUGIN_SPECS.values())
    assert got == want


@pytest.mark.parametrize("graph, precision", [("precompute", "fp32"), ("decoder", "fp32"), ("precompute", "int8"),
                                              ("decoder", "int8")])
def test_weakly_typed_constraints_find_every_fp32_node_among_the_parsed_layers(
        tiny_export, rtx_runtime, rtx_plugin_library, graph, precision):
    """What `trt --weakly-typed` (TensorRT 10) rests on: TensorRT's ONNX parser names a node's layer
    after the node, so the fp32 list of calibration/fp16.py finds its layers by name. TensorRT-RTX
    has the same parser (it has no ILayer.precision: setting the constraints runs only on TensorRT 10,
    with the fake module of test_trt.py)."""
    from eventspd_export.artifacts import onnx_file
    from eventspd_export.trt.precision_constraints import _node_of, fp32_layer_names

    trt = rtx_runtime.trt
    plugin_library.load_plugins(rtx_runtime, rtx_plugin_library)
    logger = trt.Logger(trt.Logger.ERROR)
    path = tiny_export / onnx_file(graph, precision)
    network, _parser = trt_engine._parse(rtx_runtime, logger, trt.Builder(logger), graph, path, True)
    keep, nodes = fp32_layer_names(path)
    assert len(keep) > 50
    if precision == "int8":  # A4's Gemms are quantised there: they run as the strongly typed build runs them
        assert not {"/a4/w_s/Gemm", "/a4/w_b/Gemm"} & keep
    elif graph == "precompute":
        assert {"/a4/w_s/Gemm", "/a4/w_b/Gemm"} <= keep
    found = {_node_of(network.get_layer(i).name, keep, nodes) for i in range(network.num_layers)} - {None}
    assert found == keep, sorted(keep - found)[:10]


def test_a_plugin_node_its_plugin_refuses_fails_the_engine_build(export_copy, tmp_path, rtx_plugin_library):
    """The plugins judge their shapes in configurePlugin, which TensorRT-RTX's builder calls: a splat
    node whose resolutions do not match its table fails `trt` with the plugin's message (exit 1,
    nothing written) instead of an engine that would fail its first enqueue on a GPU."""
    from test_check import _edit_splat_attribute

    _edit_splat_attribute(export_copy, "resolutions", lambda a: a.ints.__setitem__(0, a.ints[0] + 1))
    out, err_log = tmp_path / "out", tmp_path / "trt.stderr"
    saved = os.dup(2)
    with open(err_log, "wb") as f:
        os.dup2(f.fileno(), 2)
        try:
            r = CliRunner().invoke(trt, ["--runtime", "tensorrt-rtx", "--onnx-dir", str(export_copy), "--out", str(out),
                                         "--plugins", str(rtx_plugin_library)])
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    trt_log = err_log.read_text(errors="replace")
    assert r.exit_code == 1, r.output + trt_log
    assert "error: precompute: TensorRT-RTX" in r.output and "failed to build the engine" in r.output, r.output
    # the plugin's own line (on stderr: loaded by dlopen, it has no TensorRT logger)
    assert "[eventspd plugins] EventSPDEventSplat: events must be [N, 4] and the table [" in trt_log, trt_log
    assert not (out / "precompute.engine").exists() and not (out / "decoder.engine").exists()
