"""``eventspd-export check``: Polygraphy's comparator, ONNX Runtime or TensorRT against PyTorch.

What runs:

1. **Reference.** ``windows`` consecutive event windows (the built-in smoke generator
   ``eventspd_export.data.synthetic``, or any calibration source spec), run through the PyTorch fp32
   model with the ConvGRU state carried. Precompute feeds: ``{events, hidden}`` per window.
   Decoder feeds: PyTorch's precompute outputs of the *last* window (non-zero state) with a
   query set of each K. Saved in Polygraphy's formats so that ``polygraphy run`` can repeat any
   comparison: ``SAVE/{precompute,decoder}/inputs.json`` (``polygraphy.json``: a list of feed
   dicts) and ``SAVE/{precompute,decoder}/reference.json`` (``RunResults``, runner ``torch``).
2. **Graphs alone.** ``Comparator.run`` of the backend (``OnnxrtRunner(SessionFromOnnx)`` on the
   precision's ONNX, or ``TrtRunner`` on the built engine with the plugin library loaded) over
   those inputs, then ``Comparator.compare_accuracy`` against the reference with
   ``SimpleCompareFunc`` (``CompareFunc.simple`` in older Polygraphy) and the precision's
   tolerances, per output.
3. **Pipeline.** The backend's precompute over all windows, carrying *its own* state, its
   outputs fed to the backend's decoder (what a deployment runs), ``depth``/``inv_depth``
   compared with the same reference by the same compare function. This is the check that
   matters for int8, whose per-tensor scales change intermediate tensors by design.

Tolerances (``TOLERANCES``; Polygraphy semantics: ``elemwise`` fails an element only when both
its absolute error > atol and its relative error > rtol; a statistic passes when its absolute
value <= atol or its relative value <= rtol — atol 0 makes it a purely relative check):

=========  =======================================  ================================================
precision  precompute outputs (features, state)     depth, inv_depth (decoder and pipeline)
=========  =======================================  ================================================
fp32       elemwise, atol 1e-4, rtol 1e-4           elemwise, atol 0, rtol 1e-4
fp16       median, atol 0, rtol 1e-2                quantile 0.99, atol 0, rtol 1e-2
int8       reported, not gated                      median, atol 0, rtol 2e-2
=========  =======================================  ================================================

Why these:

* **fp32** — both sides compute in fp32; only summation order differs. Measured ONNX Runtime vs
  PyTorch: ~1e-6 of each tensor's scale (max abs error 5e-6 on ``l1_map`` of magnitude 4.6 on
  ``tiny``, 6.4e-6 on ``hd``), depth within 2e-5 relative (``hd``, K = 4096). 1e-4 is
  ``eventspd-export onnx``'s own verification bound and leaves >= 5x headroom; TensorRT fp32
  engines are built without TF32 so the same bound applies to them. ``depth`` is positive and
  bounded away from 0, so it is checked purely relative.
* **fp16** — the fp16 graph keeps LayerNorm statistics, softmax, the coordinate path and the
  depth head in fp32 (``calibration/fp16.py``); everything else rounds at 2^-11 (4.9e-4) per
  op. Feature errors are relative to each element, so near-zero elements have large relative
  errors while the bulk sits at a few ulps: measured median relative error 6e-4..1.4e-3 per
  tensor on ``tiny`` and ``hd``, so the *median* is checked at 1e-2 (7x headroom; scale-free,
  unlike an absolute bound). Depth: the 99th percentile of the relative error ≤ 1 % (measured
  1.8e-4 on ``hd``, max 2.6e-4, on the untrained model, whose depth hardly varies; a trained
  model's fp16 depth error is expected around 1e-3). The 99th percentile instead of the maximum
  because an fp16 engine may pick other anchors among tied routing scores (README "Routing
  ties"), which moves a few queries.
* **int8** — Q/DQ with per-tensor activation scales changes intermediate tensors by design
  (median relative errors 0.3..1 on the untrained model); they are printed for diagnosis but
  cannot be held to a bound that means anything. What the calibration bounds is depth:
  ``eventspd-export calibrate`` keeps layer groups in float until the *median relative depth
  error* on its calibration windows is within its budget (default 1e-2). The check holds held-out
  windows to twice that budget, 2e-2 — measured on ``tiny`` (all Conv/MatMul quantised, ranges
  from two smoke windows): 3e-4 for the decoder alone, 2.3e-3 for the pipeline.

A deliberately perturbed graph (precompute's last weight scaled by 20, the depth head's last
bias shifted by 1) fails them at every precision (tests/check/test_check.py); note that the untrained
default model's depth barely depends on its features, so small perturbations of the decoder move
depth by less than the fp16/int8 bounds (a 1.5x head weight: 2e-3 median), and that in a Q/DQ
graph a scaled weight is clipped by the next QuantizeLinear's calibrated range. The same numbers serve the TensorRT backend: fp32 engines are built
without TF32, fp16/int8 engines are the same typed graphs, and any error of the plugins beyond
the function bodies' is what the check is for.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from eventspd_export.artifacts import GRAPHS, export_limits, open_export, read_manifest
from eventspd_export.check.backends import Backend, emulated_backend, onnxrt_backend, trt_backend
from eventspd_export.check.options import SMOKE, CheckOptions
from eventspd_export.check.tolerances import Tolerance, tolerance_for
from eventspd_export.data.synthetic import random_queries, synthetic_window
from eventspd_export.runtime.pair import Stream, stream
from eventspd_export.runtime.polygraphy_pair import RunnerPair
from eventspd_export.runtime.torch_pair import TorchPair
from model_def import EventSPD
from model_def.atomic import atomic_write_bytes, check_writable
from model_def.errors import CheckFailed, UserError

log = logging.getLogger(__name__)

# ---- reference ----------------------------------------------------------------------------

@dataclass
class Reference:
    ks: tuple[int, ...]
    precompute_inputs: list[OrderedDict] = field(default_factory=list)
    precompute_outputs: list[OrderedDict] = field(default_factory=list)
    decoder_inputs: list[OrderedDict] = field(default_factory=list)  # one per K, last window
    decoder_outputs: list[OrderedDict] = field(default_factory=list)


def _windows(cfg, options: CheckOptions) -> list[np.ndarray]:
    if options.data == SMOKE:
        return [synthetic_window(cfg, options.num_events, seed=100 + i).numpy() for i in range(options.windows)]
    from eventspd_export.data.sources import open_source
    from eventspd_export.data.windows import DataError

    try:
        source = open_source(options.data, cfg.width, cfg.height, cfg.window_s)
        got = [np.asarray(w.events, np.float32) for w in islice(iter(source), options.windows)]
    except DataError as exc:
        raise UserError(str(exc)) from None
    if len(got) < options.windows:
        raise UserError(f"data source {options.data!r} gave {len(got)} windows, {options.windows} are needed")
    return got


def make_reference(model: EventSPD, options: CheckOptions, windows: list[np.ndarray] | None = None) -> Reference:
    """Feeds and PyTorch fp32 outputs of both graphs (see the module docstring)."""
    cfg = model.cfg
    windows = _windows(cfg, options) if windows is None else windows
    ref = Reference(tuple(options.ks))
    pair = TorchPair(model, ops_backend="reference")
    carrier = Stream(pair)
    pre = None
    for events in windows:
        events = np.ascontiguousarray(events, np.float32)
        ref.precompute_inputs.append(OrderedDict(events=events.copy(), hidden=carrier.hidden.copy()))
        pre = carrier.step(events)
        ref.precompute_outputs.append(OrderedDict((n, v.copy()) for n, v in pre.items()))
    for k in options.ks:
        queries = random_queries(cfg, k, seed=options.seed + k).numpy()
        out = pair.decode(pre, queries)
        ref.decoder_inputs.append(OrderedDict((n, v.copy()) for n, v in pair.decoder_feeds(pre, queries).items()))
        ref.decoder_outputs.append(OrderedDict((n, out[n].copy()) for n in ("depth", "inv_depth")))
    return ref


def save_reference(ref: Reference, save_dir: Path) -> dict[str, dict[str, Path]]:
    """Polygraphy-format files of the reference; returns {graph: {"inputs": p, "reference": p}}."""
    from polygraphy.comparator import RunResults
    from polygraphy.json import to_json

    paths = {}
    for graph, inputs, outputs in (("precompute", ref.precompute_inputs, ref.precompute_outputs),
                                   ("decoder", ref.decoder_inputs, ref.decoder_outputs)):
        folder = Path(save_dir) / graph
        folder.mkdir(parents=True, exist_ok=True)
        results = RunResults()
        results.add(outputs, runner_name="torch")
        # polygraphy.json's encoding (what save_json / RunResults.save write), written atomically
        atomic_write_bytes(folder / "inputs.json", to_json(inputs).encode())
        atomic_write_bytes(folder / "reference.json", to_json(results).encode())
        paths[graph] = {"inputs": folder / "inputs.json", "reference": folder / "reference.json"}
    return paths


# ---- comparison ---------------------------------------------------------------------------

@dataclass
class Row:
    part: str  # precompute | decoder | pipeline
    output: str
    k: int | None
    tolerance: Tolerance
    max_abs: float
    max_rel: float
    median_rel: float
    checked: float | None  # the checked statistic (None for elemwise)
    passed: bool

    @property
    def verdict(self) -> str:
        if not self.tolerance.gating:
            return "info"
        return "pass" if self.passed else "FAIL"


@dataclass
class CheckReport:
    backend: str
    precision: str
    rows: list[Row] = field(default_factory=list)
    files: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed or not r.tolerance.gating for r in self.rows)

    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.tolerance.gating and not r.passed]


@contextlib.contextmanager
def _quiet_polygraphy():
    """Polygraphy logs every output's statistics at INFO; the table below says it once."""
    from polygraphy.logger import G_LOGGER

    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    old = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.ERROR + 1
    try:
        yield
    finally:
        G_LOGGER.module_severity = old


