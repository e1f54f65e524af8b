"""examples/cpp (issue 5) and the event file it reads: the file format round trip and its
errors, `write-events`, the TensorRT-free C++ parts compiled and run here (manifest, JSON,
SHA-256, event file, the refusal of engines built for another TensorRT or GPU), the CMake
project, and main.cpp compiled against TensorRT's public headers when $TENSORRT_INCLUDE points
at them (skipped otherwise; checked with TensorRT 11.1.0 headers)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from eventspd_export.trt import engine_build as trt_engine
from eventspd_export.trt import plugin_library
from eventspd_export.data.event_file import EventFileError, read_event_file, write_event_file
from eventspd_export.export.onnx_export import MANIFEST_FILE
from eventspd_export.cli.data_commands import write_events
from eventspd_export.artifacts import write_manifest
from eventspd_export.trt.engine_build import BuildOptions, engine_entry, plan_build
from eventspd_export.runtime.trt_flavour import FLAVOURS, GpuInfo, Runtime, Target
from test_trt import fake_export

REPO = Path(__file__).resolve().parents[2]
CPP = REPO / "examples" / "cpp"
HEADERS = ["json.h", "sha256.h", "event_file.h", "manifest.h"]
H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0")


def _cxx() -> str:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++) on PATH")
    return cxx


def _cuda_include() -> Path:
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "include" / "cuda_runtime_api.h").is_file():
            return Path(root) / "include"
    pytest.skip("CUDA headers (cuda_runtime_api.h) not found; set CUDA_HOME")


# ---- the event file ---------------------------------------------------------------------------------

def test_event_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    windows = [rng.uniform(0, 100, (n, 4)).astype(np.float32) for n in (5, 0, 1000)]
    queries = rng.uniform(0, 100, (7, 2)).astype(np.float32)
    path = tmp_path / "ev.bin"
    assert write_event_file(path, iter(windows), queries, 256, 160) == 3  # a generator is fine
    f = read_event_file(path)
    assert (f.width, f.height, len(f.windows)) == (256, 160, 3)
    for got, want in zip(f.windows, windows):
        assert got.dtype == np.float32 and np.array_equal(got, want)
    assert np.array_equal(f.queries, queries) and f.num_events == 1005
    data = path.read_bytes()
    assert data[:8] == b"ESPDEVT\0" and struct.unpack_from("<IIII", data, 8) == (1, 256, 160, 3)
    assert len(data) == 24 + 3 * 4 + 1005 * 16 + 4 + 7 * 8
    assert [p.name for p in tmp_path.iterdir()] == ["ev.bin"]  # no temporary left


def test_event_file_errors(tmp_path):
    good = tmp_path / "good.bin"
    write_event_file(good, [np.zeros((2, 4), np.float32)], np.zeros((1, 3, 2), np.float32), 8, 8)
    data = good.read_bytes()
    cases = {"magic": b"XXXXXXXX" + data[8:], "version": data[:8] + struct.pack("<I", 7) + data[12:],
             "truncated": data[:-3], "trailing": data + b"\0", "short": data[:10]}
    messages = {"magic": "not an EventSPD event file", "version": "event file version 7",
                "truncated": "truncated in the queries", "trailing": "1 unexpected bytes after the queries",
                "short": "shorter than the 24-byte header"}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(EventFileError, match=messages[name]):
            read_event_file(tmp_path / name)
    with pytest.raises(EventFileError, match=r"events must be \[N, 4\]"):
        write_event_file(tmp_path / "bad.bin", [np.zeros((3, 3), np.float32)], np.zeros((1, 2)), 8, 8)
    with pytest.raises(EventFileError, match="queries must be"):
        write_event_file(tmp_path / "bad.bin", [], np.zeros((0, 2)), 8, 8)
    assert not (tmp_path / "bad.bin").exists()


def test_write_events_command(tmp_path):
    out = tmp_path / "events.bin"
    r = CliRunner().invoke(write_events, ["--data", "synthetic", "--windows", "3", "--k", "16", "--out", str(out),
                                          "--config", "tiny"])
    assert r.exit_code == 0, r.output
    f = read_event_file(out)
    assert (f.width, f.height, len(f.windows), f.queries.shape) == (256, 160, 3, (16, 2))
    assert all(w.shape[1] == 4 and w.dtype == np.float32 for w in f.windows)
    assert f.num_events > 0 and f"wrote {out}: 3 windows ({f.num_events} events)" in r.output
    ev = np.concatenate(f.windows)
    assert ev[:, 0].min() >= 0 and ev[:, 0].max() < 256 and ev[:, 1].max() < 160
    # the configuration can come from an export's manifest instead of --config
    art = fake_export(tmp_path / "art")
    r = CliRunner().invoke(write_events, ["--windows", "1", "--out", str(tmp_path / "e2.bin"), "--onnx-dir", str(art)])
    assert r.exit_code == 0 and read_event_file(tmp_path / "e2.bin").width == 256
    r = CliRunner().invoke(write_events, ["--out", str(tmp_path / "e3.bin"), "--onnx-dir", str(tmp_path / "none")])
    assert r.exit_code == 2 and r.output.startswith("error: no configuration")
    r = CliRunner().invoke(write_events, ["--config", "tiny", "--data", "dsec:/nonexistent", "--out", str(tmp_path / "e4.bin")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and not (tmp_path / "e4.bin").exists()


# ---- the C++ parts that need neither TensorRT nor a GPU -------------------------------------------

@pytest.fixture(scope="module")
def preflight(tmp_path_factory):
    exe = tmp_path_factory.mktemp("cpp") / "eventspd_preflight"
    cmd = [_cxx(), "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", str(CPP / "preflight.cpp"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def engines_folder(folder: Path, gpu: GpuInfo | None = H100, trt_version: str = "11.1.0.106",
                   flavour: str = "tensorrt", targets: tuple[str, ...] = ("9.0",)) -> Path:
    """An export + engine manifest entries as `eventspd-export trt` writes them (stand-in engine
    bytes; the manifest entries are the real ones). ``gpu=None``: a TensorRT-RTX ahead-of-time
    build for ``targets``."""
    runtime = Runtime(FLAVOURS[flavour], None, trt_version).manifest_entry()
    target = Target((gpu.compute_capability,), gpu) if gpu is not None else Target(targets)
    art = fake_export(folder)
    lib = art / trt_engine.PLUGIN_LIBRARY
    lib.write_bytes(b"plugin library bytes")
    plan = plan_build(BuildOptions(art, art, precision="fp32", plugins=lib))
    manifest = json.loads((art / MANIFEST_FILE).read_text())
    manifest["engines"] = {}
    for graph in ("precompute", "decoder"):
        blob = f"{graph} plan".encode()
        (art / trt_engine.ENGINE_FILES[graph]).write_bytes(blob)
        manifest["engines"][graph] = engine_entry(
            graph, plan, hashlib.sha256(blob).hexdigest(), len(blob), runtime, target,
            hashlib.sha256(lib.read_bytes()).hexdigest(), "00" * 32, list(plugin_library.PLUGIN_NODES[graph]), 1.0,
            "strongly typed")
    write_manifest(art, manifest)
    return art


def _run(exe, *args):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)


def test_cpp_preflight_reads_manifest_and_event_file(preflight, tmp_path):
    art = engines_folder(tmp_path / "art")
    events = tmp_path / "events.bin"
    rng = np.random.default_rng(1)
    windows = [np.c_[rng.uniform(0, 256, (n, 1)), rng.uniform(0, 160, (n, 1)), rng.uniform(0, 1, (n, 2))]
               .astype(np.float32) for n in (40, 0, 7)]
    write_event_file(events, windows, rng.uniform(0, 100, (64, 2)), 256, 160)
    proc = _run(preflight, art, events, "--tensorrt", "11.1.0", "--gpu", H100.name, "--capability", "9.0")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "config tiny 256x160; engines fp32, decoder.engine (TensorRT 11.1.0.106, NVIDIA H100 80GB HBM3, sm 9.0)" in out
    assert "roles: events=events hidden=hidden hidden_out=hidden_out queries=queries shared=13 outputs=depth,inv_depth" in out
    assert "profiles: K 0..4096, events 0..2000000" in out
    assert "event file: 3 windows, 47 events, K=64, sensor 256x160" in out
    x, y, t, p = windows[0][0]
    assert f"first event: {x:.3f} {y:.3f} {t:.6f} {p:.1f}" in out and out.rstrip().endswith("ok")


def test_cpp_refuses_other_tensorrt_gpu_and_changed_files(preflight, tmp_path):
    art = engines_folder(tmp_path / "art")
    events = tmp_path / "events.bin"
    write_event_file(events, [np.zeros((3, 4), np.float32)], np.zeros((8, 2)), 256, 160)
    gpu = ["--gpu", H100.name, "--capability", "9.0"]

    proc = _run(preflight, art, events, "--tensorrt", "10.15.1", *gpu)
    assert proc.returncode == 2
    assert ("error: precompute.engine was built with TensorRT 11.1.0.106, this program runs TensorRT 10.15.1: "
            "rebuild the engines with `eventspd-export trt`") in proc.stderr
    proc = _run(preflight, art, events, "--tensorrt", "11.1.0", "--gpu", "NVIDIA A100-SXM4-80GB", "--capability", "8.0")
    assert proc.returncode == 2 and "was built for NVIDIA H100 80GB HBM3 (compute capability 9.0), this GPU is " \
                                   "NVIDIA A100-SXM4-80GB (compute capability 8.0)" in proc.stderr
    other_model = ["--tensorrt", "11.1.0", "--gpu", "NVIDIA H100 PCIe", "--capability", "9.0"]
    proc = _run(preflight, art, events, *other_model)
    assert proc.returncode == 2 and "--allow-other-gpu-model" in proc.stderr
    assert _run(preflight, art, events, *other_model, "--allow-other-gpu-model").returncode == 0

    (art / "decoder.engine").write_bytes(b"another plan")
    proc = _run(preflight, art, events, "--tensorrt", "11.1.0", *gpu)
    assert proc.returncode == 2 and "engine " in proc.stderr and "decoder.engine is not the file the manifest describes" in proc.stderr
    engines_folder(tmp_path / "art2")
    (tmp_path / "art2" / trt_engine.PLUGIN_LIBRARY).unlink()
    proc = _run(preflight, tmp_path / "art2", events)
    assert proc.returncode == 2 and "plugin library" in proc.stderr and "not found" in proc.stderr


def test_cpp_refuses_engines_of_the_other_flavour_and_gpus_outside_the_targets(preflight, tmp_path):
    art = engines_folder(tmp_path / "rtx", gpu=None, trt_version="1.7.1.116", flavour="tensorrt-rtx",
                         targets=("8.6", "8.9", "12.0"))
    events = tmp_path / "events.bin"
    write_event_file(events, [np.zeros((3, 4), np.float32)], np.zeros((8, 2)), 256, 160)
    rtx = ["--runtime", "tensorrt-rtx", "--tensorrt", "1.7.1"]
    proc = _run(preflight, art, events, *rtx, "--gpu", "NVIDIA GeForce RTX 4090", "--capability", "8.9")
    assert proc.returncode == 0, proc.stderr
    assert "engines fp32, decoder.engine (TensorRT-RTX 1.7.1.116, sm 8.6, 8.9, 12.0)" in proc.stdout
    proc = _run(preflight, art, events, *rtx, "--gpu", "NVIDIA H200", "--capability", "9.0")
    assert proc.returncode == 2
    assert ("error: precompute.engine was built for compute capabilities 8.6, 8.9, 12.0, this GPU is NVIDIA H200 "
            "(compute capability 9.0); TensorRT-RTX has no target for it: build with enterprise TensorRT on this "
            "GPU") in proc.stderr
    proc = _run(preflight, art, events, *rtx, "--gpu", "NVIDIA RTX A6000", "--capability", "8.0")
    assert proc.returncode == 2
    assert ("this GPU is NVIDIA RTX A6000 (compute capability 8.0): rebuild them with `eventspd-export trt "
            "--runtime tensorrt-rtx --compute-capability 8.0`") in proc.stderr
    proc = _run(preflight, art, events, "--tensorrt", "11.1.0", "--gpu", "NVIDIA GeForce RTX 4090", "--capability", "8.9")
    assert proc.returncode == 2
    assert ("error: precompute.engine was built with TensorRT-RTX 1.7.1.116, this program runs TensorRT 11.1.0: "
            "rebuild the engines with `eventspd-export trt --runtime tensorrt`") in proc.stderr
    proc = _run(preflight, art, events, "--runtime", "tensorrt-rtx", "--tensorrt", "1.8.0", "--gpu", "RTX", "--capability", "8.6")
    assert proc.returncode == 2 and "was built with TensorRT-RTX 1.7.1.116, this program runs TensorRT-RTX 1.8.0" in proc.stderr
    # and a TensorRT engine on a TensorRT-RTX program
    trt_art = engines_folder(tmp_path / "trt")
    proc = _run(preflight, trt_art, events, "--runtime", "tensorrt-rtx", "--tensorrt", "1.7.1", "--gpu", H100.name,
                "--capability", "9.0")
    assert proc.returncode == 2 and "was built with TensorRT 11.1.0.106, this program runs TensorRT-RTX 1.7.1" in proc.stderr


def test_cpp_refuses_inputs_outside_config_and_profiles(preflight, tmp_path):
    art = engines_folder(tmp_path / "art")
    wrong_size = tmp_path / "hd.bin"
    write_event_file(wrong_size, [np.zeros((1, 4), np.float32)], np.zeros((1, 2)), 1280, 720)
    proc = _run(preflight, art, wrong_size)
    assert proc.returncode == 2 and "the event file is for a 1280x720 sensor, the engines for 256x160 (config tiny)" in proc.stderr
    # a profile that starts above a window's event count (the exporter's start at 0; a hand-edited one)
    few_events = tmp_path / "few.bin"
    write_event_file(few_events, [np.zeros((3, 4), np.float32)], np.zeros((1, 2)), 256, 160)
    min_events = tmp_path / "min-events"
    shutil.copytree(art, min_events)
    manifest = json.loads((min_events / MANIFEST_FILE).read_text())
    manifest["engines"]["precompute"]["dynamic_axes"]["num_events"]["min"] = 5
    (min_events / MANIFEST_FILE).write_text(json.dumps(manifest))
    proc = _run(preflight, min_events, few_events)
    assert proc.returncode == 2 and "window 0 has 3 events, the precompute engine's profile allows 5.." in proc.stderr, proc.stderr
    many_queries = tmp_path / "k.bin"
    write_event_file(many_queries, [np.zeros((1, 4), np.float32)], np.zeros((5000, 2)), 256, 160)
    proc = _run(preflight, art, many_queries)
    assert proc.returncode == 2 and "K=5000 queries, the decoder engine's profile allows 0..4096" in proc.stderr
    no_engines = fake_export(tmp_path / "plain")
    proc = _run(preflight, no_engines, many_queries)
    assert proc.returncode == 2 and "no \"engines\" entry: build the engines with `eventspd-export trt" in proc.stderr
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST_FILE).write_text('{"config": {"name": "tiny", ')
    proc = _run(preflight, tmp_path / "broken", many_queries)
    assert proc.returncode == 2 and "JSON: " in proc.stderr


def test_cpp_refuses_hostile_counts_and_numbers_before_allocating(preflight, tmp_path):
    """Counts in an event file are checked against its size before anything of that size is
    allocated (run under a 1 GiB address-space limit: a reader that allocated first would die of
    bad_alloc, 64 GiB for 2^32 - 1 events), and a manifest number that is not an integer in range
    (1e300, -5) is refused by name rather than converted (undefined behaviour)."""
    import resource

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    art = engines_folder(tmp_path / "art")
    header = struct.pack("<8sIIII", b"ESPDEVT\0", 1, 256, 160, 1)
    cases = {
        "events": (header + struct.pack("<I", 0xFFFFFFFF), "truncated in the events (needs 68719476720 bytes at offset 28"),
        "counts": (header[:-4] + struct.pack("<I", 0xFFFFFFFF), "truncated in the event counts (needs 17179869180 bytes"),
        "queries": (header + struct.pack("<II", 0, 0xFFFFFFFF), "truncated in the queries (needs 34359738360 bytes"),
    }
    for name, (data, message) in cases.items():
        events = tmp_path / f"{name}.bin"
        events.write_bytes(data)
        proc = subprocess.run([str(preflight), str(art), str(events)], capture_output=True, text=True,
                              preexec_fn=limited)
        assert proc.returncode == 2 and message in proc.stderr, (name, proc.stderr)
    events = tmp_path / "ok.bin"
    write_event_file(events, [np.zeros((1, 4), np.float32)], np.zeros((1, 2)), 256, 160)
    for edit, message in ((lambda m: m["engines"]["decoder"]["dynamic_axes"]["num_queries"].update(max=1e300),
                           "num_queries.max is 1.0000000000000001e+300, expected an integer in 0..9223372036854775807"),
                          (lambda m: m["config"].update(width=-5), "config.width is -5, expected an integer in 1..4294967295"),
                          (lambda m: m["config"].update(height=2.5), "config.height is 2.5, expected an integer in 1.."),
                          # one device buffer serves a shared tensor's two sides: their shapes must agree
                          (lambda m: m["engines"]["decoder"]["inputs"][0]["shape"].__setitem__(-1, 7),
                           "precompute output l1_map (float32 [1,64,40,64]) and decoder input l1_map (float32 "
                           "[1,64,40,7]) must have one dtype and shape"),
                          # the shared tensors are allocated once by their dims: a dynamic one is refused
                          (lambda m: [m["engines"][g][side][i]["shape"].__setitem__(-1, "w") for g, side, i in
                                      (("precompute", "outputs", 0), ("decoder", "inputs", 0))],
                           "the manifest's shared tensor l1_map (float32 [1,64,40,-1]) has a dynamic dimension"),
                          (lambda m: m["engines"]["precompute"]["plugin_library"].update(sha256="ab" * 32),
                           "the manifest's two engines were built with different plugin libraries (sha256 abababababab...")):
        bad = tmp_path / "bad"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(art, bad)
        manifest = json.loads((bad / MANIFEST_FILE).read_text())
        edit(manifest)
        (bad / MANIFEST_FILE).write_text(json.dumps(manifest))
        proc = _run(preflight, bad, events)
        assert proc.returncode == 2 and message in proc.stderr, (message, proc.stderr)


def test_cpp_headers_compile_against_cuda_headers():
    """The TensorRT-free headers, syntax-checked alone and with the CUDA headers included
    first (what main.cpp does)."""
    cxx, cuda = _cxx(), _cuda_include()
    for header in HEADERS:
        for prelude in ("", "#include <cuda_runtime_api.h>\n"):
            src = f"{prelude}#include \"{header}\"\nint main() {{ return 0; }}\n"
            proc = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-isystem",
                                   str(cuda), "-I", str(CPP), "-x", "c++", "-"], input=src, capture_output=True,
                                  text=True)
            assert proc.returncode == 0, f"{header}: {proc.stderr}"


def test_main_cpp_compiles_against_tensorrt_headers(tmp_path, tensorrt_include):
    include = str(tensorrt_include)
    cxx, cuda = _cxx(), _cuda_include()
    cmd = [cxx, "-std=c++17", "-c", "-Wall", "-Wextra", "-Werror", "-Wno-deprecated-declarations", "-isystem",
           include, "-isystem", str(cuda), "-I", str(CPP), str(CPP / "main.cpp"), "-o", str(tmp_path / "main.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    # and as TensorRT-RTX's program (its own creator lookup and flavour guard)
    proc = subprocess.run(cmd[:-2] + ["-DEVENTSPD_TENSORRT_RTX=1", "-o", str(tmp_path / "main_rtx.o")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_cmake_project_configures_and_builds_preflight_without_tensorrt(tmp_path):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    _cxx()
    env = {k: v for k, v in os.environ.items() if k != "TENSORRT_ROOT"}
    build = tmp_path / "build"
    proc = subprocess.run([cmake, "-S", str(CPP), "-B", str(build), f"-DTENSORRT_ROOT={tmp_path / 'no-trt'}"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "eventspd_run is not built: it needs TensorRT" in proc.stderr
    proc = subprocess.run([cmake, "--build", str(build)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (build / "eventspd_preflight").is_file() and not (build / "eventspd_run").exists()
