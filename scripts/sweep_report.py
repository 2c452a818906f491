"""The report of a sweep (``vla sweep``): OUT/report.json, OUT/report.md, OUT/success.svg and OUT/index.html.

Per variant: success (successes / ok episodes, Wilson 95 % interval), the paired comparison with the baseline
variant on the shared (task, seed) episodes (difference and exact McNemar p-value, ``harness.compare``), training
wall time (``sweep.json``), parameters and trainable parameters (the checkpoint's config.json), and the policy's
inference latency per call (p50 / p90 ms, pooled from the benchmark's episode records). A difference is called
significant when p < 0.05; the report says "not significant" otherwise.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from common.files import write_json_atomic, write_text_atomic
from harness.compare import compare_runs
from harness.review_data import load_run
from scripts.sweep_spec import SweepSpec

ALPHA = 0.05


def _variant_row(spec: SweepSpec, state: dict, out: Path, name: str) -> dict[str, Any] | None:
    folder = out / "variants" / name
    results_path = folder / "bench" / "results.json"
    if not state["variants"].get(name, {}).get("benched") or not results_path.exists():
        return None
    results = json.loads(results_path.read_text())
    overall = results["overall"]
    ckpt = json.loads((folder / "run" / "checkpoints" / "last" / "config.json").read_text())
    inference = results.get("timing_ms", {}).get("inference", {})
    return {
        "variant": name,
        "episodes": overall["episodes"],
        "successes": overall["successes"],
        "success_rate": overall["success_rate"],
        "ci95": overall["ci95"],
        "errors": overall["errors"] + overall["timeouts"],
        "per_task": {
            t: {k: v[k] for k in ("episodes", "successes", "success_rate", "ci95")}
            for t, v in results["per_task"].items()
        },
        "train_s": round(state["variants"][name]["train_s"], 1),
        "train_steps": ckpt.get("step"),
        "total_params": ckpt.get("total_params"),
        "trainable_params": ckpt.get("trainable_params"),
        "inference_ms_p50": inference.get("p50"),
        "inference_ms_p90": inference.get("p90"),
        "cpu": results.get("provenance", {}).get("cpu"),
        "recipe": spec.variants[name]["train"],
        "bench": spec.variants[name]["bench"],
        "commands": [
            f"vla train --config {folder / 'recipe.yaml'} --data {spec.data} --out {folder / 'run'}",
            f"vla bench --config {folder / 'bench.yaml'}",
        ],
    }


def _paired(out: Path, baseline: str, name: str) -> dict[str, Any]:
    cmp = compare_runs(load_run(out / "variants" / baseline / "bench"), load_run(out / "variants" / name / "bench"))
    o = cmp.overall
    return {
        "n_pairs": o.n_pairs,
        "difference": o.difference,
        "baseline_only_successes": o.b,
        "variant_only_successes": o.c,
        "p_value": o.p_value,
        "significant": o.p_value < ALPHA,
    }


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} ms"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def _sentence(spec: SweepSpec, rows: list[dict]) -> str:
    """One sentence: the best variant, its interval, and whether it beats the baseline significantly."""
    rated = [r for r in rows if r["success_rate"] is not None]
    if not rated:
        return f"{spec.name}: no variant has a finished benchmark yet."
    best = max(rated, key=lambda r: r["success_rate"])
    lo, hi = best["ci95"]
    text = f"{spec.name}: best is {best['variant']} at {_pct(best['success_rate'])} [{_pct(lo)}, {_pct(hi)}]"
    if best["variant"] == spec.baseline:
        others = [r for r in rated if r["variant"] != spec.baseline and "vs_baseline" in r]
        sig = [r["variant"] for r in others if r["vs_baseline"]["significant"]]
        tail = f"; significantly better than {', '.join(sig)}" if sig else "; no other variant differs significantly"
        return text + f" (the baseline){tail} (exact McNemar, p < {ALPHA})."
    p = best["vs_baseline"]["p_value"]
    verdict = "significant" if p < ALPHA else "not significant"
    diff = best["vs_baseline"]["difference"]
    return text + f", {100 * diff:+.0f} points vs {spec.baseline} (paired McNemar p = {p:.3g}, {verdict})."


def success_svg(rows: list[dict], title: str) -> str:
    """A bar chart of success rates with Wilson 95 % whiskers, one bar per variant (SVG text)."""
    width, height, left, bottom, bar = 120 + 110 * len(rows), 300, 60, 250, 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="12"><text x="{left}" y="18" font-size="14">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{bottom}" x2="{width - 20}" y2="{bottom}" stroke="#333"/>',
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = bottom - 200 * tick
        parts.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{int(100 * tick)}%</text>')
        parts.append(f'<line x1="{left}" y1="{y}" x2="{width - 20}" y2="{y}" stroke="#ddd"/>')
    for i, row in enumerate(rows):
        x = left + 30 + 110 * i
        rate = row["success_rate"] or 0.0
        lo, hi = row["ci95"] if row["ci95"] else (rate, rate)
        parts.append(f'<rect x="{x}" y="{bottom - 200 * rate}" width="{bar}" height="{200 * rate}" fill="#4c78a8"/>')
        cx = x + bar / 2
        parts.append(f'<line x1="{cx}" y1="{bottom - 200 * lo}" x2="{cx}" y2="{bottom - 200 * hi}" stroke="#000"/>')
        parts.append(f'<text x="{cx}" y="{bottom + 16}" text-anchor="middle">{html.escape(row["variant"])}</text>')
        parts.append(f'<text x="{cx}" y="{bottom + 30}" text-anchor="middle">{_pct(row["success_rate"])}</text>')
    return "\n".join(parts) + "\n</svg>\n"


def _markdown(spec: SweepSpec, rows: list[dict], summary: str) -> str:
    lines = [f"# Sweep: {spec.name}", "", spec.question, "", summary, "", "![success](success.svg)", ""]
    lines += [
        "| variant | success | 95 % CI | vs baseline | McNemar p | train | params | trainable | inference p50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs = r.get("vs_baseline")
        diff = "baseline" if vs is None else f"{100 * vs['difference']:+.0f} pts"
        p = "" if vs is None else f"{vs['p_value']:.3g}" + ("" if vs["significant"] else " (n.s.)")
        lo, hi = r["ci95"] or (None, None)
        lines.append(
            f"| {r['variant']} | {r['successes']}/{r['episodes']} = {_pct(r['success_rate'])} | "
            f"[{_pct(lo)}, {_pct(hi)}] | {diff} | {p} | {r['train_s'] / 60:.1f} min | {r['total_params']:,} | "
            f"{r['trainable_params']:,} | {_ms(r['inference_ms_p50'])} |"
        )
    lines += ["", f"Machine (train time and latency were measured on it): {_machines(rows)}.", ""]
    lines += ["Commands (per variant):", ""]
    for r in rows:
        lines += [f"* {r['variant']}: `{r['commands'][0]}` then `{r['commands'][1]}`"]
    return "\n".join(lines) + "\n"


def _machines(rows: list[dict]) -> str:
    """The distinct CPUs the variants ran on (model, SIMD flags, oneDNN caps), from each bench's provenance."""
    seen: list[str] = []
    for r in rows:
        cpu = r.get("cpu")
        if not cpu:
            desc = "not recorded"
        else:
            caps = "".join(f", {k}={v}" for k, v in sorted(cpu.get("isa_caps", {}).items()))
            desc = f"{cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['flags']) or 'no AVX2'}{caps})"
        if desc not in seen:
            seen.append(desc)
    return "; ".join(seen) or "none"