def _compare_func(precision: str, outputs: list[str]):
    """Polygraphy's simple comparison with per-output tolerances (``SimpleCompareFunc``; older
    Polygraphy spells it ``CompareFunc.simple``, deprecated since)."""
    try:
        from polygraphy.comparator import SimpleCompareFunc as simple
    except ImportError:
        from polygraphy.comparator import CompareFunc

        simple = CompareFunc.simple
    atol, rtol, stat, quant = {}, {}, {}, {}
    for name in outputs:
        atol[name], rtol[name], stat[name], q = tolerance_for(precision, name).polygraphy()
        quant[name] = q if q is not None else 0.99
    kwargs = dict(atol=atol, rtol=rtol, check_error_stat=stat)
    if "error_quantile" in inspect.signature(simple).parameters:
        kwargs["error_quantile"] = quant
    return simple(**kwargs)


def _accuracy_iterations(accuracy) -> list:
    """The per-iteration {output: OutputCompareResult} list of the one runner pair, from the
    AccuracyResult (Polygraphy <= 0.49) or AccuracyResults (newer) that compare_accuracy returns."""
    results = [accuracy] if hasattr(accuracy, "items") else list(accuracy)
    for result in results:
        for _pair, iterations in result.items():
            return list(iterations)
    return []


def _rows(part: str, precision: str, iterations: list, expected: list[list[str]], ks: list[int | None]) -> list[Row]:
    rows = []
    groups: dict[tuple[str, int | None], list] = OrderedDict()
    for it, names, k in zip(iterations, expected, ks):
        for name in names:
            groups.setdefault((name, k), []).append(it.get(name) if hasattr(it, "get") else None)
    for (name, k), results in groups.items():
        tol = tolerance_for(precision, name)
        present = [r for r in results if r is not None]
        if len(present) < len(results):  # the backend did not produce it
            rows.append(Row(part, name, k, tol, math.nan, math.nan, math.nan, None, False))
            continue
        stat_attr = {"median": "median_reldiff", "mean": "mean_reldiff", "max": "max_reldiff",
                     "quantile": "quantile_reldiff"}.get(tol.stat)

        def worst(attr):
            vals = [getattr(r, attr, None) for r in present]
            vals = [math.nan if v is None else float(v) for v in vals]
            return max(vals, key=lambda v: math.inf if math.isnan(v) else v) if vals else math.nan

        checked = worst(stat_attr) if (stat_attr and tol.gating) else None
        rows.append(Row(part, name, k, tol, worst("max_absdiff"), worst("max_reldiff"),
                        worst("median_reldiff"), checked, all(bool(r) for r in present)))
    return rows


