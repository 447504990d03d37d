"""The Kalman-filter optimiser (training/kalman.py) on problems whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnmd_lammps.errors import NNMDError
from nnmd_lammps.training.kalman import KalmanFilter, KalmanSettings


def _linear_problem(seed: int = 0, n: int = 40, m: int = 6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, m))
    t = X @ rng.normal(size=m) + 0.1 * rng.normal(size=n)
    return torch.from_numpy(X), torch.from_numpy(t)


def _ridge(X: torch.Tensor, t: torch.Tensor, p0: float) -> np.ndarray:
    """Independent reference: argmin |X w - t|^2 + |w|^2 / p0 by the normal equations."""
    Xn, tn = X.numpy(), t.numpy()
    return np.linalg.solve(Xn.T @ Xn + np.eye(Xn.shape[1]) / p0, Xn.T @ tn)


@pytest.mark.parametrize("per_update", [1, 4])
def test_linear_model_reaches_the_least_squares_solution(per_update):
    """lambda = 1, q = 0: one pass is recursive least squares, i.e. the ridge solution with
    regularisation 1/p0, whether the rows come one at a time or several per update."""
    X, t = _linear_problem()
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    kf = KalmanFilter([[w]], KalmanSettings(p0=1e4, lambda0=1.0, nu=1.0))
    for start in range(0, len(t), per_update):
        rows = slice(start, start + per_update)
        y = X[rows] @ w
        H = kf.jacobian(y)
        kf.update(H, t[rows] - y.detach())
    np.testing.assert_allclose(w.detach().numpy(), _ridge(X, t, 1e4), rtol=1e-9, atol=1e-11)
    assert kf.updates == -(-len(t) // per_update)


def test_jacobian_is_the_gradient_of_each_output():
    X, _ = _linear_problem(1, n=5, m=3)
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    kf = KalmanFilter([[w], [b]], KalmanSettings())
    H = kf.jacobian(X @ w + 2.0 * b)
    np.testing.assert_array_equal(H[0].numpy(), X.numpy().T)
    np.testing.assert_array_equal(H[1].numpy(), np.full((1, 5), 2.0))


def test_fading_memory_fits_a_small_network_to_its_teacher():
    """Data from a tanh network ('teacher'); a student of the same shape from another
    initialisation, trained by the decoupled filter (one group per layer), reaches a
    tiny error, far below its starting error."""
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    student = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    teacher.double(), student.double()
    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        t = teacher(x).squeeze(1)
        start = float(torch.sqrt(torch.mean((student(x).squeeze(1) - t) ** 2)))
    groups = [list(student[0].parameters()), list(student[2].parameters())]
    kf = KalmanFilter(groups, KalmanSettings(p0=10.0, lambda0=0.98, nu=0.995))
    gen = torch.Generator().manual_seed(1)
    for _ in range(15):
        for idx in torch.randperm(200, generator=gen).split(2):
            y = student(x[idx]).squeeze(1)
            kf.update(kf.jacobian(y), t[idx] - y.detach())
    with torch.no_grad():
        end = float(torch.sqrt(torch.mean((student(x).squeeze(1) - t) ** 2)))
    assert end < 0.01 * start and end < 2e-3


def test_state_dict_resumes_identically():
    """20 updates in one go = 10 updates, state saved, a new filter loaded, 10 more."""
    X, t = _linear_problem(2, n=20, m=4)

    def run(steps, w0, state=None):
        w = w0.clone().requires_grad_(True)
        kf = KalmanFilter([[w]], KalmanSettings(p0=5.0, q0=1e-3, q_decay=0.9, q_min=1e-5))
        if state is not None:
            kf.load_state_dict(state)
        for r in steps:
            y = X[r : r + 1] @ w
            kf.update(kf.jacobian(y), t[r : r + 1] - y.detach())
        return w.detach(), kf.state_dict()

    w0 = torch.zeros(4, dtype=torch.float64)
    whole, s_whole = run(range(20), w0)
    half, s_half = run(range(10), w0)
    rest, s_rest = run(range(10, 20), half, s_half)
    assert torch.equal(whole, rest)
    assert s_whole["lambda"] == s_rest["lambda"] and s_whole["q"] == s_rest["q"]
    assert all(torch.equal(a, b) for a, b in zip(s_whole["P"], s_rest["P"], strict=True))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"p0": 0.0}, "p0"),
        ({"lambda0": 1.5}, "lambda0"),
        ({"nu": -1.0}, "nu"),
        ({"q_decay": 0.0}, "q_decay"),
    ],
)
def test_bad_settings_name_the_key(change, key):
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(NNMDError, match=key):
        KalmanFilter([[w]], KalmanSettings(**change))


# -- the Kalman phase of a training run ---------------------------------------------------------


@pytest.fixture(scope="module")
def cu_data(tmp_path_factory):
    import ase.io

    from test_training import emt_structures

    d = tmp_path_factory.mktemp("cu_kalman")
    ase.io.write(d / "train.extxyz", emt_structures(16, seed=4))
    return d / "train.extxyz"


def _config(data, **kalman) -> dict:
    return {
        "cutoff": 4.0,
        "data": {"train": str(data), "validation_fraction": 0.25},
        "descriptors": {"radial": 4, "angular": 4, "prune": False},
        "network": {"hidden": [8], "committee": 2},
        "training": {
            "epochs": 3,
            "batch_size": 4,
            "learning_rate": 0.01,
            "seed": 5,
            "early_stopping_patience": 0,
            "kalman": {"force_group_atoms": 4, **kalman},
        },
    }


def _run(cfg: dict, out, resume: bool = False) -> dict:
    from nnmd_lammps.training import train
    from nnmd_lammps.training.config import config_from_dict

    train(config_from_dict(cfg, out.parent), out, resume=resume)
    return torch.load(out / "checkpoint.pt", weights_only=True)


def test_kalman_phase_lowers_the_loss_after_adam(tmp_path, cu_data):
    """Kalman epochs after three Adam epochs: every committee member's filter updates
    its own weights, and the training and validation losses fall well below Adam's."""
    ck = _run(_config(cu_data, epochs=4), tmp_path / "run")
    h = ck["history"]
    assert h["kalman_epoch"] == [1, 2, 3, 4]
    assert h["kalman_val_loss"][-1] < 0.5 * h["val_loss"][-1]
    assert h["kalman_train_loss"][-1] < 0.5 * h["train_loss"][-1]
    assert ck["phase"] == "refine" and ck["kalman_epochs"] == 4  # no L-BFGS iterations asked
    assert len(ck["kalman_state"]) == 2 and all(s["updates"] > 0 for s in ck["kalman_state"])
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Kalman filter: 4 epochs (done 0), 2 filters" in log


