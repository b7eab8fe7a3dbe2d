"""The Python API for PyTorch users: ``import ticketmark as tm``.

    ticket = tm.find("resnet20s", "digits", out="runs/t", rounds=2, rate=0.5)
    signed = tm.sign(ticket, "owner.pem", "ACME vision team")    # ticket + claim
    verdict = tm.verify(stolen_module, "signature.claim.json")   # path, URL or nn.Module

and the bridges to plain PyTorch: ``tm.from_pruned`` turns a model pruned with
``torch.nn.utils.prune`` (its ``weight_mask`` buffers) into a ticket, ``tm.to_state_dict``
gives a ticket's weights as the plain state dict anyone can load, ``tm.load_weights`` reads
any suspect file as a flat state dict.

Each function is a thin layer over the package that does the work, so the CLI and this API
give the same results; none of them is imported until used (``ticketmark`` stays light).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ticketmark.errors import TicketmarkError

if TYPE_CHECKING:
    import torch
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from torch import nn

    from ticketmark.io import Ticket
    from ticketmark.ownership.claims import Claim
    from ticketmark.ownership.signature.embed import EmbedResult
    from ticketmark.ownership.verdict import Verdict


def trust_model_code(spec: str) -> None:
    """Allow the model or data code ``spec`` (``package.module:factory``) to be imported when
    a ticket's sidecar names it (``ticketmark.usercode``: files never import code the user
    did not name)."""
    from ticketmark import usercode

    usercode.trust(spec)


def _named(obj: str | Callable[..., Any]) -> str:
    """A built-in name or import string as given (trusted: the caller named it in code), or
    a module-level callable's import string."""
    from ticketmark import usercode

    if callable(obj) and not isinstance(obj, str):
        return usercode.spec_of(obj)
    if usercode.is_spec(obj):
        usercode.trust(obj)
    return obj


def find(model: str | Callable[..., Any], dataset: str | Callable[..., Any],
         out: str | Path, method: str = "imp", *, epochs: int = 8, progress: bool = False,
         **config: Any) -> Ticket:
    """Find a ticket (IMP by default) and write its run folder to ``out``.

    ``model``: a built-in name, ``"package.module:factory"`` or a module-level factory
    (called with whichever of ``in_channels``, ``num_classes``, ``image_size`` it takes);
    ``dataset``: a built-in name, or a factory returning ``(train, test)`` datasets of
    ``(tensor, label)`` pairs (or one, split here). ``config`` sets any other ``FindConfig``
    field (``rounds``, ``rate``, ``sparsity``, ``rewind_epoch``, ``data_dir``, ...);
    training fields go in ``train=TrainConfig(...)`` or, for the common one, ``epochs``.
    """
    model, dataset = _named(model), _named(dataset)
    from ticketmark.cli.find import FINDERS, finder
    from ticketmark.finding import FindConfig
    from ticketmark.training import TrainConfig

    if method not in FINDERS:
        raise TicketmarkError(f"unknown finder {method!r}; choose one of: {', '.join(FINDERS)}")
    config.setdefault("train", TrainConfig(epochs=epochs))
    cfg = FindConfig(method=method, model=model, dataset=dataset, **config)
    return finder(method)(cfg.validate(), out, progress=progress)


def load_ticket(path: str | Path) -> Ticket:
    from ticketmark.io import load_ticket as _load

    return _load(path)


def _private_key(key: str | Path | Ed25519PrivateKey) -> Ed25519PrivateKey:
    if isinstance(key, str | Path):
        from ticketmark.ownership.keys import load_private_key

        return load_private_key(Path(key))
    return key


def sign(model_or_ticket: Ticket | str | Path | nn.Module, key: str | Path | Ed25519PrivateKey,
         message: str, *, epochs: int | None = None, progress: bool = False,
         **ticket_info: Any) -> EmbedResult:
    """Draw a signed QR code into the ticket's topology and retrain; returns ticket + claim.

    ``model_or_ticket``: a ``Ticket``, a ticket path, or an ``nn.Module`` pruned with
    ``torch.nn.utils.prune`` (then give ``model_name=`` and ``dataset=`` as for
    ``from_pruned``). Save with ``save_ticket(path, result.ticket)`` and
    ``save_claim(path, result.claim)``.
    """
    from torch import nn

    from ticketmark.io import Ticket
    from ticketmark.ownership.signature import EmbedOptions, embed_signature

    if isinstance(model_or_ticket, nn.Module):
        ticket = from_pruned(model_or_ticket, **ticket_info)
    elif isinstance(model_or_ticket, Ticket):
        ticket = model_or_ticket
    else:
        ticket = load_ticket(model_or_ticket)
    return embed_signature(ticket, _private_key(key), message,
                           EmbedOptions(epochs=epochs, progress=progress))


