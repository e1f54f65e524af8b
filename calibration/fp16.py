"""FP16 ONNX: weights and activations in fp16, numerically sensitive parts kept in fp32.

TensorRT 11 has no precision flags: the precision of a strongly typed network is the precision
written in the ONNX (ARCHITECTURE §4). This converter decides, node by node, whether it runs
in fp16 or fp32 and inserts Casts where the two meet (one Cast per tensor and target type).

Kept in fp32 (``KEEP_FP32_OPS`` and the coordinate rule below):
* LayerNormalization (statistics over 64-384 channels), Softmax, Softplus and everything after
  a Softplus (eq. 26's inverse depth and depth: the graph outputs);
* A4's calibration scalars, from the pooled map on (``KEEP_FP32_SCOPES``: the ReduceMean and the
  two Gemms before the Softplus too): s_t and b_t scale and shift every depth of the window, so
  their rounding would be one bias shared by all queries;
* the plugin nodes (their kernels take fp32 coordinates; their function bodies are fp32), except
  the data of ``HALF_DATA_PLUGINS``: a fused ConvNeXt-V2 block (``onnx --fused-blocks``) takes
  and gives its map in fp16 like the convolutions around it, its ten weights stay fp32 (the
  plugin reads them in fp32 and rounds W1/W2 to fp16 itself);
* GridSample and the *coordinate path*: every node with an input derived from ``queries``,
  ``events`` or the routing anchors, until a sampling op or a Fourier Sin/Cos turns the
  coordinates into features, and the element-wise chain that forms each Fourier angle. In
  fp16, a pixel coordinate of 1000 has a spacing of 0.5 and the 2^7·pi Fourier terms lose all
  precision, so these few scalar ops stay fp32.
* constant-only arithmetic that an fp32 node reads (GridSample's 2 / W, formed as Reciprocal(W)
  * 2 by the exporter);
* Graph inputs and outputs stay float32, as the contract table says.

Everything else — convolutions, MatMuls, GELU/Erf, GRN, attention — runs in fp16 with fp16
weights. Constants consumed by both precisions are duplicated.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calibration.onnx_graph import toposort

KEEP_FP32_OPS = frozenset({
    "LayerNormalization", "Softmax", "Softplus", "GridSample", "Sin", "Cos", "QuantizeLinear",
    "DequantizeLinear",
})
# Taint (coordinate-derived or post-Softplus values) does not pass these: their outputs are
# features bounded like any activation.
TAINT_STOP_OPS = frozenset({"GridSample", "Sin", "Cos"})
TAINT_SOURCE_OPS = frozenset({"Softplus"})
COORDINATE_INPUTS = frozenset({"queries", "events"})
ANGLE_CHAIN_OPS = frozenset({"Mul", "Div", "Add", "Sub", "Unsqueeze", "Concat", "Reshape", "Expand",
                             "Slice", "Gather", "Transpose", "Flatten", "Squeeze", "Identity"})
# node-name scopes (model_def module paths, as torch's exporter names nodes) that run in fp32
KEEP_FP32_SCOPES = ("/a4/",)
ROUTING_PLUGIN = "EventSPDTopRRoute"
# plugin op_type -> how many of its leading inputs (and all of its outputs) are data that runs in
# fp16; its other inputs stay fp32
HALF_DATA_PLUGINS = {"EventSPDConvNeXtBlock": 1}
FLOAT = TensorProto.FLOAT
HALF = TensorProto.FLOAT16
# names of the tensors the converter adds: X's Cast to fp16 / fp32, and a graph output's fp16
# value before its Cast to float32 (fp16_headroom maps them back to X)
HALF_COPY_SUFFIX, FLOAT_COPY_SUFFIX, HALF_OUTPUT_SUFFIX = "__to_fp16", "__to_fp32", "__fp16"


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = set()
    for vi in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        if vi.type.tensor_type.elem_type == FLOAT:
            out.add(vi.name)
    out.update(i.name for i in model.graph.initializer if i.data_type == FLOAT)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    out.add(node.output[0])
    return out


def _fp32_nodes(model: onnx.ModelProto, floats: set[str]) -> set[int]:
    """Indices of nodes that run in fp32."""
    tainted = set(COORDINATE_INPUTS)
    keep = set()
    for i, node in enumerate(model.graph.node):  # graph nodes are topologically sorted
        custom = node.domain not in ("", "ai.onnx")
        touches = any(x in tainted for x in node.input if x in floats or x in COORDINATE_INPUTS)
        if ((custom and node.op_type not in HALF_DATA_PLUGINS) or node.op_type in KEEP_FP32_OPS
                or node.name.startswith(KEEP_FP32_SCOPES) or (touches and node.op_type != "Constant")):
            keep.add(i)
        if node.op_type in TAINT_SOURCE_OPS or (custom and node.op_type == ROUTING_PLUGIN):
            tainted.update(node.output)
        elif touches and node.op_type not in TAINT_STOP_OPS and not custom:
            tainted.update(node.output)
    # Fourier angles: the cheap element-wise chain that feeds a Sin/Cos runs in fp32 back to
    # the nearest heavy op (e.g. B1's adaptive L1 offsets come out of a MatMul in fp16, but
    # offset * 2^k * pi is formed in fp32).
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    stack = [x for n in model.graph.node if n.op_type in ("Sin", "Cos") for x in n.input]
    seen = set()
    while stack:
        name = stack.pop()
        i = producer.get(name)
        if i is None or i in seen:
            continue
        seen.add(i)
        node = model.graph.node[i]
        if node.op_type in ANGLE_CHAIN_OPS:
            keep.add(i)
            stack.extend(x for x in node.input if x in floats)
    return keep | _constant_arithmetic_read_by(model, keep, producer)


def _constant_arithmetic_read_by(model: onnx.ModelProto, keep: set[int], producer: dict[str, int]) -> set[int]:
    """The nodes computing from constants alone whose results the ``keep`` nodes read: they run in
    fp32 too. The exporter leaves e.g. GridSample's normalisation 2 / W as Reciprocal(W) * 2,
    which in fp16 is 2.4e-4 off for W = 320 -- 0.08 cells at the map's far edge, what the
    coordinate rule exists to prevent."""
    nodes = model.graph.node
    keep = set(keep)
    const = {i.name for i in model.graph.initializer}
    for node in nodes:  # topological order: a node of constant inputs gives constant outputs
        if node.op_type == "Constant" or (node.input and all(x in const for x in node.input if x)):
            const.update(node.output)
    stack, found = [x for i in keep for x in nodes[i].input], set()
    while stack:
        i = producer.get(stack.pop())
        if i is None or i in keep or nodes[i].op_type == "Constant" or not all(o in const for o in nodes[i].output):
            continue
        keep.add(i)
        found.add(i)
        stack.extend(nodes[i].input)
    return found


def fp32_node_names(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes the converter keeps in fp32 (the module docstring's list): what a
    weakly typed TensorRT 10 build constrains to fp32 (eventspd_export/trt/precision_constraints.py)."""
    keep = _fp32_nodes(model, _float_tensors(model))
    return {model.graph.node[i].name for i in keep if model.graph.node[i].name}


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A mixed-precision copy of ``model`` (see the module docstring)."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    model = model_copy
    graph = model.graph
    floats = _float_tensors(model)
    keep = _fp32_nodes(model, floats)
    nodes = list(graph.node)
    half_node = [i not in keep for i in range(len(nodes))]

    def input_half(i: int, j: int) -> bool:
        """Whether input j of node i is read in fp16."""
        data_inputs = HALF_DATA_PLUGINS.get(nodes[i].op_type, len(nodes[i].input))
        return half_node[i] and j < data_inputs

    consumers: dict[str, list[tuple[int, int]]] = defaultdict(list)  # tensor -> (node, input slot)
    for i, node in enumerate(nodes):
        for j, x in enumerate(node.input):
            if x:
                consumers[x].append((i, j))
    # An Identity (torch's exporter shares equal weights through Identity nodes) runs in the
    # precision its readers want, so a weight read in fp32 (LayerNorm's, a fused block's) does not
    # pass through fp16 on the way. Last to first: a chain of Identities resolves in one sweep.
    for i in reversed(range(len(nodes))):
        users = consumers.get(nodes[i].output[0], []) if nodes[i].op_type == "Identity" else []
        if users:
            half_node[i] = all(input_half(u, j) for u, j in users)

    # which precision each float tensor is produced in
    produced_half: dict[str, bool] = {}
    for name in (i.name for i in graph.input):
        produced_half[name] = False

    # initializers: fp16 when every consumer runs in fp16; else fp32 (+ Cast for fp16 users)
    for init in graph.initializer:
        if init.data_type != FLOAT:
            continue
        users = consumers.get(init.name, [])
        if users and all(input_half(u, j) for u, j in users):
            arr = numpy_helper.to_array(init).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
            produced_half[init.name] = True
        else:
            produced_half[init.name] = False

    for i, node in enumerate(nodes):
        if node.op_type == "Constant" and node.output[0] in floats:
            users = consumers.get(node.output[0], [])
            to_half = bool(users) and all(input_half(u, j) for u, j in users)
            if to_half:
                for a in node.attribute:
                    if a.name == "value":
                        a.t.CopyFrom(numpy_helper.from_array(
                            numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            half_node[i] = to_half
            produced_half[node.output[0]] = to_half
            continue
        if half_node[i]:
            for a in node.attribute:
                if node.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                    a.i = HALF
                if node.op_type == "ConstantOfShape" and a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
        for out in node.output:
            if out in floats:
                produced_half[out] = half_node[i] and not (node.op_type == "Cast" and not half_node[i])

    # insert Casts where producer and consumer precisions differ
    casts: dict[tuple[str, bool], str] = {}
    new_nodes = []

    def cast_of(name: str, to_half: bool) -> str:
        key = (name, to_half)
        if key not in casts:
            casts[key] = name + (HALF_COPY_SUFFIX if to_half else FLOAT_COPY_SUFFIX)
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=HALF if to_half else FLOAT,
                                              name=f"{casts[key]}__cast"))
        return casts[key]

    for i, node in enumerate(nodes):
        if node.op_type != "Constant":
            for j, x in enumerate(node.input):
                if x in floats and x in produced_half and produced_half[x] != input_half(i, j):
                    node.input[j] = cast_of(x, input_half(i, j))
        new_nodes.append(node)

    # graph outputs stay float32
    for out in graph.output:
        if produced_half.get(out.name):
            internal = out.name + HALF_OUTPUT_SUFFIX
            for node in new_nodes:
                node.output[:] = [internal if o == out.name else o for o in node.output]
                node.input[:] = [internal if x == out.name else x for x in node.input]
            new_nodes.append(helper.make_node("Cast", [internal], [out.name], to=FLOAT,
                                              name=f"{out.name}__cast"))
    del graph.node[:]
    graph.node.extend(toposort(new_nodes, {i.name for i in graph.input} | {i.name for i in graph.initializer}))
    del graph.value_info[:]
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "eventspd.precision": "fp16"})
    onnx.checker.check_model(model, full_check=True)
    return model
