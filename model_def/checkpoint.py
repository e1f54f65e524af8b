"""Checkpoint save/load with specific errors.

Accepted layouts:
* ``{"model": state_dict, "config": {...}}`` — what ``save_checkpoint`` writes (plus a format tag);
* ``{"state_dict": ...}`` — Lightning, keys prefixed ``model.``;
* a plain ``state_dict`` (optionally DDP's ``module.`` prefix).

Training-only keys (``train_heads.*``, seed §4.1) are dropped with one info line. Missing,
unexpected and wrong-shape keys are reported by name. A truncated file, a file that is not a
checkpoint, or a checkpoint made for another configuration raise ``CheckpointError`` with the
file name and what was expected.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from .atomic import atomic_open
from .errors import UserError
from .config import CONFIGS, ModelConfig
from .model import EventSPD
from .training import TRAINING_PREFIX

log = logging.getLogger(__name__)
FORMAT = "eventspd-export/checkpoint-1"
_MAX_LISTED = 8


class CheckpointError(UserError):
    """The checkpoint cannot be used; the message says which file and why."""


@dataclass
class LoadReport:
    path: str
    layout: str
    config: ModelConfig
    config_source: str  # "checkpoint", "argument" or "default"
    dropped_training_keys: list[str] = field(default_factory=list)
    sha256: str = ""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(model: EventSPD, path: str | os.PathLike, extra: Mapping | None = None) -> None:
    """Write ``{"format", "config", "model", **extra}`` atomically (temp file + rename)."""
    payload = {"format": FORMAT, "config": model.cfg.to_dict(), "model": model.state_dict()}
    payload.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        torch.save(payload, f)


def _short(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def read_payload(path: str | os.PathLike, trusted: bool = False):
    """``torch.load`` of a checkpoint file, every failure a ``CheckpointError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file (.pt)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of plain pickles before failing on them; the
            # error below says what the file is, the warning would only come first
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        text = str(exc)
        blocked = re.search(r"unsupported GLOBAL (\S+)", text)
        if blocked:  # a pickle that would call or build a Python object when loaded
            raise CheckpointError(
                f"{path}: refused: loading it would run pickled Python code ({blocked.group(1)}), "
                "which the safe loader never does; load it with --trust-checkpoint only if you "
                "trust where the file came from") from None
        # A readable file that pickles other Python objects ("Unsupported global"), as
        # opposed to a damaged one, which also fails inside the weights-only unpickler.
        if "Unsupported global" in text or "can still be loaded" in text:
            raise CheckpointError(
                f"{path}: holds Python objects besides tensors (e.g. a Lightning checkpoint's "
                "hyper-parameters or callbacks) that the safe loader refuses; if you trust the "
                "file, load it with --trust-checkpoint (runs its pickled code)") from None
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80" and ("Unsupported operand" in text or "Invalid magic number" in text):
            raise CheckpointError(
                f"{path}: a plain pickle file, not a torch.save checkpoint (a zip archive): torch.load "
                "reads neither with nor without --trust-checkpoint; re-save the weights with "
                "torch.save(state_dict, path)") from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint — the file is truncated (an interrupted "
            f"download or copy?) or is not a torch.save file ({type(exc).__name__}: {first[:200]})"
        ) from None


