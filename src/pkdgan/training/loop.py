"""The one training loop: a run is a list of members and a plan of phases; an engine updates them.

A *member* is one model being trained (its shuffle generator, position, epoch, RNG stream, log and
folder); a *phase* is ``(structure, epochs)``, plain EDE-GAN training being the structure "no
teacher, student GAN loss" (``GAN``). An *engine* turns every active member's next images into
losses and updates (``train.ModuleGanEngine`` and ``distill.ModuleDistillEngine`` for one
``nn.Module`` at any batch size, ``multi.StackedEngine`` for K models at batch 1). Everything else
is done here once for all of them: shuffling, epoch ends, history rows, checkpoints (through the
builder's ``Hooks``), the divergence policy (``stop`` / ``reinit``, NaN weights at the end of an
epoch), progress (in images) and members that finish or stop leaving the others.

The order of every random draw is the one each of the four former loops had, so results (and
checkpoints written before this module existed) are unchanged.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from pkdgan.core import runs
from pkdgan.core.errors import DivergenceError
from pkdgan.training.averaging import TailAverage

MAX_RECOVERIES = 3


@dataclass(frozen=True)
class Structure:
    """What a phase trains: the paper's four distillation structures, or plain GAN training."""

    number: int
    teacher_trained: bool
    student_gan: bool
    distilled: bool = True


# EDE-GAN training: no teacher, the student's own GAN loss.
GAN = Structure(0, teacher_trained=False, student_gan=True, distilled=False)


@dataclass(frozen=True)
class Phase:
    structure: Structure
    epochs: int


def expand(phases: Sequence[Phase]) -> list[tuple[int, Structure]]:
    """(phase index, structure) for every epoch of ``phases``."""
    return [(k, p.structure) for k, p in enumerate(phases) for _ in range(p.epochs)]


class RngStream:
    """One model's global-RNG stream (CPU, and the device's when on CUDA): K models trained
    together each draw their discriminator re-initialisations as they would alone."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def capture(self) -> None:
        self.cpu = torch.get_rng_state()
        if self.cuda is not None:
            self.cuda = torch.cuda.get_rng_state(self.device)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run with this model's stream as the global RNG, then save where it got to."""
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        yield
        self.capture()


def active(rng: RngStream | None) -> contextlib.AbstractContextManager[None]:
    """``rng.active()``, or nothing for a member that owns the global RNG outright."""
    return rng.active() if rng is not None else contextlib.nullcontext()


def check_finite(losses: dict[str, float], epoch: int, step: int) -> None:
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise DivergenceError(
            f"training diverged at epoch {epoch + 1}, step {step + 1}: {', '.join(bad)} is NaN/Inf"
        )


