"""The TensorRT plugin library (``libeventspd_plugins.so``) as the engine build uses it: where it
is found, loading it into the chosen TensorRT flavour (once per process), and checking that a
parsed network really uses the EventSPD plugin layers the ONNX graph's custom nodes ask for."""

from __future__ import annotations

import ctypes
from collections import Counter
import logging
import os
from pathlib import Path

from eventspd_export.artifacts import PLUGIN_LIBRARY
from eventspd_export.runtime.trt_flavour import Runtime
from eventspd_export.trt.errors import EngineBuildError, PluginLibraryError
from model_def import ops

log = logging.getLogger(__name__)


DEFAULT_PLUGIN_BUILD = Path(__file__).resolve().parents[2] / "build" / "tensorrt_plugins" / PLUGIN_LIBRARY
PLUGIN_NODES = {  # the custom nodes each graph carries (ONNX op_type == TensorRT plugin name)
    "precompute": (ops.PLUGIN_SPECS["event_splat"].plugin_name,),
    "decoder": (ops.PLUGIN_SPECS["topr_route"].plugin_name, ops.PLUGIN_SPECS["deform_read"].plugin_name),
}
OPTIONAL_PLUGIN_NODES = {  # custom nodes a graph may carry as well: `onnx --fused-blocks`, one per block
    "precompute": (ops.PLUGIN_SPECS["convnext_block"].plugin_name,),
    "decoder": (),
}


