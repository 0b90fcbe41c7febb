"""Write an `EvalReport` as JSON, Markdown and a self-contained HTML page with SVG plots.

`report.json` holds everything (summary, per-file scores, the beat grids, FAD/KAD details,
histograms, skip messages, the configuration). `report.md` has the summary and per-file tables.
`report.html` has the same tables plus plots drawn as inline SVG by this module (no plotting
library needed, and the page works offline):

- per file, the reference beats (grey, downbeats dark) against the beats and downbeats detected
  in the generated stem (blue / red), with the +-window tolerance shaded, over the scored span;
- per embedder, the histogram of the generated and reference embeddings projected on the first
  principal axis of their union (a 1-D view of what FAD/KAD compare).

All three files are written atomically and never replace existing files unless `overwrite`.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from stage.errors import StageError
from stage.eval.pipeline import EvalReport, FileResult
from stage.files import atomic_write_text

SUMMARY_LABELS = {
    "eval/beat_f1": "beat F1",
    "eval/beat_precision": "beat precision",
    "eval/beat_recall": "beat recall",
    "eval/downbeat_f1": "downbeat F1",
    "eval/downbeat_precision": "downbeat precision",
    "eval/downbeat_recall": "downbeat recall",
    "eval/tempo_ratio_median": "tempo ratio generated/reference (median)",
    "eval/tempo_acc1": "tempo within 4 % (share of files)",
    "eval/tempo_acc2": "tempo within 4 % up to x2, x3 (share of files)",
    "eval/onset_f1": "onset F1",
    "eval/onset_precision": "onset precision",
    "eval/onset_recall": "onset recall",
    "eval/cocola": "COCOLA score (mean)",
    "eval/clap_text": "CLAP text-audio similarity (mean)",
}


def output_paths(out: str | os.PathLike) -> tuple[Path, Path, Path]:
    """report.json -> (report.json, report.md, report.html)."""
    p = Path(out)
    if p.suffix.lower() != ".json":
        raise StageError(f"--out must name a .json file, got {p}")
    return p, p.with_suffix(".md"), p.with_suffix(".html")


def check_outputs(out: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path, Path]:
    """Validate the output paths before any work is done."""
    paths = output_paths(out)
    folder = paths[0].parent if str(paths[0].parent) else Path(".")
    if not folder.is_dir():
        raise StageError(f"{folder}: output folder does not exist")
    if not os.access(folder, os.W_OK):
        raise StageError(f"{folder}: output folder is not writable")
    if not overwrite:
        for p in paths:
            if p.exists():
                raise StageError(f"{p}: already exists (use --force to overwrite)")
    return paths


def write_report(report: EvalReport, out: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path, Path]:
    """Write report.json, report.md and report.html; returns their paths."""
    json_path, md_path, html_path = check_outputs(out, overwrite)
    atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2, allow_nan=False, default=_json_default) + "\n")
    atomic_write_text(md_path, render_markdown(report))
    atomic_write_text(html_path, render_html(report))
    return json_path, md_path, html_path


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- tables


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def _label(key: str) -> str:
    if key in SUMMARY_LABELS:
        return SUMMARY_LABELS[key]
    if key.startswith("eval/fad_"):
        return f"FAD ({key[len('eval/fad_'):]} embeddings)"
    if key.startswith("eval/kad_"):
        return f"KAD x100 ({key[len('eval/kad_'):]} embeddings)"
    return key


def _summary_rows(report: EvalReport) -> list[tuple[str, str, str]]:
    return [(key, _label(key), _fmt(v, 4)) for key, v in report.summary.items()]


def _file_columns(report: EvalReport) -> list[tuple[str, Callable[[FileResult], str]]]:
    cols: list[tuple[str, Callable[[FileResult], str]]] = [("file", lambda f: f.name), ("seconds", lambda f: _fmt(f.seconds, 2))]
    if any(f.context for f in report.files):
        cols.append(("context", lambda f: Path(f.context).name if f.context else "–"))
    if any(f.beat for f in report.files):
        cols += [
            ("beat F1", lambda f: _fmt(f.beat["beat"]["f1"]) if f.beat else "–"),
            ("downbeat F1", lambda f: _fmt(f.beat["downbeat"]["f1"]) if f.beat else "–"),
            (
                "BPM gen/ref",
                lambda f: f"{_fmt(f.beat['tempo']['generated_bpm'], 1)} / {_fmt(f.beat['tempo']['reference_bpm'], 1)}" if f.beat else "–",
            ),
            ("tempo ratio", lambda f: _fmt(f.beat["tempo"]["ratio"]) if f.beat else "–"),
        ]
    if any(f.onset for f in report.files):
        cols.append(("onset F1", lambda f: _fmt(f.onset["f1"]) if f.onset else "–"))
    if any(f.cocola is not None for f in report.files):
        cols.append(("COCOLA", lambda f: _fmt(f.cocola)))
    if any(f.clap is not None for f in report.files):
        cols.append(("CLAP text", lambda f: _fmt(f.clap)))
    if any(f.notes for f in report.files):
        cols.append(("notes", lambda f: "; ".join(f.notes) or ""))
    return cols


def _distribution_rows(report: EvalReport) -> list[list[str]]:
    rows = []
    for name, e in report.distributions.items():
        fad, kad = e.get("fad"), e.get("kad")
        rows.append([name, _fmt(fad["value"], 4) if fad else "–", _fmt(kad["value"], 4) if kad else "–",
                     _fmt(kad["bandwidth"], 4) if kad else "–", f"{e['generated_rows']} / {e['reference_rows']}",
                     str(e["dim"]), e["pooling"], f"{e['cache']['hits']} hit(s)" if e["cache"]["path"] else "off"])
    return rows


DIST_HEADER = ["embedder", "FAD", "KAD x100", "KAD bandwidth", "rows gen / ref", "dim", "pooling", "reference cache"]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines)


def render_markdown(report: EvalReport) -> str:
    cfg = report.config
    parts = ["# stage eval report", "",
             f"Generated: `{cfg.get('generated')}`; reference: `{cfg.get('reference')}`; contexts: `{cfg.get('contexts')}`.",
             f"Metrics run: {', '.join(cfg.get('metrics_run', [])) or 'none'}. Beat window ±{1000 * cfg['beat_window']:.0f} ms, "
             f"onset window ±{1000 * cfg['onset_window']:.0f} ms, first 5 s {'trimmed' if cfg['trim'] else 'counted (no trimming)'}.",
             "", "## Summary", ""]
    if report.summary:
        parts.append(_md_table(["metric", "key", "value"], [[label, f"`{key}`", v] for key, label, v in _summary_rows(report)]))
    else:
        parts.append("No metric produced a value.")
    if report.distributions:
        parts += ["", "## Distribution metrics", "", _md_table(DIST_HEADER, _distribution_rows(report))]
    parts += ["", "## Per file", ""]
    cols = _file_columns(report)
    parts.append(_md_table([c[0] for c in cols], [[fn(f) for _, fn in cols] for f in report.files]))
    if report.skipped or report.notes:
        parts += ["", "## Skipped and notes", ""] + [f"- {s}" for s in report.skipped + report.notes]
    parts += ["", "Plots (beat grids, embedding histograms) are in the HTML report next to this file.", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- SVG plots

BEAT_W, BEAT_H, PAD = 760, 96, 40


def _x(t: float, span: float) -> float:
    return PAD + (BEAT_W - 2 * PAD) * (t / span if span > 0 else 0.0)


def beat_svg(grid: dict, window: float) -> str:
    """Timeline: reference beats/downbeats (top lane, tolerance shaded) vs detected (bottom)."""
    span = float(grid.get("span") or 0.0)
    if span <= 0:
        return ""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{BEAT_W}" height="{BEAT_H}" viewBox="0 0 {BEAT_W} {BEAT_H}" '
           f'role="img" aria-label="beat grid">',
           f'<rect x="{PAD}" y="8" width="{BEAT_W - 2 * PAD}" height="68" fill="#fafafa" stroke="#ddd"/>',
           '<text x="4" y="28" font-size="10" fill="#555">ref</text><text x="4" y="62" font-size="10" fill="#555">gen</text>']
    for t in grid.get("reference_beats", []):
        if t < span:
            x0, x1 = _x(max(t - window, 0.0), span), _x(min(t + window, span), span)
            out.append(f'<rect x="{x0:.1f}" y="8" width="{max(x1 - x0, 0.5):.1f}" height="68" fill="#e8f0e0"/>')
    for t in grid.get("reference_beats", []):
        if t < span:
            out.append(f'<line x1="{_x(t, span):.1f}" y1="12" x2="{_x(t, span):.1f}" y2="40" stroke="#999" stroke-width="1.5"/>')
    for t in grid.get("reference_downbeats", []):
        if t < span:
            out.append(f'<line x1="{_x(t, span):.1f}" y1="10" x2="{_x(t, span):.1f}" y2="42" stroke="#333" stroke-width="3"/>')
    for t in grid.get("detected_onsets", []):
        out.append(f'<circle cx="{_x(t, span):.1f}" cy="72" r="1.6" fill="#8a8"/>')
    for t in grid.get("detected_beats", []):
        if t < span:
            out.append(f'<line x1="{_x(t, span):.1f}" y1="46" x2="{_x(t, span):.1f}" y2="70" stroke="#1f6fd1" stroke-width="1.5"/>')
    for t in grid.get("detected_downbeats", []):
        if t < span:
            out.append(f'<line x1="{_x(t, span):.1f}" y1="44" x2="{_x(t, span):.1f}" y2="72" stroke="#d1341f" stroke-width="3"/>')
    step = 1.0 if span <= 20 else 5.0 if span <= 100 else 30.0
    k = 0
    while k * step <= span + 1e-9:
        x = _x(k * step, span)
        out.append(f'<line x1="{x:.1f}" y1="76" x2="{x:.1f}" y2="80" stroke="#777"/>'
                   f'<text x="{x:.1f}" y="91" font-size="9" text-anchor="middle" fill="#555">{k * step:g}s</text>')
        k += 1
    out.append("</svg>")
    return "".join(out)


HIST_W, HIST_H = 420, 180


def histogram_svg(hist: dict) -> str:
    """Step outlines of the generated (blue) and reference (grey) densities."""
    edges, gen, ref = hist["edges"], hist["generated"], hist["reference"]
    top = max(max(gen, default=0), max(ref, default=0)) or 1.0
    left, right, y0, y1 = 36, HIST_W - 10, HIST_H - 28, 30
    lo, hi = edges[0], edges[-1]

    def px(v):
        return left + (right - left) * (v - lo) / (hi - lo if hi > lo else 1.0)

    def py(d):
        return y0 - (y0 - y1) * d / top

    def path(values):
        pts = [f"M{px(edges[0]):.1f},{y0:.1f}"]
        for i, v in enumerate(values):
            pts.append(f"L{px(edges[i]):.1f},{py(v):.1f}L{px(edges[i + 1]):.1f},{py(v):.1f}")
        pts.append(f"L{px(edges[-1]):.1f},{y0:.1f}")
        return "".join(pts)

    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{HIST_W}" height="{HIST_H}" viewBox="0 0 {HIST_W} {HIST_H}" '
            f'role="img" aria-label="embedding histogram">'
            f'<line x1="{left}" y1="{y0}" x2="{right}" y2="{y0}" stroke="#777"/>'
            f'<path d="{path(ref)}" fill="#bbb" fill-opacity="0.45" stroke="#666"/>'
            f'<path d="{path(gen)}" fill="#1f6fd1" fill-opacity="0.25" stroke="#1f6fd1"/>'
            f'<text x="{left}" y="{HIST_H - 12}" font-size="9" fill="#555">{lo:.3g}</text>'
            f'<text x="{right}" y="{HIST_H - 12}" font-size="9" text-anchor="end" fill="#555">{hi:.3g}</text>'
            f'<text x="{(left + right) / 2}" y="{HIST_H - 2}" font-size="10" text-anchor="middle" fill="#333">'
            f'projection on the {html.escape(hist["axis"])}</text>'
            f'<rect x="{right - 150}" y="6" width="10" height="10" fill="#1f6fd1" fill-opacity="0.4"/>'
            f'<text x="{right - 136}" y="15" font-size="10">generated</text>'
            f'<rect x="{right - 75}" y="6" width="10" height="10" fill="#bbb"/>'
            f'<text x="{right - 61}" y="15" font-size="10">reference</text></svg>')


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}
th{background:#f0f0f0}code{background:#f4f4f4;padding:0 3px}.plot{margin:0.3em 0 1em}.muted{color:#666;font-size:13px}"""


