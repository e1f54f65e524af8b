"""``eventspd-export calibrate``: fp16 and int8 (Q/DQ) graphs from real-looking event data,
with an automatic sensitivity choice and an accuracy report.

Flow:
1. the fp32 graphs (exported on the fly when ``onnx_dir`` has none for this configuration);
2. calibration windows from a data source (default: the built-in event simulator), run through
   the fp32 PyTorch model with the ConvGRU state carried from window to window — these give
   the precompute feeds (events, hidden) and, with query sets drawn by the seed's §4.3 sampler,
   the decoder feeds (the real precompute outputs + queries);
3. fp16: ``calibration.fp16.convert_to_fp16`` for both graphs;
4. int8: activation ranges (cached) -> sensitivity pass -> Q/DQ graphs with the chosen groups
   left in float;
5. report: fp32 / fp16 / int8 ONNX against the PyTorch fp32 model on held-out windows at
   K = 256 and 4096 (``report.py``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from calibration import int8 as q8
from calibration.fp16 import convert_to_fp16
from calibration.fp16_headroom import fp16_headroom
from calibration.report import accuracy_report, onnx_pair, write_report
from calibration.sensitivity import choose_float_layers, groups
from eventspd_export.artifacts import onnx_file
from eventspd_export.data.query_sampler import QuerySampler
from eventspd_export.data.sources import open_source
from eventspd_export.data.windows import EventWindow
from eventspd_export.runtime.pair import Stream, stream_depths
from eventspd_export.runtime.torch_pair import TorchPair
from model_def import EventSPD
from model_def.atomic import atomic_write_bytes, check_writable, folder_lock

log = logging.getLogger(__name__)
GRAPHS = ("precompute", "decoder")
PRECISIONS = ("fp16", "int8")


@dataclass
class CalibrationOptions:
    onnx_dir: Path
    out_dir: Path
    data: str = "synthetic"
    calib_windows: int = 6
    eval_windows: int = 3
    method: str = "max"
    budget: float | None = 0.01  # median relative depth error vs fp32; None: no sensitivity pass
    sensitivity_scope: tuple[str, ...] | None = None  # graphs the pass may keep in float
    precisions: tuple[str, ...] = PRECISIONS
    k_calib: int = 256
    k_eval: tuple[int, ...] = (256, 4096)
    cache_dir: Path | None = None
    seed: int = 0

    def validate(self) -> None:
        if self.method not in q8.METHODS:
            raise q8.CalibrationError(f"unknown method {self.method!r}; choose one of {', '.join(q8.METHODS)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise q8.CalibrationError(f"unknown precision {bad[0]!r}; choose from {', '.join(PRECISIONS)}")
        if self.calib_windows < 1 or self.eval_windows < 1:
            raise q8.CalibrationError("need at least one calibration and one held-out window")
        if not self.precisions:
            raise q8.CalibrationError(f"--precision names no precision; choose from {', '.join(PRECISIONS)}")
        from model_def.contract import K_LIMIT

        bad_k = [k for k in (*self.k_eval, self.k_calib) if not 1 <= k <= K_LIMIT]
        if bad_k or not self.k_eval:
            raise q8.CalibrationError(f"--k {','.join(map(str, self.k_eval)) or '(none)'}: every query count must be "
                                      f"in 1..{K_LIMIT}")
        if self.budget is not None and not 0 < self.budget < 1:
            raise q8.CalibrationError(f"--budget {self.budget}: a median relative depth error in (0, 1), or 0 "
                                      "to skip the sensitivity pass")
        # Both folders are created only late (--out after the fp32 export, the cache after the
        # range collection): a path under a regular file, or an unwritable folder, is refused
        # here (OutputPathError naming the option), not as a NotADirectoryError after the work.
        check_writable(self.out_dir, "--out", folder=True)
        if self.cache_dir is not None and "int8" in self.precisions:  # only int8 reads or writes it
            check_writable(self.cache_dir, "--cache-dir", folder=True)


@dataclass
class Feeds:
    windows: list[EventWindow]
    precompute: list[dict[str, np.ndarray]] = field(default_factory=list)
    decoder: list[dict[str, np.ndarray]] = field(default_factory=list)
    depth_fp32: list[np.ndarray] = field(default_factory=list)  # PyTorch depth per decoder feed


def make_feeds(model: EventSPD, windows: list[EventWindow], k: int, seed: int) -> Feeds:
    """Run the fp32 model over consecutive windows (state carried) and draw query sets."""
    cfg = model.cfg
    sampler = QuerySampler(cfg.width, cfg.height)
    rng = np.random.default_rng(seed)
    feeds = Feeds(windows)
    pair = TorchPair(model)
    carrier = Stream(pair)
    for w in windows:
        hidden = carrier.hidden
        pre = carrier.step(w.events)
        queries = sampler.sample(k, rng, events=w.events, depth=w.depth)[None].astype(np.float32)
        feeds.precompute.append({"events": w.events, "hidden": hidden})
        feeds.decoder.append(pair.decoder_feeds(pre, queries))
        feeds.depth_fp32.append(pair.decode(pre, queries)["depth"])
    return feeds


def _median_rel(depths: list[np.ndarray], refs: list[np.ndarray]) -> float:
    rel = np.concatenate([np.abs(d - r).reshape(-1) / np.abs(r).reshape(-1) for d, r in zip(depths, refs)])
    return float(np.median(rel))


def ensure_fp32_graphs(model: EventSPD, onnx_dir: Path, load=None) -> dict[str, Path]:
    """The fp32 graphs of ``model`` in ``onnx_dir``, exported there when absent. ``load`` (the
    checkpoint's LoadReport, None for built-in weights) is recorded in a new export's manifest, and an
    existing export must have been made from those weights: calibrating other graphs against this
    model would report the difference of two models as quantisation error."""
    from eventspd_export.artifacts import check_exported_from, open_export
    from eventspd_export.export.onnx_export import ExportOptions, MANIFEST_FILE, export_onnx

    paths = {g: onnx_dir / onnx_file(g) for g in GRAPHS}
    manifest = onnx_dir / MANIFEST_FILE
    if all(p.is_file() for p in paths.values()) and manifest.is_file():
        # the manifest's configuration, the sha256 of the graphs, readable ONNX (ManifestError: exit 2)
        export = open_export(onnx_dir, "fp32", model.cfg, what="the model is")
        check_exported_from(export.manifest, onnx_dir, load.sha256 if load is not None else "",
                            load.path if load is not None else "the built-in default weights")
        return export.graphs
    log.info("no fp32 graphs in %s: exporting them", onnx_dir)
    export_onnx(model, ExportOptions(onnx_dir), load)
    return paths


def read_windows(model: EventSPD, options: CalibrationOptions) -> list[EventWindow]:
    """The calibration + held-out windows of ``--data``. Read before the fp32 export and before
    --out is created: a missing or bad data set, or one with too few windows, is a user error
    (DataError / CalibrationError) that must cost no export and leave no empty folder."""
    cfg = model.cfg
    need = options.calib_windows + options.eval_windows
    source = open_source(options.data, cfg.width, cfg.height, cfg.window_s)
    try:
        if len(source) < need:  # the count is known once opened: no window need be read for it
            raise q8.CalibrationError(
                f"--data {options.data}: the source has {len(source)} windows; --calib-windows "
                f"{options.calib_windows} + --eval-windows {options.eval_windows} = {need} are needed")
        return list(islice(iter(source), need))  # in memory: the files can be closed
    finally:
        source.close()


@contextlib.contextmanager
def _no_new_empty_folder(path: Path) -> Iterator[None]:
    """On a failure in the block (a late error, Ctrl-C), remove the folders on the way to
    ``path`` that did not exist before it and are still empty: a failed run leaves no empty
    --out (or --onnx-dir) behind. Folders the user had are never touched, and rmdir refuses a
    folder that is not empty (what was written there is complete: the writes are atomic)."""
    new = [p for p in (path, *path.parents) if not p.exists()]  # innermost first
    try:
        yield
    except BaseException:
        for folder in new:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or already gone): its parents are not empty either
        raise


def calibrate(model: EventSPD, options: CalibrationOptions, load=None) -> dict:
    """Write the requested fp16/int8 graphs and the accuracy report; returns the report. ``load``:
    the checkpoint's LoadReport (see ensure_fp32_graphs)."""

    options.validate()
    t0 = time.perf_counter()
    out = Path(options.out_dir)
    windows = read_windows(model, options)  # before the export and before --out exists
    with _no_new_empty_folder(Path(options.onnx_dir)):  # a failed export's folder
        paths = ensure_fp32_graphs(model, Path(options.onnx_dir), load)  # verified before anything is created
    # a completed fp32 export stays even when what follows fails: it is valid, and reused next time
    with _no_new_empty_folder(out):
        out.mkdir(parents=True, exist_ok=True)
        with folder_lock(out):  # a second writer of the folder is refused (FolderBusy, exit 2)
            return _calibrate_into(out, model, options, paths, windows, t0)


def _calibrate_into(out: Path, model: EventSPD, options: CalibrationOptions, paths: dict[str, Path],
                    windows: list[EventWindow], t0: float) -> dict:
    fp32 = {g: onnx.load(str(p)) for g, p in paths.items()}
    calib, held_out = windows[:options.calib_windows], windows[options.calib_windows:]
    log.info("calibration: %d windows (%d events in all) from %s", len(calib),
             sum(w.num_events for w in calib), options.data)
    feeds = make_feeds(model, calib, options.k_calib, options.seed)

    written: dict[str, dict[str, str]] = {}
    models: dict[str, dict[str, onnx.ModelProto]] = {"fp32": fp32}
    headroom = None
    if "fp16" in options.precisions:
        models["fp16"] = {g: convert_to_fp16(m) for g, m in fp32.items()}
        # the report's ONNX Runtime rows cannot show an fp16 overflow (see fp16_headroom)
        headroom = {g: fp16_headroom(paths[g], models["fp16"][g], getattr(feeds, g)) for g in GRAPHS}
    sensitivity = None
    ranges_cached = {}
    if "int8" in options.precisions:
        ranges = {}
        for g in GRAPHS:
            ranges[g], ranges_cached[g] = q8.collect_ranges(
                paths[g], getattr(feeds, g), options.method, options.cache_dir)
        all_groups = {g: groups(fp32[g]) for g in GRAPHS}
        queries = [f["queries"] for f in feeds.decoder]
        calib_events = [w.events for w in calib]

        def evaluate(exclude):
            quant = {g: q8.quantize(paths[g], ranges[g], exclude[g]) for g in GRAPHS}
            pair = onnx_pair(model.cfg, quant["precompute"], quant["decoder"], "onnxruntime-int8")
            return _median_rel(stream_depths(pair, calib_events, queries), feeds.depth_fp32)

        exclude = {g: [] for g in GRAPHS}
        if options.budget is not None:
            sensitivity = choose_float_layers(all_groups, evaluate, options.budget,
                                              options.sensitivity_scope)
            exclude = {g: sensitivity.excluded_nodes(g, all_groups) for g in GRAPHS}
        models["int8"] = {g: q8.quantize(paths[g], ranges[g], exclude[g]) for g in GRAPHS}
        for g, m in models["int8"].items():
            zero = q8.zero_range_inputs(m, ranges[g])
            if zero:
                log.warning("int8 %s: %d quantised tensor(s) were 0 on all the calibration data (%s%s): they get "
                            "ONNX Runtime's scale 1.0; calibrate on data that exercises them", g, len(zero),
                            ", ".join(zero[:3]), ", ..." if len(zero) > 3 else "")
            problems = q8.check_tensorrt_rules(m, exclude[g])
            if problems:
                raise q8.CalibrationError(f"int8 {g}: Q/DQ breaks TensorRT's rules: {problems[:3]}")
    for precision in options.precisions:
        written[precision] = {}
        for g, m in models[precision].items():
            path = out / onnx_file(g, precision)
            atomic_write_bytes(path, m.SerializeToString())
            written[precision][g] = str(path)

    report = accuracy_report(model, models, held_out, options.k_eval, options.seed + 1)
    report["calibration"] = {
        "data": options.data, "calib_windows": len(calib), "held_out_windows": len(held_out),
        "method": options.method, "ranges_from_cache": ranges_cached, "k_calib": options.k_calib,
        "sensitivity": sensitivity.to_json() if sensitivity else None, "fp16_headroom": headroom,
        "files": written, "seconds": round(time.perf_counter() - t0, 1),
    }
    write_report(report, out)
    return report
