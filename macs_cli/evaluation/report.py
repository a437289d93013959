"""Report files of ``macs eval``: ``report.json``, ``report.md`` (a table laid out like the paper's)
and ``report.png``, written together: all three are rendered first, then moved into place, so a
failure leaves no partial report.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

from ..errors import OutputExistsError

REPORT_FILES = ("report.json", "report.md", "report.png")
# decimals of each column, as in the paper's table
DECIMALS = {"FID": 2, "CLIP-FID": 2, "KID": 4, "AIS": 4, "AIS-z": 4, "IIS": 4, "IIS-z": 4}


def clean_json(x):
    """Non-finite floats -> None (strict JSON), tuples -> lists, paths -> strings."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return clean_json(x.item())
    return x


def _fmt(value, decimals: int, std=None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = f"{value:.{decimals}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std:.{decimals}f}"
    return text


def images_markdown(report: dict) -> str:
    cols = report["columns"]
    label = report["dataset_label"]
    name = report.get("name") or "generated"
    folds = report.get("folds")
    res = report["results"]
    std = folds["std"] if folds else {}
    lines = [f"# Evaluation: {name} on {label}", "",
             f"| {label} | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols),
             f"| {name} | " + " | ".join(_fmt(res.get(c), DECIMALS.get(c, 4), std.get(c))
                                         for c in cols) + " |", ""]
    pr = report["pairing"]
    lines.append(f"{pr['pairs']} pairs ({pr['clips']} clips; {pr['generated_images']} generated and "
                 f"{pr['ground_truth_images']} ground-truth images; {pr['with_audio']} with audio).")
    if folds:
        lines.append(f"Values: mean ± std (ddof 0) over {folds['k']} folds split by clip id; "
                     "z-scores calibrated within each fold.")
        lines += ["", "| fold | pairs | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for f in folds["per_fold"]:
            lines.append(f"| {f['fold']} | {f['pairs']} | "
                         + " | ".join(_fmt(f.get(c), DECIMALS.get(c, 4)) for c in cols) + " |")
        lines.append(f"| all | {pr['pairs']} | " + " | ".join(
            _fmt(report["all_pairs"].get(c), DECIMALS.get(c, 4)) for c in cols) + " |")
    unp = [(len(pr["unpaired_pred"]), "generated images without a ground-truth frame"),
           (len(pr["unpaired_gt"]), "ground-truth frames without a generated image"),
           (len(pr["without_audio"]), "pairs without audio")]
    notes = [f"{n} {what}" for n, what in unp if n]
    if notes:
        lines += ["", "Unpaired (listed in report.json): " + "; ".join(notes) + "."]
    for w in report.get("warnings", []):
        lines.append(f"\nWarning: {w}")
    lines += ["", "FID/KID: clean-fid Inception (mode clean); CLIP-FID: clean-fid CLIP ViT-B/32; "
              "AIS: Wav2CLIP (16 kHz) vs CLIP ViT-B/32; IIS: CLIP vs CLIP. "
              "KID seed: " + str(report["settings"].get("kid_seed")) + ".", ""]
    return "\n".join(lines)


def separation_markdown(report: dict) -> str:
    from .separation_eval import SEP_COLUMNS, SEP_LABELS

    name = report.get("name") or "stems"
    res = report["results"]
    lines = [f"# Separation evaluation: {name}", "",
             "| metric | mean | median | std | min | max | n |", "|---|---|---|---|---|---|---|"]
    for c in SEP_COLUMNS:
        s = res[c]
        lines.append(f"| {SEP_LABELS[c]} | " + " | ".join(
            _fmt(s[k], 2) for k in ("mean", "median", "std", "min", "max")) + f" | {s['n']} |")
    pr = report["pairing"]
    lines += ["", f"{pr['scored']} of {pr['items']} items scored at "
              f"{report['settings']['sample_rate']} Hz; std with ddof 1."]
    if pr["skipped"]:
        kinds = {"error": "unreadable or invalid input", "silent": "silent reference or mixture",
                 "fewer_stems": "fewer stems than references"}
        counts: dict[str, int] = {}
        for sk in pr["skipped"]:
            kind = sk.get("kind", "fewer_stems")
            counts[kind] = counts.get(kind, 0) + 1
        lines.append(f"Skipped, left out of every figure: {len(pr['skipped'])} ("
                     + ", ".join(f"{n} {kinds.get(k, k)}" for k, n in counts.items())
                     + "; reasons in report.json).")
    if pr["unpaired_pred"] or pr["unpaired_ref"]:
        lines.append(f"Unpaired: {len(pr['unpaired_pred'])} stem folders, "
                     f"{len(pr['unpaired_ref'])} reference folders (listed in report.json).")
    lines += ["", "| item | stems | refs | mixture | SI-SDRi grouped | SI-SDRi one-to-one |",
              "|---|---|---|---|---|---|"]
    for r in report["per_item"]:
        if "skipped" in r:
            lines.append(f"| {r['name']} | {r['stems']} | {r['references']} | – | skipped | skipped |")
        else:
            lines.append(f"| {r['name']} | {r['stems']} | {r['references']} | {r['mixture']} | "
                         f"{_fmt(r['sisdri_grouped'], 2)} | {_fmt(r['sisdri_one_to_one'], 2)} |")
    return "\n".join(lines) + "\n"


def images_plot(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in report["columns"] if report["all_pairs"].get(c) is not None]
    folds = (report.get("folds") or {}).get("per_fold", [])
    zcols = [(k, lab) for k, lab in (("ais_z", "AIS-z"), ("iis_z", "IIS-z"))
             if any(k in it for it in report["per_item"])]
    rows = 2 if zcols else 1
    width = max(len(cols), 2)
    fig, axes = plt.subplots(rows, width, figsize=(2.2 * width, 2.6 * rows), squeeze=False)
    std = (report.get("folds") or {}).get("std") or {}
    for ax, c in zip(axes[0], cols):
        value = report["results"].get(c)
        ax.bar([0], [value if value is not None else float("nan")], color="#4c72b0", width=0.6,
               yerr=[std[c]] if std.get(c) is not None else None, capsize=6)
        if folds:
            vals = [f[c] for f in folds if f.get(c) is not None]
            ax.scatter([0] * len(vals), vals, color="k", s=12, zorder=3)
        ax.set_title(c)
        ax.set_xticks([])
    for ax in axes[0][len(cols):]:
        ax.axis("off")
    if zcols:
        for ax, (k, lab) in zip(axes[1], zcols):
            vals = [it[k] for it in report["per_item"] if k in it and it[k] is not None
                    and math.isfinite(it[k])]
            ax.hist(vals, bins=min(30, max(5, len(vals) // 3)), color="#55a868")
            ax.axvline(0, color="k", lw=0.8)
            ax.set_title(f"{lab} per item")
        for ax in axes[1][len(zcols):]:
            ax.axis("off")
    how = (f"bars: mean ± std over {len(folds)} folds, dots: folds" if folds else "all pairs")
    fig.suptitle(f"{report.get('name') or 'generated'} on {report['dataset_label']} ({how})")
    return _png(fig)


def separation_plot(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [r for r in report["per_item"] if "skipped" not in r]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, lab, color in (("sisdri_grouped", "best grouping", "#4c72b0"),
                            ("sisdri_one_to_one", "best one-to-one", "#dd8452")):
        vals = [r[key] for r in items if r.get(key) is not None]
        axes[0].hist(vals, bins=min(30, max(5, len(vals) // 3)), alpha=0.6, label=lab, color=color)
        axes[1].scatter([r["sisdr_mixture"] for r in items if r.get(key) is not None], vals, s=10,
                        label=lab, color=color)
    axes[0].set_xlabel("SI-SDRi (dB)")
    axes[0].set_ylabel("items")
    axes[0].legend()
    axes[1].set_xlabel("SI-SDR of the mixture (dB)")
    axes[1].set_ylabel("SI-SDRi (dB)")
    axes[1].axhline(0, color="k", lw=0.8)
    fig.suptitle(f"Separation: {report.get('name') or 'stems'}")
    return _png(fig)


def _png(fig) -> bytes:
    """The figure as PNG bytes (marked as ours), closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"macs": "1"})
    plt.close(fig)
    return buf.getvalue()


def report_parts(out: Path) -> list:
    from ..formats import REPORT_JSON, REPORT_PART

    out = Path(out)
    return [(out / "report.json", REPORT_JSON), (out / "report.md", REPORT_PART), (out / "report.png", REPORT_PART)]


def check_report_dir(out: Path, force: bool = False) -> None:
    """An existing report in ``out`` is an error unless ``force`` and it is a previous ``macs eval``
    report (checked before any work); anything else there is never replaced."""
    from ..fsutil import output_state

    state, where = output_state(report_parts(out))
    if state == "foreign":
        raise OutputExistsError(f"{where}: exists and is not part of a macs eval report, so it is never "
                                "replaced, not even with --force (move it away or choose another -o)")
    if state != "absent" and not force:
        existing = next(p for p, _ in report_parts(out) if os.path.lexists(p))
        raise OutputExistsError(f"{existing}: already exists (use --force to replace it)")


def write_report(out: Path, report: dict, force: bool = False) -> dict[str, Path]:
    """Render the three files, then move them into ``out`` (created if needed): all complete
    under temporary names first, report.json placed first."""
    from ..formats import REPORT_FORMAT
    from ..fsutil import OutputSet

    out = Path(out)
    check_report_dir(out, force)
    report = {"format": REPORT_FORMAT, **clean_json(report)}
    if report["task"] == "separation":
        md, png = separation_markdown(report), separation_plot(report)
    else:
        md, png = images_markdown(report), images_plot(report)
    blobs = {"report.json": (json.dumps(report, indent=2) + "\n").encode(),
             "report.md": md.encode(), "report.png": png}
    with OutputSet(force) as staged:
        for (path, kind), data in zip(report_parts(out), blobs.values()):
            staged.path(path, kind).write_bytes(data)
    return {name: out / name for name in blobs}
