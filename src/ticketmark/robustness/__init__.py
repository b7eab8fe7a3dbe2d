"""Robust tickets: adversarial training for every finder, robustness measurements
(PGD, APGD via ART, common corruptions), and the sibling risk of a released ticket
(transfer of its adversarial examples to the private model) with unpairing against it.

Threat model units: eps is in [0, 1] pixel space; data tensors are normalised per channel,
so eps is ``eps / std`` in the units the model sees (``pixels.PixelSpace``).
"""

from ticketmark.robustness.adversarial import AdversarialSpec, adversarial_transform
from ticketmark.robustness.corruptions import CORRUPTIONS, corrupt
from ticketmark.robustness.evaluate import RobustnessOptions, measure
from ticketmark.robustness.pgd import pgd, pgd_worst
from ticketmark.robustness.pixels import PixelSpace
from ticketmark.robustness.report import robustness_report, write_report
from ticketmark.robustness.transfer import TransferOptions, measure_transfer
from ticketmark.robustness.unpair import UnpairOptions, unpair

__all__ = ["CORRUPTIONS", "AdversarialSpec", "PixelSpace", "RobustnessOptions",
           "TransferOptions", "UnpairOptions", "adversarial_transform", "corrupt",
           "measure", "measure_transfer", "pgd", "pgd_worst", "robustness_report", "unpair",
           "write_report"]
