"""The evaluation's outputs: report.md, report.json and the plots a reader would rather look at.

- hist_<model>.png: distances original-vs-anonymized per method, over the genuine/impostor pair
  distributions of the calibration, with the calibrated threshold
- temporal.png: the pairwise distance matrix D of every video (columns) for every method (rows)
- contact_sheet.png: originals next to their anonymized versions, one column per method
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

BEGIN, END = "<!-- fiva evaluate: begin -->", "<!-- fiva evaluate: end -->"


def _f(v: float, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _default_defense_line(rows: list[dict]) -> str:
    """What `fiva anonymize` does by default, and the RA the sweep measured for exactly that setting."""
    from ..anonymize.frame import AnonymizeConfig

    c = AnonymizeConfig()
    def same(r):  # noqa: E306
        return r["defense"] == c.defense and (c.defense == "none" or (
            abs(r.get("defense_eps", -1) - c.defense_eps) < 1e-9 and (c.defense != "noise" or abs(r.get("defense_p", -1) - c.defense_p) < 1e-9)))
    row = next((r for r in rows if same(r)), None)
    none = next((r for r in rows if r["defense"] == "none"), None)
    setting = c.defense if c.defense == "none" else f"{c.defense}, ε {c.defense_eps}" + (f", p {c.defense_p}" if c.defense == "noise" else "")
    if row is None:
        return f"`fiva anonymize`'s default defense ({setting}) is not among the measured settings."
    return (f"`fiva anonymize`'s default defense ({setting}): RA {_f(row['RA'])} against {_f(none['RA']) if none else '×'} "
            f"undefended, ID {_f(row['ID'])}, PSNR {_f(row['psnr_db'], 1)} dB.")


def markdown_tables(result: dict) -> str:
    cal, data = result["calibration"], result["data"]
    lines = [
        "Identity retrieval (share of probes whose nearest gallery identity is the true one, closer than the "
        "calibrated threshold; lower is better), the same after the reconstruction attack R (RA; × where no "
        "attack model was given or the method has no generator) and temporal consistency (Eq. 7, evaluator embeddings).",
        "",
        "| Method | ID (dlib) ↓ | ID (SFace) ↓ | ¬ID (SFace) ↓ | RA (dlib) ↓ | M_tc^μ | M_tc^σ |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["table"]:
        real = r["method"] == "Real Data"
        lines.append(f"| {r['method']} | {'(' + _f(r['ID']) + ')' if real else _f(r['ID'])} | "
                     f"{'(' + _f(r['ID_sface']) + ')' if real else _f(r['ID_sface'])} | "
                     f"{'–' if real else _f(r['negID'])} | {'×' if math.isnan(r['RA']) else _f(r['RA'])} | "
                     f"{_f(r['Mtc_mu'])} | {_f(r['Mtc_sigma'])} |")
    lines += [
        "",
        "Attribute preservation on the same probes (landmark error: 5-landmark distance / inter-ocular "
        "distance; pose: mean |Δ| of pitch, yaw, roll from the landmarks; both where the output's face is found).",
        "",
        "| Method | face detected | landmark error | pose error (°) | dlib distance to original (mean) | beyond dlib threshold |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["table"]:
        lines.append(f"| {r['method']} | {_f(r['detection_rate'])} | {_f(r['landmark_error'])} | {_f(r['pose_error_deg'], 2)} | "
                     f"{_f(r['dlib_distance_mean'])} | {_f(r['beyond_dlib_threshold'])} |")
    if result.get("swap"):
        lines += [""] + swap_lines(result["swap"])
    if result.get("defenses"):
        lines += ["", "Defenses against the reconstruction attack (Table 3, Figure 3): RA after each defense, ID of the "
                  "defended output (should stay at its floor), and the image cost: PSNR / SSIM of the face against the "
                  "undefended output.", "",
                  "| defense | ε / σ | fraction of pixels | black-box | RA ↓ | ID ↓ | PSNR (dB) | SSIM |", "|---|---|---|---|---|---|---|---|"]
        for r in result["defenses"]:
            amp = r.get("defense_eps", r.get("sigma", ""))
            lines.append(f"| {r['defense']} | {amp} | {r.get('defense_p', '')} | {'yes' if r.get('black_box', True) else 'no'} | "
                         f"{_f(r['RA'])} | {_f(r['ID'])} | {_f(r['psnr_db'], 1)} | {_f(r['ssim'])} |")
        lines += ["", _default_defense_line(result["defenses"])]
    for key in ("fake_detection_detector", "fake_detection"):
        lines += _fake_table(result.get(key) or {}, (result["models"].get("fake_detector") or {}).get("threshold_chosen_on"))
    lines += ["", "Thresholds, calibrated at the stated false acceptance rate on LFW pairs (pairs.txt overlaps "
              "the training and evaluation identities):", "",
              "| Identity model | distance | threshold | FAR (measured) | TAR | pairs (same / different) | no face |",
              "|---|---|---|---|---|---|---|"]
    for c in cal.values():
        lines.append(f"| {c['model']} | {c['metric']} | {c['threshold']:.4f} | {c['far_measured']:.4f} | {c['tar']:.4f} | "
                     f"{c['same']} / {c['different']} | {c['no_face']} |")
    g = result["models"]["generator"]
    lines += ["", f"Data: {data['probes']} probes ({data['probe_split']}), gallery of {data['gallery_images']} images of "
              f"{data['gallery_identities']} identities, {data['calibration_pairs']} calibration pairs, "
              f"{len(data['videos'])} videos x {data['frames_per_video']} frames"
              f"{', quick run (--limit ' + str(data['limit']) + ')' if data['limit'] else ''}. "
              f"Generator {g.get('name', 'fiva')}: {g['file']} ({'' if g['step'] is None else 'step ' + str(g['step']) + ', '}"
              f"sha256 {g['sha256']})"
              + (f"; attack R {a['file']} (step {a['step']}, sha256 {a['sha256']}, trained against {a['trained_against']})"
                 if (a := result["models"].get("attack")) else "; no attack model")
              + (f"; fake detector {d['file']} (step {d['step']}, sha256 {d['sha256']}, threshold {_f(float(d['threshold']), 4)})"
                 if (d := result["models"].get("fake_detector")) and d.get("threshold") is not None else "")
              + f". Run {result['models'].get('date', '?')}, {result['seconds']:.0f} s."]
    return "\n".join(lines)


def _fake_table(fd: dict, chosen_on: str | None = None) -> list[str]:
    """The fake-detection section of one score: ROC AUC, TPR at 1% FPR, and the figures at the shipped
    threshold (for the detector, `chosen_on` says how that threshold was chosen: its stored metadata)."""
    if not any(isinstance(r, dict) and "auc" in r for r in fd.values()):
        return []
    kind = fd.get("score")
    if kind == "detector":
        head = ("`fiva detect-fake` (the shipped fake detector, its probability that the face is anonymized): real "
                "probes against manipulated ones; threshold at 1% false positives on half of the real probes, its "
                "false-positive rate measured on the other half; and at the threshold shipped with the detector "
                f"({chosen_on or 'how it was chosen is not stored with it'}; `fiva detect-fake`'s default): the share of "
                "all real and manipulated probes it calls right, and its false-positive rate.")
    else:
        score = {"identity": "cosine distance between dlib embeddings of X and R(X)",
                 "residual": "mean |R(X) - X| over the inner face of the aligned crop, in 8-bit levels"}.get(kind, "?")
        head = (f"The attack model as a deepfake detector (Section 3.6, `fiva detect-fake --attack`): score = {score}; real "
                "probes against manipulated ones; threshold at 1% false positives on half of the real probes, its "
                "false-positive rate measured on the other half; and at the threshold shipped with R: the share of "
                "all real and manipulated probes it calls right, and its false-positive rate.")
    lines = ["", head, "",
             "| manipulated by | ROC AUC | TPR at 1% FPR | FPR (held out) | threshold | right at the shipped threshold | "
             "FPR there | real / manipulated |", "|---|---|---|---|---|---|---|---|"]
    for name, r in fd.items():
        if isinstance(r, dict) and "auc" in r:
            lines.append(f"| {name} | {_f(r['auc'])} | {_f(r['tpr_at_1pct_fpr'])} | {_f(r.get('fpr', float('nan')))} | "
                         f"{_f(r['threshold_at_1pct_fpr'], 4)} | {_f(r.get('accuracy_at_shipped', float('nan')))} "
                         f"(at {_f(r.get('shipped_threshold', float('nan')), 4)}) | {_f(r.get('fpr_at_shipped', float('nan')))} | "
                         f"{r['real']} / {r['fake']} |")
    return lines


def write_report(result: dict, out: Path, cals, per_row, temporal, sheet, cfg) -> None:
    out = Path(out)
    (out / "report.json").write_text(json.dumps(result, indent=2))
    plots = []
    try:
        plots += _histograms(out, cals, per_row)
        plots.append(_temporal_plot(out, temporal))
    except ImportError:  # matplotlib is in the [eval] extra
        pass
    plots.append(_contact_sheet(out, sheet))
    try:
        for key in ("fake_detection", "fake_detection_detector"):
            fd = result.get(key) or {}
            plots.append(_fake_histogram(out, fd.get("scores"), fd.get("score")))
        plots.append(_figure3(out, result.get("defenses")))
    except ImportError:
        pass
    body = markdown_tables(result)
    figs = "\n".join(f"![{p.stem}]({p.name})" for p in plots if p is not None)
    (out / "report.md").write_text(f"# fiva evaluation\n\n{body}\n\n{figs}\n")
    if cfg.benchmarks:
        update_benchmarks(Path(cfg.benchmarks), body)


def update_benchmarks(path: Path, body: str) -> None:
    """Replace the evaluation section of a Markdown file (between the markers), or append one."""
    text = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Evaluation (`fiva evaluate`)\n\n" + block + "\n"
    path.write_text(text)


def _subplots(nrows: int = 1, ncols: int = 1, **kw):
    """A new matplotlib figure, off-screen (matplotlib is in the [eval] extra: ImportError without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, **kw)


