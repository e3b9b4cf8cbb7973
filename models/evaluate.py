"""Detection quality on labelled rows: metrics per detector and category, and a Markdown report with plots.

Why both ROC-AUC and operating-point figures: AUC compares detectors independently of any threshold, but an
operator lives at one threshold, so precision/recall/F1/FPR at the calibrated threshold and the FPR needed
to catch 95% of attacks are what tell whether the alert volume is bearable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class DetectorMetrics:
    name: str
    roc_auc: float
    pr_auc: float
    precision: float
    recall: float
    f1: float
    fpr: float
    fpr_at_95_recall: float
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)  # category -> auc, recall, rows


def compute_metrics(name: str, y: np.ndarray, normalized: np.ndarray,
                    categories: np.ndarray | None) -> DetectorMetrics:
    """``y`` 1 = attack; ``normalized`` >= 1 means alert (score at or above the calibrated threshold)."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    pred = normalized >= 1.0
    tp, fp = int(np.sum(pred & (y == 1))), int(np.sum(pred & (y == 0)))
    fn, tn = int(np.sum(~pred & (y == 1))), int(np.sum(~pred & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr_curve, tpr_curve, _ = roc_curve(y, normalized)
    per_cat: dict[str, dict[str, float]] = {}
    if categories is not None:
        names = categories.astype(str)
        for cat in sorted(set(names) - {"normal"}):
            sel = names == cat
            both = sel | (y == 0)
            per_cat[cat] = {"rows": int(sel.sum()), "recall": float(pred[sel].mean()),
                            "roc_auc": float(roc_auc_score(y[both], normalized[both]))}
    fpr = fp / (fp + tn) if fp + tn else 0.0
    return DetectorMetrics(name, float(roc_auc_score(y, normalized)), float(average_precision_score(y, normalized)),
                           precision, recall, f1, fpr,
                           float(fpr_curve[np.searchsorted(tpr_curve, 0.95, side="left")]), per_cat)


def _plot_curves(path: Path, results: dict[str, np.ndarray], curve, labels: tuple[str, str, str], corner: str,
                 chance_line: bool = False) -> None:
    """One PNG with ``curve(scores) -> (x, y)`` of every detector; ``labels`` = (x label, y label, title)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, s in results.items():
        ax.plot(*curve(s), label=name)
    if chance_line:
        ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel=labels[0], ylabel=labels[1], title=labels[2])
    ax.legend(loc=corner)
    fig.tight_layout(), fig.savefig(path, dpi=100), plt.close(fig)


def write_report(directory: str | Path, title: str, y: np.ndarray, results: dict[str, np.ndarray],
                 metrics: list[DetectorMetrics], notes: list[str]) -> Path:
    """``report.md`` plus roc.png, pr.png and scores.png in ``directory``; returns the Markdown path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _plot_curves(out / "roc.png", results, lambda s: roc_curve(y, s)[:2],
                 ("false positive rate", "true positive rate", "ROC"), "lower right", chance_line=True)
    _plot_curves(out / "pr.png", results, lambda s: precision_recall_curve(y, s)[1::-1],
                 ("recall", "precision", "Precision-recall"), "lower left")
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (name, s) in zip(axes[0], results.items()):
        bins = np.logspace(np.log10(max(s.min(), 1e-4)), np.log10(max(s.max(), 1e-3)), 60)
        ax.hist(np.maximum(s[y == 0], 1e-4), bins=bins, alpha=0.6, label="normal")
        ax.hist(np.maximum(s[y == 1], 1e-4), bins=bins, alpha=0.6, label="attack")
        ax.axvline(1.0, color="black", linestyle="--", label="threshold")
        ax.set(xscale="log", xlabel="normalized score", ylabel="rows", title=name)
        ax.legend()
    fig.tight_layout(), fig.savefig(out / "scores.png", dpi=100), plt.close(fig)

    lines = [f"# {title}", "", *notes, "",
             "| detector | ROC-AUC | PR-AUC | precision | recall | F1 | FPR | FPR at 95% recall |",
             "|---|---|---|---|---|---|---|---|"]
    for m in metrics:
        lines.append(f"| {m.name} | {m.roc_auc:.4f} | {m.pr_auc:.4f} | {m.precision:.3f} | {m.recall:.3f} | "
                     f"{m.f1:.3f} | {m.fpr:.4f} | {m.fpr_at_95_recall:.4f} |")
    cats = sorted({c for m in metrics for c in m.per_category})
    if cats:
        lines += ["", "Per attack category (ROC-AUC against the normal rows / recall at the threshold):", "",
                  "| category | rows | " + " | ".join(m.name for m in metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for c in cats:
            rows = next(m.per_category[c]["rows"] for m in metrics if c in m.per_category)
            cells = [f"{m.per_category[c]['roc_auc']:.4f} / {m.per_category[c]['recall']:.3f}" for m in metrics]
            lines.append(f"| {c} | {rows} | " + " | ".join(cells) + " |")
    lines += ["", "![ROC](roc.png) ![PR](pr.png)", "", "![score distributions](scores.png)", ""]
    md = out / "report.md"
    md.write_text("\n".join(lines))
    return md