def _compare(precision: str, runner_name: str, outputs: list[OrderedDict], reference: list[OrderedDict]):
    from polygraphy.comparator import Comparator, RunResults

    results = RunResults()
    results.add(outputs, runner_name=runner_name)
    results.add(reference, runner_name="torch")
    names = sorted({n for ref in reference for n in ref})
    return _accuracy_iterations(Comparator.compare_accuracy(results, compare_func=_compare_func(precision, names)))


def _run_graph(backend: Backend, graph: str, feeds: list[OrderedDict]) -> list[OrderedDict]:
    from polygraphy.comparator import Comparator

    kwargs = {"streaming": False} if "streaming" in inspect.signature(Comparator.run).parameters else {}
    run = Comparator.run([backend.make_runner(graph)], data_loader=feeds, **kwargs)
    (_, iterations), = list(run.items()) if hasattr(run, "items") else list(run)
    return [OrderedDict((k, np.asarray(v)) for k, v in it.items()) for it in iterations]


def _run_pipeline(backend: Backend, ref: Reference) -> list[OrderedDict]:
    """Backend precompute over the windows (own state) -> backend decoder, for each K."""
    with RunnerPair(None, backend.make_runner, backend.name) as pair:
        out = None
        for out in stream(pair, (feed["events"] for feed in ref.precompute_inputs),
                          ref.precompute_inputs[0]["hidden"]):
            pass  # each window continues the previous one's state; the decoder reads the last
        return [OrderedDict(pair.decode(out, dec_feed["queries"])) for dec_feed in ref.decoder_inputs]


