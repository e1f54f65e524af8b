"""``eventspd-export onnx``: precompute.onnx + decoder.onnx (dynamic K) + the manifest.

Export path: torch's TorchScript ONNX exporter traces two thin wrapper modules (one per phase,
inputs and outputs in the contract's order and names). The plugin ops are written as custom
nodes by ``model_def.ops`` during tracing; this module then adds their model-local function
bodies (``onnx_functions``), or inlines them for ``--no-plugins``, fixes the IR version,
checks the graphs, and writes every file atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx.inliner
import torch
from torch import nn

from model_def import EventSPD, contract, fused_block, ops
from model_def.contract import EVENTS_LIMIT, K_LIMIT
from model_def.atomic import atomic_write_bytes, check_writable, folder_lock
from model_def.checkpoint import LoadReport
from model_def.layers import ConvNeXtV2Block

from eventspd_export import __version__
from eventspd_export.artifacts import DERIVED_FILES, MANIFEST_FILE, holds_same_graphs, json_bytes, onnx_file  # noqa: F401 (re-exported: the export's file names)
from model_def.errors import UserError
from eventspd_export.export.onnx_functions import FUNCTION_BUILDERS
from eventspd_export.data.synthetic import random_queries, synthetic_window

log = logging.getLogger(__name__)

# ONNX Runtime 1.31/1.32 reject the IR version 14 that onnx 1.23 writes by default.
IR_VERSION = 10
# 17 is the default: GridSample's mode is "bilinear" up to opset 19 (opset 20 renamed it, a
# known importer trap), and ScatterElements reduction="add" needs 16.
OPSETS = (17, 18, 19)
DEFAULT_OPSET = 17
PRECOMPUTE_FILE = "precompute.onnx"
DECODER_FILE = "decoder.onnx"


@dataclass(frozen=True)
class ExportOptions:
    out_dir: Path
    opset: int = DEFAULT_OPSET
    k_max: int = 4096
    events_max: int = 2_000_000
    plugins: bool = True
    # each ConvNeXt-V2 block as one EventSPDConvNeXtBlock plugin node (F^3's, L1's, L2's): opt-in
    # until a GPU measurement shows TensorRT runs the plugin faster than its own fusion of the
    # block's standard ops
    fused_blocks: bool = False

    def validate(self) -> None:
        if self.fused_blocks and not self.plugins:
            raise UserError("--fused-blocks writes the blocks as plugin nodes and --no-plugins asks for standard "
                            "ops only: use one of them")
        if self.opset not in OPSETS:
            raise UserError(f"--opset {self.opset} is not supported; choose one of "
                             f"{', '.join(map(str, OPSETS))} (opset 20 renamed GridSample's modes)")
        if not 1 <= self.k_max <= K_LIMIT:
            raise UserError(f"--k-max {self.k_max} is outside what the graphs support: 1..{K_LIMIT}")
        if not 1 <= self.events_max <= EVENTS_LIMIT:
            raise UserError(f"--events-max {self.events_max} is outside what the graphs support: "
                             f"1..{EVENTS_LIMIT}")


class PrecomputeGraph(nn.Module):
    """Phase A with contract-ordered positional outputs."""

    def __init__(self, model: EventSPD):
        super().__init__()
        self.model = model
        self.names = [s.name for s in contract.precompute_outputs(model.cfg)]

    def forward(self, events: torch.Tensor, hidden: torch.Tensor):
        out = self.model.precompute(events, hidden)
        return tuple(out[n] for n in self.names)


class DecoderGraph(nn.Module):
    """Phase B taking the shared tensors positionally, then ``queries``."""

    def __init__(self, model: EventSPD):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor):
        pre = dict(zip(contract.SHARED_NAMES, inputs[:-1]))
        return self.model.decode(pre, inputs[-1])


def _trace_to_onnx(module: nn.Module, args: tuple, inputs, outputs, opset: int) -> onnx.ModelProto:
    dynamic = {}
    for spec in (*inputs, *outputs):
        axes = {i: s for i, s in enumerate(spec.shape) if isinstance(s, str)}
        if axes:
            dynamic[spec.name] = axes
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that writes custom-domain nodes
        # from autograd.Function.symbolic (ARCHITECTURE §3); tracer warnings are about the
        # static shape checks in the model, which hold for the exported configuration.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=opset,
                          custom_opsets={ops.PLUGIN_DOMAIN: 1},
                          input_names=[s.name for s in inputs],
                          output_names=[s.name for s in outputs],
                          dynamic_axes=dynamic, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _set_io_shapes(model: onnx.ModelProto, specs) -> None:
    """Write the contract's dims onto the graph inputs/outputs (the tracer leaves some as
    generated symbols, e.g. the batch dim of ``depth``)."""
    by_name = {s.name: s for s in specs}
    for value in (*model.graph.input, *model.graph.output):
        spec = by_name[value.name]
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(spec.shape):
            raise RuntimeError(f"{value.name}: graph rank {len(dims)} vs contract {spec.shape}")
        for dim, want in zip(dims, spec.shape):
            dim.Clear()
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want


def _reshapes_allow_zero(model: onnx.ModelProto) -> int:
    """Set ``allowzero=1`` on every Reshape whose target shape is computed from ``Shape`` at run time.

    Those shapes are built from the sizes of real tensors, so a 0 in them is an empty axis (K = 0
    queries, N = 0 events); with ONNX's default ``allowzero=0`` a 0 means "copy the input's
    axis", which breaks when the ranks differ and makes TensorRT call a profile minimum of 0
    "not self-consistent" (ARCHITECTURE §8). A literal 0 among the constants that feed such a
    shape would mean "copy" (torch emits those for some ops, e.g. group_norm); none may be there,
    or the export stops rather than change its meaning. Returns the number of nodes changed."""
    from onnx import numpy_helper

    producer = {o: n for n in model.graph.node for o in n.output}
    initial = {i.name: i for i in model.graph.initializer}

    def from_shape(name: str, seen: set) -> bool:
        """Whether a ``Shape`` op is among the producers of ``name``."""
        node = producer.get(name)
        if node is None or name in seen:
            return False
        seen.add(name)
        return node.op_type == "Shape" or any(from_shape(i, seen) for i in node.input)

    def literal(name: str):
        """The constant value of ``name`` through value-preserving ops, else None."""
        while True:
            if name in initial:
                return numpy_helper.to_array(initial[name])
            node = producer.get(name)
            if node is None:
                return None
            if node.op_type == "Constant":
                return numpy_helper.to_array(node.attribute[0].t)
            if node.op_type not in ("Unsqueeze", "Squeeze", "Cast", "Identity", "Reshape"):
                return None
            name = node.input[0]

    def pieces(name: str) -> list[str]:
        node = producer.get(name)
        return list(node.input) if node is not None and node.op_type == "Concat" else [name]

    changed = 0
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        if not from_shape(node.input[1], set()):
            continue
        values = [literal(p) for p in pieces(node.input[1])]
        if any(v is not None and (v == 0).any() for v in values):
            raise RuntimeError(f"Reshape {node.name}: its run-time shape mixes Shape-derived sizes with a literal "
                               "0 ('copy this axis'); setting allowzero=1 would change its meaning")
        for attr in list(node.attribute):
            if attr.name == "allowzero":
                node.attribute.remove(attr)
        node.attribute.append(onnx.helper.make_attribute("allowzero", 1))
        changed += 1
    return changed


def _finish(model: onnx.ModelProto, cfg, opset: int, plugins: bool, graph: str) -> onnx.ModelProto:
    io_specs = {"precompute": (*contract.precompute_inputs(cfg), *contract.precompute_outputs(cfg)),
                "decoder": (*contract.decoder_inputs(cfg), *contract.decoder_outputs(cfg))}[graph]
    _set_io_shapes(model, io_specs)
    _reshapes_allow_zero(model)
    used = sorted({n.op_type for n in model.graph.node if n.domain == ops.PLUGIN_DOMAIN})
    for name in used:
        model.functions.append(FUNCTION_BUILDERS[name](cfg, opset))
    if not plugins:
        model = onnx.inliner.inline_local_functions(model)
        del model.functions[:]
        keep = [o for o in model.opset_import if o.domain != ops.PLUGIN_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep)
        leftover = [n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")]
        if leftover:
            raise RuntimeError(f"--no-plugins left non-standard nodes: {leftover}")
    model.ir_version = IR_VERSION
    model.producer_name = "eventspd-export"
    model.producer_version = __version__
    model.graph.name = graph
    onnx.helper.set_model_props(model, {
        "eventspd.config": json.dumps(cfg.to_dict(), sort_keys=True),
        "eventspd.graph": graph,
        "eventspd.plugins": "true" if plugins else "false",
    })
    onnx.checker.check_model(model, full_check=True)
    return model


def _spec_json(specs) -> list[dict]:
    return [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in specs]


def plugin_ops_used(model: EventSPD, fused_blocks: bool = False) -> list[dict]:
    """The plugin ops each graph carries, with versions and field values (for the manifest); the
    fused blocks' entry also gives their node count and each node's channels."""
    cfg = model.cfg
    h4, w4 = cfg.level_hw(4)
    fields = {
        "event_splat": {"width": cfg.width, "height": cfg.height,
                        "resolutions": [r for t in cfg.f3_resolutions for r in t],
                        "time_scale": cfg.time_scale},
        "topr_route": {"top_r": cfg.top_r, "grid_w": w4, "grid_h": h4, "stride": cfg.strides[3]},
        "deform_read": {"strides": list(cfg.strides[1:])},
    }
    graph_of = {"event_splat": "precompute", "topr_route": "decoder", "deform_read": "decoder"}
    extra = {op: {} for op in graph_of}
    if fused_blocks:
        blocks = [m for m in model.modules() if isinstance(m, ConvNeXtV2Block)]
        graph_of["convnext_block"] = "precompute"
        fields["convnext_block"] = {"eps": sorted({float(b.norm.eps) for b in blocks}),
                                    "channels": [int(b.dwconv.in_channels) for b in blocks]}
        extra["convnext_block"] = {"nodes": len(blocks)}
    return [{"op": op, "plugin_name": ops.PLUGIN_SPECS[op].plugin_name,
             "plugin_version": ops.PLUGIN_SPECS[op].plugin_version,
             "plugin_namespace": ops.PLUGIN_NAMESPACE, "domain": ops.PLUGIN_DOMAIN,
             "graph": graph_of[op], "fields": fields[op], **extra[op]} for op in ops.PLUGIN_SPECS if op in graph_of]


def _remove_stale_derived_files(out: Path, manifest: dict) -> None:
    """calibrate's graphs and report in ``out`` belong to the fp32 graphs they were made from: kept
    where this export writes the same fp32 graphs (by sha256), removed where it replaces them."""
    present = [out / name for name in DERIVED_FILES if (out / name).exists()]
    if not present or holds_same_graphs(out, manifest):
        return
    for path in present:
        path.unlink()
        log.warning("removed %s: it was made from the graphs this export replaces (run calibrate again)", path)


def export_onnx(model: EventSPD, options: ExportOptions, load: LoadReport | None = None) -> dict:
    """Export both graphs and the manifest into ``options.out_dir``; returns the manifest."""
    options.validate()
    out = Path(options.out_dir)
    # the one output-path check (a real write: os.access says yes to root on a read-only mount)
    check_writable(out, "output folder", folder=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
    with folder_lock(out):  # a second writer of the folder is refused (FolderBusy, exit 2)
        return _export_into(out, model, options, load)


def check_fused_blocks(model: EventSPD) -> None:
    """Refuses (UserError) ``--fused-blocks`` for a model with a block the plugin's kernels cannot
    run, before anything is written: the TensorRT build would only refuse it later."""
    import plugins.torch_ext as ext

    for name, block in model.named_modules():
        if isinstance(block, ConvNeXtV2Block):
            C, E, k = block.pwconv1.in_features, block.pwconv1.out_features, block.dwconv.kernel_size[0]
            if not ext.convnext_block_supports(C, E, k):
                raise UserError(
                    f"--fused-blocks: block {name} (C {C}, E {E}, k {k}) exceeds what the EventSPDConvNeXtBlock "
                    f"kernels take ({ext.convnext_block_limits()}; plugins/convnext_block/arith.h); "
                    "export without --fused-blocks")


def _export_into(out: Path, model: EventSPD, options: ExportOptions, load: LoadReport | None) -> dict:
    cfg = model.cfg
    if options.fused_blocks:
        check_fused_blocks(model)
    model = model.eval()
    events = synthetic_window(cfg, 1000, seed=0)
    hidden = model.initial_state()
    t0 = time.perf_counter()
    with torch.no_grad(), ops.use_backend("reference"), fused_block.exported_as_plugin(options.fused_blocks):
        pre = model.precompute(events, hidden)
        shared = tuple(pre[n] for n in contract.SHARED_NAMES)
        queries = random_queries(cfg, 3, seed=0)
        graphs = {
            # Wrappers in eval mode: the exporter restores the wrapper's mode recursively
            # afterwards, which would otherwise switch the model to training (dropout on).
            "precompute": _trace_to_onnx(PrecomputeGraph(model).eval(), (events, hidden),
                                         contract.precompute_inputs(cfg),
                                         contract.precompute_outputs(cfg), options.opset),
            "decoder": _trace_to_onnx(DecoderGraph(model).eval(), (*shared, queries),
                                      contract.decoder_inputs(cfg),
                                      contract.decoder_outputs(cfg), options.opset),
        }
    if model.training:
        raise RuntimeError("export left the model in training mode")
    blobs = {name: _finish(g, cfg, options.opset, options.plugins, name).SerializeToString()
             for name, g in graphs.items()}
    files = {"precompute": PRECOMPUTE_FILE, "decoder": DECODER_FILE}
    io_specs = {
        "precompute": (contract.precompute_inputs(cfg), contract.precompute_outputs(cfg)),
        "decoder": (contract.decoder_inputs(cfg), contract.decoder_outputs(cfg)),
    }
    manifest = {
        "format": "eventspd-export/manifest-1",
        "config": cfg.to_dict(),
        "checkpoint": ({"path": load.path, "sha256": load.sha256, "layout": load.layout}
                       if load else {"default_seed": 0, "note": "built-in seeded initialisation"}),
        "graphs": {
            name: {
                "file": files[name],
                "sha256": hashlib.sha256(blobs[name]).hexdigest(),
                "bytes": len(blobs[name]),
                "opset": options.opset,
                "ir_version": IR_VERSION,
                "plugins": options.plugins,
                "fused_blocks": options.fused_blocks and name == "precompute",
                "inputs": _spec_json(io_specs[name][0]),
                "outputs": _spec_json(io_specs[name][1]),
            } for name in files
        },
        "dynamic_axes": {contract.NUM_EVENTS: {"min": 0, "max": options.events_max},
                         contract.NUM_QUERIES: {"min": 0, "max": options.k_max}},
        "plugin_ops": plugin_ops_used(model, options.fused_blocks) if options.plugins else [],
        "versions": {"eventspd_export": __version__, "torch": torch.__version__,
                     "onnx": onnx.__version__},
    }
    _remove_stale_derived_files(out, manifest)
    # Write the graphs first and the manifest last: a manifest only exists for complete files.
    for name, blob in blobs.items():
        atomic_write_bytes(out / files[name], blob)
    atomic_write_bytes(out / MANIFEST_FILE, json_bytes(manifest))
    elapsed = time.perf_counter() - t0
    for name in files:
        log.info("wrote %s (%.1f MB)", out / files[name], len(blobs[name]) / 1e6)
    log.info("wrote %s; export took %.1f s", out / MANIFEST_FILE, elapsed)
    manifest["export_seconds"] = elapsed
    return manifest
