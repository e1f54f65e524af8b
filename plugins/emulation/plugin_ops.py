"""``torch.ops.eventspd_plugins``' signatures, each call run as the plugin node the ONNX exporter
writes for it (``model_def.ops.node_attrs``: same op_type, attributes, version and namespace),
through the TensorRT plugin's IPluginV3 lifecycle and its emulated kernels
(``graph.run_plugin_node`` -> ``plugin_run``). So a test can put the plugin glue where it puts the
PyTorch ops: what it checks then covers the node's attributes becoming PluginFields, the
serialisation round trip, the format and shape contract, the workspace and the pointer order of
``enqueue``, on top of the kernels."""

from __future__ import annotations

from model_def import ops

from plugins.emulation.graph import run_plugin_node


def plugin_node(op: str, inputs: int, outputs: int, **fields):
    """The ONNX node the exporter writes for ``op`` with these field values."""
    import onnx

    attrs = {name[:-2]: value for name, value in ops.node_attrs(op, **fields).items()}
    return onnx.helper.make_node(ops.PLUGIN_SPECS[op].plugin_name, [f"in{i}" for i in range(inputs)],
                                 [f"out{o}" for o in range(outputs)], domain=ops.PLUGIN_DOMAIN, **attrs)


class PluginOps:
    """Drop-in for ``torch.ops.eventspd_plugins`` on CPU tensors; ``max_shapes`` (optional, one
    tuple per input) is the profile maximum the workspace is planned for."""

    def topr_route(self, attn, top_r, grid_w, grid_h, stride, max_shapes=None):
        node = plugin_node("topr_route", 1, 2, top_r=top_r, grid_w=grid_w, grid_h=grid_h, stride=stride)
        return tuple(run_plugin_node(node, [attn], max_shapes))

    def deform_read(self, v2, v3, v4, anchors, offsets, logits, strides, max_shapes=None):
        node = plugin_node("deform_read", 6, 1, strides=list(strides))
        return run_plugin_node(node, [v2, v3, v4, anchors, offsets, logits], max_shapes)[0]

    def event_splat(self, events, table, width, height, resolutions, time_scale, max_shapes=None):
        node = plugin_node("event_splat", 2, 1, width=width, height=height, resolutions=list(resolutions),
                           time_scale=float(time_scale))
        return run_plugin_node(node, [events, table], max_shapes)[0]

    def convnext_block(self, x, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1, gamma, beta, w2, b2, eps,
                       max_shapes=None):
        node = plugin_node("convnext_block", 11, 1, channels=int(x.shape[1]), eps=float(eps))
        return run_plugin_node(node, [x, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1, gamma, beta, w2, b2],
                               max_shapes)[0]