def test_kalman_phase_resumes_identically(tmp_path, cu_data):
    """A run stopped after Kalman epoch 2 (the checkpoint of an epoch) and resumed with 4
    epochs ends with exactly the weights and filters of an unbroken 4-epoch run."""
    whole = _run(_config(cu_data, epochs=4), tmp_path / "whole")
    _run(_config(cu_data, epochs=2), tmp_path / "parts")
    parts = _run(_config(cu_data, epochs=4), tmp_path / "parts", resume=True)
    for k, v in whole["model_state"].items():
        torch.testing.assert_close(parts["model_state"][k], v, rtol=0, atol=0)
    for a, b in zip(whole["kalman_state"], parts["kalman_state"], strict=True):
        assert a["updates"] == b["updates"] and a["lambda"] == b["lambda"]
        for Pa, Pb in zip(a["P"], b["P"], strict=True):
            torch.testing.assert_close(Pa, Pb, rtol=0, atol=0)
    assert whole["history"]["kalman_val_loss"] == parts["history"]["kalman_val_loss"]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"epochs": -1}, "training.kalman.epochs"),
        ({"force_group_atoms": 0}, "training.kalman.force_group_atoms"),
        ({"force_fraction": 0.0}, "training.kalman.force_fraction"),
        ({"lambda0": 1.5}, "training.kalman.lambda0"),
        ({"epoch": 3}, "training.kalman.epoch"),
    ],
)
def test_bad_kalman_config_names_the_key(tmp_path, cu_data, change, key):
    from nnmd_lammps.training.config import config_from_dict

    with pytest.raises(NNMDError, match=key.replace(".", r"\.")):
        config_from_dict(_config(cu_data, **change), tmp_path)
