"""The terminal table of a ``check`` report."""

from __future__ import annotations

import math

from eventspd_export.check.polygraphy_check import CheckReport


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.2e}"


def format_table(report: CheckReport) -> str:
    head = ("part", "output", "K", "max abs", "max rel", "median rel", "checked", "tolerance", "result")
    rows = [head]
    for r in report.rows:
        rows.append((r.part, r.output, "-" if r.k is None else str(r.k), _fmt(r.max_abs), _fmt(r.max_rel),
                     _fmt(r.median_rel), _fmt(r.checked), r.tolerance.describe(), r.verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    right = {2, 3, 4, 5, 6}
    lines = [f"{report.backend} {report.precision} vs PyTorch fp32 (Polygraphy SimpleCompareFunc):"]
    for j, row in enumerate(rows):
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  " + "  ".join(cells).rstrip())
        if j == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    n_fail = len(report.failures())
    lines.append(f"{'PASSED' if report.passed else 'FAILED'}: "
                 f"{sum(1 for r in report.rows if r.tolerance.gating) - n_fail} of "
                 f"{sum(1 for r in report.rows if r.tolerance.gating)} gated checks within tolerance"
                 + (f", {n_fail} exceeded" if n_fail else ""))
    return "\n".join(lines)
