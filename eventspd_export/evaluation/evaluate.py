"""Held-out depth accuracy of a model, in PyTorch and through exported ONNX graphs.

Protocol (one place, used by ``eventspd-export evaluate``, the README's demo figures and the
test that checks them):

* windows come from ``--data`` (default ``synthetic:1``: scenes the demo training, which uses
  seed 0, never saw), in sequences of ``sequence`` windows run from h_0 = 0 through the
  ConvGRU — the BPTT length the model was trained with;
* in every window with ground truth, ``k`` query pixels are drawn uniformly among the
  GT-valid pixels (integer pixel centres, seeded by (seed, window)), the way a sparse-query
  user asks for depth where it can be checked;
* the metrics (``metrics.depth_metrics``: AbsRel, RMSE, δ<1.25/1.25²/1.25³, SILog, ...) pool
  every scored query, over all depths and with the 10/20/30 m cut-offs of E2Depth / Depth
  AnyEvent;
* the reference "constant-depth predictor" answers one depth everywhere: the constant that
  minimises AbsRel on the evaluated queries themselves (the 1/depth-weighted median of the
  ground truth: an oracle, so the strongest depth-blind baseline there is for AbsRel).

ONNX graphs (``onnx_dir``) run on the same windows and queries with their own recurrent
state, and their agreement with PyTorch is reported next to their metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eventspd_export.data.sources import is_synthetic, open_source
from eventspd_export.data.windows import DataError
from eventspd_export.evaluation.metrics import CUTOFFS_M, agreement, depth_metrics, gt_at_queries
from eventspd_export.runtime.ort_pair import OrtPair
from eventspd_export.runtime.pair import ModelPair, Stream
from eventspd_export.runtime.torch_pair import TorchPair
from model_def import EventSPD
from model_def.errors import UserError

TABLE_METRICS = ("abs_rel", "rmse", "delta1", "delta2", "delta3", "silog")


@dataclass
class EvalOptions:
    data: str = "synthetic:1"
    k: int = 256
    windows: int = 32
    sequence: int = 4
    seed: int = 0
    onnx_dir: Path | None = None
    # Ablation: run every window with its events removed (the model then answers from its
    # priors and the query position alone) — how much of the accuracy comes from the events.
    drop_events: bool = False
    # the sha256 of the checkpoint the model was loaded from ("" for built-in weights): the graphs of
    # onnx_dir must have been exported from it, or their comparison with PyTorch means nothing
    checkpoint_sha256: str = ""

    def validate(self) -> None:
        if self.k < 1 or self.windows < 1 or self.sequence < 1:
            raise UserError(f"evaluate: --k, --windows and --sequence must be >= 1 "
                             f"(got {self.k}, {self.windows}, {self.sequence})")


def window_queries(depth: np.ndarray, k: int, seed: int, index: int) -> np.ndarray:
    """The queries ``evaluate`` scores in window ``index``: deterministic in (seed, index), so
    every predictor (and scripts/absrel_probe.py) sees the same pixels."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1, index]))
    return valid_pixel_queries(depth, k, rng)


