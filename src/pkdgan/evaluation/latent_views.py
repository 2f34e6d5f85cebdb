"""Where a distilled student's latent score can be read (issue 31): in its own code, in the
teacher's space through the distillation projection, or as its agreement with the teacher's code.

The student's deployable score is its own (``own``: the paper's latent score, no teacher needed).
``projected`` reads the same code through the learned nz_s -> nz_t projection that K1/K2 train,
i.e. in the space the teacher's score lives in (it needs only the student and the projection, so
it deploys too). ``agreement`` is how far the student's projected code of an image is from the
teacher's code of it: it needs the teacher at scoring time, so it measures distillation (does the
student encode what the teacher encodes?) rather than offering a small model. Their test AUROCs
are written into a distillation run's info as descriptions only; nothing chooses by them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pkdgan.evaluation.metrics import evaluate_scores, has_both_labels
from pkdgan.models.losses import latent_score

VIEWS = ("own", "projected", "agreement")


@torch.no_grad()
def latent_view_scores(student: nn.Module, teacher: nn.Module, projection: nn.Module, x: torch.Tensor,
                       batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per-image scores of each view (higher = more anomalous); models are used as they are
    (callers put them in eval mode). Each image's score depends on that image alone."""
    device = next(student.parameters()).device
    out: dict[str, list[torch.Tensor]] = {v: [] for v in VIEWS}
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device)
        z, _, z_hat = student(xb)
        z_t = teacher(xb)[0]
        pz, pz_hat = projection(z), projection(z_hat)
        out["own"].append(latent_score(z, z_hat).float().cpu())
        out["projected"].append(latent_score(pz, pz_hat).float().cpu())
        out["agreement"].append(latent_score(pz, z_t).float().cpu())
    return {v: (torch.cat(s) if s else torch.empty(0)).numpy() for v, s in out.items()}


def latent_view_aurocs(student: nn.Module, teacher: nn.Module, projection: nn.Module, x: torch.Tensor,
                       labels: np.ndarray | None) -> dict[str, float] | None:
    """Test AUROC of each view (a description of the run); None without both kinds of label."""
    if labels is None or not has_both_labels(labels):
        return None
    scores = latent_view_scores(student, teacher, projection, x)
    return {v: float(evaluate_scores(s, labels)["auroc"]) for v, s in scores.items()}
