"""``eventspd-export trt``: precompute.engine + decoder.engine from the exported ONNX graphs.

Which ONNX: ``precompute.onnx``/``decoder.onnx`` (fp32), ``*.fp16.onnx`` (mixed precision from
``calibration.fp16``) or ``*.int8.onnx`` (explicit Q/DQ from ``calibration.int8``), all in
``--onnx-dir`` (ARCHITECTURE §4: the precision is decided in the ONNX).

How (TensorRT Python API 10.x/11.x, or TensorRT-RTX 1.7+; everything that differs between the
two flavours -- import, version rules, flags, build targets, the manifest's runtime record and
the engine guard -- is in ``trt_flavour``):

* **Typing.** TensorRT 11 networks are always strongly typed (``STRONGLY_TYPED`` is deprecated
  and ignored; the precision builder flags are gone), so the ONNX's types are the engine's types.
  TensorRT 10 gets ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` too, unless the user asks
  for the old way (``weakly_typed=True``, ``--weakly-typed``): then fp16 builds the *fp32* ONNX
  with ``BuilderFlag.FP16``, and int8 builds the Q/DQ ONNX with ``INT8 | FP16`` (explicit
  quantisation, no calibrator). On TensorRT 11 and TensorRT-RTX that option is an error.
* **Targets.** TensorRT builds for the visible GPU; TensorRT-RTX for a list of compute
  capabilities (``--compute-capability``, default 8.6/8.9/12.0) without a GPU.
* **TF32** is cleared for fp32 engines: an fp32 engine is the accuracy reference of the
  deployment (``check --backend trt --precision fp32`` holds it to the fp32 tolerances), and
  TF32's 10-bit mantissa would move it to fp16-like errors.
* **Plugins.** ``libeventspd_plugins.so`` is loaded with ``ctypes.CDLL`` (it registers its
  creators at load, under namespace ``eventspd``; the same mechanism as ``polygraphy --plugins``),
  each creator must be found by the registry's keyed ``get_creator`` (see ``load_plugins``), and the
  parser gets
  ``OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE`` where it exists (the nodes also carry
  ``plugin_namespace``, which makes 10.15+/11.x parsers prefer the plugin). After parsing, every
  custom node (``EventSPDEventSplat`` in precompute, ``EventSPDTopRRoute`` and
  ``EventSPDDeformRead`` in the decoder) must have become a plugin layer; a parser that inlined
  the model-local function instead (TensorRT <= 10.6 does) is an error, not a silent fallback.
* **I/O.** The parsed network's inputs and outputs must be the contract's (checked before the
  build, so it needs no GPU); the built engine is deserialised and checked again only where a GPU
  of its targets is present.
* **Profiles.** One optimisation profile per engine. ``num_queries``: ``k_min`` (0: the decoder
  graph runs on an empty query set) / ``k_opt``
  (256) / ``k_max`` (4096). ``num_events``: **min 0** (an empty window is a valid input: the
  splat kernel zero-fills its grid and launches nothing, so the C++ app passes empty windows as
  they are), opt ``events_opt``, max ``events_max`` (default: the export's recorded maximum).
  Limits beyond the export's recorded ``--k-max``/``--events-max`` are refused (the kernels'
  int32 indexing was checked up to those).
* **Workspace** (``MemoryPoolType.WORKSPACE``) when given; **timing cache** loaded from and saved
  to ``timing_cache`` when given (atomically; a cache from another GPU/TensorRT is rejected by
  TensorRT, not ignored); refused for a TensorRT-RTX build with no GPU to time on.
* **Manifest.** Each engine gets an entry under ``"engines"`` in the sidecar
  ``eventspd.manifest.json`` (flavour and version, targets and the build GPU, precision,
  typing, profile, I/O table, sha256 of the engine, of its ONNX and of the plugin library).
  Nothing is put in front of the TensorRT plan: ``trtexec --loadEngine`` and plain
  ``deserializeCudaEngine`` read the files as they are.
* **Files** are written atomically, engines first, the plugin library copy next, the manifest
  last; nothing is written before every check passed and both engines are built, so a failed
  run leaves no files behind.

Without the requested TensorRT flavour, or (enterprise TensorRT) without a GPU, the build stops
before any work with a typed error whose message is one sentence saying which is missing and how
to get it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from model_def import contract
from model_def.atomic import atomic_write_bytes, check_writable, folder_lock
from model_def.checkpoint import sha256_file
from model_def.config import ModelConfig

from model_def.errors import UserError
from eventspd_export.artifacts import (ENGINE_FILES, GRAPHS, MANIFEST_FILE, PLUGIN_LIBRARY, PRECISIONS, holds_same_graphs,
                                      onnx_file, open_export, write_manifest)
from model_def.contract import EVENTS_LIMIT, K_LIMIT
from eventspd_export.runtime.trt_flavour import RUNTIME_CHOICES, Runtime, Target, load_runtime
from eventspd_export.trt.errors import EngineBuildError
from eventspd_export.trt.precision_constraints import constrain_fp32_layers, fp32_layer_names
from eventspd_export.trt.plugin_library import (load_plugins, onnx_plugin_nodes, plugin_layers, resolve_plugin_library,
                                                verify_plugin_layers)

log = logging.getLogger(__name__)

DEFAULT_EVENTS_OPT = 100_000
ENGINE_FORMAT = "eventspd-export/engine-2"  # -2: runtime flavour and build target recorded


# ---- options ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    """The dynamic axes' ranges of the one optimisation profile of each engine."""

    k_min: int = 0  # an empty query set is valid (the decoder graph runs at K = 0)
    k_opt: int = 256
    k_max: int = 4096
    events_opt: int | None = None  # default: min(DEFAULT_EVENTS_OPT, events_max)
    events_max: int | None = None  # default: the export's recorded --events-max
    events_min: int = 0  # empty windows are valid (module docstring)

    def resolved(self, manifest: dict) -> "Profile":
        axes = manifest.get("dynamic_axes", {})
        events_max = self.events_max if self.events_max is not None else int(
            axes.get(contract.NUM_EVENTS, {}).get("max", 2_000_000))
        events_opt = self.events_opt if self.events_opt is not None else min(DEFAULT_EVENTS_OPT, events_max)
        return Profile(self.k_min, self.k_opt, self.k_max, events_opt, events_max, self.events_min)

    def validate(self, manifest: dict | None = None) -> None:
        if not 0 <= self.k_min <= self.k_opt <= self.k_max or self.k_max < 1:
            raise UserError(f"--k-min {self.k_min}, --k-opt {self.k_opt}, --k-max {self.k_max}: "
                             "need 0 <= k-min <= k-opt <= k-max and k-max >= 1")
        if self.k_max > K_LIMIT:
            raise UserError(f"--k-max {self.k_max} is above what the graphs support ({K_LIMIT})")
        if self.events_opt is not None and self.events_max is not None and not (
                self.events_min <= self.events_opt <= self.events_max):
            raise UserError(f"--events-opt {self.events_opt}, --events-max {self.events_max}: "
                             f"need {self.events_min} <= events-opt <= events-max")
        if self.events_max is not None and not 1 <= self.events_max <= EVENTS_LIMIT:
            raise UserError(f"--events-max {self.events_max} is outside 1..{EVENTS_LIMIT}")
        if self.events_opt is not None and self.events_opt < 0:
            raise UserError(f"--events-opt {self.events_opt} must be >= 0")
        if manifest is not None:
            axes = manifest.get("dynamic_axes", {})
            k_rec = axes.get(contract.NUM_QUERIES, {}).get("max")
            ev_rec = axes.get(contract.NUM_EVENTS, {}).get("max")
            k_rec_min = axes.get(contract.NUM_QUERIES, {}).get("min")
            if k_rec_min is not None and self.k_min < int(k_rec_min):
                # graphs exported before K = 0 support: their Reshapes fail on an empty query set
                raise UserError(f"--k-min {self.k_min} is below the {k_rec_min} the graphs were exported for "
                                 f"(an older export); re-export with `eventspd-export onnx`, or pass --k-min {k_rec_min}")
            if k_rec is not None and self.k_max > int(k_rec):
                raise UserError(f"--k-max {self.k_max} is above the {k_rec} the graphs were exported "
                                 f"for; re-export with `eventspd-export onnx --k-max {self.k_max}`")
            if ev_rec is not None and self.events_max is not None and self.events_max > int(ev_rec):
                raise UserError(f"--events-max {self.events_max} is above the {ev_rec} the graphs were "
                                 f"exported for; re-export with `eventspd-export onnx --events-max "
                                 f"{self.events_max}`")

    def shapes(self, graph: str, cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], ...]]:
        """{input name: (min, opt, max) shape} for the graph's dynamic inputs (from the contract)."""
        ranges = {contract.NUM_QUERIES: (self.k_min, self.k_opt, self.k_max),
                  contract.NUM_EVENTS: (self.events_min, self.events_opt, self.events_max)}
        specs = _graph_specs(graph, cfg)[0]
        out = {}
        for spec in specs:
            if spec.is_dynamic():
                out[spec.name] = tuple(tuple(ranges[d][i] if isinstance(d, str) else d for d in spec.shape)
                                       for i in range(3))
        return out

    def to_json(self) -> dict:
        return {contract.NUM_QUERIES: {"min": self.k_min, "opt": self.k_opt, "max": self.k_max},
                contract.NUM_EVENTS: {"min": self.events_min, "opt": self.events_opt, "max": self.events_max}}


