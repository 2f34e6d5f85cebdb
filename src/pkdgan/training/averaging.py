"""Tail averaging: the model a run keeps is the mean of its weights at the ends of its last N
epochs (stochastic weight averaging over epochs, Izmailov et al. 2018).

Why: a GAN's test AUROC swings from one epoch to the next (instance norm at batch 64: up to 8
points on CIFAR-10, docs/results/norm; a Fashion-MNIST student 83-95 over its last five epochs,
docs/results/distill-search), and the last epoch lands anywhere in that swing. Choosing the epoch
by test AUROC would be test-set model selection; averaging the last epochs looks at no label.

It only observes: the training trajectory, and so every live weight, optimiser state and the
last epoch's model, is the same with or without it. The run's ``train_state`` keeps the live
weights (a resume goes on from them) and the running mean under ``average.``; its ``checkpoint``
(what scoring, export and a distillation's teacher read) holds the mean from the first averaged
epoch on. Floating-point buffers (BatchNorm's running statistics) are averaged like weights;
integer ones (its batch counter) take the latest value.
"""

from __future__ import annotations

import torch
from torch import nn

PREFIX = "average"


class TailAverage:
    """Running mean of ``modules``' states at the ends of epochs ``stop - last + 1 .. stop``."""

    def __init__(self, modules: dict[str, nn.Module], last: int, stop: int) -> None:
        if not 1 <= last <= stop:
            raise ValueError(f"average over the last {last} of {stop} epochs")
        self.modules = modules
        self.first = stop - last + 1  # the first averaged epoch, counted from 1
        self.count = 0
        self.mean: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}

    def wants(self, epochs_done: int) -> bool:
        """Whether the epoch just finished is averaged (the engine must sync the modules)."""
        return epochs_done >= self.first

    def update(self, epochs_done: int) -> None:
        """Add the modules' current state if ``epochs_done`` is in the window."""
        if not self.wants(epochs_done):
            return
        self.count += 1
        with torch.no_grad():
            for name, module in self.modules.items():
                mean = self.mean[name]
                for key, value in module.state_dict().items():
                    if self.count == 1 or not value.is_floating_point():
                        mean[key] = value.detach().clone()
                    else:
                        mean[key] += (value.detach() - mean[key]) / self.count

    def tensors(self) -> dict[str, torch.Tensor]:
        """The running mean, for ``train_state`` (``average.<module>.<key>``)."""
        return {f"{PREFIX}.{name}.{key}": v for name, state in self.mean.items()
                for key, v in state.items()} if self.count else {}

    def scoring(self) -> dict[str, torch.Tensor]:
        """The running mean under the modules' own prefixes, for the scoring ``checkpoint``."""
        return {f"{name}.{key}": v for name, state in self.mean.items()
                for key, v in state.items()} if self.count else {}

    def meta(self) -> dict[str, str]:
        return {"average_count": str(self.count)}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        """Restore the running mean a checkpoint recorded (none before the window)."""
        self.count = int(meta.get("average_count", "0"))
        for name, module in self.modules.items():
            head = f"{PREFIX}.{name}."
            self.mean[name] = {k[len(head):]: v.clone() for k, v in tensors.items()
                               if k.startswith(head)}
            if self.count and not self.mean[name] and module.state_dict():
                raise KeyError(f"{head}* (the average of {self.count} epochs)")

    def apply(self) -> None:
        """Load the mean into the modules: the run's model from here on (end of training)."""
        if self.count:
            for name, module in self.modules.items():
                module.load_state_dict(self.mean[name])


def tail_average(modules: dict[str, nn.Module], last: int, stop: int) -> TailAverage | None:
    """The run's averager, or None when it keeps the last epoch's weights (``last`` 0)."""
    return TailAverage(modules, last, stop) if last else None
