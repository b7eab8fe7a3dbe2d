"""The whole story in one command: find, embed, lock, steal, attack, verify, dispute, report."""

from ticketmark.demo.story import DemoSettings, run_demo

__all__ = ["DemoSettings", "run_demo"]
