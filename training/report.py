"""Accuracy figures and PNG reports (curves, confusion matrices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (labels, preds), 1)
    return m


def summary(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, per-class recall and the confusion matrix of predictions `probs`."""
    preds = probs.argmax(1)
    cm = confusion(labels, preds, len(classes))
    support = cm.sum(1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(len(classes)), where=support > 0)
    return {
        "n": int(len(labels)),
        "accuracy": float((preds == labels).mean()) if len(labels) else 0.0,
        "per_class": {c: float(r) for c, r in zip(classes, recall, strict=True)},
        "support": {c: int(s) for c, s in zip(classes, support, strict=True)},
        "confusion": cm.tolist(),
        "classes": list(classes),
    }


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable accuracy, per-class recall and confusion matrix."""
    classes = s["classes"]
    lines = [f"n={s['n']}  accuracy={s['accuracy']:.4f}", "", "per-class recall:"]
    lines += [f"  {c:<9} {s['per_class'][c]:.4f}  (n={s['support'][c]})" for c in classes]
    lines += ["", "confusion (rows true, columns predicted):"]
    lines.append(" " * 10 + "".join(f"{c[:7]:>8}" for c in classes))
    for c, row in zip(classes, s["confusion"], strict=True):
        lines.append(f"{c:<10}" + "".join(f"{v:>8}" for v in row))
    return "\n".join(lines)


def plot_confusion(s: dict[str, Any], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(s["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    classes = s["classes"]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {s['accuracy']:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Training loss and train/validation accuracy per epoch as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = [h for h in history if "val_acc" in h]  # the end-of-epoch rows
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(epochs, [h["train_acc"] for h in history], label="train")
    b.plot(epochs, [h["val_acc"] for h in history], label="validation")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
    """Every `loss_*` series of a history against its `step`, one panel each, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for h in history for k in h if k.startswith("loss_")})
    if not keys:
        return
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        points = [(h["step"], h[key]) for h in history if key in h]
        ax.plot([p[0] for p in points], [p[1] for p in points])
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_grid(columns: list[np.ndarray], path: Path, scale: int = 2) -> None:
    """Sample grid as PNG: one row per sample, one column per uint8 [N,H,W] stack (e.g.
    input | generated | target), enlarged `scale` times."""
    from PIL import Image

    grid = np.concatenate([np.concatenate(list(c), axis=0) for c in columns], axis=1)
    image = Image.fromarray(grid)
    image.resize((grid.shape[1] * scale, grid.shape[0] * scale)).save(path)
