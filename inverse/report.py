"""``report.html``: one static page per run (and one per Hydra multirun) to look at the results offline.

The page uses no scripts and no external assets: images are the run's own PNGs, linked by relative paths (the
enlarged ``images/<name>/view/`` tiles, nearest-neighbour, at least 128 px), curves are inline SVG. It is
rewritten (atomically) after every batch, like ``metrics.json``.

- Run page: per image its tiles (reference, measurement, naive, every round, final, std for K > 1) with PSNR,
  the per-round loss and PSNR curves; the metrics table (per image and mean ± std); the run's config.
- Multirun page (in the sweep directory): one row per job (method × task × ...): mean metrics and the first
  image's tiles; a method × task table of mean PSNR.
"""

from __future__ import annotations

import html
import json
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRIC_KEYS = ("psnr", "ssim", "lpips", "measurement_mse", "naive_psnr", "seconds")
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; font-size: 0.9em; }
th { background: #f2f2f2; } td.name, th.name { text-align: left; }
figure { display: inline-block; margin: 0 6px 6px 0; text-align: center; font-size: 0.8em; }
img.tile { image-rendering: pixelated; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.8em; font-size: 0.8em; overflow-x: auto; }
.image { border-top: 1px solid #ddd; padding-top: 0.6em; }
.tiles { white-space: nowrap; overflow-x: auto; }
svg { background: #fbfbfb; border: 1px solid #ddd; margin-right: 8px; }
"""


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _spread(values: Sequence[Any]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the finite numbers in ``values`` (None where undefined)."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def write_atomic(path: Path, text: str) -> Path:
    """Replace ``path`` by ``text`` in one step (a reader never sees half a page)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def svg_curve(curves: list[dict[str, Any]], key: str, width: int = 420, height: int = 130) -> str:
    """The rounds' ``key`` curves (loss on a log scale when positive) side by side in one inline SVG, a dashed
    line at each round boundary; '' when there is nothing to draw."""
    series = [[v for v in (c.get(key) or [])] for c in curves]
    values = [v for s in series for v in s if v is not None]
    if not values:
        return ""
    log_scale = key == "loss" and min(values) > 0
    f = (lambda v: math.log10(v)) if log_scale else (lambda v: v)
    lo, hi = min(f(v) for v in values), max(f(v) for v in values)
    hi = hi if hi > lo else lo + 1.0
    total = sum(len(s) for s in series)
    pad_l, pad_r, pad_t, pad_b = 46, 8, 16, 18
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def xy(i: int, v: float) -> str:
        return f"{pad_l + w * i / max(total - 1, 1):.1f},{pad_t + h * (1 - (f(v) - lo) / (hi - lo)):.1f}"

    parts, offset = [], 0
    for r, s in enumerate(series):
        points = " ".join(xy(offset + i, v) for i, v in enumerate(s) if v is not None)
        if points:
            parts.append(f'<polyline fill="none" stroke="#1f5fa8" stroke-width="1.2" points="{points}"/>')
        if r > 0:
            x = pad_l + w * offset / max(total - 1, 1)
            parts.append(f'<line x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{pad_t + h}" stroke="#999" '
                         f'stroke-dasharray="3,3"/>')
        offset += len(s)
    label = f"{key} ({'log10, ' if log_scale else ''}{len(series)} round(s), {total} steps)"
    top, bottom = (10**hi, 10**lo) if log_scale else (hi, lo)
    parts += [f'<text x="{pad_l}" y="11" font-size="10">{html.escape(label)}</text>',
              f'<text x="2" y="{pad_t + 8}" font-size="9">{_fmt(top, 3)}</text>',
              f'<text x="2" y="{pad_t + h}" font-size="9">{_fmt(bottom, 3)}</text>',
              f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>']
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{"".join(parts)}</svg>'


def tiles_html(run_dir: Path, name: str, tiles: Sequence[str], prefix: str = "") -> str:
    """Figures of the tiles of image ``name`` that exist on disk (enlarged versions preferred)."""
    figs = []
    for tile in tiles:
        for rel in (f"images/{name}/view/{tile}.png", f"images/{name}/{tile}.png"):
            if (run_dir / rel).is_file():
                src = html.escape(prefix + rel, quote=True)
                figs.append(f'<figure><img class="tile" src="{src}" alt="{html.escape(tile)}" width="128" '
                            f'height="128"><figcaption>{html.escape(tile)}</figcaption></figure>')
                break
    return "".join(figs)


def metrics_table(records: list[dict[str, Any]]) -> str:
    keys = [k for k in METRIC_KEYS if any(r.get(k) is not None for r in records)]
    head = "".join(f"<th>{k}</th>" for k in keys)
    rows = [f'<tr><td class="name">{html.escape(str(r["name"]))}{" (failed)" if r.get("failed") else ""}</td>'
            + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in keys) + "</tr>" for r in records]
    cells = []
    for k in keys:
        mean, std = _spread([r.get(k) for r in records])
        cells.append(f"<td>{_fmt(mean)}{'' if std is None else ' ± ' + _fmt(std, 3)}</td>")
    rows.append(f'<tr><th class="name">mean ± std ({len(records)} image(s))</th>{"".join(cells)}</tr>')
    return f'<table><tr><th class="name">image</th>{head}</tr>{"".join(rows)}</table>'


def write_run_report(run_dir: Path, records: list[dict[str, Any]], tiles: Sequence[str], title: str,
                     config_yaml: str, total: int | None = None) -> Path:
    """``<run_dir>/report.html`` for the images solved so far (``total``: how many the run will solve)."""
    done = f"{len(records)} of {total} image(s) solved" if total is not None else f"{len(records)} image(s)"
    sections = [f"<p>{html.escape(done)}. Tiles are shown enlarged (nearest neighbour); the native-size PNGs are "
                f"in <code>images/&lt;name&gt;/</code>, the numbers in <code>metrics.json</code>.</p>",
                "<h2>Metrics</h2>", metrics_table(records), "<h2>Images</h2>"]
    for r in records:
        rounds = " · ".join(f"r{i} (layer {x['layer']}): {_fmt(x.get('psnr'))} dB"
                            for i, x in enumerate(r.get("rounds") or []))
        curves = r.get("_curves") or []
        sections.append(f'<div class="image"><b>{html.escape(str(r["name"]))}</b> — PSNR {_fmt(r.get("psnr"))} dB '
                        f'(naive {_fmt(r.get("naive_psnr"))}); {html.escape(rounds)}<br>'
                        f'<div class="tiles">{tiles_html(run_dir, str(r["name"]), tiles)}</div>'
                        f'{svg_curve(curves, "loss")}{svg_curve(curves, "psnr")}</div>')
    sections += ["<h2>Config</h2>", f"<pre>{html.escape(config_yaml)}</pre>"]
    return write_atomic(run_dir / "report.html", page(title, "\n".join(sections)))


def _job_summary(job_dir: Path) -> dict[str, Any] | None:
    """What the multirun page shows of one job directory (None when it has no results yet)."""
    try:
        metrics = json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    names = {"method": "?", "task": "?", "generator": "?"}
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        names = {k: str(OmegaConf.select(cfg, f"{k}.name", default="?")) for k in names}
    except (OSError, ValueError, ImportError):
        pass
    images = metrics.get("images") or []
    return {"dir": job_dir.name, **names, "images": images, "mean": metrics.get("mean") or {}}


def write_sweep_report(sweep_dir: Path) -> Path | None:
    """``<sweep_dir>/report.html`` comparing the jobs of a Hydra multirun that have results so far."""
    def job_order(d: Path) -> tuple[int, str]:  # Hydra's job number first: 2_… before 10_…
        head = d.name.split("_", 1)[0]
        return (int(head) if head.isdigit() else 1 << 30, d.name)

    dirs = sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=job_order)
    jobs = [s for d in dirs if (s := _job_summary(d)) is not None]
    if not jobs:
        return None
    rows = []
    for j in jobs:
        mean, std = _spread([im.get("psnr") for im in j["images"]])
        example = j["images"][0]["name"] if j["images"] else None
        tiles = ["reference", "measurement", "naive", "final", "std"]
        shown = tiles_html(sweep_dir / j["dir"], example, tiles, j["dir"] + "/") if example else ""
        link = html.escape(f"{j['dir']}/report.html", quote=True)
        rows.append(f'<tr><td class="name"><a href="{link}">{html.escape(j["dir"])}</a></td>'
                    f'<td class="name">{html.escape(j["method"])}</td><td class="name">{html.escape(j["task"])}</td>'
                    f'<td>{len(j["images"])}</td><td>{_fmt(mean)}{"" if std is None else " ± " + _fmt(std, 3)}</td>'
                    + "".join(f"<td>{_fmt(j['mean'].get(k))}</td>" for k in ("ssim", "lpips", "seconds"))
                    + f'<td class="name">{shown}</td></tr>')
    methods = sorted({j["method"] for j in jobs})
    tasks = sorted({j["task"] for j in jobs})
    pivot = {(j["method"], j["task"]): j["mean"].get("psnr") for j in jobs}
    grid = ("<table><tr><th class=\"name\">PSNR (dB)</th>" + "".join(f"<th>{html.escape(t)}</th>" for t in tasks)
            + "</tr>" + "".join(f'<tr><td class="name">{html.escape(m)}</td>'
                                + "".join(f"<td>{_fmt(pivot.get((m, t)))}</td>" for t in tasks) + "</tr>"
                                for m in methods) + "</table>")
    body = (f"<p>{len(jobs)} job(s) with results.</p><h2>Mean PSNR, method × task</h2>{grid}<h2>Jobs</h2>"
            "<table><tr><th class=\"name\">job</th><th class=\"name\">method</th><th class=\"name\">task</th>"
            "<th>images</th><th>psnr ± std</th><th>ssim</th><th>lpips</th><th>seconds</th>"
            f"<th class=\"name\">first image</th></tr>{''.join(rows)}</table>")
    return write_atomic(sweep_dir / "report.html", page(f"multirun {sweep_dir.name}", body))