def _save_figure(fig, path: Path, dpi: int = 110, tight: bool = True) -> Path:
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _histograms(out: Path, cals, per_row) -> list[Path]:
    paths = []
    for name, cal in cals.items():
        fig, ax = _subplots(figsize=(8, 4.5))
        bins = np.linspace(0, max(cal.impostor + cal.genuine + [1.0]) * 1.05, 50)
        ax.hist(cal.genuine, bins, density=True, alpha=0.35, color="tab:green", label="same person (LFW pairs)")
        ax.hist(cal.impostor, bins, density=True, alpha=0.35, color="tab:red", label="different people (LFW pairs)")
        for label, m in per_row.items():
            d = m[f"dist_{name}"]
            if label != "Real Data" and d:
                ax.hist(d, bins, density=True, histtype="step", linewidth=1.5, label=f"{label}: original vs output")
        ax.axvline(cal.threshold, color="k", linestyle="--", label=f"threshold {cal.threshold:.3f} (FAR {cal.far:g})")
        ax.set_xlabel(f"{name} distance ({cal.metric})")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        paths.append(_save_figure(fig, out / f"hist_{name}.png"))
    return paths


def _figure3(out: Path, rows) -> Path | None:
    """Figure 3: RA (and the defended output's own ID) against the fraction of noisy pixels."""
    pts = sorted((r.get("defense_p", 0.0), r["RA"], r["ID"]) for r in rows or [] if r["defense"] in ("none", "noise"))
    if len(pts) < 2:
        return None
    fig, ax = _subplots(figsize=(6, 4))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="RA (after R)")
    ax.plot([p[0] for p in pts], [p[2] for p in pts], "s:", color="tab:gray", label="ID (the defended output itself)")
    ax.axvline(0.0025, color="tab:blue", linestyle="--", label="0.0025 (the paper's best)")
    ax.set_xscale("symlog", linthresh=0.001)
    ax.set_xlim(0, 1.2)
    ax.set_xlabel("fraction of the face's pixels with uniform noise")
    ax.set_ylabel("original identity retrieved (dlib)")
    ax.legend()
    return _save_figure(fig, out / "figure3_noise.png")


