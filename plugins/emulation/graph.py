"""An exported ONNX graph with plugin nodes, run the way a TensorRT engine runs it, on the CPU.

Every node of the plugin domain goes through ``plugin_run`` (``plugin_runtime.cpp``): our TensorRT
plugin's IPluginV3 build and runtime phases, its ``enqueue`` and its CUDA kernels in the emulation.
The other nodes run in ONNX Runtime, cut into segments between the plugin nodes (segment L holds
every standard node whose inputs depend on at most L plugin nodes in a row). So the file TensorRT's
parser reads executes with our plugins, not with the function bodies that ONNX Runtime would inline
for them: that compares the plugins' glue (attributes -> fields, format and shape contract,
workspace, pointer order) and kernels with PyTorch on whole graphs, which nothing else does without
a GPU. It is not TensorRT: its layer fusions, reformatting and precision choices are not emulated,
and each plugin's workspace is planned at the run's own shapes (``plugin_run``'s ``max_dims``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from model_def import ops

# How TensorRT's ONNX parser turns node attributes into PluginFields (INT -> int32, ...); it
# consumes plugin_version / plugin_namespace itself.
_PARSER_ATTRIBUTES = ("plugin_version", "plugin_namespace")


def node_fields(node) -> tuple[list[str], list]:
    """(names, torch tensors) of ``node``'s attributes as TensorRT's parser passes them."""
    import onnx
    import torch

    names, values = [], []
    for a in node.attribute:
        if a.name in _PARSER_ATTRIBUTES:
            continue
        v = onnx.helper.get_attribute_value(a)
        if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS):
            t = torch.tensor(np.atleast_1d(np.asarray(v, dtype=np.int64)).astype(np.int32))
        elif a.type in (onnx.AttributeProto.FLOAT, onnx.AttributeProto.FLOATS):
            t = torch.tensor(np.atleast_1d(np.asarray(v, dtype=np.float32)))
        elif a.type == onnx.AttributeProto.STRING:
            t = torch.tensor(list(v), dtype=torch.uint8)
        else:
            raise ValueError(f"node {node.name!r}: attribute {a.name!r} has a type TensorRT's parser does not map")
        names.append(a.name)
        values.append(t)
    return names, values


class PluginRunError(RuntimeError):
    """A plugin node that our TensorRT plugin refused or failed to run (the message says which)."""


def run_plugin_node(node, inputs: list, max_shapes: list[tuple[int, ...]] | None = None,
                    workspace_shortfall: int = 0, dynamic: list[tuple[bool, ...]] | None = None) -> list:
    """Runs one plugin node of an exported graph on CPU tensors ``inputs`` (see plugin_runtime.cpp);
    ``max_shapes``: each input's profile maximum (the workspace is planned for it), default its shape;
    ``dynamic``: per input, which dimensions the graph leaves open (TensorRT passes them as -1 and
    as non-constant expressions), default those whose maximum differs.
    ``workspace_shortfall``: bytes withheld from the planned workspace (the ASan run's mutation)."""
    from plugins import emulation

    attrs = {a.name: a for a in node.attribute}
    version = attrs["plugin_version"].s.decode() if "plugin_version" in attrs else "1"
    namespace = attrs["plugin_namespace"].s.decode() if "plugin_namespace" in attrs else node.domain
    names, values = node_fields(node)
    max_dims = [int(d) for shape in (max_shapes or []) for d in shape]
    dynamic_dims = [int(bool(d)) for flags in (dynamic or []) for d in flags]
    try:
        return list(emulation.load().plugin_run(node.op_type, version, namespace, names, values, list(inputs),
                                                max_dims, dynamic_dims, len(node.output), workspace_shortfall))
    except RuntimeError as exc:
        raise PluginRunError(f"plugin node {node.name or node.op_type!r} ({node.op_type}): {exc}") from None


@dataclass
class _Segment:
    nodes: list = field(default_factory=list)
    session: object = None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def _open_dims(value_info) -> tuple[bool, ...] | None:
    """For each dimension of a typed value: True when it has no fixed size (a dim_param or unknown)."""
    if value_info is None or not value_info.type.tensor_type.HasField("shape"):
        return None
    return tuple(not d.HasField("dim_value") for d in value_info.type.tensor_type.shape.dim)


class PluginGraph:
    """``PluginGraph(model).run(feeds)`` -> the graph outputs (numpy), plugin nodes emulated."""

    def __init__(self, model, threads: int | None = None):
        import onnx
        from onnx import numpy_helper

        from eventspd_export.runtime.ort_pair import ort_session

        if isinstance(model, (str, Path)):
            model = onnx.load(str(model))
        self.model = model
        graph = model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.output_names = [o.name for o in graph.output]
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v for v in list(inferred.graph.value_info) + list(graph.input) + list(graph.output)}

        # levels: how many plugin nodes in a row a value depends on
        level = {name: 0 for name in [i.name for i in graph.input] + list(self.initializers)}
        self.plugin_stages: list[list] = []
        segments: list[_Segment] = []
        for node in graph.node:
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                raise ValueError(f"node {node.name!r} ({node.op_type}) has a subgraph; PluginGraph cannot cut it")
            depth = max((level.get(i, 0) for i in node.input if i), default=0)
            if node.domain == ops.PLUGIN_DOMAIN:
                if "" in node.input:
                    raise ValueError(f"plugin node {node.name!r} ({node.op_type}) has an omitted optional input; "
                                     "none of our plugins takes one")
                while len(self.plugin_stages) <= depth:
                    self.plugin_stages.append([])
                self.plugin_stages[depth].append(node)
                depth += 1
            else:
                while len(segments) <= depth:
                    segments.append(_Segment())
                segments[depth].nodes.append(node)
            for o in node.output:
                level[o] = depth

        consumers: dict[str, set[int]] = {}
        for s, seg in enumerate(segments):
            for node in seg.nodes:
                for i in node.input:
                    consumers.setdefault(i, set()).add(s)
        plugin_inputs = {i for stage in self.plugin_stages for n in stage for i in n.input}
        for s, seg in enumerate(segments):
            produced = {o for n in seg.nodes for o in n.output}
            used = [i for n in seg.nodes for i in n.input if i]
            seg.inputs = list(dict.fromkeys(i for i in used if i not in produced and i not in self.initializers))
            seg.outputs = [o for n in seg.nodes for o in n.output
                           if o in plugin_inputs or o in self.output_names or consumers.get(o, {s}) - {s}]
            if not seg.nodes:
                continue
            untyped = [v for v in seg.inputs + seg.outputs if v not in types]
            if untyped:
                raise ValueError(f"ONNX shape inference gives no type for {untyped[0]!r}, where PluginGraph cuts the "
                                 "graph between ONNX Runtime and a plugin node")
            sub = onnx.helper.make_graph(
                seg.nodes, f"segment{s}", [types[i] for i in seg.inputs], [types[o] for o in seg.outputs],
                initializer=[self.initializers[i] for i in dict.fromkeys(used) if i in self.initializers])
            seg.session = ort_session(onnx.helper.make_model(sub, ir_version=model.ir_version,
                                                             opset_imports=list(model.opset_import)), threads=threads)
        self.segments = segments
        # the initializers this class hands out itself (plugin inputs, graph outputs), read once; the
        # segments' own initializers live in their ONNX Runtime sessions
        wanted = (plugin_inputs | set(self.output_names)) & set(self.initializers)
        self._constants = {name: numpy_helper.to_array(self.initializers[name]) for name in wanted}
        self._constant_tensors: dict = {}
        # which dimensions of each plugin input the graph leaves open (no fixed size after inference):
        # TensorRT gives the plugin those as -1 and as non-constant expressions
        self._dynamic = {id(n): [_open_dims(types.get(i)) if i not in self.initializers else None for i in n.input]
                         for stage in self.plugin_stages for n in stage}

    def _constant_tensor(self, name: str):
        """An initializer as a CPU tensor, made on first use and kept (initializers do not change)."""
        import torch

        if name not in self._constant_tensors:
            self._constant_tensors[name] = torch.from_numpy(np.array(self._constants[name]))
        return self._constant_tensors[name]

    def run(self, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """The graph's outputs, or the named values (any node's outputs) for ``outputs``."""
        import torch

        values: dict[str, np.ndarray] = dict(feeds)
        for s in range(max(len(self.segments), len(self.plugin_stages))):
            seg = self.segments[s] if s < len(self.segments) else None
            if seg is not None and seg.session is not None:
                out = seg.session.run(seg.outputs, {i: values[i] for i in seg.inputs})
                values.update(zip(seg.outputs, out))
            for node in self.plugin_stages[s] if s < len(self.plugin_stages) else []:
                # a copy: the plugins read only, but torch wants writable memory under its tensors
                args = [torch.from_numpy(np.array(values[i])) if i in values else self._constant_tensor(i)
                        for i in node.input]
                dynamic = [flags if flags is not None and len(flags) == a.dim() else (False,) * a.dim()
                           for flags, a in zip(self._dynamic[id(node)], args)]
                for name, result in zip(node.output, run_plugin_node(node, args, dynamic=dynamic)):
                    values[name] = result.contiguous().numpy()
        return {name: values[name] if name in values else self._constants[name] for name in (outputs or self.output_names)}


def polygraphy_runner(model, name: str):
    """A Polygraphy runner of ``PluginGraph(model)`` (``check --backend emulated``), so the check's
    Comparator, data loader and tolerances treat it like ONNX Runtime's or TensorRT's runner."""
    from polygraphy import util
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType

    class PluginGraphRunner(BaseRunner):
        def __init__(self):
            super().__init__(name=name, prefix="emulated-plugins-runner")

        def activate_impl(self):
            self.graph = PluginGraph(model)

        def get_input_metadata_impl(self):
            import onnx

            meta = TensorMetadata()
            for i in self.graph.model.graph.input:
                dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in i.type.tensor_type.shape.dim]
                meta.add(i.name, dtype=DataType.from_dtype(onnx.helper.tensor_dtype_to_np_dtype(
                    i.type.tensor_type.elem_type)), shape=dims)
            return meta

        def infer_impl(self, feed_dict):
            import time

            feeds = {k: util.array.to_numpy(v) for k, v in feed_dict.items()}
            start = time.time()
            out = self.graph.run(feeds)
            self.inference_time = time.time() - start  # the Comparator sums it (meaningless here)
            return out

        def deactivate_impl(self):
            del self.graph

    return PluginGraphRunner()