def valid_pixel_queries(depth: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k pixel centres (u, v) drawn uniformly, with replacement, among GT-valid pixels."""
    valid = np.flatnonzero(np.isfinite(depth) & (depth > 0))
    if valid.size == 0:
        return np.zeros((0, 2), np.float32)
    flat = valid[rng.integers(0, valid.size, k)]
    w = depth.shape[1]
    return np.stack([flat % w, flat // w], axis=1).astype(np.float32)


def _onnx_pair(onnx_dir: Path, model: EventSPD, checkpoint_sha256: str) -> OrtPair:
    from eventspd_export.artifacts import check_exported_from, open_export

    # the folder, its manifest, the configuration, the sha256 of the graphs, readable ONNX
    manifest = open_export(onnx_dir, "fp32", model.cfg, what="the checkpoint is").manifest
    # as `check` refuses it (inspect_model.reference_model)
    check_exported_from(manifest, onnx_dir, checkpoint_sha256, "the checkpoint evaluated")
    return OrtPair.from_folder(model.cfg, onnx_dir)


def evaluate(model: EventSPD, options: EvalOptions) -> dict:
    options.validate()
    cfg = model.cfg
    model.eval()
    synthetic = is_synthetic(options.data)
    extra = {"num_windows": options.windows, "windows_per_scene": options.sequence} if synthetic else {}
    try:
        source = open_source(options.data, cfg.width, cfg.height, cfg.window_s, **extra)
    except DataError as exc:
        raise UserError(str(exc)) from None
    pairs: dict[str, ModelPair] = {"pytorch": TorchPair(model)}
    if options.onnx_dir:
        pairs["onnx"] = _onnx_pair(Path(options.onnx_dir), model, options.checkpoint_sha256)
    streams = {name: Stream(pair) for name, pair in pairs.items()}
    preds: dict[str, list] = {name: [] for name in pairs}
    gts, scored = [], 0
    try:
        if not source.has_depth:
            raise UserError(f"--data {options.data}: no depth ground truth to evaluate against")
        count = min(options.windows, len(source))
        for i in range(count):
            window = source.window(i)
            if options.drop_events:
                window.events = window.events[:0]
            if i % options.sequence == 0:
                for s in streams.values():
                    s.reset()
            shared = {name: s.step(window.events) for name, s in streams.items()}
            if window.depth is None:
                continue
            queries = window_queries(window.depth, options.k, options.seed, i)
            if len(queries) == 0:
                continue
            scored += 1
            gts.append(gt_at_queries(window.depth, queries))
            for name, pair in pairs.items():
                preds[name].append(pair.decode(shared[name], queries[None])["depth"][0])
    finally:
        source.close()
    if not gts:
        raise UserError(f"--data {options.data}: none of the {options.windows} windows has "
                         "valid depth ground truth")
    gt = np.concatenate(gts)
    constant = np.full_like(gt, best_constant(gt))
    rows = {name: _metric_set(np.concatenate(p), gt) for name, p in preds.items()}
    rows["best constant"] = _metric_set(constant, gt)
    model_max_depth = 1.0 / cfg.depth_eps  # eq. 26: the inverse depth's floor
    report = {"config": cfg.name, "data": options.data, "windows": count, "windows_requested": options.windows,
              "scored_windows": scored,
              "sequence": options.sequence, "k": options.k, "seed": options.seed,
              "events": "dropped" if options.drop_events else "as recorded",
              "queries": int(gt.size),
              "gt_median_m": float(np.median(gt)), "best_constant_m": float(constant[0]),
              # the model cannot predict beyond 1/depth_eps (eq. 26); a dataset's "far" sentinel
              # (1e30, 65535 m) scored in the "all" rows would look like a model error there
              "model_max_depth_m": model_max_depth,
              "gt_beyond_model_range": int(np.count_nonzero(gt > model_max_depth)),
              "metrics": rows}
    if "onnx" in pairs:
        report["onnx_vs_pytorch"] = agreement(np.concatenate(preds["onnx"]),
                                              np.concatenate(preds["pytorch"]))
    return report


def best_constant(gt: np.ndarray) -> float:
    """argmin_c mean(|c - g| / g): the median of g weighted by 1/g."""
    g = np.sort(np.asarray(gt, np.float64))
    cum = np.cumsum(1.0 / g)
    return float(g[np.searchsorted(cum, 0.5 * cum[-1])])


def _metric_set(pred: np.ndarray, gt: np.ndarray) -> dict:
    out = {"all": depth_metrics(pred, gt)}
    for cut in CUTOFFS_M:
        out[f"{cut:g}m"] = depth_metrics(pred, gt, max_depth=cut)
    return out


def markdown_table(report: dict) -> str:
    """The README's table of a report (one row per predictor and depth range)."""
    lines = ["| predictor | range | queries | AbsRel | RMSE (m) | δ<1.25 | δ<1.25² | δ<1.25³ | SILog |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, sets in report["metrics"].items():
        for rng, m in sets.items():
            lines.append(f"| {name} | {rng} | {m['count']} | {m['abs_rel']:.3f} | {m['rmse']:.2f} | "
                         f"{m['delta1']:.3f} | {m['delta2']:.3f} | {m['delta3']:.3f} | "
                         f"{m['silog']:.1f} |")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    lines = [f"{report['config']} on {report['data']}: {report['scored_windows']} windows with "
             f"ground truth (sequences of {report['sequence']} from h0 = 0), K = {report['k']} "
             f"GT-valid queries each, {report['queries']} in all; median GT "
             f"{report['gt_median_m']:.2f} m; best constant {report['best_constant_m']:.2f} m"
             + ("; EVENTS DROPPED (ablation)" if report.get("events") == "dropped" else "")
             + (f"; the source holds {report['windows']} windows, fewer than the {report['windows_requested']} "
                "of --windows" if report.get("windows_requested", 0) > report["windows"] else ""),
             f"{'predictor':<22}{'range':>7}{'count':>7}  AbsRel    RMSE  d<1.25 d<1.25^2 "
             f"d<1.25^3  SILog"]
    for name, sets in report["metrics"].items():
        for rng, m in sets.items():
            lines.append(f"{name:<22}{rng:>7}{m['count']:>7}  {m['abs_rel']:6.3f} {m['rmse']:7.3f}"
                         f"  {m['delta1']:6.3f}   {m['delta2']:6.3f}   {m['delta3']:6.3f} "
                         f"{m['silog']:6.2f}")
    if report.get("gt_beyond_model_range"):
        lines.append(f"warning: {report['gt_beyond_model_range']} of the {report['queries']} ground-truth depths "
                     f"are beyond the {report['model_max_depth_m']:g} m the model can predict (1/depth_eps), "
                     "e.g. a dataset's far-depth sentinel: they count in the 'all' rows; the cut-off rows "
                     "leave them out")
    if "onnx_vs_pytorch" in report:
        a = report["onnx_vs_pytorch"]
        lines.append(f"ONNX Runtime vs PyTorch depth: max rel {a['max_rel']:.2e}, "
                     f"median {a['median_rel']:.2e}")
    return "\n".join(lines)