@dataclass(frozen=True)
class BuildOptions:
    onnx_dir: Path
    out_dir: Path
    precision: str = "fp32"
    profile: Profile = field(default_factory=Profile)
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    plugins: Path | None = None
    weakly_typed: bool = False  # TensorRT 10 only: precision builder flags instead of typed ONNX
    runtime: str = "auto"  # auto | tensorrt | tensorrt-rtx (trt_flavour)
    compute_capabilities: tuple[str, ...] | None = None  # TensorRT-RTX targets; None: its default set


@dataclass
class BuildPlan:
    """Everything checked before TensorRT is touched (all of it testable without TensorRT)."""

    options: BuildOptions
    manifest: dict
    cfg: ModelConfig
    profile: Profile
    onnx: dict[str, Path]  # graph -> the ONNX the engine is built from
    plugins: Path | None  # the given library; None: searched once TensorRT and the GPU are there


def plan_build(options: BuildOptions) -> BuildPlan:
    """Validate options, files and manifest; raise ``UserError`` subclasses. Writes nothing."""
    if options.precision not in PRECISIONS:
        raise UserError(f"unknown precision {options.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if options.workspace_mib is not None and options.workspace_mib < 1:
        raise UserError(f"--workspace {options.workspace_mib} MiB: must be at least 1")
    if options.weakly_typed and options.precision == "fp32":
        raise UserError("--weakly-typed only changes fp16/int8 builds (precision builder flags); "
                         "drop it for --fp32")
    if options.runtime not in RUNTIME_CHOICES:
        raise UserError(f"--runtime {options.runtime!r}: choose one of {', '.join(RUNTIME_CHOICES)}")
    onnx_dir = Path(options.onnx_dir)
    # TensorRT 10's weak typing builds fp16 from the fp32 graph; everything else from its own ONNX.
    source_precision = "fp32" if (options.weakly_typed and options.precision == "fp16") else options.precision
    export = open_export(onnx_dir, source_precision)
    manifest, cfg, paths = export.manifest, export.cfg, export.graphs
    if not manifest.get("plugin_ops"):
        # Measured with TensorRT-RTX 1.7 (tests/trt/test_trt_rtx.py): it builds the standard-op decoder,
        # but its parser rejects the event splat's ScatterElements(reduction="add") (and ScatterND
        # with any reduction); ARCHITECTURE §3 records the same history for TensorRT's parser.
        raise UserError(f"the graphs in {onnx_dir} were exported with --no-plugins, and TensorRT-RTX's ONNX parser "
                         "rejects the standard-op event splat (ScatterElements with reduction=\"add\"), so the "
                         "engines need the plugin nodes and library: re-export without --no-plugins and build "
                         "the library with `eventspd-export build-plugins`")
    profile = options.profile.resolved(manifest)
    options.profile.validate(manifest)
    profile.validate(manifest)
    if options.timing_cache is not None:
        check_writable(options.timing_cache, "--timing-cache", folder=False)
    check_writable(options.out_dir, "--out", folder=True)
    _check_out_holds_no_other_export(Path(options.out_dir), Path(onnx_dir), manifest)
    plugins = resolve_plugin_library(options.plugins) if options.plugins is not None else None
    return BuildPlan(options, manifest, cfg, profile, paths, plugins)


def _check_out_holds_no_other_export(out: Path, onnx_dir: Path, manifest: dict) -> None:
    """The engines' manifest is written to --out as the export's manifest plus the engines: where
    --out is another export's folder (its own fp32 graphs next to its manifest), that would replace
    its manifest, and its graphs would then fail their sha256 check. Refused, unless it holds the same
    graphs. A folder of engines only (an earlier `trt --out`) is rebuilt: its manifest is the engines'."""
    if out.resolve() == onnx_dir.resolve() or not (out / MANIFEST_FILE).is_file():
        return
    if not any((out / onnx_file(g)).is_file() for g in GRAPHS):
        return
    if not holds_same_graphs(out, manifest):
        raise UserError(f"--out {out} holds another export (its graphs and {MANIFEST_FILE}), whose manifest the "
                        f"engines' would replace; build into --onnx-dir {onnx_dir}, an empty folder, or a folder of "
                        "engines")


# ---- build ----------------------------------------------------------------------------------

def _dtype_name(trt, dtype) -> str:
    table = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT8": "int8", "BOOL": "bool",
             "INT64": "int64", "BF16": "bfloat16", "UINT8": "uint8"}
    return table.get(str(dtype).split(".")[-1], str(dtype))


