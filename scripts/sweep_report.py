"""The report of a sweep (``vla sweep``): OUT/report.json, OUT/report.md, OUT/success.svg and OUT/index.html.

Per variant: success (successes / ok episodes, Wilson 95 % interval), the paired comparison with the baseline
variant on the shared (task, seed) episodes (difference and exact McNemar p-value, ``harness.compare``), training
wall time (``sweep.json``), parameters and trainable parameters (the checkpoint's config.json), and the policy's
inference latency per call (p50 / p90 ms, pooled from the benchmark's episode records). A difference is called
significant when p < 0.05; the report says "not significant" otherwise.

With ``replicates: N > 1`` (N training seeds per variant) a variant's row pools its replicates: successes over
every replicate's episodes (Wilson interval of the pooled count), each replicate's own success under
``replicates`` and their range under ``replicate_range``; training time and latency are the mean and median over
replicates. The paired test pairs replicate r of the variant with replicate r of the baseline on each (task,
seed) and applies the exact McNemar test to the discordant pairs summed over replicates (the pooled form of the
stratified test). The pooled interval treats episodes as independent, so it does not widen for training-seed
variance: read it with the per-replicate range.
"""

from __future__ import annotations

import html
import json
import statistics
from pathlib import Path
from typing import Any

from common.files import write_json_atomic, write_text_atomic
from harness.compare import compare_runs
from harness.metrics import mcnemar_exact, wilson_interval
from harness.review_data import load_run
from scripts.sweep_spec import SweepSpec, unit_name

ALPHA = 0.05


def _unit_row(spec: SweepSpec, state: dict, out: Path, name: str) -> dict[str, Any] | None:
    """The report row of one unit (variant x replicate), or None when its benchmark has not finished."""
    folder = out / "variants" / name
    results_path = folder / "bench" / "results.json"
    if not state["variants"].get(name, {}).get("benched") or not results_path.exists():
        return None
    results = json.loads(results_path.read_text())
    overall = results["overall"]
    ckpt = json.loads((folder / "run" / "checkpoints" / "last" / "config.json").read_text())
    inference = results.get("timing_ms", {}).get("inference", {})
    unit = spec.units[name]
    return {
        "variant": unit["variant"],
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
        "recipe": unit["train"],
        "bench": unit["bench"],
        "commands": [
            f"vla train --config {folder / 'recipe.yaml'} --data {spec.data} --out {folder / 'run'}",
            f"vla bench --config {folder / 'bench.yaml'}",
        ],
    }