def render_html(report: EvalReport) -> str:
    cfg = report.config
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>stage eval report</title>",
             f"<style>{STYLE}</style></head><body><h1>stage eval report</h1>",
             f"<p class='muted'>generated: <code>{e(str(cfg.get('generated')))}</code> · reference: "
             f"<code>{e(str(cfg.get('reference')))}</code> · contexts: <code>{e(str(cfg.get('contexts')))}</code><br>"
             f"metrics run: {e(', '.join(cfg.get('metrics_run', [])) or 'none')} · beat window ±{1000 * cfg['beat_window']:.0f} ms"
             f" · onset window ±{1000 * cfg['onset_window']:.0f} ms · first 5 s "
             f"{'trimmed' if cfg['trim'] else 'counted (no trimming)'}</p>", "<h2>Summary</h2>"]
    if report.summary:
        parts.append(_html_table(["metric", "key", "value"], [[label, key, v] for key, label, v in _summary_rows(report)]))
    else:
        parts.append("<p>No metric produced a value.</p>")
    if report.skipped or report.notes:
        parts.append("<ul>" + "".join(f"<li>{e(s)}</li>" for s in report.skipped + report.notes) + "</ul>")
    if report.distributions:
        parts += ["<h2>Distribution metrics</h2>", _html_table(DIST_HEADER, _distribution_rows(report))]
        for name, entry in report.distributions.items():
            if entry.get("histogram"):
                parts.append(f"<h3>{e(name)} embeddings</h3><div class='plot'>{histogram_svg(entry['histogram'])}</div>")
    parts.append("<h2>Per file</h2>")
    cols = _file_columns(report)
    parts.append(_html_table([c[0] for c in cols], [[fn(f) for _, fn in cols] for f in report.files]))
    grids = [f for f in report.files if f.grid]
    if grids:
        parts.append("<h2>Beat grids</h2><p class='muted'>top lane: reference beats (grey; downbeats dark, "
                     "tolerance window shaded); bottom lane: beats (blue) and downbeats (red) detected in the generated "
                     "stem; dots: detected onsets.</p>")
        for f in grids:
            assert f.grid is not None  # `grids` holds the files with one
            score = f" · beat F1 {_fmt(f.beat['beat']['f1'])}" if f.beat else ""
            parts.append(f"<h3>{e(f.name)}</h3><p class='muted'>reference: {e(f.grid['source'])}{score}</p>"
                         f"<div class='plot'>{beat_svg(f.grid, cfg['beat_window'])}</div>")
    parts.append("</body></html>\n")
    return "".join(parts)
