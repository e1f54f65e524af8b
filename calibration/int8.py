"""INT8 with explicit Q/DQ: activation ranges from the fp32 graph, then Q/DQ insertion.

TensorRT 11 has no calibrators: the int8 network is the Q/DQ ONNX (ARCHITECTURE §4). We use
ONNX Runtime's quantisation tooling, which implements what TensorRT asks for:

* ranges are collected by running the fp32 ONNX graph on calibration feeds (methods: ``max``,
  ``percentile`` 99.99 %, ``entropy`` KL-divergence as TensorRT's calibrator does);
* QuantizeLinear/DequantizeLinear pairs are inserted in QDQ format with int8, symmetric ranges
  and a constant zero point 0, per-channel weights (axis 0 of Conv's KCRS weights, the output
  axis of MatMul weights) and per-tensor activations;
* only the *inputs* of Conv, MatMul and Gemm are quantised (NVIDIA's placement for TensorRT):
  every other reader of such a tensor -- plugin nodes (the routing's attention weights, the
  deformable read's value maps), LayerNorm, Softmax, residual adds, the coordinate path, the
  ConvGRU state, the graph outputs -- reads the float tensor, not its int8-rounded copy
  (``_dequantised_only_for_quantised_ops``; ONNX Runtime's quantiser points every reader at the
  DequantizeLinear and also quantises the ops' outputs). ``check_tensorrt_rules`` checks it.

Statistics are cached on disk, keyed by the sha256 of the graph, the method and the feeds, so a
second run with the same model and data skips the collection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx

from eventspd_export.artifacts import json_safe
from model_def.atomic import atomic_write_bytes, check_writable
from model_def.errors import UserError

from calibration.onnx_graph import toposort

log = logging.getLogger(__name__)

QUANT_OPS = ("Conv", "MatMul", "Gemm")
METHODS = ("max", "percentile", "entropy")
PERCENTILE = 99.99


class CalibrationError(UserError):
    """The calibration cannot run as asked (no data, unknown method ...)."""


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"max": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}
    if name not in table:
        raise CalibrationError(f"unknown calibration method {name!r}; choose one of {', '.join(METHODS)}")
    return table[name]


def feeds_digest(feeds: Sequence[Mapping[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            arr = np.ascontiguousarray(feed[name])
            h.update(name.encode())
            h.update(str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def _read_cache(cache: Path) -> dict[str, tuple[float, float]] | None:
    """The ranges a cache file holds, or None (with a warning naming it) when it cannot be used:
    truncated or not the JSON we write (a copy cut short, a full disk, a hand edit), or holding
    a non-finite or inverted range, which would reach ONNX Runtime's quantiser as a NaN scale
    ('scale issue' assertion) only after all the work. The caller then recomputes the ranges and
    rewrites the file atomically."""
    try:
        data = json.loads(cache.read_text())
        ranges = {str(k): (float(v[0]), float(v[1])) for k, v in data["ranges"].items()}
    except (OSError, ValueError, LookupError, TypeError, AttributeError) as exc:  # ValueError: JSON, float(), UTF-8
        log.warning("calibration cache %s is unreadable (%s: %s): ignoring it, recomputing the ranges",
                    cache, type(exc).__name__, exc)
        return None
    bad = [k for k, (lo, hi) in ranges.items() if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi)]
    if bad:
        log.warning("calibration cache %s holds a non-finite or inverted range for %r (%d in all): "
                    "ignoring it, recomputing the ranges", cache, bad[0], len(bad))
        return None
    return ranges


def collect_ranges(model_path: str | Path, feeds: Sequence[Mapping[str, np.ndarray]], method: str,
                   cache_dir: str | Path | None = None) -> tuple[dict[str, tuple[float, float]], bool]:
    """Activation ranges {tensor: (lowest, highest)} of the quantisable ops' inputs/outputs.
    Returns (ranges, from_cache)."""
    if not feeds:
        raise CalibrationError("no calibration data: the data source yielded no windows "
                               "(an empty folder, or a generator that was already consumed?)")
    calib_method = _method(method)
    model_bytes = Path(model_path).read_bytes()
    key = hashlib.sha256(model_bytes + method.encode() + feeds_digest(feeds).encode()).hexdigest()[:24]
    cache = Path(cache_dir) / f"ranges-{Path(model_path).stem}-{method}-{key}.json" if cache_dir else None
    cached = _read_cache(cache) if cache is not None and cache.is_file() else None
    if cached is not None:
        log.info("calibration statistics from cache %s", cache)
        return cached, True
    if cache is not None:  # before the work, not as a NotADirectoryError after it
        check_writable(cache.parent, "--cache-dir", folder=True)

    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.calibrate import create_calibrator

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    extra = {"symmetric": True}
    if method == "percentile":
        extra.update({"percentile": PERCENTILE, "num_bins": 2048})
    elif method == "entropy":
        extra.update({"num_bins": 2048, "num_quantized_bins": 128})
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(str(model_path), list(QUANT_OPS),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=calib_method, extra_options=extra)
        calibrator.collect_data(_Reader())
        data = calibrator.compute_data()
    ranges = {}
    for name, td in data.data.items():
        lo, hi = td.range_value
        ranges[name] = (float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0]))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        entry = {"method": method, "model_sha256": hashlib.sha256(model_bytes).hexdigest(), "ranges": ranges}
        # standard JSON (a non-finite range as null, which _read_cache then refuses and recomputes)
        atomic_write_bytes(cache, json.dumps(json_safe(entry), indent=0, sort_keys=True, allow_nan=False).encode())
    return ranges, False


def quantisable_nodes(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in QUANT_OPS and n.domain in ("", "ai.onnx")]


def quantize(model_path: str | Path, ranges: Mapping[str, tuple[float, float]],
             exclude: Iterable[str] = ()) -> onnx.ModelProto:
    """The Q/DQ model, with the nodes in ``exclude`` left in float."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, CalibrationMethod
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    model = onnx.load(str(model_path))
    tensors = TensorsData(CalibrationMethod.MinMax, {
        k: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
        for k, (lo, hi) in ranges.items()})
    quantizer = QDQQuantizer(
        model, per_channel=True, reduce_range=False, weight_qType=QuantType.QInt8,
        activation_qType=QuantType.QInt8, tensors_range=tensors, nodes_to_quantize=[],
        nodes_to_exclude=list(exclude), op_types_to_quantize=list(QUANT_OPS),
        # QuantizeBias False: TensorRT takes float biases (it folds them itself); an int32 bias
        # Q/DQ is outside its int8 explicit-quantisation rules.
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "QDQKeepRemovableActivations": False,
                       # Q/DQ on the quantised ops' inputs only: their outputs stay float
                       "OpTypesToExcludeOutputQuantization": list(QUANT_OPS)})
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # ORT's advice spam
    quantizer.quantize_model()
    out = quantizer.model.model
    _dequantised_only_for_quantised_ops(out, set(exclude))
    # ONNX Runtime appends the Q/DQ nodes; ONNX (and TensorRT's parser) want topological order.
    graph_inputs = {i.name for i in out.graph.input} | {i.name for i in out.graph.initializer}
    ordered = toposort(list(out.graph.node), graph_inputs)
    del out.graph.node[:]
    out.graph.node.extend(ordered)
    onnx.helper.set_model_props(out, {**{p.key: p.value for p in out.metadata_props},
                                      "eventspd.precision": "int8-qdq"})
    onnx.checker.check_model(out, full_check=True)
    return out