def _split_layout(obj, path: Path) -> tuple[dict, dict | None, str]:
    """-> (state_dict, config dict or None, layout name)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dictionary")
    if "model" in obj and isinstance(obj["model"], Mapping):
        return dict(obj["model"]), obj.get("config"), "model+config"
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = obj["state_dict"]
        stripped = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
        if not stripped:
            raise CheckpointError(f"{path}: Lightning-style 'state_dict' has no 'model.'-prefixed "
                                  f"keys (first keys: {_short(list(sd))})")
        cfg = obj.get("config") or obj.get("hyper_parameters", {}).get("config")
        return stripped, cfg, "lightning"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), None, "state_dict"
    raise CheckpointError(
        f"{path}: no model weights found; expected a state_dict, {{'model': ..., 'config': ...}} "
        f"or Lightning's {{'state_dict': ...}} — top-level keys are: {_short([str(k) for k in obj])}")


def _strip_wrappers(state: dict) -> dict:
    """Drop the key prefixes that DDP (``module.``) and torch.compile (``_orig_mod.``) add."""
    changed = True
    while changed and state:
        changed = False
        for prefix in ("module.", "_orig_mod."):
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _config_difference(a: ModelConfig, b: ModelConfig) -> str:
    da, db = a.to_dict(), b.to_dict()
    return ", ".join(f"{k}: {da[k]!r} vs {db[k]!r}" for k in da if da[k] != db[k])


def _guess_config(state: Mapping[str, torch.Tensor]) -> str | None:
    """The built-in configuration whose every tensor shape matches ``state`` (None: none does).
    The sensor size alone cannot tell ``tiny`` from ``demo`` (same sensor, other widths), so the
    whole shape table is compared; models are built on the meta device (no memory, ~0.4 s each)."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
    for name, cfg in CONFIGS.items():
        with torch.device("meta"):
            expected = EventSPD(cfg, seed=0).state_dict()
        if all(shapes.get(k) == tuple(v.shape) for k, v in expected.items()):
            return name
    return None


def stored_config(path: str | os.PathLike, trusted: bool = False) -> ModelConfig | None:
    """The configuration a checkpoint file stores (None for a bare state_dict)."""
    path = Path(path)
    return _parse_config(_split_layout(read_payload(path, trusted), path)[1], path)


def _parse_config(cfg_dict, path: Path) -> ModelConfig | None:
    if cfg_dict is None:
        return None
    try:
        return ModelConfig.from_dict(dict(cfg_dict))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its stored configuration is not valid ({exc})") from None


def load_checkpoint(path: str | os.PathLike, config: ModelConfig | None = None,
                    trusted: bool = False) -> tuple[EventSPD, LoadReport]:
    """Build an EventSPD from a checkpoint. ``config`` (when given) must match the one stored.
    ``trusted`` allows pickled Python objects in the file (torch.load weights_only=False)."""
    path = Path(path)
    state, cfg_dict, layout = _split_layout(read_payload(path, trusted), path)
    state = _strip_wrappers(state)

    stored = _parse_config(cfg_dict, path)
    if stored is not None and config is not None and stored != config:
        raise CheckpointError(
            f"{path}: checkpoint of configuration {stored.name!r} ({stored.width}x{stored.height}), "
            f"but configuration {config.name!r} ({config.width}x{config.height}) was requested "
            f"(differences: {_config_difference(stored, config)}); drop --config to use the "
            "checkpoint's own configuration")
    cfg = stored or config or CONFIGS["hd"]
    source = "checkpoint" if stored else ("argument" if config else "default")

    dropped = sorted(k for k in state if k.startswith(TRAINING_PREFIX))
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_PREFIX)}
    if dropped:
        log.info("%s: dropped %d training-only parameters (%s*: dense heads, DAv2 connectors)",
                 path, len(dropped), TRAINING_PREFIX)

    model = EventSPD(cfg, seed=None)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
                   for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    not_float = sorted(k for k in set(state) & set(expected) if not state[k].is_floating_point())
    problems = []
    if wrong:
        guess = _guess_config(state)
        hint = ""
        if guess and guess != cfg.name:
            hint = f" — these weights look like configuration {guess!r}: pass --config {guess}"
        problems.append(f"wrong shape for {len(wrong)} keys: {_short(wrong)}{hint}")
    if missing:
        problems.append(f"missing {len(missing)} keys: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_short(unexpected)}")
    if not_float:
        problems.append(f"non-floating tensors for {len(not_float)} keys: {_short(not_float)}")
    if problems:
        raise CheckpointError(f"{path}: does not match EventSPD configuration {cfg.name!r} "
                              f"({source}): " + "; ".join(problems))
    # NaN/inf weights would give NaN depth everywhere and every comparison would "agree" with it
    nonfinite = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
                 and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise CheckpointError(f"{path}: {len(nonfinite)} tensors hold NaN or inf values ({_short(nonfinite)}); "
                              "the training run diverged or the file is damaged: use an earlier checkpoint")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, LoadReport(str(path), layout, cfg, source, dropped, sha256_file(path))
