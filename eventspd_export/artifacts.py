"""An export folder: its file names, its manifest, and the one check every command makes before
it reads the graphs ("this folder holds these graphs, at this precision, for this configuration,
and they are the files the manifest describes").

``open_export(folder, precision, cfg)`` is used by ``trt``, ``check``, ``evaluate --onnx``,
``calibrate`` and ``bench``; it raises ``ManifestError`` (a ``UserError``: one ``error:`` line,
exit code 2) naming the file and what to do when

* the folder or its ``eventspd.manifest.json`` is missing or not a manifest;
* the manifest's configuration is not the model's (``cfg``);
* a graph of the precision is missing, or is not a readable ONNX file (truncated, corrupt);
* an fp32 graph is not the one whose sha256 the manifest records (replaced after the export).

(The fp16/int8 graphs of ``calibrate`` carry no hash in the manifest; they are checked for being
readable ONNX.)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from model_def.atomic import atomic_write_bytes
from model_def.checkpoint import sha256_file
from model_def.config import ModelConfig
from model_def.contract import NUM_EVENTS, NUM_QUERIES

from model_def.errors import UserError

MANIFEST_FILE = "eventspd.manifest.json"
GRAPHS = ("precompute", "decoder")
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_FILES = {"precompute": "precompute.engine", "decoder": "decoder.engine"}
PLUGIN_LIBRARY = "libeventspd_plugins.so"


def onnx_file(graph: str, precision: str = "fp32") -> str:
    """File name of a graph at a precision: ``precompute.onnx``, ``decoder.fp16.onnx``,
    ``precompute.int8.onnx`` (calibrate writes them, trt and check read them)."""
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"


ACCURACY_REPORT_FILES = ("accuracy_report.json", "accuracy_report.md")  # calibrate's report
# What calibrate derives from the fp32 graphs. They carry no hash of their own, so an export that
# replaces the fp32 graphs removes them (trt and check would otherwise take them for the new ones).
DERIVED_FILES = tuple(onnx_file(g, p) for p in PRECISIONS if p != "fp32" for g in GRAPHS) + ACCURACY_REPORT_FILES


class ManifestError(UserError):
    """The export's manifest is missing, unreadable, or does not match the files."""


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path} not found: export the graphs first with `eventspd-export onnx "
                            f"--out {folder}` (the manifest is written next to them)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} is not readable JSON ({exc}); re-export the graphs") from None
    if not isinstance(manifest, dict) or "config" not in manifest or "graphs" not in manifest:
        raise ManifestError(f"{path} is not an eventspd-export manifest (no config/graphs); re-export")
    problem = _manifest_shape_problem(manifest)
    if problem:
        raise ManifestError(f"{path} is not a valid eventspd-export manifest: {problem}; re-export")
    return manifest


def _manifest_shape_problem(manifest: dict) -> str | None:
    """The types every reader relies on (a hand-edited or foreign file would otherwise surface as an
    AttributeError or TypeError deep inside a command), or None."""
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(manifest["config"], dict):
        return "config is not an object"
    graphs = manifest["graphs"]
    if not isinstance(graphs, dict) or not all(isinstance(g, dict) for g in graphs.values()):
        return "graphs is not an object of graph entries"
    if any(not isinstance(g.get("sha256", ""), str) for g in graphs.values()):
        return "a graph's sha256 is not a string"
    for key in ("checkpoint", "engines"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            return f"{key} is not an object"
    axes = manifest.get("dynamic_axes")
    if axes is not None:
        if not isinstance(axes, dict):
            return "dynamic_axes is not an object"
        for name, axis in axes.items():
            if not isinstance(axis, dict) or not all(is_int(axis.get(b, 0)) and axis.get(b, 0) >= 0
                                                      for b in ("min", "max")):
                return f"dynamic_axes.{name} is not an object of integer min/max >= 0"
            if axis.get("min", 0) > axis.get("max", axis.get("min", 0)):
                return f"dynamic_axes.{name} has min {axis['min']} above max {axis['max']}"
    ops = manifest.get("plugin_ops")
    if ops is not None and (not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops)):
        return "plugin_ops is not a list of objects"
    return None


def export_limits(manifest: dict) -> dict[str, int | None]:
    """The largest K and events per window the export was made for (``--k-max``, ``--events-max``;
    None where the manifest does not say): ``{"k_max": .., "events_max": ..}``."""
    axes = manifest.get("dynamic_axes") or {}
    return {"k_max": (axes.get(NUM_QUERIES) or {}).get("max"),
            "events_max": (axes.get(NUM_EVENTS) or {}).get("max")}


def holds_same_graphs(folder: str | os.PathLike, manifest: dict) -> bool:
    """Whether ``folder``'s own manifest describes the fp32 graphs of ``manifest`` (by sha256); False
    where it has none or it cannot be read."""
    try:
        theirs = read_manifest(folder)["graphs"]
    except ManifestError:
        return False
    return all((theirs.get(g) or {}).get("sha256") == (manifest["graphs"].get(g) or {}).get("sha256") for g in GRAPHS)