def zero_range_inputs(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]]) -> list[str]:
    """The activations ``model`` quantises whose range was 0 on all the calibration data: ONNX
    Runtime gives them the scale 1.0, a silent zero-out (values below 0.5 round to 0) wherever
    deployment data makes them non-zero. The pipeline warns about them by name."""
    inits = {i.name for i in model.graph.initializer}
    quantised = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    return sorted(k for k in quantised if k in ranges and ranges[k][0] == ranges[k][1] == 0.0)


def _is_quantised_op(node: onnx.NodeProto, exclude: set[str] = frozenset()) -> bool:
    return node.op_type in QUANT_OPS and node.domain in ("", "ai.onnx") and node.name not in exclude


def _dequantised_only_for_quantised_ops(model: onnx.ModelProto, exclude: set[str]) -> None:
    """Points every reader of an activation's DequantizeLinear that is not a quantised op (nor in
    ``exclude``) back at the float tensor, gives a graph output that ONNX Runtime made a
    DequantizeLinear output back to its float producer, and drops the Q/DQ pairs left unread.

    ONNX Runtime's QDQ quantiser, quantising a tensor for one Conv/MatMul/Gemm, rewires *all* its
    readers to the dequantised copy: the routing plugin then ranked int8-rounded attention weights
    (most of its top-R decided by ties), the ConvGRU state was re-rounded every window, and the
    sensitivity pass's excluded MatMuls still read int8 activations."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    outputs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output}
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
            continue  # a weight's DQ
        src, deq = q.input[0], dq.output[0]
        if deq in outputs:  # ORT renamed the float producer's output and let the DQ write the output
            renamed = f"{deq}_DequantizeLinear_Output"
            for n in g.node:
                n.input[:] = [renamed if x == deq else x for x in n.input]
            dq.output[0] = renamed
            for n in g.node:
                n.output[:] = [deq if o == src else o for o in n.output]
                n.input[:] = [deq if x == src else x for x in n.input]
            src, deq = deq, renamed
        for n in g.node:
            if n is not dq and not _is_quantised_op(n, exclude):
                n.input[:] = [src if x == deq else x for x in n.input]
    while True:  # Q/DQ nobody reads any more (a DQ first, then its Q)
        read = {x for n in g.node for x in n.input} | outputs
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)


def check_tensorrt_rules(model: onnx.ModelProto, exclude: Iterable[str] = ()) -> list[str]:
    """Violations of TensorRT's explicit-quantisation rules (empty list when all hold); ``exclude``:
    the ops the sensitivity pass kept in float, which must not read a DequantizeLinear either."""
    exclude = set(exclude)
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for x in node.input:
            readers.setdefault(x, []).append(node)
    outputs = {o.name for o in model.graph.output}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = inits.get(node.input[1]) or consts.get(node.input[1])
        if scale is None:
            problems.append(f"{node.name}: scale is not a constant")
        else:
            s = onnx.numpy_helper.to_array(scale).astype(np.float64)
            if not (np.all(np.isfinite(s)) and np.all(s > 0)):
                problems.append(f"{node.name}: scale not finite and > 0 (min {s.min():.3g}, max {s.max():.3g})")
            if s.size > 1 and node.input[0] not in inits:
                problems.append(f"{node.name}: per-channel scale on an activation")
        if node.op_type == "DequantizeLinear":
            # Q/DQ stop at the quantised ops: nothing else may read the int8-rounded copy
            others = [r for r in readers.get(node.output[0], []) if not _is_quantised_op(r, exclude)]
            if others:
                kept = " (kept in float)" if others[0].name in exclude else ""
                problems.append(f"{node.name}: its dequantised tensor is read by {others[0].op_type} "
                                f"{others[0].name!r}{kept}, not only by quantised {'/'.join(QUANT_OPS)}")
            if node.output[0] in outputs:
                problems.append(f"{node.name}: writes the graph output {node.output[0]!r}")
        if len(node.input) < 3 or not node.input[2]:
            continue  # no zero point: 0 by definition
        zp = inits.get(node.input[2]) or consts.get(node.input[2])
        if zp is None:
            problems.append(f"{node.name}: zero point is not a constant")
            continue
        arr = onnx.numpy_helper.to_array(zp)
        if arr.dtype != np.int8:
            problems.append(f"{node.name}: zero point dtype {arr.dtype}, expected int8")
        if np.any(arr != 0):
            problems.append(f"{node.name}: non-zero zero point (asymmetric)")
    return problems
