"""A ``polygraphy run --data-loader-script`` for the EventSPD graphs and engines.

``load_data()`` yields valid feeds for whichever graph Polygraphy runs, for any K::

    EVENTSPD_K=4096 polygraphy run artifacts/decoder.onnx --onnxrt \\
        --data-loader-script eventspd_export/check/polygraphy_data_loader.py

Which graph: ``$EVENTSPD_GRAPH`` (``precompute`` or ``decoder``), else the model on Polygraphy's
command line (the first argument ending in ``.onnx`` or ``.engine``, or ``$EVENTSPD_MODEL``): an
ONNX file says it in its ``eventspd.graph`` metadata, an engine by its file name
(``precompute*.engine`` / ``decoder*.engine``). The sensor size comes from the ONNX metadata or
from ``eventspd.manifest.json`` next to the model.

Environment variables (all optional):

========================  =======  ========================================================
``EVENTSPD_K``            256      queries per decoder feed (any K >= 1)
``EVENTSPD_EVENTS``       20000    events per window (0 gives empty windows)
``EVENTSPD_ITERATIONS``   1        feeds to yield (consecutive windows, state carried)
``EVENTSPD_SEED``         0        seed of the windows and queries
``EVENTSPD_GRAPH``        -        force ``precompute`` or ``decoder``
``EVENTSPD_MODEL``        -        the model path, when it is not on the command line
========================  =======  ========================================================

Feeds: precompute gets smoke windows from ``eventspd_export.data.synthetic`` and ``hidden`` (zeros,
then the previous window's ``hidden_out``); the decoder gets the shared tensors (``contract.SHARED_NAMES``) as the fp32
``precompute.onnx`` next to the model computes them on those windows (ONNX Runtime), or, where
that file or ONNX Runtime is missing, as the built-in default PyTorch model of the configuration
computes them — realistic tensors either way, never random noise — plus uniform queries.
"""

from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

MANIFEST = "eventspd.manifest.json"


def _fail(message: str):
    """A user mistake in the environment this script reads: one ``error:`` line and exit code 2, as
    the eventspd-export commands give (``SystemExit("...")`` would exit 1, a failed check's code)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        _fail(f"${name}={raw!r} is not an integer")
    if value < minimum:
        _fail(f"${name}={value} must be >= {minimum}")
    return value


def _model_path() -> Path | None:
    if os.environ.get("EVENTSPD_MODEL"):
        path = Path(os.environ["EVENTSPD_MODEL"])
        if not path.is_file():
            _fail(f"$EVENTSPD_MODEL={path} is not a file (the exported precompute/decoder ONNX or engine)")
        return path
    for arg in sys.argv[1:]:
        if arg.endswith((".onnx", ".engine")) and Path(arg).is_file():
            return Path(arg)
    return None


def _describe(path: Path | None) -> tuple[str, dict]:
    """(graph, configuration dict) of the model being run."""
    graph = os.environ.get("EVENTSPD_GRAPH")
    config = None
    if path is not None and path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        graph = graph or props.get("eventspd.graph")
        if "eventspd.config" in props:
            config = json.loads(props["eventspd.config"])
    elif path is not None and graph is None:
        graph = next((g for g in ("precompute", "decoder") if path.name.startswith(g)), None)
    if config is None and path is not None and (path.parent / MANIFEST).is_file():
        config = json.loads((path.parent / MANIFEST).read_text())["config"]
    if graph not in ("precompute", "decoder"):
        _fail("cannot tell which EventSPD graph this is; set EVENTSPD_GRAPH=precompute or EVENTSPD_GRAPH=decoder")
    if config is None:
        _fail(f"no EventSPD configuration found for {path or 'the model'} (no ONNX metadata, no {MANIFEST} "
              "next to it); set EVENTSPD_MODEL to the exported ONNX")
    return graph, config


def _phase_a(cfg, folder: Path | None):
    """Phase A for the smoke windows: ONNX Runtime on the folder's precompute.onnx, else the
    seeded PyTorch model (a ``ModelPair``)."""
    from eventspd_export.runtime.torch_pair import TorchPair

    if folder is not None and (folder / "precompute.onnx").is_file():
        try:
            from eventspd_export.runtime.ort_pair import OrtPair

            return OrtPair.from_folder(cfg, folder)
        except ImportError:
            pass
    from model_def import EventSPD

    return TorchPair(EventSPD(cfg, seed=0).eval())


def load_data():
    """Polygraphy's entry point: yields ``EVENTSPD_ITERATIONS`` feed dicts."""
    from eventspd_export.data.synthetic import random_queries, synthetic_window
    from eventspd_export.runtime.pair import Stream
    from model_def import contract
    from model_def.config import ModelConfig

    path = _model_path()
    graph, config = _describe(path)
    cfg = ModelConfig.from_dict(config)
    k = _env_int("EVENTSPD_K", 256, 1)
    num_events = _env_int("EVENTSPD_EVENTS", 20_000, 0)
    iterations = _env_int("EVENTSPD_ITERATIONS", 1, 1)
    seed = _env_int("EVENTSPD_SEED", 0, 0)
    folder = path.parent if path is not None else None
    carrier = None  # the precompute state across windows, made on first need
    hidden = np.zeros(contract.hidden_spec(cfg, "hidden").shape, dtype=np.float32)
    for i in range(iterations):
        events = synthetic_window(cfg, num_events, seed=seed + 100 + i).numpy()
        if graph == "precompute":
            yield OrderedDict(events=events, hidden=hidden)
            if i + 1 < iterations:  # the next window continues this one's state
                carrier = carrier or Stream(_phase_a(cfg, folder), hidden)
                hidden = carrier.step(events)["hidden_out"]
            continue
        carrier = carrier or Stream(_phase_a(cfg, folder), hidden)
        out = carrier.step(events)
        feed = OrderedDict((n, np.ascontiguousarray(out[n], dtype=np.float32)) for n in contract.SHARED_NAMES)
        feed["queries"] = random_queries(cfg, k, seed=seed + i).numpy()
        yield feed
