"""``genomics-simulation``: motif recovery on simulated regulatory DNA (Shrikumar et al. 2017, section 4.2, figure 5).

A CNN is trained on :func:`~deltalift.experiments.simulation.simulate_sequences` (three sigmoid
tasks: GATA present, TAL1 present, both present).  For each task and method, the contribution of
a position is the sum of its four channels' scores; per test sequence the experiment reports the
total score inside the embedded GATA_disc1 and TAL1_known1 instances (the paper's figure 5: a
good method gives the task's motif a high total, the other motif none), and the localisation
(AUROC, AUPRC, :func:`deltalift.evaluate.localisation`) of the task's motif positions in the
sequences where the task is positive.  References: the background frequencies at every position
(the paper's), and for DeepLIFT also ten dinucleotide shuffles of each sequence (DeepLIFT-SHAP).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from deltalift.evaluate import bootstrap_mean, localisation
from deltalift.evaluate.explainers import Explain, explain_checked
from deltalift.experiments.lineup import genomics_methods
from deltalift.experiments.plots import new_figure
from deltalift.experiments.registry import Experiment, register
from deltalift.experiments.report import ExperimentRun
from deltalift.experiments.simulation import BACKGROUND, MOTIFS, simulate_sequences
from deltalift.runtime import progress

Tensor = torch.Tensor

TASKS = ("GATA present", "TAL1 present", "both present")
#: The motifs whose positions are each task's ground truth (indices into MOTIFS).
TASK_MOTIFS = ((0,), (1,), (0, 1))


class SimulationCNN(nn.Module):
    """Two convolutions of width 11 (ReLU), max pooling, a dense layer (ReLU), three logits."""

    def __init__(self, length: int = 200, filters: int = 32, pool: int = 20, hidden: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(4, filters, 11, padding=5)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(filters, filters, 11, padding=5)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool1d(pool)
        self.flatten = nn.Flatten()
        self.dense = nn.Linear(filters * (length // pool), hidden)
        self.relu3 = nn.ReLU()
        self.output = nn.Linear(hidden, len(TASKS))

    def forward(self, x: Tensor) -> Tensor:
        """The three tasks' logits (the sigmoids' inputs) for one-hot sequences ``(N, 4, L)``."""
        h = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.output(self.relu3(self.dense(self.flatten(h))))


def train_simulation_model(
    X: Tensor, y: Tensor, epochs: int, seed: int, show_progress: bool = True, batch_size: int = 64
) -> SimulationCNN:
    """A :class:`SimulationCNN` trained with Adam on the binary cross-entropy of the three tasks, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SimulationCNN(length=X.shape[-1])
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    steps = [(e, s) for e in range(epochs) for s in range(0, len(X), batch_size)]
    order = torch.arange(len(X))
    model.train()
    for _, start in progress(steps, show_progress, desc="training", unit="batch", leave=False):
        if start == 0:
            order = torch.randperm(len(X), generator=generator)
        index = order[start : start + batch_size]
        loss = nn.functional.binary_cross_entropy_with_logits(model(X[index]), y[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def shuffled_deeplift(n_shuffles: int, seed: int) -> Explain:
    """DeepLIFT-SHAP (Rescale) against ``n_shuffles`` dinucleotide shuffles of each sequence."""
    from deltalift.genomics import deep_lift_shap

    def explain(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        task = int(torch.as_tensor(target).reshape(-1)[0])
        result: Tensor = deep_lift_shap(
            model, inputs, target=task, n_shuffles=n_shuffles, random_state=seed, batch_size=256, warning_threshold=None
        )
        return result

    return explain


def _auroc_by_task(y_score: np.ndarray, y_true: np.ndarray) -> list[float]:
    from deltalift.evaluate import auroc

    return [auroc(y_score[:, k], y_true[:, k]) for k in range(y_true.shape[1])]


def run(experiment: ExperimentRun) -> None:
    """Simulate, train, explain every task with every method, score the motifs."""
    quick = experiment.quick
    n_train, n_test, epochs = (400, 48, 2) if quick else (4000, 400, 12)
    train = simulate_sequences(n_train, random_state=experiment.seed)
    test = simulate_sequences(n_test, random_state=experiment.seed + 1)
    model = train_simulation_model(train.X, train.y, epochs, experiment.seed, experiment.show_progress)
    with torch.no_grad():
        test_scores = model(test.X).sigmoid().numpy()
    task_auroc = _auroc_by_task(test_scores, test.y.numpy())
    experiment.text(
        f"{n_train} training and {n_test} test sequences of 200 bp (background A/C/G/T = 0.3/0.2/0.2/0.3; "
        f"GATA_disc1 and TAL1_known1 embedded 1-3 times); CNN trained {epochs} epochs. Test AUROC per task: "
        + ", ".join(f"{t} {a:.3f}" for t, a in zip(TASKS, task_auroc))
        + ". A position's score is the sum over its four channels; references: the background frequencies at every "
        "position, and ten dinucleotide shuffles for DeepLIFT-SHAP."
    )
    for task, value in zip(TASKS, task_auroc):
        experiment.record(f"model/test_auroc/{task}", value)
    experiment.record("data/train", n_train)
    experiment.record("data/test", n_test)
    reference = torch.tensor(BACKGROUND, dtype=torch.float32)[:, None].expand(4, test.X.shape[-1]).contiguous()
    methods = genomics_methods(reference, quick)
    methods.append(
        ("DeepLIFT Rescale (10 dinucleotide shuffles)", shuffled_deeplift(3 if quick else 10, experiment.seed))
    )
    has = [np.isin(test.group, (1, 3)), np.isin(test.group, (2, 3))]
    rows, localisation_rows = [], []
    totals: dict[str, dict[str, list[np.ndarray]]] = {}
    recovery: dict[str, float] = {}
    for name, explain in experiment.progress(methods, desc="methods"):
        started = time.perf_counter()
        totals[name] = {}
        aurocs, auprcs = [], []
        for k, task in enumerate(TASKS):
            per_position = explain_checked(explain, model, test.X, k).sum(1).numpy()  # (N, L)
            inside = [(per_position * test.instances[:, m]).sum(1) for m in range(len(MOTIFS))]
            totals[name][task] = [inside[m][has[m]] for m in range(len(MOTIFS))]
            for m, motif in enumerate(MOTIFS):
                interval = bootstrap_mean(inside[m][has[m]], random_state=experiment.seed)
                experiment.record(f"methods/{name}/{task}/{motif}/mean", interval.mean)
                experiment.record(f"methods/{name}/{task}/{motif}/ci95", [interval.low, interval.high])
            positive = test.y[:, k].numpy() == 1
            truth = test.instances[:, list(TASK_MOTIFS[k])].max(1)
            located = localisation(per_position[positive], truth[positive])
            summary = located.summary()
            experiment.record(f"methods/{name}/{task}/localisation", summary)
            aurocs.append(summary["auroc"])
            auprcs.append(summary["auprc"])
            rows.append([name, task, *(f"{float(np.mean(inside[m][has[m]])):.2f}" for m in range(len(MOTIFS)))])
        experiment.record(f"methods/{name}/seconds", round(time.perf_counter() - started, 2))
        recovery[name] = float(np.mean(auprcs))
        localisation_rows.append([name, *aurocs, *auprcs])
    experiment.table(
        ["method", "task", "mean total in GATA_disc1", "mean total in TAL1_known1"],
        rows,
        caption="Total score inside each embedded motif type (over the test sequences that contain it)",
    )
    experiment.table(
        ["method", *(f"AUROC {t}" for t in TASKS), *(f"AUPRC {t}" for t in TASKS)],
        localisation_rows,
        caption="Localisation of each task's motif positions in the sequences where the task is positive",
    )
    order = sorted(recovery, key=lambda m: -recovery[m])
    experiment.record("ranking_mean_auprc", order)
    experiment.text(
        "Ranking by mean AUPRC over the three tasks: " + ", ".join(f"{m} ({recovery[m]:.3f})" for m in order) + "."
    )
    names = list(totals)
    figure, axes = new_figure(4.2 * len(TASKS), 0.45 * len(names) + 1.4, ncols=len(TASKS))
    for ax, task in zip(axes[0], TASKS):
        offsets = np.arange(len(names))[::-1]
        for m, (motif, colour) in enumerate(zip(MOTIFS, ("tab:blue", "tab:orange"))):
            data = [totals[n][task][m] for n in names]
            ax.boxplot(
                data,
                positions=offsets + (0.18 if m == 0 else -0.18),
                widths=0.32,
                vert=False,
                showfliers=False,
                patch_artist=True,
                boxprops={"facecolor": colour, "alpha": 0.6},
                medianprops={"color": "black"},
            )
            ax.plot([], [], color=colour, lw=6, alpha=0.6, label=motif)
        ax.set_yticks(offsets, names if task == TASKS[0] else [""] * len(names))
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_title(f"task: {task}")
        ax.set_xlabel("total score inside the motif instances")
    axes[0, 0].legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    experiment.figure(
        "motif_totals",
        figure,
        caption="Total score inside GATA_disc1 (blue) and TAL1_known1 (orange) instances per task",
    )


register(
    Experiment(
        "genomics-simulation",
        "simulated regulatory DNA (GATA_disc1, TAL1_known1): total score in each motif and localisation per task and method",
        run,
    )
)
