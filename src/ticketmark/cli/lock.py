"""``ticketmark lock`` / ``lock evaluate`` / ``unlock``: Scheme 1, usage control by a key.

``lock`` cuts the connections a chooser ranks highest out of a ticket, writes the key (the
cut, optionally sealed to a passphrase) and then the locked ticket for release; ``unlock``
puts the key back, bit for bit. Every check runs before the first byte is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ticketmark.cli.app import UncutGroup, app
from ticketmark.cli.options import ForceOpt, refuse_overwrite, ticket_files
from ticketmark.errors import TicketmarkError

# The choosers' names (ticketmark.ownership.lock loads torch; a test keeps them equal).
CHOOSERS = ("ewp", "random-path", "betweenness", "taylor", "hessian", "intgrads", "omp")
PATH_METHODS = ("ewp", "random-path")

lock_app = typer.Typer(cls=UncutGroup, help="Lock a ticket: remove its critical connections, "
                                            "keep them as the owner's key.",
                       rich_markup_mode=None)
app.add_typer(lock_app, name="lock")


def _passphrase(var: str | None) -> str | None:
    """Read the passphrase from an environment variable, never from the command line
    (which other users can see in the process list)."""
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise TicketmarkError(f"environment variable {var} holding the passphrase is not "
                              "set or empty")
    return value


def _same_file(a: Path, b: Path) -> bool:
    from ticketmark.io import resolve_ticket_path

    return resolve_ticket_path(a).resolve() == resolve_ticket_path(b).resolve()


@lock_app.callback(invoke_without_command=True)
def lock(
    ctx: typer.Context,
    ticket: Path | None = typer.Option(None, "--ticket", help="ticket to lock"),
    method: str = typer.Option("ewp", help=f"chooser: {', '.join(CHOOSERS)}"),
    paths: int | None = typer.Option(None, help="ewp/random-path: paths to cut "
                                                "(default 1000)"),
    weights: int | None = typer.Option(None, help="key size in weights (any chooser)"),
    fraction: float | None = typer.Option(None, help="key size as a fraction of the "
                                                     "ticket's weights (default 0.05 for "
                                                     "non-path choosers)"),
    add_back: bool = typer.Option(False, "--add-back", help="add as many random "
                                  "connections as were removed (per layer where the layer "
                                  "has room, the rest in layers that have)"),
    key_out: Path | None = typer.Option(None, "--key-out", help="where to write the key"),
    out: Path | None = typer.Option(None, "--out", help="where to write the locked ticket"),
    passphrase_env: str | None = typer.Option(None, "--passphrase-env", metavar="VAR",
                                              help="encrypt the key with the passphrase "
                                                   "in this environment variable"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing key file or "
                                                      "locked ticket"),
    seed: int = typer.Option(0, help="seed for paths, betweenness sampling and add-back"),
    data_dir: Path | None = typer.Option(None, help="dataset folder (saliency choosers)"),
    batches: int = typer.Option(4, help="batches of owner data the saliencies average"),
    betweenness_k: int = typer.Option(64, help="betweenness: sampled source nodes"),
) -> None:
    """Lock a ticket (subcommand 'evaluate' measures what a lock costs)."""
    if ctx.invoked_subcommand is not None:
        return
    if ticket is None or key_out is None or out is None:
        raise TicketmarkError("lock needs --ticket, --key-out and --out")
    if method not in CHOOSERS:
        raise TicketmarkError(f"unknown chooser {method!r}; choose one of: "
                              f"{', '.join(CHOOSERS)}")
    sizes = [x for x in (paths, weights, fraction) if x is not None]
    if len(sizes) > 1:
        raise TicketmarkError("give only one of --paths, --weights, --fraction")
    if paths is not None and paths <= 0:
        raise TicketmarkError(f"--paths must be positive, got {paths}")
    if weights is not None and weights <= 0:
        raise TicketmarkError(f"--weights must be positive, got {weights}")
    if fraction is not None and not 0 < fraction < 1:
        raise TicketmarkError(f"--fraction must be in (0, 1), got {fraction}")
    if not sizes:
        if method in PATH_METHODS:
            paths = 1000
        else:
            fraction = 0.05
    if _same_file(ticket, out):
        raise TicketmarkError("--out must differ from --ticket (the original stays yours)")
    if key_out.exists() and not force:
        raise TicketmarkError(f"{key_out} exists; a key you overwrite cannot unlock its "
                              "ticket any more (use --force to replace it)")
    from ticketmark.io import load_ticket, save_ticket
    from ticketmark.ownership.lock import ChooserContext, choose, lock_ticket, write_key

    refuse_overwrite(ticket_files(out), force)
    passphrase = _passphrase(passphrase_env)
    original = load_ticket(ticket)
    cctx = ChooserContext(original, seed=seed, data_dir=str(data_dir) if data_dir else None,
                          batches=batches, betweenness_k=betweenness_k)
    budget = weights if weights is not None else (
        max(1, round(fraction * original.mask.count())) if fraction is not None else None)
    selection = choose(cctx, method, paths=paths, weights=budget).take(budget)
    params = {"paths": paths, "weights": weights, "fraction": fraction, "seed": seed}
    locked, key = lock_ticket(original, selection, add_back=add_back, seed=seed,
                              params=params)
    write_key(key_out, key, passphrase)
    path = save_ticket(out, locked)
    n, total = selection.count(), original.mask.count()
    conns = sum(int(c.shape[0]) for c in selection.connections.values())
    moved = sum(max(0, int(a.numel()) - (int(key.removed[name].numel())
                                         if name in key.removed else 0))
                for name, a in key.added.items())
    print(f"locked with {method}: removed {n} weights ({100 * n / total:.2f}% of the "
          f"ticket) in {conns} {selection.level} connections"
          + (f", added {key.added_count()} random ones back" if add_back else "")
          + (f" ({moved} of them in other layers: the layers they were cut from had too "
             "few pruned positions)" if moved else ""))
    print(f"key: {key_out}{' (encrypted)' if passphrase else ''}  locked ticket: {path}")


def _numbers(text: str, flag: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise TicketmarkError(f"{flag} must be comma-separated numbers, got {text!r}") from None


@lock_app.command("evaluate")
def lock_evaluate(
    ticket: Path | None = typer.Option(None, "--ticket", help="ticket to measure (not "
                                                              "modified)"),
    out: Path = typer.Option(..., "--out", help="folder for lock_eval.csv/.md/.json/.png"),
    methods: str = typer.Option(",".join(CHOOSERS), help="comma-separated choosers"),
    sizes: str = typer.Option("1,2,5,10,20", help="key sizes, % of the ticket's weights"),
    epochs: int = typer.Option(4, help="epochs per retraining from the rewind point"),
    seed: int = typer.Option(0),
    forge: bool = typer.Option(True, "--forge/--no-forge", help="also run the thief's "
                               "random add-back forgery"),
    forge_sizes: str | None = typer.Option(None, help="forge only at these key sizes "
                                                      "(default: every size)"),
    noise: bool = typer.Option(True, "--noise/--no-noise", help="retrain the original with "
                               "a second seed to show the noise scale"),
    data_dir: Path | None = typer.Option(None, help="dataset folder"),
    batches: int = typer.Option(4, help="batches of owner data the saliencies average"),
    merge_dirs: str | None = typer.Option(None, "--merge", help="instead of running, merge "
                                          "the results in these comma-separated folders "
                                          "(one grid split across processes) into --out"),
    device: str | None = typer.Option(None, help="where to retrain: auto, cpu, cuda ... "
                                                 "(default: the ticket's recipe)"),
    force: bool = ForceOpt,
) -> None:
    """Retrain locked tickets per chooser and key size; write a table and a plot."""
    from ticketmark.ownership.lock.evaluate import EvalConfig, evaluate_lock, merge

    refuse_overwrite([out / f"lock_eval.{ext}" for ext in ("csv", "md", "json", "png")], force)
    if merge_dirs:
        merge([d.strip() for d in merge_dirs.split(",") if d.strip()], out)
        print((out / "lock_eval.md").read_text(), end="")
        return
    if ticket is None:
        raise TicketmarkError("lock evaluate needs --ticket (or --merge)")

    size_list = _numbers(sizes, "--sizes")
    forge_list = _numbers(forge_sizes, "--forge-sizes") if forge_sizes else None
    cfg = EvalConfig(methods=[m.strip() for m in methods.split(",") if m.strip()],
                     sizes=size_list, epochs=epochs, seed=seed, forge=forge,
                     forge_sizes=forge_list, noise=noise,
                     data_dir=str(data_dir) if data_dir else None, batches=batches,
                     device=device)
    evaluate_lock(ticket, out, cfg.validate())
    print((out / "lock_eval.md").read_text(), end="")


@app.command()
def unlock(
    ticket: Path = typer.Option(..., "--ticket", help="the locked ticket"),
    key: Path = typer.Option(..., "--key", help="the owner's key file"),
    out: Path = typer.Option(..., "--out", help="where to write the restored ticket"),
    passphrase_env: str | None = typer.Option(None, "--passphrase-env", metavar="VAR",
                                              help="environment variable holding the key's "
                                                   "passphrase"),
    force: bool = ForceOpt,
) -> None:
    """Restore the original ticket from a locked one and its key, bit for bit."""
    if _same_file(ticket, out):
        raise TicketmarkError("--out must differ from --ticket")
    from ticketmark.io import load_ticket, save_ticket
    from ticketmark.ownership.lock import read_key, unlock_ticket

    refuse_overwrite(ticket_files(out), force)
    passphrase = _passphrase(passphrase_env)
    owner_key = read_key(key, passphrase)
    locked = load_ticket(ticket)
    restored = unlock_ticket(locked, owner_key)
    path = save_ticket(out, restored)
    print(f"unlocked: restored {owner_key.removed_count()} weights"
          + (f", removed {owner_key.added_count()} added-back ones" if owner_key.added else "")
          + f"; fingerprint {restored.fingerprint()[:16]}  ticket: {path}")
