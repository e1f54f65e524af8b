"""Small graph utilities shared by the precision converters."""

from __future__ import annotations

import onnx


def toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Stable topological order: nodes keep their relative order where their inputs allow."""
    ready = set(available) | {""}
    pending = list(nodes)
    ordered = []
    while pending:
        rest = []
        progressed = False
        for node in pending:
            if all(x in ready for x in node.input):
                ordered.append(node)
                ready.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            missing = sorted({x for n in rest for x in n.input if x not in ready})[:5]
            raise RuntimeError(f"graph has unresolved node inputs: {missing}")
        pending = rest
    return ordered
