"""AutoAttack's APGD core through the Adversarial Robustness Toolbox (ART).

AutoAttack runs its attacks one after the other, each only on the images every earlier one
failed to fool, so the accuracy it leaves is the accuracy under the strongest of them per
image. We run the parameter-free core of Croce & Hein (2020) that way: ART's APGD with the
cross-entropy loss, then ART's APGD with the DLR loss (100 iterations each by default).
ART's own ``AutoAttack`` class is not used: version 1.20.1 imports ``multiprocess``, a
package it does not declare, on every ``generate`` (serial runs included). The
published standard set also has targeted APGD, FAB-T and Square; those cost 10-100x more
on a CPU, so this subset is an upper bound on the full AutoAttack accuracy, reported as
``autoattack_apgd``. ART sees the model through the same pixel-space normalisation as our
PGD: inputs in [0, 1], ``preprocessing=(mean, std)`` inside the estimator.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ticketmark.robustness.pixels import PixelSpace


def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, space: PixelSpace,
                        eps: float, *, iterations: int = 100, batch_size: int = 500,
                        seed: int = 0) -> float:
    """Top-1 accuracy (percent) on normalised ``x`` under ART's APGD-CE + APGD-DLR."""
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    if len(y) == 0:
        return 0.0
    model = model.eval()
    channels = x.shape[1]
    mean = np.asarray(space.mean, dtype=np.float32).reshape(channels, 1, 1)
    std = np.asarray(space.std, dtype=np.float32).reshape(channels, 1, 1)
    with torch.no_grad():
        num_classes = int(model(x[:1]).shape[1])
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(),
                            input_shape=tuple(x.shape[1:]), nb_classes=num_classes,
                            clip_values=(0.0, 1.0), preprocessing=(mean, std),
                            device_type="cpu")
    pixels = space.to_pixels(x.float()).clamp(0, 1).numpy().astype(np.float32)
    labels = y.numpy()
    robust = clf.predict(pixels, batch_size=batch_size).argmax(1) == labels
    if eps == 0.0:
        return 100.0 * float(robust.mean())
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    for loss in ("cross_entropy", "difference_logits_ratio"):
        idx = np.flatnonzero(robust)
        if len(idx) == 0:
            break
        attack = AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps,
                                              max_iter=iterations, targeted=False,
                                              nb_random_init=1, batch_size=batch_size,
                                              loss_type=loss, verbose=False)
        adv = attack.generate(pixels[idx], y=labels[idx])
        adv = np.clip(np.clip(adv, pixels[idx] - eps, pixels[idx] + eps), 0.0, 1.0)
        still = clf.predict(adv.astype(np.float32), batch_size=batch_size).argmax(1)
        robust[idx] = still == labels[idx]
    return 100.0 * float(robust.mean())