def resolve_plugin_library(path: str | os.PathLike | None, *folders: Path | None) -> Path:
    """The given library, else ``libeventspd_plugins.so`` in the first of ``folders`` that has
    one, else the ``eventspd-export build-plugins`` output."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise PluginLibraryError(f"plugin library {p} not found: build it with `eventspd-export "
                                     "build-plugins --tensorrt-root DIR` or pass --plugins PATH")
        return p
    places = [Path(f) for f in folders if f is not None] + [DEFAULT_PLUGIN_BUILD.parent]
    for folder in places:
        if (folder / PLUGIN_LIBRARY).is_file():
            return folder / PLUGIN_LIBRARY
    raise PluginLibraryError(f"{PLUGIN_LIBRARY} not found (looked in {', '.join(map(str, dict.fromkeys(places)))}): "
                             "build it with `eventspd-export build-plugins --tensorrt-root DIR` or pass --plugins PATH")


# ---- the plugin library --------------------------------------------------------------------

_LOADED_PLUGINS: dict[str, ctypes.CDLL] = {}


def load_plugins(runtime: Runtime, path: Path) -> None:
    """dlopen the plugin library once per process and check that the registry now has the four
    EventSPD creators (one per ``PLUGIN_SPECS`` entry).

    Registration: the library registers its creators when it is loaded, under their namespace
    ``eventspd`` (plugins/common/registration.cpp); the Python tools use only that (``ctypes.CDLL``,
    the mechanism of ``polygraphy --plugins`` and ``trtexec --staticPlugins``). Each creator must be
    found by the registry's keyed lookup ``get_creator(name, version, namespace)``, the one a plan's
    plugin layers are deserialised through, and be listed once in ``all_creators`` where the
    bindings list them. A library registered under another namespace (TensorRT's own
    ``REGISTER_TENSORRT_PLUGIN`` registers under "") is listed but not found by key: refused."""
    key = str(Path(path).resolve())
    if key not in _LOADED_PLUGINS:
        try:
            _LOADED_PLUGINS[key] = ctypes.CDLL(key)
        except OSError as exc:
            raise PluginLibraryError(f"cannot load the plugin library {path} ({exc}); rebuild it for "
                                     f"{runtime.title} with `eventspd-export build-plugins --runtime "
                                     f"{runtime.name}`") from None
    listed = runtime.registered_creators()
    getter = getattr(runtime.trt.get_plugin_registry(), "get_creator", None)
    missing, unkeyed, doubled = [], [], []
    for spec in ops.PLUGIN_SPECS.values():
        ident = (spec.plugin_name, spec.plugin_version, ops.PLUGIN_NAMESPACE)
        label = f"{spec.plugin_name} version {spec.plugin_version}"
        count = None if listed is None else listed.count(ident)
        keyed = _found_by_key(getter, ident)
        if keyed is False or (keyed is None and count == 0):
            (unkeyed if count else missing).append(label)
        elif count is not None and count > 1:
            doubled.append(spec.plugin_name)
    rebuild = (f"rebuild the library from this checkout for {runtime.title} with "
               f"`eventspd-export build-plugins --runtime {runtime.name}`")
    if missing:
        raise PluginLibraryError(f"{path} loaded but the registry has no creator for "
                                 f"{', '.join(missing)} (namespace {ops.PLUGIN_NAMESPACE!r}); {rebuild}")
    if unkeyed:
        raise PluginLibraryError(f"{path} registers {', '.join(unkeyed)}, but TensorRT's get_creator(name, version, "
                                 f"{ops.PLUGIN_NAMESPACE!r}) does not find them, and deserialising an engine looks its "
                                 f"plugins up that way: the library registers them under another namespace; {rebuild}")
    if doubled:
        log.warning("the registry holds %s twice (the plugin library was loaded twice, e.g. from two paths); "
                    "the parser uses the first", ", ".join(doubled))


def _found_by_key(getter, ident: tuple[str, str, str]) -> bool | None:
    """Whether ``registry.get_creator(*ident)`` finds the creator; None where the bindings lack it."""
    if getter is None:
        return None
    try:
        return getter(*ident) is not None
    except Exception:  # noqa: BLE001 - binding differences between versions
        return None


# ---- network inspection ---------------------------------------------------------------------

def _plugin_layer_types(trt) -> set:
    return {getattr(trt.LayerType, n) for n in ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3") if hasattr(trt.LayerType, n)}


def _plugin_name_of(trt, layer) -> str | None:
    """Best effort: the plugin name of a plugin layer (the Python bindings differ by version)."""
    try:
        if hasattr(trt.LayerType, "PLUGIN_V3") and layer.type == trt.LayerType.PLUGIN_V3:
            layer.__class__ = trt.IPluginV3Layer
            plugin = layer.get_plugin() if hasattr(layer, "get_plugin") else layer.plugin
            core = plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
            if hasattr(trt, "IPluginV3OneCore"):
                core.__class__ = trt.IPluginV3OneCore
            return str(core.plugin_name)
        if hasattr(trt.LayerType, "PLUGIN_V2") and layer.type == trt.LayerType.PLUGIN_V2:
            layer.__class__ = trt.IPluginV2Layer
            return str(layer.plugin.plugin_type)
    except Exception:  # noqa: BLE001
        return None
    return None


def plugin_layers(trt, network) -> list[tuple[str, str | None]]:
    """(layer name, plugin name or None) of every plugin layer of a parsed network."""
    kinds = _plugin_layer_types(trt)
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds:
            out.append((layer.name, _plugin_name_of(trt, layer)))
    return out


def verify_plugin_layers(graph: str, layers: list[tuple[str, str | None]], onnx_nodes: dict[str, str]) -> list[str]:
    """Check that each custom ONNX node (``{node name: op_type}``) became a plugin layer.

    A layer matches a node when its plugin name is the node's op_type, or (bindings that do not
    expose the name) when its layer name is the node's name — the parser names a node's layer
    after the node. Each graph carries each of PLUGIN_NODES once, and may carry
    OPTIONAL_PLUGIN_NODES any number of times. Returns the distinct plugin names found (sorted);
    raises ``EngineBuildError`` otherwise."""
    expected = list(PLUGIN_NODES[graph])
    optional = set(OPTIONAL_PLUGIN_NODES[graph])
    required_nodes = sorted(t for t in onnx_nodes.values() if t not in optional)
    found, missed = [], []
    by_plugin = Counter(name for _layer, name in layers if name is not None)  # each layer matches one node
    for node_name, op_type in onnx_nodes.items():
        if by_plugin[op_type] > 0:
            by_plugin[op_type] -= 1
            hit = True
        else:
            hit = any(name is None and (layer == node_name or layer.startswith(node_name + "_")
                                        or layer.startswith(node_name + " ")) for layer, name in layers)
        (found if hit else missed).append(op_type)
    if missed and set(missed) <= optional:
        raise EngineBuildError(
            f"{graph}: {len(missed)} of the {len(onnx_nodes) - len(required_nodes)} "
            f"{'/'.join(sorted(optional))} node(s) did not become plugin layers (the parser inlined their "
            "function instead); rebuild the plugin library from this checkout, which has that plugin")
    if sorted(t for t in found if t not in optional) != sorted(expected) or required_nodes != sorted(expected):
        absent = sorted(set(expected) - set(found))
        raise EngineBuildError(
            f"{graph}: the custom node(s) {', '.join(absent) or expected} did not become plugin layers "
            f"(plugin layers found: {[n or l for l, n in layers] or 'none'}); the parser inlined the "
            "model-local function instead. Likely causes: TensorRT <= 10.6 (prefers the function; "
            "use 10.7+), the plugin library was not loaded before parsing, or it was built for "
            "another TensorRT version")
    return sorted(set(found))


def onnx_plugin_nodes(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {n.name: n.op_type for n in model.graph.node if n.domain == ops.PLUGIN_DOMAIN}
