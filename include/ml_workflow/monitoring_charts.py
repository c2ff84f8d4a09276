"""The monitoring charts (PNG) and the self-contained ``report.html`` that shows them.

Charts are drawn with matplotlib's object API on the Agg canvas: no pyplot, no display, no
global state, so they render headless and in any thread. The report embeds every PNG as a
base64 ``data:`` URI and carries its own CSS: one file that opens anywhere, offline.

Charts (file name → what it shows):
* ``confidence_over_time.png`` — every request's top probability over the interval, red
  below the confidence threshold, with the threshold as a dashed line and the per-minute
  mean (the reference notebook's "Observed Recent Inferences" chart);
* ``class_mix.png`` — predicted class shares against the training partition's;
* ``confidence_histogram.png`` — distribution of the top probability, threshold marked;
* ``image_statistics.png`` — brightness and R/G/B histograms against the training ones.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure

from ml_workflow.monitoring import HIST_BINS, HIST_NAMES, Observations

CHARTS = ("confidence_over_time.png", "class_mix.png", "confidence_histogram.png",
          "image_statistics.png")
_CAPTIONS = {
    "confidence_over_time.png": "Confidence over time, with the confidence threshold",
    "class_mix.png": "Predicted class mix against the training partition",
    "confidence_histogram.png": "Distribution of the top-class confidence",
    "image_statistics.png": "Image brightness and colour against the training partition",
}
_DPI = 100
_BLUE, _RED, _GREEN, _GREY = "#1f77b4", "#d62728", "#2ca02c", "#7f7f7f"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def confidence_over_time(obs: Observations, metrics: dict) -> bytes:
    threshold = metrics["confidence"]["threshold"]
    t = np.asarray(obs.times, dtype=np.float64)
    conf = np.asarray(obs.confidence, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    t, conf = t[order], conf[order]
    when = (t * 1000).astype("datetime64[ms]")
    low = conf < threshold
    fig = _figure(10, 4.6)
    ax = fig.add_subplot()
    ax.scatter(when[~low], conf[~low], s=9, color=_BLUE, alpha=0.6, linewidths=0,
               label=f"confident ({int((~low).sum())})")
    ax.scatter(when[low], conf[low], s=9, color=_RED, alpha=0.8, linewidths=0,
               label=f"below threshold ({int(low.sum())})")
    ax.axhline(threshold, color=_GREEN, linestyle="--", linewidth=1.5,
               label=f"threshold {threshold:g}")
    if t.size:
        minutes = np.floor(t / 60) * 60
        keys, first = np.unique(minutes, return_index=True)
        means = np.add.reduceat(conf, first) / np.diff(np.append(first, conf.size))
        ax.plot(((keys + 30) * 1000).astype("datetime64[ms]"), means, color="black",
                linewidth=1.2, label="mean per minute")
    start = np.datetime64(metrics["interval"]["start"].rstrip("Z"), "ms")
    end = np.datetime64(metrics["interval"]["end"].rstrip("Z"), "ms")
    ax.set_xlim(start, end)
    ax.set_ylim(max(0.0, min(float(conf.min()) if conf.size else 0.0, threshold) - 0.05),
                1.01)
    ax.xaxis.set_major_locator(AutoDateLocator(maxticks=8))
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M"))
    ax.set_xlabel(f"Inference time (UTC), {metrics['interval']['start'][:10]}")
    ax.set_ylabel("Confidence")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=8, ncols=4)
    fig.suptitle("Observed Recent Inferences", size=14)
    ax.set_title("Pictured with confidence threshold for production use", size=10)
    return _png(fig)


def class_mix(obs: Observations, metrics: dict) -> bytes:
    mix = metrics["class_mix"]
    classes = mix["classes"]
    x = np.arange(len(classes))
    fig = _figure(7, 4.2)
    ax = fig.add_subplot()
    width = 0.38
    traffic = [mix["shares"][c] for c in classes]
    bars = ax.bar(x - width / 2, traffic, width, color=_BLUE,
                  label=f"traffic ({metrics['requests']} requests)")
    ax.bar_label(bars, labels=[f"{v:.0%}" for v in traffic], fontsize=8)
    if mix["baseline_shares"]:
        base = [mix["baseline_shares"][c] for c in classes]
        bars = ax.bar(x + width / 2, base, width, color=_GREY, label="training partition")
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in base], fontsize=8)
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("Share of requests")
    ax.legend(fontsize=8)
    psi = metrics["drift"]["statistics"].get("class_mix")
    ax.set_title("Predicted class mix" + (
        f" — PSI {psi:.3f} (threshold {metrics['drift']['threshold']:g})"
        if psi is not None else ""), size=11)
    return _png(fig)


def confidence_histogram(obs: Observations, metrics: dict) -> bytes:
    threshold = metrics["confidence"]["threshold"]
    conf = np.asarray(obs.confidence, dtype=np.float64)
    fig = _figure(7, 4.2)
    ax = fig.add_subplot()
    edges = np.linspace(0.0, 1.0, 41)
    counts, _ = np.histogram(conf, bins=edges)
    colours = [_RED if right <= threshold else _BLUE for right in edges[1:]]
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=colours,
           edgecolor="white", linewidth=0.5)
    ax.axvline(threshold, color=_GREEN, linestyle="--", linewidth=1.5,
               label=f"threshold {threshold:g}")
    lo = max(0.0, np.floor((min(float(conf.min()), threshold) - 0.05) * 20) / 20) \
        if conf.size else 0.0
    ax.set_xlim(lo, 1.0)
    share = metrics["confidence"]["below_threshold_share"]
    ax.set_title(f"Top-class confidence — {share:.1%} below {threshold:g} "
                 f"(alert above {metrics['thresholds']['low_confidence_share']:.0%})", size=11)
    ax.set_xlabel("Confidence")
    ax.set_ylabel("Requests")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def image_statistics(obs: Observations, metrics: dict) -> bytes:
    hists = metrics["image_histograms"]
    stats = metrics["drift"]["statistics"]
    fig = _figure(9, 5.4)
    axes = fig.subplots(2, 2, sharex=True)
    centres = (np.arange(HIST_BINS) + 0.5) * (256 / HIST_BINS)
    colours = {"brightness": "black", "red": _RED, "green": _GREEN, "blue": _BLUE}
    for ax, name in zip(axes.ravel(), HIST_NAMES, strict=True):
        if hists["traffic"]:
            ax.bar(centres, hists["traffic"][name], width=256 / HIST_BINS, alpha=0.45,
                   color=colours[name], label="traffic")
        if hists["baseline"]:
            ax.step(centres, hists["baseline"][name], where="mid", color=colours[name],
                    linewidth=1.6, label="training")
        title = name
        if name in stats:
            title += f" — PSI {stats[name]:.3f}"
        ax.set_title(title, size=10)
        ax.set_xlim(0, 256)
        ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("Pixel value")
    for ax in axes[:, 0]:
        ax.set_ylabel("Share of pixels")
    fig.suptitle(f"Image statistics — {metrics['images']['analysed']} images "
                 f"against the training partition", size=12)
    return _png(fig)


def render_charts(obs: Observations, metrics: dict) -> dict[str, bytes]:
    """All charts of an interval with traffic; none for an empty interval."""
    if not metrics["requests"]:
        return {}
    return {
        "confidence_over_time.png": confidence_over_time(obs, metrics),
        "class_mix.png": class_mix(obs, metrics),
        "confidence_histogram.png": confidence_histogram(obs, metrics),
        "image_statistics.png": image_statistics(obs, metrics),
    }


# --- report.html -------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}.sub{color:#555;margin-top:0}
.banner{padding:.8rem 1rem;border-radius:6px;margin:1rem 0;font-weight:600}
.ok{background:#e8f5e9;border:1px solid #81c784}.alert{background:#ffebee;
border:1px solid #e57373}.empty{background:#f5f5f5;border:1px solid #bdbdbd}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ddd;
padding:.3rem .7rem;text-align:left}th{background:#fafafa}td.num{text-align:right;
font-variant-numeric:tabular-nums}.bad{color:#c62828;font-weight:600}
figure{margin:1.5rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9rem}code{background:#f5f5f5;padding:0 .2rem}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object, fmt: str = "{:.4f}") -> str:
    if value is None:
        return "—"
    return fmt.format(value) if isinstance(value, float) else str(value)


def _rows(pairs: list[tuple[str, str]], raw_values: bool = False) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td class='num'>{v if raw_values else _e(v)}</td>"
                   "</tr>" for k, v in pairs)


def report_html(metrics: dict, charts: dict[str, bytes]) -> str:
    """One self-contained HTML page: summary, alerts, drift table, charts (embedded)."""
    interval = metrics["interval"]
    conf = metrics["confidence"]
    alert = metrics["alert"]
    drift = metrics["drift"]
    if metrics["no_traffic"]:
        banner = ("<div class='banner empty'>No traffic: no capture record in this interval "
                  f"({metrics['files']} files read). Nothing to alert on.</div>")
    elif alert["raise"]:
        banner = ("<div class='banner alert'>Alert: "
                  + "; ".join(_e(r) for r in alert["reasons"]) + "</div>")
    else:
        banner = "<div class='banner ok'>No threshold crossed in this interval.</div>"
    model = metrics.get("model") or {}
    summary = _rows([
        ("Requests", metrics["requests"]),
        ("Capture files read", metrics["files"]),
        ("Malformed lines skipped", metrics["malformed"]["count"]),
        ("Images analysed / unreadable / not captured",
         f"{metrics['images']['analysed']} / {metrics['images']['unreadable']} / "
         f"{metrics['images']['not_captured']}"),
        ("Confidence threshold", conf["threshold"]),
        ("Below threshold", f"{conf['below_threshold']} ({conf['below_threshold_share']:.1%})"),
        ("Mean confidence", _num(conf["mean"])),
        *[(f"Confidence {k}", _num(v)) for k, v in conf["percentiles"].items()],
    ])
    mix = metrics["class_mix"]
    base_shares = mix["baseline_shares"] or {}
    mix_rows = "".join(
        f"<tr><td>{_e(c)}</td><td class='num'>{mix['counts'][c]}</td>"
        f"<td class='num'>{mix['shares'][c]:.1%}</td><td class='num'>"
        f"{_num(base_shares.get(c), '{:.1%}')}</td></tr>" for c in mix["classes"])
    if drift["evaluated"]:
        drift_rows = "".join(
            f"<tr><td>{_e(k)}</td><td class='num{' bad' if k in drift['drifted'] else ''}'>"
            f"{v:.4f}</td><td>{'drift' if k in drift['drifted'] else 'stable'}</td></tr>"
            for k, v in drift["statistics"].items())
        drift_html = (f"<table><tr><th>statistic</th><th>PSI</th><th>verdict</th></tr>"
                      f"{drift_rows}</table>")
        if drift.get("images_reason"):
            drift_html += f"<p>{_e(drift['images_reason'])}</p>"
    else:
        drift_html = f"<p>Drift not evaluated: {_e(drift.get('reason', ''))}.</p>"
    figures = "".join(
        f"<figure><img alt='{_e(_CAPTIONS.get(name, name))}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode('ascii')}'><figcaption>{_e(_CAPTIONS.get(name, name))}"
        f" (<code>{_e(name)}</code>)</figcaption></figure>" for name, png in charts.items())
    malformed = metrics["malformed"]
    malformed_html = ""
    if malformed["count"]:
        malformed_html = ("<h2>Malformed lines</h2><table><tr><th>reason</th><th>lines</th>"
                          "</tr>" + "".join(f"<tr><td>{_e(r)}</td><td class='num'>{n}</td></tr>"
                                            for r, n in malformed["reasons"].items())
                          + "</table><p>First examples:</p><ul>"
                          + "".join(f"<li><code>{_e(x['file'])}</code> line {x['line']}: "
                                    f"{_e(x['reason'])}</li>" for x in malformed["examples"])
                          + "</ul>")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    title = f"Model monitor — {metrics.get('endpoint', '')} — {interval['id']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="sub">Interval {_e(interval['start'])} → {_e(interval['end'])} (UTC) ·
endpoint <code>{_e(metrics.get('endpoint', ''))}</code> · model
<code>{_e(model.get('training_job', '—'))}</code> · training data
<code>{_e(model.get('dataset', '—'))}</code> · generated {_e(generated)}</p>
{banner}
<h2>Traffic</h2><table>{summary}</table>
<h2>Class mix</h2>
<table><tr><th>class</th><th>requests</th><th>share</th><th>training share</th></tr>
{mix_rows}</table>
<h2>Drift ({_e(drift['test'].upper())}, threshold {_e(drift['threshold'])},
from {_e(drift['min_requests'])} requests)</h2>
{drift_html}
{figures}
{malformed_html}
<details><summary>metrics.json</summary><pre>{_e(json.dumps(metrics, indent=2))}</pre>
</details>
</body></html>
"""