def _graph_specs(graph: str, cfg: ModelConfig):
    """(inputs, outputs) of a graph in the contract."""
    if graph == "precompute":
        return contract.precompute_inputs(cfg), contract.precompute_outputs(cfg)
    return contract.decoder_inputs(cfg), contract.decoder_outputs(cfg)


def _require_contract_io(graph: str, cfg: ModelConfig, got: dict[str, tuple[str, str]], what: str) -> None:
    """``got`` ({name: (input|output, dtype)}) must be the contract's names, directions and dtypes."""
    ins, outs = _graph_specs(graph, cfg)
    want = {s.name: ("input", s.dtype) for s in ins} | {s.name: ("output", s.dtype) for s in outs}
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()))
        raise EngineBuildError(f"{graph}: the {what}'s I/O differs from the contract: {diff[:6]}")


def check_network_io(trt, network, graph: str, cfg: ModelConfig) -> None:
    """The parsed network's I/O against the contract. Checked on the network before the build, so
    it needs no GPU (an engine cannot be deserialised without one)."""
    got = {network.get_input(i).name: ("input", _dtype_name(trt, network.get_input(i).dtype))
           for i in range(network.num_inputs)}
    got |= {network.get_output(i).name: ("output", _dtype_name(trt, network.get_output(i).dtype))
            for i in range(network.num_outputs)}
    _require_contract_io(graph, cfg, got, "network")