def verify(suspect: str | Path | nn.Module, claim: str | Path | Claim, *,
           reveal: str | Path | None = None, reference: str | Path | None = None,
           search: bool = False, **options: Any) -> Verdict:
    """The verdict for a suspect (model file, ``http(s)://`` endpoint or ``nn.Module``).

    ``options`` sets any other ``VerifyOptions`` field (``threshold``, ``report_dir``,
    ``timeout``, ``adapter``, ...). Check ``verdict.owned``, ``verdict.p_value`` and
    ``verdict.reason``.
    """
    from ticketmark.ownership.verdict import VerifyOptions
    from ticketmark.ownership.verify import verify_claim

    opts = VerifyOptions(reveal=Path(reveal) if reveal is not None else None,
                         reference=Path(reference) if reference is not None else None,
                         search=search, **options)
    return verify_claim(suspect, claim, opts)


def load_weights(suspect: str | Path | nn.Module) -> dict[str, torch.Tensor]:
    """Any suspect's weights as one flat state dict (see ``ticketmark.io.suspect``)."""
    from ticketmark.io.suspect import load_suspect_weights

    return load_suspect_weights(suspect)


def from_pruned(model: nn.Module, model_name: str | Callable[..., Any],
                dataset: str | Callable[..., Any], *,
                rewind: dict[str, torch.Tensor] | None = None,
                train: dict[str, Any] | None = None) -> Ticket:
    """A ticket from a model pruned with ``torch.nn.utils.prune`` (``weight_mask`` buffers).

    ``model_name`` is the ticketmark architecture it is an instance of (``resnet20s``,
    ``conv4``, ...) and ``dataset`` the data it was trained on (its input size and classes
    come from there). The pruning is folded in (weights are ``weight_orig * weight_mask``);
    without ``rewind`` weights, retraining (``sign``) starts from the trained weights, and
    ``train`` (a ``TrainConfig`` dict) is its recipe.
    """
    from ticketmark.data import load_dataset
    from ticketmark.io import Ticket
    from ticketmark.io.suspect import fold_pruning
    from ticketmark.models import build_model
    from ticketmark.sparsity import Mask
    from ticketmark.training import TrainConfig

    model_name, dataset = _named(model_name), _named(dataset)
    raw = dict(model.state_dict())
    masks = {k[: -len("_mask")]: v.bool() for k, v in raw.items() if k.endswith("_mask")
             and k[: -len("_mask")] + "_orig" in raw}
    if not masks:
        raise TicketmarkError("the model has no torch.nn.utils.prune masks (weight_mask "
                              "buffers); prune it first, or use find()")
    state = {k: v.detach().cpu().clone().contiguous() for k, v in fold_pruning(raw).items()}
    data = load_dataset(dataset)
    c, h, _ = data.input_shape
    reference = build_model(model_name, c, data.num_classes, h).state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        raise TicketmarkError(f"the model is not a {model_name} (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    order = [k for k in reference if k in masks]
    ticket = Ticket(model_name, dataset, c, data.num_classes, h, state,
                    Mask({k: masks[k] for k in order}),
                    rewind=rewind or {k: v.clone() for k, v in state.items()},
                    meta={"train": train or TrainConfig().to_dict(),
                          "history": [{"kind": "import", "params": {"from":
                                                                    "torch.nn.utils.prune"}}]})
    ticket.build()  # validates shapes against the architecture
    return ticket


def to_state_dict(ticket: Ticket | str | Path) -> dict[str, torch.Tensor]:
    """A ticket's trained weights (mask applied) as a plain ``model.state_dict()``."""
    from ticketmark.io import Ticket
    from ticketmark.io.ticket import state_of

    t = ticket if isinstance(ticket, Ticket) else load_ticket(ticket)
    return state_of(t.build())


def save_state_dict(path: str | Path, ticket: Ticket | str | Path) -> Path:
    """Write ``to_state_dict`` as a plain ``.safetensors`` (or ``.pt``) file, atomically."""
    import io

    import torch
    from safetensors.torch import save

    from ticketmark.io import atomic_write_bytes

    out = Path(path)
    state = to_state_dict(ticket)
    if out.suffix in (".pt", ".pth"):
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(out, buf.getvalue())
    else:
        atomic_write_bytes(out, save(state))
    return out