@dataclass
class EpochLog:
    sums: dict[str, float] = field(default_factory=dict)
    n: int = 0

    def add(self, losses: dict[str, float]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


def kept_message(run_dir: Path | None, epochs_done: int) -> str:
    """What a stopped run leaves behind, for the divergence message."""
    if run_dir is None:
        return "nothing saved (no run folder)"
    if epochs_done == 0:
        return f"no epoch had completed, so {run_dir} holds no checkpoint"
    return f"kept the last good checkpoint {run_dir / runs.CHECKPOINT} (epoch {epochs_done})"


@dataclass
class Member:
    """One model being trained and its bookkeeping; ``owner`` is the builder's own object."""

    owner: Any
    n: int
    batch_size: int
    steps: int
    plan: list[tuple[int, Structure]]
    stop: int  # this loop trains the member up to this epoch
    epoch: int
    shuffle: torch.Generator
    info: dict[str, Any]
    run_dir: Path | None = None
    policy: str = "stop"
    rng: RngStream | None = None
    config_json: str = "{}"  # the run's config, as its checkpoints record it
    tag: Any = None  # whatever else the builder keeps per member
    offset: int = 0  # where its images start in a stacked engine's joint tensor
    average: TailAverage | None = None  # the model kept is a mean over its last epochs
    pos: int = 0
    perm: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    log: EpochLog = field(default_factory=EpochLog)
    t0: float = 0.0
    good: Any = None
    error: DivergenceError | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or self.epoch >= self.stop

    @property
    def structure(self) -> Structure:
        return self.plan[self.epoch][1]

    def indices(self) -> torch.Tensor:
        """The current step's image indices."""
        return self.perm[self.pos * self.batch_size:(self.pos + 1) * self.batch_size]

    def step_images(self) -> int:
        """How many images the current step trains on (the last batch may be short)."""
        return min(self.batch_size, self.n - self.pos * self.batch_size)

    def images_per_epoch(self) -> int:
        return min(self.n, self.steps * self.batch_size)


class Engine(Protocol):
    """How the active members' next images become losses and updates."""

    def begin_epoch(self, i: int, m: Member) -> None:
        """Phase set-up before the epoch's shuffle (teacher mode, frozen teacher's targets)."""

    def step(self, members: list[Member]) -> list[dict[str, float]]:
        """One update of every member (discriminator re-initialisation included)."""

    def weights_finite(self, i: int, m: Member) -> bool: ...

    def snapshot(self, i: int, m: Member) -> Any: ...

    def recover(self, i: int, m: Member, good: Any) -> None:
        """``on_divergence=reinit``: back to ``good`` with fresh discriminator(s)."""

    def sync(self, i: int, m: Member) -> None:
        """Make the member's modules and optimisers current (a stack writes its row back)."""

    def leave(self, keep: list[int], members: list[Member]) -> None:
        """Members not in ``keep`` are done; the engine drops them."""


@dataclass
class Hooks:
    """The builder's part of an epoch end: its history row and its checkpoint."""

    row: Callable[[Member, float], dict[str, Any]]
    save: Callable[[Member], None]
    after_epoch: Callable[[Member], None] | None = None
    postfix: Callable[[Member, dict[str, float]], dict[str, Any]] | None = None


def _begin(engine: Engine, i: int, m: Member) -> None:
    m.t0 = time.perf_counter()
    m.log = EpochLog()
    engine.begin_epoch(i, m)
    m.good = engine.snapshot(i, m) if m.policy == "reinit" else None
    m.perm = torch.randperm(m.n, generator=m.shuffle)
    m.pos = 0


def _end(engine: Engine, hooks: Hooks, i: int, m: Member) -> None:
    seconds = time.perf_counter() - m.t0
    phase = m.plan[m.epoch][0]
    m.info["train_seconds"] = m.info.get("train_seconds", 0.0) + seconds
    if "step_seconds" in m.info:
        m.info["step_seconds"][phase] += seconds
    m.epoch += 1
    averaged = m.average is not None and m.average.wants(m.epoch)
    if m.run_dir is not None or m.done or hooks.after_epoch is not None or averaged:
        engine.sync(i, m)  # the member's modules hold its weights for whoever reads them next
    if m.average is not None:
        m.average.update(m.epoch)
    if m.run_dir is not None:
        runs.append_history(m.run_dir / runs.HISTORY, hooks.row(m, seconds))
        with active(m.rng):
            hooks.save(m)
    if hooks.after_epoch is not None:
        hooks.after_epoch(m)


def keep_average(m: Member) -> None:
    """A member past its whole plan (not only this loop's ``stop``) keeps its tail average, if it
    has one, as its modules' weights: once the loop is over, after the last checkpoint and probe
    (they see the live weights) and the engine's last write-back."""
    if m.average is not None and m.error is None and m.epoch >= len(m.plan):
        m.average.apply()


def _diverged(engine: Engine, i: int, m: Member, err: DivergenceError) -> None:
    """Recover (``reinit``, at most ``MAX_RECOVERIES`` times) or stop the member."""
    recoveries = m.info.get("recoveries", 0)
    if m.good is None or recoveries >= MAX_RECOVERIES:
        tried = f" after {recoveries} recoveries" if recoveries else ""
        m.error = DivergenceError(f"{err}{tried}; {kept_message(m.run_dir, m.epoch)}")
        return
    m.info["recoveries"] = recoveries + 1
    with active(m.rng):
        engine.recover(i, m, m.good)


def run_loop(members: list[Member], engine: Engine, hooks: Hooks, *, desc: str,
             progress: bool = True) -> None:
    """Train every member to its ``stop`` epoch; a member that diverges beyond its policy stops
    with ``error`` set while the others go on."""
    active_ = [m for m in members if not m.done]
    total = sum((m.stop - m.epoch) * m.images_per_epoch() for m in active_)
    bar = tqdm(total=total, disable=not progress, unit="img", desc=desc, dynamic_ncols=True,
               mininterval=0.5)
    try:
        for i, m in enumerate(active_):
            _begin(engine, i, m)
        while active_:
            rows = engine.step(active_)
            for i, m in enumerate(active_):
                losses = rows[i]
                if m.pos == m.steps - 1 and not engine.weights_finite(i, m):
                    losses["weights"] = math.nan  # the last update must not reach the checkpoint
                try:
                    check_finite(losses, m.epoch, m.pos)
                except DivergenceError as e:
                    _diverged(engine, i, m, e)
                else:
                    m.log.add(losses)
                    bar.update(m.step_images())
                    if hooks.postfix is not None and m.pos % 50 == 0:
                        bar.set_postfix(hooks.postfix(m, losses), refresh=False)
                m.pos += 1
                if m.error is None and m.pos == m.steps:
                    _end(engine, hooks, i, m)
                    if not m.done:
                        _begin(engine, i, m)
            if any(m.done for m in active_):
                keep = [i for i, m in enumerate(active_) if not m.done]
                engine.leave(keep, active_)
                active_ = [active_[i] for i in keep]
    finally:
        bar.close()
    for m in members:
        keep_average(m)