def _check_engine_io(trt, logger, blob: bytes, graph: str, cfg: ModelConfig) -> None:
    """The deserialised engine's I/O against the contract (only where a GPU it targets is here)."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
    if engine is None:
        raise EngineBuildError(f"{graph}: TensorRT could not deserialise the engine it just built")
    got = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        got[name] = (mode, _dtype_name(trt, engine.get_tensor_dtype(name)))
    _require_contract_io(graph, cfg, got, "engine")


@dataclass
class BuiltEngine:
    blob: bytes
    plugins: list[str]
    seconds: float
    deserialised: bool  # whether the I/O was also checked on the deserialised engine


def _parse(runtime: Runtime, logger, builder, graph: str, path: Path, strongly_typed: bool):
    """(network, parser): keep the parser alive while the network is used (it owns the weights)."""
    trt = runtime.trt
    network = builder.create_network(runtime.network_flags(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "ENABLE_PLUGIN_OVERRIDE"):
        parser.set_flag(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 5)))
        raise EngineBuildError(f"{graph}: {runtime.title}'s ONNX parser rejected {path}: {errors}")
    return network, parser


def _build_one(runtime: Runtime, logger, plan: BuildPlan, graph: str, target: Target,
               cache_bytes: bytes | None, log_fn: Callable[[str], None]) -> tuple[BuiltEngine, bytes | None]:
    trt = runtime.trt
    opts = plan.options
    path = plan.onnx[graph]
    builder = trt.Builder(logger)
    strongly_typed = not opts.weakly_typed
    log_fn(f"building {ENGINE_FILES[graph]} from {path.name} ({opts.precision}, "
           f"{'strongly typed' if strongly_typed else 'builder flags'}, {runtime.title}, for {target.describe()}) ...")
    network, _parser = _parse(runtime, logger, builder, graph, path, strongly_typed)
    plugins = verify_plugin_layers(graph, plugin_layers(trt, network), onnx_plugin_nodes(path))
    check_network_io(trt, network, graph, plan.cfg)

    config = builder.create_builder_config()
    if opts.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mib) << 20)
    if opts.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if opts.weakly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        if opts.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        # what the strongly typed fp16 ONNX keeps in fp32, kept in fp32 here too (precision_constraints)
        keep, nodes = fp32_layer_names(path)
        constrained, found = constrain_fp32_layers(trt, network, keep, nodes)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        log_fn(f"{graph}: {constrained} layers of {len(found)} of the {len(keep)} fp32 nodes constrained to fp32 "
               "(OBEY_PRECISION_CONSTRAINTS)")
    runtime.apply_target(config, target)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.profile.shapes(graph, plan.cfg).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = None
    if opts.timing_cache is not None:
        cache = config.create_timing_cache(cache_bytes or b"")
        if not config.set_timing_cache(cache, False):
            raise EngineBuildError(f"--timing-cache {opts.timing_cache} was made by another GPU or "
                                   "TensorRT version; delete it or pass another path")

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise EngineBuildError(f"{graph}: {runtime.title} failed to build the engine (see its log above)")
    blob = bytes(serialized)
    new_cache = bytes(config.get_timing_cache().serialize()) if cache is not None else None
    deserialised = runtime.can_deserialize(target)
    if deserialised:
        _check_engine_io(trt, logger, blob, graph, plan.cfg)
    return BuiltEngine(blob, plugins, seconds, deserialised), new_cache


def io_table(graph: str, cfg: ModelConfig) -> dict:
    ins, outs = _graph_specs(graph, cfg)
    row = lambda s: {"name": s.name, "dtype": s.dtype, "shape": list(s.shape)}  # noqa: E731
    return {"inputs": [row(s) for s in ins], "outputs": [row(s) for s in outs]}


def engine_entry(graph: str, plan: BuildPlan, engine_sha256: str, engine_bytes: int, runtime: dict,
                 target: Target, plugin_sha256: str, onnx_sha256: str, plugins_used: list[str],
                 seconds: float, typing: str) -> dict:
    """The manifest entry of one engine (pure: testable without TensorRT). ``runtime`` is
    ``Runtime.manifest_entry()`` (flavour, version, major, minor, patch)."""
    shapes = plan.profile.shapes(graph, plan.cfg)
    return {
        "format": ENGINE_FORMAT,
        "file": ENGINE_FILES[graph],
        "sha256": engine_sha256,
        "bytes": engine_bytes,
        "precision": plan.options.precision,
        "typing": typing,
        "onnx": {"file": plan.onnx[graph].name, "sha256": onnx_sha256},
        "plugin_library": {"file": PLUGIN_LIBRARY, "sha256": plugin_sha256, "plugins": plugins_used},
        "tensorrt": dict(runtime),
        "target": target.to_json(),
        "gpu": target.gpu.to_json() if target.gpu else None,  # the build GPU (TensorRT only)
        "profiles": [{name: {"min": list(lo), "opt": list(opt), "max": list(hi)}
                      for name, (lo, opt, hi) in shapes.items()}],
        "dynamic_axes": plan.profile.to_json(),
        "workspace_mib": plan.options.workspace_mib,
        "tf32_allowed": plan.options.precision != "fp32",
        **io_table(graph, plan.cfg),
        "build_seconds": round(seconds, 1),
    }


def build_engines(options: BuildOptions, log_fn: Callable[[str], None] = log.info) -> dict:
    """Build both engines and write them with the plugin library and the manifest into
    ``options.out_dir``; returns the updated manifest."""
    plan = plan_build(options)
    runtime = load_runtime(options.runtime)
    if options.weakly_typed and not runtime.has_precision_flags:
        raise UserError(f"--weakly-typed needs TensorRT 10's precision builder flags ({runtime.title} has none: "
                         "its networks are always strongly typed); build the fp16/int8 ONNX instead")
    target = runtime.resolve_target(options.compute_capabilities)
    if options.timing_cache is not None and runtime.builds_without_gpu and not runtime.can_deserialize(target):
        raise UserError(f"--timing-cache needs a GPU of the build's targets to time kernels on ({runtime.title} "
                         f"builds for {target.describe()} here without one); drop --timing-cache")
    if plan.plugins is None:
        plan.plugins = resolve_plugin_library(None, Path(options.out_dir), Path(options.onnx_dir))
    logger = runtime.trt.Logger(runtime.trt.Logger.WARNING)
    load_plugins(runtime, plan.plugins)
    cache_bytes = None
    if options.timing_cache is not None and Path(options.timing_cache).is_file():
        cache_bytes = Path(options.timing_cache).read_bytes()
        log_fn(f"timing cache {options.timing_cache} ({len(cache_bytes)} bytes)")
    typing = "strongly typed" if not options.weakly_typed else (
        "builder flags FP16" if options.precision == "fp16" else "builder flags INT8|FP16") + ", fp32 layer constraints"
    out = Path(options.out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(out):  # a second writer of the folder is refused (FolderBusy, exit 2)
            return _build_into(out, runtime, logger, plan, target, cache_bytes, typing, log_fn)
    except BaseException:
        if created:  # a failed build leaves no empty folder behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _build_into(out: Path, runtime: Runtime, logger, plan: BuildPlan, target: Target, cache_bytes: bytes | None,
                typing: str, log_fn: Callable[[str], None]) -> dict:
    options = plan.options
    built: dict[str, BuiltEngine] = {}
    for graph in GRAPHS:
        engine, cache_new = _build_one(runtime, logger, plan, graph, target, cache_bytes, log_fn)
        cache_bytes = cache_new if cache_new is not None else cache_bytes
        built[graph] = engine
        log_fn(f"built {ENGINE_FILES[graph]}: {len(engine.blob) / 1e6:.1f} MB in {engine.seconds:.1f} s "
               f"(plugins: {', '.join(engine.plugins)}; I/O checked on the network"
               f"{' and the deserialised engine' if engine.deserialised else ', not deserialised: no GPU of its targets here'})")

    plugin_sha = sha256_file(plan.plugins)
    # The export's manifest plus the new engines (both are always rebuilt together, so any
    # earlier "engines" entry is replaced as a whole).
    manifest = dict(plan.manifest)
    if out.resolve() != Path(options.onnx_dir).resolve():
        manifest["onnx_dir"] = str(Path(options.onnx_dir).resolve())
    engines = {}
    for graph, engine in built.items():
        atomic_write_bytes(out / ENGINE_FILES[graph], engine.blob)
        engines[graph] = engine_entry(graph, plan, hashlib.sha256(engine.blob).hexdigest(), len(engine.blob),
                                      runtime.manifest_entry(), target, plugin_sha, sha256_file(plan.onnx[graph]),
                                      engine.plugins, engine.seconds, typing)
    lib_dest = out / PLUGIN_LIBRARY
    if not lib_dest.exists() or lib_dest.resolve() != Path(plan.plugins).resolve():
        atomic_write_bytes(lib_dest, Path(plan.plugins).read_bytes())
        os.chmod(lib_dest, 0o755)  # a shared library, readable by whoever runs the engines
    if options.timing_cache is not None and cache_bytes is not None:
        atomic_write_bytes(options.timing_cache, cache_bytes)
    manifest["engines"] = engines
    write_manifest(out, manifest)
    log_fn(f"wrote {out / ENGINE_FILES['precompute']}, {out / ENGINE_FILES['decoder']}, {lib_dest} and "
           f"{out / MANIFEST_FILE}")
    return manifest