def _index_html(spec: SweepSpec, rows: list[dict], summary: str) -> str:
    items = "".join(
        f'<li><a href="variants/{html.escape(r["variant"])}/bench/index.html">{html.escape(r["variant"])}</a>: '
        f"{r['successes']}/{r['episodes']} ({_pct(r['success_rate'])})</li>"
        for r in rows
    )
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(spec.name)}</title>"
        f"<h1>Sweep: {html.escape(spec.name)}</h1><p>{html.escape(spec.question)}</p><p>{html.escape(summary)}</p>"
        f"<img src='success.svg' alt='success per variant'><h2>Galleries</h2><ul>{items}</ul>"
        "<p>Numbers: <a href='report.md'>report.md</a>, <a href='report.json'>report.json</a>.</p>\n"
    )


def write_report(spec: SweepSpec, state: dict, out: Path) -> dict[str, Any]:
    """Write OUT/report.json, report.md, success.svg and index.html from the finished variants; returns the
    report dict (``summary`` is the one-sentence answer)."""
    rows = [row for name in spec.variants if (row := _variant_row(spec, state, out, name)) is not None]
    have_baseline = any(r["variant"] == spec.baseline for r in rows)
    for row in rows:
        if have_baseline and row["variant"] != spec.baseline:
            row["vs_baseline"] = _paired(out, spec.baseline, row["variant"])
    summary = _sentence(spec, rows)
    report = {
        "sweep": spec.name,
        "question": spec.question,
        "spec": str(spec.path),
        "data": spec.data,
        "baseline": spec.baseline,
        "alpha": ALPHA,
        "summary": summary,
        "variants": rows,
        "missing": [n for n in spec.variants if n not in {r["variant"] for r in rows}],
    }
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "success.svg", success_svg(rows, spec.name))
    write_text_atomic(out / "report.md", _markdown(spec, rows, summary))
    write_text_atomic(out / "index.html", _index_html(spec, rows, summary))
    return report
