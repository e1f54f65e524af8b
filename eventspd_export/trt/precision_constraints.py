"""Per-layer fp32 constraints for weakly typed TensorRT 10 builds (``trt --weakly-typed``).

A weakly typed fp16 build is the *fp32* ONNX with ``BuilderFlag.FP16`` (int8: the Q/DQ ONNX with
``INT8|FP16``): TensorRT then picks each layer's precision itself, and may run in fp16 exactly what
``calibration/fp16.py`` keeps in fp32 (LayerNorm statistics, Softmax, Softplus and the depth head,
the coordinate path, the Fourier angles, A4's calibration scalars). So the layers of those nodes
get ``precision`` and output types fp32, with ``OBEY_PRECISION_CONSTRAINTS``: the weakly typed
engine keeps what the strongly typed fp16 ONNX keeps.

TensorRT's ONNX parser names each node's layer after the node; a node it lowers to several layers
names the others ``<node>_<n>``. Measured with TensorRT-RTX 1.7's parser (the same ONNX parser) on
the tiny decoder: all 194 fp32 nodes found by their exact name.
"""

from __future__ import annotations

from pathlib import Path

import onnx

# Q/DQ layers carry int8 types of their own: constraining them is not what the list means
_NOT_CONSTRAINED = frozenset({"QuantizeLinear", "DequantizeLinear"})


def fp32_layer_names(onnx_path: str | Path) -> tuple[set[str], set[str]]:
    """(names of the nodes to constrain to fp32, names of all nodes) of the ONNX graph."""
    from calibration.fp16 import fp32_node_names

    model = onnx.load(str(onnx_path), load_external_data=False)
    types = {n.name: n.op_type for n in model.graph.node}
    # a Q/DQ graph's quantised ops (those reading a DequantizeLinear: A4's Gemms, which the fp16
    # list keeps in fp32) run in int8 as the strongly typed build runs them: not constrained
    dequantised = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    reads_dq = {n.name for n in model.graph.node if any(x in dequantised for x in n.input)}
    keep = {name for name in fp32_node_names(model) if types.get(name) not in _NOT_CONSTRAINED and name not in reads_dq}
    return keep, set(types)


def _node_of(layer_name: str, keep: set[str], nodes: set[str]) -> str | None:
    if layer_name in keep:
        return layer_name
    head, _, tail = layer_name.rpartition("_")
    if tail.isdigit() and head in keep and layer_name not in nodes:  # a helper layer of that node
        return head
    return None


def constrain_fp32_layers(trt, network, keep: set[str], nodes: set[str]) -> tuple[int, set[str]]:
    """Sets precision and float output types fp32 on the layers of the ``keep`` nodes; returns
    (layers constrained, nodes of ``keep`` found among the layers). Layers without a float
    output (shape arithmetic) are left alone."""
    floats = (trt.float32, trt.float16)
    constrained, found = 0, set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        node = _node_of(layer.name, keep, nodes)
        if node is None:
            continue
        float_outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not float_outputs:
            continue
        layer.precision = trt.float32
        for j in float_outputs:
            layer.set_output_type(j, trt.float32)
        constrained += 1
        found.add(node)
    return constrained, found