def _pool(name: str, units: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """One variant's row from its (replicate, unit row) pairs (see the module docstring)."""
    reps = [row for _, row in units]
    k, n = sum(r["successes"] for r in reps), sum(r["episodes"] for r in reps)
    per_task: dict[str, dict[str, Any]] = {}
    for r in reps:
        for task, block in r["per_task"].items():
            t = per_task.setdefault(task, {"episodes": 0, "successes": 0})
            t["episodes"] += block["episodes"]
            t["successes"] += block["successes"]
    for t in per_task.values():
        t["success_rate"] = t["successes"] / t["episodes"] if t["episodes"] else None
        t["ci95"] = list(wilson_interval(t["successes"], t["episodes"]))
    rates = [r["success_rate"] for r in reps if r["success_rate"] is not None]
    p50s = [r["inference_ms_p50"] for r in reps if r["inference_ms_p50"] is not None]
    p90s = [r["inference_ms_p90"] for r in reps if r["inference_ms_p90"] is not None]
    keep = ("episodes", "successes", "success_rate", "ci95", "train_s", "cpu", "commands")
    return {
        **reps[0],
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else None,
        "ci95": list(wilson_interval(k, n)),
        "errors": sum(r["errors"] for r in reps),
        "per_task": per_task,
        "train_s": round(sum(r["train_s"] for r in reps) / len(reps), 1),
        "inference_ms_p50": statistics.median_high(p50s) if p50s else None,
        "inference_ms_p90": statistics.median_high(p90s) if p90s else None,
        "replicates": [{"replicate": i, "seed": r["recipe"].get("seed"), **{x: r[x] for x in keep}} for i, r in units],
        "replicate_range": [min(rates), max(rates)] if rates else None,
    }


def _paired(out: Path, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Exact McNemar of the variant vs the baseline over (baseline unit, variant unit) pairs, one per replicate:
    discordant pairs summed over replicates (``harness.compare`` pairs each replicate on its (task, seed) keys)."""
    stats = [
        compare_runs(load_run(out / "variants" / a / "bench"), load_run(out / "variants" / b / "bench")).overall
        for a, b in pairs
    ]
    n = sum(o.n_pairs for o in stats)
    b, c = sum(o.b for o in stats), sum(o.c for o in stats)
    p = stats[0].p_value if len(stats) == 1 else mcnemar_exact(b, c)
    diff = stats[0].difference if len(stats) == 1 else ((c - b) / n if n else None)
    out_ = {
        "n_pairs": n,
        "difference": diff,
        "baseline_only_successes": b,
        "variant_only_successes": c,
        "p_value": p,
        "significant": p < ALPHA,
    }
    return out_ if len(pairs) == 1 else {**out_, "replicates_paired": len(pairs)}


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
    reps = spec.replicates > 1
    if reps:
        lines += [
            f"Each variant was trained {spec.replicates} times (training seeds seed, seed + 1, ...): success pools the "
            "replicates, McNemar pairs replicate r of a variant with replicate r of the baseline on each seed; the "
            "per-replicate column shows the training-seed spread the pooled interval does not.",
            "",
        ]
    extra, sep = (" per replicate |", "---|") if reps else ("", "")
    head = f"| variant | success | 95 % CI |{extra} vs baseline | McNemar p | train | params | trainable |"
    lines += [
        head + " inference p50 |",
        f"|---|---|---|{sep}---|---|---|---|---|---|",
    ]
    for r in rows:
        vs = r.get("vs_baseline")
        diff = "baseline" if vs is None else f"{100 * vs['difference']:+.0f} pts"
        p = "" if vs is None else f"{vs['p_value']:.3g}" + ("" if vs["significant"] else " (n.s.)")
        lo, hi = r["ci95"] or (None, None)
        each = " " + ", ".join(f"{u['successes']}/{u['episodes']}" for u in r["replicates"]) + " |" if reps else ""
        lines.append(
            f"| {r['variant']} | {r['successes']}/{r['episodes']} = {_pct(r['success_rate'])} | "
            f"[{_pct(lo)}, {_pct(hi)}] |{each} {diff} | {p} | {r['train_s'] / 60:.1f} min | {r['total_params']:,} | "
            f"{r['trainable_params']:,} | {_ms(r['inference_ms_p50'])} |"
        )
    units = [(r["variant"], u) for r in rows for u in r.get("replicates", [r])]
    lines += ["", f"Machine (train time and latency were measured on it): {_machines([u for _, u in units])}.", ""]
    lines += ["Commands (per variant" + (" and replicate):" if reps else "):"), ""]
    for name, u in units:
        label = f"{name} (replicate {u['replicate']})" if reps else name
        lines += [f"* {label}: `{u['commands'][0]}` then `{u['commands'][1]}`"]
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
    done = {u: row for u in spec.units if (row := _unit_row(spec, state, out, u)) is not None}
    rows = []
    for name in spec.variants:
        units = [(r, done[u]) for r in range(spec.replicates) if (u := unit_name(name, r)) in done]
        if units:
            rows.append(units[0][1] if spec.replicates == 1 else _pool(name, units))
    for row in rows:
        name = row["variant"]
        pairs = [(unit_name(spec.baseline, r), unit_name(name, r)) for r in range(spec.replicates)]
        pairs = [(a, b) for a, b in pairs if a in done and b in done]
        if name != spec.baseline and pairs:
            row["vs_baseline"] = _paired(out, pairs)
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
        "missing": [u for u in spec.units if u not in done],
    }
    if spec.replicates > 1:
        report["replicates"] = spec.replicates
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "success.svg", success_svg(rows, spec.name))
    write_text_atomic(out / "report.md", _markdown(spec, rows, summary))
    write_text_atomic(out / "index.html", _index_html(spec, rows, summary))
    return report
