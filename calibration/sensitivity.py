"""Per-layer quantisation sensitivity and the automatic choice of layers that stay in float.

Quantisable nodes (Conv/MatMul/Gemm) are grouped by the model scope in their exported names
(``/b2/layers.0/q/MatMul`` -> ``b2/layers.0``; ``/l3/blocks.2/...`` -> ``l3/blocks.2``; a stage
without numbered blocks is one group, e.g. ``f3`` or ``convgru``). For each group we quantise
*only that group* and measure the end-to-end error (median relative depth error against the
fp32 graphs on calibration windows). Then, starting from "everything quantised", the most
sensitive groups are kept in float one by one until the error is within the budget.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import onnx

from calibration.int8 import quantisable_nodes

log = logging.getLogger(__name__)
_NUMBERED = re.compile(r"^(layers|blocks)\.\d+$")
# B1's map projections run in Phase A as methods of B1 (exported without the b1 scope).
_ALIASES = {"w_v2": "b1", "w_v4": "b1"}


def group_of(node_name: str) -> str:
    parts = [p for p in node_name.strip("/").split("/")[:-1] if p]
    if not parts:
        return node_name
    head = _ALIASES.get(parts[0], parts[0])
    for i, part in enumerate(parts[1:4], start=1):
        if _NUMBERED.match(part):
            return "/".join([head, *parts[1:i + 1]])
    return head


def groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in quantisable_nodes(model):
        out.setdefault(group_of(name), []).append(name)
    return out


@dataclass
class SensitivityResult:
    budget: float
    errors_alone: dict[str, float] = field(default_factory=dict)  # "graph:group" -> error
    kept_float: list[str] = field(default_factory=list)  # "graph:group", most sensitive first
    error_all_int8: float = float("nan")
    error_final: float = float("nan")
    steps: list[tuple[str, float]] = field(default_factory=list)  # (group kept, error after)

    def excluded_nodes(self, graph: str, all_groups: Mapping[str, Mapping[str, list[str]]]) -> list[str]:
        names = []
        for item in self.kept_float:
            g, grp = item.split(":", 1)
            if g == graph:
                names.extend(all_groups[g][grp])
        return names

    def to_json(self) -> dict:
        return {"budget": self.budget, "errors_alone": self.errors_alone,
                "kept_float": self.kept_float, "error_all_int8": self.error_all_int8,
                "error_final": self.error_final,
                "steps": [{"kept": g, "error": e} for g, e in self.steps]}


def choose_float_layers(all_groups: Mapping[str, Mapping[str, list[str]]],
                        evaluate: Callable[[Mapping[str, list[str]] | None], float],
                        budget: float, scope: tuple[str, ...] | None = None) -> SensitivityResult:
    """``all_groups``: graph -> group -> node names. ``evaluate(exclude)`` quantises every graph
    with ``exclude[graph]`` left in float (``None``: nothing quantised) and returns the error.
    ``scope`` limits the sensitivity pass to these graphs (the others stay fully quantised)."""
    result = SensitivityResult(budget=budget)
    every = {g: [n for names in grps.values() for n in names] for g, grps in all_groups.items()}
    candidates = [(g, grp) for g, grps in all_groups.items() if scope is None or g in scope
                  for grp in grps]
    for g, grp in candidates:
        exclude = {h: [n for n in every[h] if h != g or n not in all_groups[g][grp]] for h in every}
        result.errors_alone[f"{g}:{grp}"] = evaluate(exclude)
        log.info("sensitivity %s:%s -> %.3g", g, grp, result.errors_alone[f"{g}:{grp}"])
    ranking = sorted(result.errors_alone, key=result.errors_alone.get, reverse=True)
    kept: dict[str, list[str]] = {g: [] for g in all_groups}
    error = result.error_all_int8 = evaluate(kept)
    for item in ranking:
        if error <= budget:
            break
        g, grp = item.split(":", 1)
        kept[g].extend(all_groups[g][grp])
        result.kept_float.append(item)
        error = evaluate(kept)
        result.steps.append((item, error))
    result.error_final = error
    if error > budget:
        log.warning("the budget %.3g is not reachable by keeping these groups in float "
                    "(final error %.3g)", budget, error)
    return result