def check_exported_from(manifest: dict, folder: str | os.PathLike, checkpoint_sha256: str, what: str) -> None:
    """Refuses (ManifestError) graphs exported from other weights than ``checkpoint_sha256``'s (""
    for the built-in default weights): comparing them with this model measures nothing."""
    recorded = (manifest.get("checkpoint") or {}).get("sha256") or ""
    if recorded != checkpoint_sha256:
        exported = f"checkpoint {manifest['checkpoint'].get('path')}" if recorded else "the built-in default weights"
        raise ManifestError(f"the graphs in {folder} were exported from {exported}, not from {what}: pass that "
                            "checkpoint, or re-export from this one")


def manifest_config(manifest: dict) -> ModelConfig:
    try:
        return ModelConfig.from_dict(manifest["config"])
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"the manifest's configuration is not valid: {exc}") from None


def json_safe(value):
    """``value`` with every NaN or infinite float as None: ``json.dumps`` would write them as the
    bare tokens NaN/Infinity, which are not JSON (a standard parser such as the C++ example's or
    JavaScript's rejects the whole file). Used with ``allow_nan=False`` by every JSON file written."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_bytes(value) -> bytes:
    """Standard JSON (see json_safe), indented, with a final newline: every JSON file written."""
    return (json.dumps(json_safe(value), indent=1, allow_nan=False) + "\n").encode()


def write_manifest(folder: str | os.PathLike, manifest: dict) -> Path:
    path = Path(folder) / MANIFEST_FILE
    atomic_write_bytes(path, json_bytes(manifest))
    return path


def check_onnx_readable(path: Path) -> None:
    """A truncated or corrupt ONNX file is a user error with its name, not a parser crash."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as exc:
        raise ManifestError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {exc}); re-export it "
                            "(truncated or corrupt)") from None
    if not model.graph.node:
        raise ManifestError(f"{path} holds no graph nodes (truncated or not an ONNX model); re-export it")


@dataclass(frozen=True)
class Export:
    """A verified export folder."""

    folder: Path
    manifest: dict
    cfg: ModelConfig
    graphs: dict[str, Path]  # graph -> ONNX file of the requested precision


def _how_to_make(folder: Path, precision: str) -> str:
    if precision == "fp32":
        return f"`eventspd-export onnx --out {folder}`"
    return f"`eventspd-export calibrate --precision {precision} --onnx-dir {folder} --out {folder}`"


def open_export(folder: str | os.PathLike, precision: str = "fp32", cfg: ModelConfig | None = None,
                what: str = "the graphs") -> Export:
    """Read and verify an export folder (see the module docstring); writes nothing."""
    folder = Path(folder)
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if not folder.is_dir():
        raise ManifestError(f"ONNX folder {folder} does not exist: export with `eventspd-export onnx "
                            f"--out {folder}` first")
    fp32_names = [onnx_file(g) for g in GRAPHS]
    if not (folder / MANIFEST_FILE).exists() and not any((folder / n).exists() for n in fp32_names):
        derived = [n for n in DERIVED_FILES if n.endswith(".onnx") and (folder / n).exists()]
        if derived:  # what `calibrate --out` wrote apart from its export
            raise ManifestError(f"{folder} holds {', '.join(derived)} but not the export they were made from: "
                                "they are read next to its fp32 graphs and manifest; pass that folder, or run "
                                "`eventspd-export calibrate` with --out equal to its --onnx-dir")
        raise ManifestError(f"{folder} holds no export (no {', '.join(fp32_names)}, {MANIFEST_FILE}): create it "
                            f"with `eventspd-export onnx --out {folder}`")
    manifest = read_manifest(folder)
    stored = manifest_config(manifest)
    if cfg is not None and stored != cfg:
        raise ManifestError(f"{folder}: its graphs are for configuration {stored.name!r} ({stored.width}x"
                            f"{stored.height}), {what} {cfg.name!r} ({cfg.width}x{cfg.height}); pass the matching "
                            "--config/checkpoint or another folder")
    paths = {g: folder / onnx_file(g, precision) for g in GRAPHS}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise ManifestError(f"{', '.join(missing)} not found in {folder}: create "
                            f"{'it' if len(missing) == 1 else 'them'} with {_how_to_make(folder, precision)}")
    unverified = set(paths.values())
    for g in GRAPHS:  # the fp32 graphs must be the ones the manifest describes
        fp32 = folder / onnx_file(g, "fp32")
        want = (manifest["graphs"].get(g) or {}).get("sha256")
        if not fp32.is_file():
            raise ManifestError(f"{fp32} not found: the manifest in {folder} describes it; re-export both graphs")
        if want and sha256_file(fp32) != want:
            raise ManifestError(f"{fp32} does not match the sha256 in {folder / MANIFEST_FILE}: the "
                                "graph was replaced after the export; re-export both graphs")
        # a matching hash proves the file is the exporter's own; only the others are parsed
        if want:
            unverified.discard(fp32)
        else:
            unverified.add(fp32)
    for path in sorted(unverified):
        check_onnx_readable(path)
    return Export(folder, manifest, stored, paths)
