"""Run reports: per-round metrics as JSON, learning curves and the confusion matrix as PNG."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


def plot_learning_curves(path: Path, rounds: list[dict], control: list[dict] | None = None) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for series, style in ((rounds, "-"), (control or [], "--")):
        offset = 0
        for r in series:
            epochs = [offset + h["epoch"] for h in r["history"]]
            name = f"round {r['round']} ({r['kind']})"
            ax_loss.plot(epochs, [h["train_loss"] for h in r["history"]], style, label=name)
            ax_acc.plot(epochs, [h["val_accuracy"] for h in r["history"]], style, label=name)
            offset = epochs[-1] if epochs else offset
    ax_loss.set(title="training loss", xlabel="epoch (cumulative)")
    ax_acc.set(title="val accuracy (no TTA)", xlabel="epoch (cumulative)")
    ax_acc.legend(fontsize=7)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(path: Path, confusion: np.ndarray, labels: list[str], title: str) -> None:
    norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5.2))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