def _fake_histogram(out: Path, scores: dict | None, kind: str | None) -> Path | None:
    """Figure 5: fake scores of real and manipulated faces."""
    if not scores:
        return None
    fig, ax = _subplots(figsize=(7, 4))
    hi = 1.0 if kind == "detector" else max(max(v) for v in scores.values() if v) * 1.05 + 1e-6
    for name, vals in scores.items():
        ax.hist(vals, np.linspace(0, hi, 40), alpha=0.5, label=name if name != "Real Data" else "real")
    ax.set_xlabel({"residual": "mean |R(X) - X|, 8-bit levels", "detector": "fake detector: probability the face is anonymized"}
                  .get(kind, "cosine distance of dlib embeddings, X vs R(X)"))
    ax.set_ylabel("faces")
    ax.legend()
    return _save_figure(fig, out / ("fake_detector_scores.png" if kind == "detector" else "fake_scores.png"))


def _temporal_plot(out: Path, temporal) -> Path | None:
    rows = [r for r in temporal if temporal[r]]
    if not rows:
        return None
    videos = sorted({v for r in rows for v in temporal[r]})
    vmax = max(0.05, float(np.percentile(np.concatenate([x["D"].ravel() for r in rows for x in temporal[r].values()]), 99)))
    fig, axes = _subplots(len(rows), len(videos), figsize=(1.3 * len(videos) + 2, 1.3 * len(rows) + 0.5), squeeze=False)
    for i, r in enumerate(rows):
        for j, v in enumerate(videos):
            ax = axes[i][j]
            if v in temporal[r]:
                im = ax.imshow(temporal[r][v]["D"], vmin=0, vmax=vmax, cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(Path(v).stem.replace("liveportrait_", ""), fontsize=7)
            if j == 0:
                ax.set_ylabel(r, fontsize=7, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.22)
    fig.colorbar(im, ax=axes, shrink=0.6, label="cosine distance (dlib)")
    return _save_figure(fig, out / "temporal.png", dpi=100, tight=False)


def _contact_sheet(out: Path, sheet: dict[str, list]) -> Path | None:
    cols = [label for label in sheet if sheet[label]]
    if not cols:
        return None
    n = max(len(sheet[c]) for c in cols)
    size = sheet[cols[0]][0].shape[0]
    head = 28
    canvas = np.full((head + n * size, len(cols) * size, 3), 255, np.uint8)
    for j, label in enumerate(cols):
        words, line, lines = label.split(), "", []
        for w in words:  # wrap the column title to the tile width
            if len(line) + len(w) > 16 and line:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines.append(line)
        for k, text in enumerate(lines[:2]):
            cv2.putText(canvas, text, (j * size + 3, 11 + 12 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
        for i, crop in enumerate(sheet[label]):
            canvas[head + i * size: head + (i + 1) * size, j * size: (j + 1) * size] = crop
    p = out / "contact_sheet.png"
    cv2.imwrite(str(p), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return p


def swap_lines(rows: list[dict]) -> list[str]:
    """Table 4 in Markdown: the rows of `run._swap_table`."""
    lines = ["Face swapping (Table 4): the face of one probe gets the identity of the next probe. ID (source): "
             "share retrieved as the source identity (higher is better; the source photo itself is left out of the "
             "gallery where the person has another); ID (target): still retrieved as the target; dlib: mean distance "
             "of the output to the source photo and to the target photo.", "",
             "| Method | pairs | ID (source) ↑ | ID (target) ↓ | pose error (°) ↓ | dlib to source | dlib to target |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['pairs']} | {_f(r['ID_source'])} | {_f(r['ID_target'])} | {_f(r['pose_error_deg'], 2)} | "
                     f"{_f(r.get('dlib_to_source'))} | {_f(r.get('dlib_to_target'))} |")
    return lines
