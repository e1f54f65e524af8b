"""The benchmark's outputs: JSON file, terminal table and PNG plot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


from eventspd_export.artifacts import json_bytes
from eventspd_export.bench.options import MATPLOTLIB_PIN, STAGE_LABELS


def write_json(result: dict, path: str | os.PathLike) -> Path:
    from model_def.atomic import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write(json_bytes(result))
    return path


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _spread(s: dict) -> str:
    return f"{_ms(s['median_ms'])} [{_ms(s['min_ms'])}-{_ms(s['max_ms'])}]"


def _k_text(k: float | None) -> str:
    return "-" if k is None else f"{k:,.0f}"


def _load_text(env: dict) -> str:
    a, b = env.get("load_average_start"), env.get("load_average_end")
    return "-" if a is None else f"{a:.2f} -> {b:.2f}" if b is not None else f"{a:.2f}"


def format_table(result: dict) -> str:
    s, env, cfg = result["settings"], result["environment"], result["config"]
    lines = [
        f"EventSPD bench: config {cfg['name']} {cfg['width']}x{cfg['height']}, {s['device']} "
        f"({env['device_name']}, {env['torch_threads']} torch threads), {s['precision']}, "
        f"{s['events']:,} events, median [min-max] of {s['repeat']} after {s['warmup']} warm-up, "
        f"{s['timer']}; times in ms; load average {_load_text(env)}",
    ]
    params = result["eventspd_params"]
    lines.append(f"EventSPD parameters: {params['total']:,} (+ F^3 {params['f3']:,})")
    for name, d in result["dense"].items():
        p = d["params"]
        graphs = (", torch.compile" if d.get("compiled") else "") + (", CUDA graphs" if d.get("cuda_graphs") else "")
        lines.append(f"dense baseline [{name}: ops {d['ops_backend']}{graphs}] F^3 ds2 + ViT-S/14 + DPT: "
                     f"{p['dense_total']:,} parameters (ViT+DPT without patch embedding "
                     f"{p['vit_dpt']:,}; 64-channel patch embedding {p['patch_embed_64ch']:,}; "
                     f"DAv2-S {p['dav2_s_reference']:,})")
        for mode, m in d["modes"].items():
            st = "  ".join(f"{STAGE_LABELS[k]} {_ms(v['median_ms'])}" for k, v in m["stages"].items())
            h, w = m["input_hw"]
            lines.append(f"  {mode:<7} {w}x{h}: {_spread(m['total'])}   ({st})")
    for name, e in result["backends"].items():
        lines.append("")
        if e["status"] != "ok":
            lines.append(f"backend {name}: {e['status'].upper()}: {e['reason']}")
            continue
        lines.append(f"backend {name}: {e['runtime']}")
        lines.append(f"  precompute {_spread(e['precompute'])}")
        dense = e["dense"]
        head = f"  {'K':>6}  {'decoder':>22}  {'end to end':>22}"
        if dense:
            head += f"  {'vs dense ' + dense['mode']:>15}"
            if e["speedup_square"] and dense["mode"] != "square":
                head += f"  {'vs 518x518':>11}"
        lines.append(head)
        for k in e["decoder"]:
            row = f"  {k:>6}  {_spread(e['decoder'][k]):>22}  {_spread(e['end_to_end'][k]):>22}"
            if dense:
                row += f"  {e['speedup'][k]:>14.2f}x"
                if e["speedup_square"] and dense["mode"] != "square":
                    row += f"  {e['speedup_square'][k]:>10.2f}x"
            lines.append(row)
        f, fe = e["fit"], e["fit_end_to_end"]
        lines.append(f"  fit T(K) = T_pre + beta*K: T_pre = {_ms(f['t_pre_ms'])} ms, beta = "
                     f"{f['beta_us']:.2f} us/query (r2 {f['r2']:.3f}); end-to-end fit: T_pre = "
                     f"{_ms(fe['t_pre_ms'])} ms, beta = {fe['beta_us']:.2f} us/query")
        for mode, c in e["crossover"].items():
            lines.append(f"  crossover vs dense {mode} ({_ms(c['dense_ms'])} ms): K = {_k_text(c['k'])}"
                         f" ({c['note']})")
        if e["stages"]:
            st = e["stages"]
            total = sum(v["median_ms"] for v in st["precompute"].values())
            lines.append("  precompute stages: " + ", ".join(
                f"{STAGE_LABELS[k]} {_ms(v['median_ms'])} ({100 * v['median_ms'] / total:.0f}%)"
                for k, v in st["precompute"].items()))
            for k, stages in st["decoder"].items():
                lines.append(f"  decoder stages K={k}: " + ", ".join(
                    f"{STAGE_LABELS[n]} {_ms(v['median_ms'])}" for n, v in stages.items()))
            lines.append(f"  stage check (staged vs model output, max abs diff): precompute "
                         f"{st['check']['precompute_max_abs_diff']:.2e}, decoder "
                         f"{st['check']['decoder_max_abs_diff']:.2e}")
        elif e["stages_reason"]:
            lines.append(f"  stages: {e['stages_reason']}")
        if e.get("graph_check"):
            g = e["graph_check"]
            lines.append(f"  graph check (replay vs eager, max relative difference): precompute "
                         f"{g['precompute_max_rel']:.2e}, decoder {g['decoder_max_rel']:.2e}")
        mem = e["memory"]
        dev = f", device peak {mem['device_peak_mb']:.0f} MB" if mem["device_peak_mb"] is not None else ""
        lines.append(f"  memory: host peak RSS {mem['host_peak_rss_mb']:.0f} MB ({mem['host_scope']}){dev}")
    plot = result["plot"]
    if plot["status"] != "not requested":
        lines.append("")
        lines.append(f"plot: {plot['path']}" if plot["status"] == "written"
                     else f"plot: skipped: {plot['reason']}")
    return "\n".join(lines)


def write_plot(result: dict, path: str | os.PathLike) -> dict:
    """Latency against K per backend (measured end-to-end medians and the fitted line), the
    dense baseline as horizontal lines, crossovers marked. Returns the ``plot`` field."""
    path = Path(path)
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display on benchmark machines
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return {"path": None, "status": "skipped",
                "reason": f"matplotlib does not import ({exc}); pip install {MATPLOTLIB_PIN}"}
    ok = {n: e for n, e in result["backends"].items() if e["status"] == "ok"}
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {name: colors[i % len(colors)] for i, name in enumerate(ok)}
    ks_all = [int(k) for k in result["settings"]["ks"]]
    k_hi = max(ks_all)
    for e in ok.values():  # extend the axis to show crossovers a little beyond the measured K
        for c in e["crossover"].values():
            if c["k"] is not None and c["k"] <= 100 * k_hi:
                k_hi = max(k_hi, c["k"])
    k_line = np.geomspace(max(1, min(ks_all)), k_hi * 1.3, 200)
    for i, (name, e) in enumerate(ok.items()):
        col = color_of[name]
        ks = [int(k) for k in e["end_to_end"]]
        ax.plot(ks, [e["end_to_end"][str(k)]["median_ms"] for k in ks], "o", color=col,
                label=f"{name}: measured end to end")
        f = e["fit"]
        ax.plot(k_line, f["t_pre_ms"] + f["beta_us"] * 1e-3 * k_line, "-", color=col, alpha=0.8,
                label=f"{name}: fit {_ms(f['t_pre_ms'])} ms + {f['beta_us']:.2f} us*K")
        for mode, c in e["crossover"].items():
            if c["k"] is not None and c["k"] <= k_line[-1]:
                ax.plot([c["k"]], [c["dense_ms"]], "X", color=col, markersize=11, zorder=5)
                # The table and JSON give every crossover; label only the reference (dav2) ones
                # so the labels of several backends do not pile up.
                if mode == e["dense"]["mode"]:
                    ax.annotate(f"K*={c['k']:,.0f}", (c["k"], c["dense_ms"]), textcoords="offset points",
                                xytext=(-10, 8 + 10 * i), ha="right", color=col, fontsize=8)
    styles = {"dav2": "--", "square": ":"}
    for j, (dname, d) in enumerate(result["dense"].items()):
        for mode, m in d["modes"].items():
            h, w = m["input_hw"]
            # a dense entry timed with a backend's ops and optimisation level takes its colour
            ax.axhline(m["total"]["median_ms"], color=color_of.get(dname, "black" if j == 0 else "gray"),
                       linestyle=styles.get(mode, "-."), linewidth=1.2,
                       label=f"dense F^3+DAv2-S {w}x{h} [{dname}]: {_ms(m['total']['median_ms'])} ms")
    skipped = [f"{n} ({e['status']})" for n, e in result["backends"].items() if e["status"] != "ok"]
    cfg, s = result["config"], result["settings"]
    title = (f"EventSPD T(K) vs dense baseline: {cfg['name']} {cfg['width']}x{cfg['height']}, "
             f"{s['device']} {result['environment']['device_name']}, {s['precision']}")
    ax.set_title(title + ("\nnot run: " + ", ".join(skipped) if skipped else ""), fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("K (query pixels per window)")
    ax.set_ylabel("latency per window (ms)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing measured: the title says what did not run
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return {"path": str(path), "status": "written", "reason": None}
