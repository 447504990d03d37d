"""Learning-curve and parity plots of a training run (PNG, matplotlib without a display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import REFINE_BLOCK


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if history.get("epoch"):
        ax.semilogy(history["epoch"], history["train_loss"], label="training (Adam)")
        ax.semilogy(history["epoch"], history["val_loss"], label="validation (Adam)")
    if history.get("refine_iteration"):
        last = history["epoch"][-1] if history.get("epoch") else 0
        x = last + np.asarray(history["refine_iteration"]) / REFINE_BLOCK
        ax.semilogy(
            x, history["refine_train_loss"], label=f"training (L-BFGS, {REFINE_BLOCK} it./unit)"
        )
        ax.semilogy(x, history["refine_val_loss"], label="validation (L-BFGS)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parity_plots(data, predictions, out: Path, label: str) -> None:
    plt = _pyplot()
    n = data.n_atoms
    e_ref = data.energy / n
    e_pred = np.array([p.energy for p in predictions]) / n
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(e_ref, e_pred, ".", ms=4)
    lo, hi = min(e_ref.min(), e_pred.min()), max(e_ref.max(), e_pred.max())
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    mae = np.abs(e_pred - e_ref).mean() * 1000
    ax.set_title(f"{label} set: energy MAE {mae:.2f} meV/atom")
    ax.set_xlabel("reference energy (eV/atom)")
    ax.set_ylabel("predicted energy (eV/atom)")
    fig.tight_layout()
    fig.savefig(out / "parity_energy.png", dpi=120)
    plt.close(fig)
    pairs = [
        (p.forces.ravel(), f.ravel())
        for p, f in zip(predictions, data.forces, strict=True)
        if f is not None and p.forces is not None
    ]
    fig, ax = plt.subplots(figsize=(5, 5))
    if pairs:
        fp = np.concatenate([a for a, _ in pairs])
        fr = np.concatenate([b for _, b in pairs])
        ax.plot(fr, fp, ".", ms=2, alpha=0.5)
        lo, hi = min(fr.min(), fp.min()), max(fr.max(), fp.max())
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_title(f"{label} set: force MAE {np.abs(fp - fr).mean():.4f} eV/A")
    ax.set_xlabel("reference force component (eV/A)")
    ax.set_ylabel("predicted force component (eV/A)")
    fig.tight_layout()
    fig.savefig(out / "parity_forces.png", dpi=120)
    plt.close(fig)
