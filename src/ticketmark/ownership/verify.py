"""One entry point for every verification: a suspect and a claim in, a ``Verdict`` out.

The claim names its scheme; each scheme's verifier lives in its own package and exposes
``verify_claim(suspect: str, claim: Claim, options: VerifyOptions) -> Verdict``. This module
chooses the verifier and turns the suspects people actually hold into what it reads:

* a path (ticket, plain ``.safetensors``/``.pt`` state dict, ONNX, a folder) or an
  ``http(s)://`` endpoint goes through unchanged;
* an ``nn.Module`` in Python: for white-box schemes its weights are written to a temporary
  plain safetensors file (read back by ``ticketmark.io.suspect``); for black-box schemes it
  is served on 127.0.0.1 for the duration of the check, so it is queried exactly as a
  thief's server would be.

The CLI (``ticketmark verify``), disputes, the demo and ``ticketmark.verify`` all call
``verify_claim`` here, so they cannot drift apart.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ticketmark.errors import TicketmarkError
from ticketmark.ownership.claims import Claim, load_claim
from ticketmark.ownership.verdict import Verdict, VerifyOptions

if TYPE_CHECKING:
    from torch import nn

VERIFIERS = {
    "signature": "ticketmark.ownership.signature.verify",
    "trigger": "ticketmark.ownership.trigger.verify",
}
BLACK_BOX = frozenset({"trigger"})  # schemes that only need the suspect's answers


def scheme_verifier(scheme: str, where: str = "claim") -> ModuleType:
    module = VERIFIERS.get(scheme)
    if module is None:
        raise TicketmarkError(f"{where}: unknown scheme {scheme!r} "
                              f"(known: {', '.join(VERIFIERS)})")
    return importlib.import_module(module)


def detail_keys(scheme: str) -> frozenset[str]:
    """Evidence fields the scheme prints only with ``--verbose``."""
    return getattr(scheme_verifier(scheme), "DETAIL_KEYS", frozenset())


def verify_claim(suspect: str | Path | nn.Module, claim: str | Path | Claim,
                 options: VerifyOptions | None = None) -> Verdict:
    """The verdict for ``suspect`` against ``claim`` (a claim file or a loaded ``Claim``)."""
    options = options or VerifyOptions()
    loaded = claim if isinstance(claim, Claim) else load_claim(Path(claim))
    verifier = scheme_verifier(loaded.scheme, str(claim) if not isinstance(claim, Claim)
                               else "claim")
    if loaded.scheme in BLACK_BOX:
        _check_runnable(suspect, loaded.scheme)
    with _as_suspect(suspect, loaded) as target:
        verdict = verifier.verify_claim(target, loaded, options)
        if options.reference is None or verdict.scheme != "signature" or is_endpoint(target):
            return verdict
        # With the owner's reference, derivation from it is reported beside the credential:
        # a code only shows that a model carries it, derivation that it was made from the
        # owner's ticket (``derive``).
        from ticketmark.ownership.derive import with_derivation

        return with_derivation(verdict, str(target), loaded, options)


def is_endpoint(suspect: object) -> bool:
    return isinstance(suspect, str) and suspect.startswith(("http://", "https://"))


def _check_runnable(suspect: object, scheme: str) -> None:
    """A black-box check runs the model: a plain weights file does not say its architecture."""
    from ticketmark.io import resolve_ticket_path

    if not isinstance(suspect, str | Path) or is_endpoint(str(suspect)):
        return
    path = Path(suspect)
    ticket = resolve_ticket_path(path)
    if (path.exists() or ticket.exists()) and not ticket.with_suffix(".json").is_file():
        raise TicketmarkError(
            f"{suspect}: a {scheme} claim is checked by running the model, and a plain "
            "weights file does not say which network it is; query the server it runs on "
            "(--suspect http://...), or load it in Python and call ticketmark.verify(model, "
            "claim, reveal=...)")


@contextmanager
def _as_suspect(suspect: str | Path | nn.Module, claim: Claim) -> Iterator[str]:
    from torch import nn

    if not isinstance(suspect, nn.Module):
        yield str(suspect)
        return
    if claim.scheme in BLACK_BOX:
        with _served(suspect, claim) as url:
            yield url
        return
    from safetensors.torch import save_file

    from ticketmark.io.suspect import load_suspect_weights

    # Cloned: safetensors refuses tensors sharing storage (tied weights).
    weights = {k: v.clone() for k, v in load_suspect_weights(suspect).items()}
    with tempfile.TemporaryDirectory(prefix="ticketmark-suspect-") as tmp:
        path = Path(tmp) / "suspect.safetensors"
        save_file(weights, str(path))
        yield str(path)


@contextmanager
def _served(model: nn.Module, claim: Claim) -> Iterator[str]:
    """Serve an in-memory model on a free loopback port while a black-box check runs."""
    from ticketmark.ownership.trigger.generate import TriggerParams
    from ticketmark.serving import make_server, serve_in_thread

    params = TriggerParams.from_dict(claim.params.get("trigger"))
    server = make_server(model, params.shape, params.classes, port=0)
    serve_in_thread(server)
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
