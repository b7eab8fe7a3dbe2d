"""``ticketmark ternarize``: a ticket's ternary version, trained through the rounding, and
``ticketmark unpack``: a compact ``.tern`` file back to a ticket.

``ternarize`` writes two things: OUT.safetensors + OUT.json, an ordinary ticket whose
Conv/Linear weights are {-a, 0, +a} (every command reads it: verify, attack, lock), and
OUT.tern, the same weights as 2-bit codes and one scale per layer (what one ships). It
prints the accuracy of the float ticket, of one-shot rounding and of the trained ternary
ticket, and the bytes of each file.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ticketmark.cli.app import app
from ticketmark.cli.options import ForceOpt, TicketArg, refuse_overwrite, ticket_files
from ticketmark.errors import TicketmarkError


def _bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


@app.command()
def ternarize(
    ticket_path: Path = TicketArg,
    out: Path = typer.Option(..., "--out", help="OUT.safetensors/.json (ternary ticket) and "
                                                "OUT.tern (compact)"),
    epochs: int = typer.Option(5, help="quantisation-aware training epochs"),
    lr: float = typer.Option(0.01, help="learning rate of the latent weights"),
    threshold: float = typer.Option(0.7, help="TWN threshold: delta = threshold x mean "
                                              "surviving |w| of the layer"),
    batch_size: int = typer.Option(128),
    seed: int = typer.Option(0),
    trigger_claim: Path | None = typer.Option(None, help="keep this trigger set through the "
                                                         "training (with --trigger-reveal)"),
    trigger_reveal: Path | None = typer.Option(None, help="the reveal that opens "
                                                          "--trigger-claim"),
    trigger_ratio: float = typer.Option(0.2, help="share of trigger images in each epoch"),
    dataset: str | None = typer.Option(None, help="training data (default: the ticket's)"),
    data_dir: Path | None = typer.Option(None, help="folder for datasets read from disk"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    force: bool = ForceOpt,
) -> None:
    """Train a ticket to ternary weights {-a, 0, +a} per layer, mask kept; write it as a
    ticket and as a compact 2-bit file, with both sizes."""
    from ticketmark.data import load_dataset
    from ticketmark.finding.ternary import TernaryConfig, owner_trigger
    from ticketmark.finding.ternary import ternarize as run
    from ticketmark.io import load_ticket, resolve_ticket_path, save_ticket
    from ticketmark.io.ternary import save_ternary, ternary_path
    from ticketmark.training.progress import console

    cfg = TernaryConfig(epochs=epochs, lr=lr, threshold=threshold, batch_size=batch_size,
                        seed=seed, device=device, trigger_ratio=trigger_ratio).validate()
    if (trigger_claim is None) != (trigger_reveal is None):
        raise TicketmarkError("--trigger-claim and --trigger-reveal go together")
    source = resolve_ticket_path(ticket_path)
    if resolve_ticket_path(out) == source:
        raise TicketmarkError("--out is the input ticket; write the ternary ticket elsewhere")
    compact = ternary_path(out)
    refuse_overwrite([*ticket_files(out), compact], force)
    ticket = load_ticket(ticket_path)
    data = load_dataset(dataset or ticket.dataset, data_dir)
    kept = None if trigger_claim is None else owner_trigger(trigger_claim, trigger_reveal,
                                                            ticket, data)
    result = run(ticket, data, cfg, progress=not quiet, keep_trigger=kept)
    path = save_ticket(out, result)
    save_ternary(compact, result, result.meta["ternary"]["layers"])
    info = result.meta["ternary"]
    float_bytes = _bytes(ticket_files(source))
    tern_bytes = compact.stat().st_size
    weight_bytes = sum(t.numel() * t.element_size() for t in ticket.state.values())
    trig = (f"; trigger set {info['trigger_acc_before']:.0f}% -> {info['trigger_acc']:.0f}%"
            if "trigger_acc" in info else "")
    console.print(
        f"ternary ticket: {path}  test accuracy {info['float_test_acc']:.2f}% (float) -> "
        f"{result.meta['metrics'][-1]['test_acc']:.2f}% (ternary QAT, {epochs} epochs; "
        f"one-shot rounding {info['oneshot_test_acc']:.2f}%){trig}\n"
        f"bytes on disk: float ticket {float_bytes:,} (weights, mask, rewind, sidecar); "
        f"float weights alone {weight_bytes:,}; compact {compact} {tern_bytes:,} "
        f"({float_bytes / max(tern_bytes, 1):.1f}x / {weight_bytes / max(tern_bytes, 1):.1f}x "
        "smaller)",
        soft_wrap=True)


@app.command("unpack")
def unpack(
    source: Path = typer.Option(..., "--in", help="a compact ternary ticket (.tern)"),
    out: Path = typer.Option(..., "--out", help="where to write the ticket (.safetensors "
                                                "+ .json)"),
    force: bool = ForceOpt,
) -> None:
    """Read a compact ternary file back into an ordinary ticket (same weights, bit for bit;
    no rewind weights: the compact file does not carry them)."""
    from ticketmark.io import save_ticket
    from ticketmark.io.ternary import load_ternary
    from ticketmark.training.progress import console

    refuse_overwrite(ticket_files(out), force)
    ticket = load_ternary(source)
    path = save_ticket(out, ticket)
    console.print(f"ticket: {path}  ({len(ticket.mask)} masked layers, sparsity "
                  f"{100 * ticket.mask.sparsity():.1f}%)", soft_wrap=True)