def run_check(model: EventSPD, options: CheckOptions, log_fn=log.info) -> CheckReport:
    """Reference, saved files, graph-alone and pipeline comparisons; returns the report."""
    options.validate()
    onnx_dir = Path(options.onnx_dir)
    # the folder, its manifest, the configuration, the sha256 of the fp32 graphs, readable ONNX
    # (the trt backend reads engines: only the fp32 export has to be there)
    graphs_precision = "fp32" if options.backend == "trt" else options.precision
    manifest = open_export(onnx_dir, graphs_precision, model.cfg, what="the reference model is").manifest
    if options.backend == "trt":
        engine_manifest = read_manifest(options.engine_dir) if options.engine_dir else manifest
        backend = trt_backend(options, engine_manifest)
    elif options.backend == "emulated":
        backend = emulated_backend(options)
    else:
        backend = onnxrt_backend(options)
    limits = backend.limits
    exported = export_limits(manifest)
    if exported["k_max"] is not None and max(options.ks) > exported["k_max"]:
        raise UserError(f"--k {max(options.ks)} is above the K the graphs in {onnx_dir} were exported for "
                        f"(--k-max {exported['k_max']}); pass a smaller --k or re-export with a larger --k-max")
    if limits:
        bad = [k for k in options.ks if not limits["k_min"] <= k <= limits["k_max"]]
        if bad:
            raise UserError(f"--k {bad[0]} is outside the decoder engine's profile "
                             f"{limits['k_min']}..{limits['k_max']}; rebuild with `eventspd-export trt --k-max`")
    for folder in (options.save, *(options.save / g for g in GRAPHS)):  # where save_reference writes, first
        check_writable(folder, "--save", folder=True)
    report = CheckReport(options.backend, options.precision)
    windows = _windows(model.cfg, options)  # a bad --data spec fails before any work
    n_most = max((w.shape[0] for w in windows), default=0)
    if exported["events_max"] is not None and n_most > exported["events_max"]:
        raise UserError(f"a window has {n_most} events, above the {exported['events_max']} the graphs in {onnx_dir} "
                        "were exported for (--events-max); pass fewer --events or re-export")
    log_fn(f"reference: PyTorch fp32 {model.cfg.name}, {options.windows} windows of "
           f"{options.data if options.data != SMOKE else f'{options.num_events} smoke events'}, K={list(options.ks)}")
    ref = make_reference(model, options, windows)
    if limits:
        n_max = max(f["events"].shape[0] for f in ref.precompute_inputs)
        if n_max > limits["events_max"]:
            raise UserError(f"a window has {n_max} events, above the precompute engine's profile maximum "
                             f"{limits['events_max']}; pass fewer --events or rebuild with --events-max")
    report.files = save_reference(ref, options.save)
    log_fn(f"saved Polygraphy inputs/reference under {options.save}")

    try:
        with _quiet_polygraphy():
            _compare_all(backend, options, ref, report)
    except backend.run_errors as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise CheckFailed(f"{backend.name} could not run a graph: {'; '.join(lines)}") from None
    return report


def _compare_all(backend: Backend, options: CheckOptions, ref: Reference, report: CheckReport) -> None:
    """Each graph alone, then the pipeline; the rows go into ``report``."""
    pre_names = [list(o) for o in ref.precompute_outputs]
    dec_names = [list(o) for o in ref.decoder_outputs]
    got = _run_graph(backend, "precompute", ref.precompute_inputs)
    report.rows += _rows("precompute", options.precision,
                         _compare(options.precision, backend.name, got, ref.precompute_outputs),
                         pre_names, [None] * len(got))
    got = _run_graph(backend, "decoder", ref.decoder_inputs)
    report.rows += _rows("decoder", options.precision,
                         _compare(options.precision, backend.name, got, ref.decoder_outputs),
                         dec_names, list(options.ks))
    got = _run_pipeline(backend, ref)
    report.rows += _rows("pipeline", options.precision,
                         _compare(options.precision, backend.name + "-pipeline", got, ref.decoder_outputs),
                         dec_names, list(options.ks))
