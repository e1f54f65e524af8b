"""FP16 headroom: how close the tensors an fp16 graph holds in fp16 come to fp16's largest value.

A tensor above 65504 is inf in fp16, and everything computed from it is inf or NaN. ONNX
Runtime's CPU provider, which the accuracy report runs on, computes fp16 graphs' arithmetic in
fp32 (it casts fp16 tensors to fp32 around the ops it has no fp16 kernel for, and drops the
intermediate roundings), so the report cannot see an overflow that a TensorRT fp16 engine would
have. This check runs the *fp32* graph on the calibration feeds with one ReduceMax(Abs(x)) output
appended for each tensor the converter put in fp16, and looks at the weights it rounded to fp16.
(ONNX Runtime's MinMax calibrator would collect the same maxima, but it places each reduction
with a scan of the whole graph: quadratic, 9 of 11 s on the tiny graphs, where this takes 2.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto

from calibration.fp16 import HALF_COPY_SUFFIX, HALF_OUTPUT_SUFFIX
from eventspd_export.runtime.ort_pair import ort_session
from model_def.errors import CheckFailed

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
WARN_HEADROOM = 4.0  # below this factor to fp16's maximum the calibration data came close to it


class Fp16Overflow(CheckFailed):
    """Tensors held in fp16 exceed fp16's range on the calibration data (``tensors``: their names,
    largest first)."""

    def __init__(self, message: str, tensors: list[str]):
        super().__init__(message)
        self.tensors = tensors


def half_tensors(fp16_model: onnx.ModelProto, fp32_names: set[str]) -> set[str]:
    """The fp32 graph's tensors that ``fp16_model`` holds in fp16 (directly, or as the
    converter's ``X__to_fp16`` copy of X)."""
    inferred = onnx.shape_inference.infer_shapes(fp16_model)
    out = set()
    for vi in (*inferred.graph.value_info, *inferred.graph.output):
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        name = vi.name.removesuffix(HALF_COPY_SUFFIX).removesuffix(HALF_OUTPUT_SUFFIX)
        if name in fp32_names:
            out.add(name)
    return out


def max_abs(fp32_model: onnx.ModelProto, names: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """max |x| over ``feeds`` of each tensor in ``names`` (0 for one that is empty on all, inf for
    one holding a NaN)."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32_model)
    outputs = {}
    for i, name in enumerate(names):
        a, m = f"__headroom_abs_{i}", f"__headroom_max_{i}"
        # keepdims=1: an empty tensor (a window of no events) reduces without error
        model.graph.node.extend([onnx.helper.make_node("Abs", [name], [a]),
                                 onnx.helper.make_node("ReduceMax", [a], [m], keepdims=1)])
        model.graph.output.append(onnx.helper.make_tensor_value_info(m, TensorProto.FLOAT, None))
        outputs[m] = name
    session = ort_session(model)
    result = dict.fromkeys(names, 0.0)
    for feed in feeds:
        for out, value in zip(outputs, session.run(list(outputs), dict(feed))):
            v = float(np.max(value)) if value.size else 0.0
            result[outputs[out]] = max(result[outputs[out]], np.inf if np.isnan(v) else v)  # NaN: as bad as inf
    return result


def fp16_headroom(fp32_path: str | Path, fp16_model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]) -> dict:
    """{"tensor", "max_abs", "headroom", "tensors"}: the fp16 tensor with the largest magnitude on
    ``feeds``, that magnitude, FP16_MAX / it, and how many fp16 tensors were looked at. Raises
    Fp16Overflow when it is above FP16_MAX; warns below WARN_HEADROOM."""
    fp32 = onnx.load(str(fp32_path))
    produced = {o for n in fp32.graph.node for o in n.output} | {i.name for i in fp32.graph.input}
    halves = half_tensors(fp16_model, produced)
    amax = max_abs(fp32, sorted(halves), feeds)
    # the weights the converter rounded to fp16 (data-independent: a weight above 65504 is inf):
    # stored in fp16, or kept fp32 for fp32 readers and cast (W__to_fp16) for the fp16 ones
    half_weights = {i.name for i in fp16_model.graph.initializer if i.data_type == TensorProto.FLOAT16}
    half_weights |= {n.input[0] for n in fp16_model.graph.node if n.op_type == "Cast"
                     and n.output[0].endswith(HALF_COPY_SUFFIX)}
    for init in fp32.graph.initializer:
        if init.name in half_weights:
            w = onnx.numpy_helper.to_array(init)
            if w.size:
                halves.add(init.name)
                amax[init.name] = float(np.abs(w.astype(np.float64)).max())
    if not halves:
        return {"tensor": None, "max_abs": 0.0, "headroom": None, "tensors": 0}
    worst = max(amax, key=amax.get)
    peak = amax[worst]
    result = {"tensor": worst, "max_abs": peak, "headroom": FP16_MAX / peak if peak > 0 else None,
              "tensors": len(halves)}
    graph = Path(fp32_path).stem
    if peak > FP16_MAX:
        over = sorted((n for n in halves if amax[n] > FP16_MAX), key=amax.get, reverse=True)
        named = ", ".join(f"{n!r} {amax[n]:.4g}" for n in over[:3]) + (", ..." if len(over) > 3 else "")
        raise Fp16Overflow(f"fp16 {graph}: {len(over)} tensor(s) held in fp16 exceed fp16's largest value "
                           f"{FP16_MAX:g} on the calibration data ({named}): they would be inf in an fp16 "
                           "engine; keep them in fp32 or use fp32 engines", over)
    if result["headroom"] is not None and result["headroom"] < WARN_HEADROOM:
        log.warning("fp16 %s: %r reaches %.4g on the calibration data, %.2gx below fp16's largest value: "
                    "other data may overflow it", graph, worst, peak, result["headroom"])
    return result
