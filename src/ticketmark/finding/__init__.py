"""Ticket finders: IMP with rewinding, one-shot magnitude (OMP), random, early-bird, COLT."""

from ticketmark.finding.colt import run_colt
from ticketmark.finding.config import FindConfig
from ticketmark.finding.early_bird import run_early_bird
from ticketmark.finding.imp import run_imp
from ticketmark.finding.oneshot import run_oneshot

__all__ = ["FindConfig", "run_colt", "run_early_bird", "run_imp", "run_oneshot"]
