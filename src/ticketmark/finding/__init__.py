"""Ticket finders: IMP with rewinding, one-shot magnitude (OMP) and random baselines."""

from ticketmark.finding.config import FindConfig
from ticketmark.finding.imp import run_imp
from ticketmark.finding.oneshot import run_oneshot

__all__ = ["FindConfig", "run_imp", "run_oneshot"]
