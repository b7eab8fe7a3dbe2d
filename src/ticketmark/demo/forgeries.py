"""The thief's forged claims, and false-claim checks on tickets that carry no credential."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ticketmark.data import DataSplits
from ticketmark.finding import FindConfig, run_oneshot
from ticketmark.io import Ticket, load_ticket, save_ticket
from ticketmark.ownership.claims import make_claim, save_claim
from ticketmark.ownership.dispute import Claimant, decide
from ticketmark.ownership.keys import keygen, load_private_key, public_key_b64
from ticketmark.ownership.reference import bind
from ticketmark.ownership.signature import EmbedOptions, embed_signature, qr
from ticketmark.ownership.signature import embed as sig_embed
from ticketmark.ownership.trigger.commitment import save_reveal
from ticketmark.ownership.trigger.embed import EmbedConfig, prepare_set
from ticketmark.ownership.verdict import VerifyOptions
from ticketmark.sparsity import Mask
from ticketmark.training import TrainConfig, predict


def _verify(suspect: Path, claim: Path, **options: Any):
    from ticketmark.ownership.verify import verify_claim

    return verify_claim(str(suspect), claim, VerifyOptions(**options))


def outcome_row(forgery: str, rejected: bool, owner_wins: bool, why: str) -> dict[str, Any]:
    """A forgery succeeds only if the forged claim holds; a rejected one where the owner's
    claim does not hold on that copy either is reported as such, not as a success."""
    if not rejected:
        outcome = "FORGERY SUCCEEDED"
    elif owner_wins:
        outcome = "rejected / owner wins"
    else:
        outcome = "rejected / owner's claim does not hold on this copy either"
    return {"forgery": forgery, "outcome": outcome, "why": why}


def independent_ticket(plain: Ticket, out: Path, progress: bool) -> Path:
    """A ticket nobody marked: same architecture, data and sparsity, another seed (OMP)."""
    recipe = TrainConfig.from_dict(plain.meta["train"])
    recipe.seed = recipe.seed + 101
    cfg = FindConfig(method="omp", model=plain.model_name, dataset=plain.dataset,
                     sparsity=round(plain.mask.sparsity(), 6),
                     rewind_epoch=int(plain.meta.get("rewind_epoch", 0)), train=recipe)
    run_oneshot(cfg, out, progress=progress)
    return out / "ticket.safetensors"


def search_claim(key_path: Path, suspect: Ticket, message: str) -> Any:
    """Ambiguity (b): claim a QR at the position where the suspect's mask already looks most
    like the forger's code, without embedding anything."""
    key = load_private_key(key_path)
    mask = Mask.from_weights(suspect.build(), list(suspect.mask))
    fp = suspect.fingerprint()
    tag = qr.make_tag(public_key_b64(key), message, fp)
    plan = sig_embed.plan(mask, qr.all_masks(tag), None, 1)
    params = sig_embed.claim_params(plan, mask, tag, fp, 1)
    return make_claim(key, "signature", fp, bind(params, suspect), message)


def run_forgeries(out: Path, data: DataSplits, owner_path: Path, sig_claim: Path,
                  trig_claim: Path, seed_path: Path, stolen_path: Path, deployed_path: Path,
                  plain: Ticket, progress: bool) -> list[dict[str, Any]]:
    """The forgeries (a)-(c) and two false claims; (a), (b) on the stolen release, (c), a
    black-box claim, on the copy the thief deploys (``deployed_path``)."""
    rows: list[dict[str, Any]] = []
    forge = out / "forgeries"
    owner = Claimant(sig_claim, owner_path)

    # False claims: the owner's claims against tickets that never carried the credentials.
    unmarked = {"owner's ticket before embedding": save_ticket(forge / "plain", plain),
                "an independently trained ticket": independent_ticket(
                    plain, forge / "independent", progress)}
    for name, path in unmarked.items():
        sig = _verify(path, sig_claim, reference=owner_path)
        trig = _verify(path, trig_claim, reveal=seed_path)
        ok = not sig.owned and not trig.owned
        rows.append(outcome_row(f"false claim on {name}", ok, ok,
                                f"signature {sig.status} (p={sig.p_value:.1e}); trigger "
                                f"{trig.status} (p={trig.p_value:.1e})"))

    thief_pem, _ = keygen(forge / "thief")
    stolen = load_ticket(stolen_path)

    # (a) The thief embeds a second signature into the stolen copy with ticketmark's own
    # embed and claims it. The placement leaves the owner's signed layer alone (its block
    # would otherwise be the best fit there is: its finder and timing patterns agree with
    # any QR).
    second = embed_signature(stolen, load_private_key(thief_pem), "the thief",
                             EmbedOptions(progress=progress), data=data)
    thief_ticket = save_ticket(forge / "thief_signed", second.ticket)
    thief_claim = save_claim(forge / "thief_signature.claim.json", second.claim)
    result = decide(thief_ticket, [owner, Claimant(thief_claim, thief_ticket)])
    kept = second.summary["existing_codes"]
    where = ", ".join(f"{e['layer']} ({e['row']}, {e['col']})" for e in kept) or "none found"
    rows.append(outcome_row("(a) thief embeds a second QR signature", result.winner == 0,
                            result.winner == 0,
                            f"{result.reason} (the thief's code went into "
                            f"{second.summary['layer']}; embedding left alone the layer "
                            f"of the code already there: {where})"))

    # (b) The thief claims a QR-like pattern searched for in the stolen copy's mask.
    searched = save_claim(forge / "thief_search.claim.json",
                          search_claim(thief_pem, stolen, "the thief"))
    verdict = _verify(stolen_path, searched)
    result = decide(stolen_path, [owner, Claimant(searched, stolen_path)])
    rows.append(outcome_row("(b) thief claims a QR found in the mask",
                            not verdict.owned and result.winner != 1, result.winner == 0,
                            f"{verdict.reason}; dispute: {result.reason}"))

    # (c) The thief fabricates a trigger set after seeing the model they deploy.
    deployed = load_ticket(deployed_path)
    thief_key = load_private_key(thief_pem)
    fabricated = prepare_set(thief_key, deployed, data, EmbedConfig(size=100))
    labels = predict(deployed.build(), fabricated.trigger.x).argmax(1)
    fabricated_match = int((labels == fabricated.trigger.y).sum())
    claim = make_claim(thief_key, "trigger", deployed.fingerprint(),
                       bind(fabricated.claim_params(), deployed), "the thief")
    thief_trig = save_claim(forge / "thief_trigger.claim.json", claim)
    thief_seed = save_reveal(forge / "thief_trigger.reveal.json", fabricated.reveal)
    verdict = _verify(deployed_path, thief_trig, reveal=thief_seed)
    result = decide(deployed_path, [Claimant(trig_claim, None, seed_path),
                                    Claimant(thief_trig, None, thief_seed)])
    rows.append(outcome_row("(c) thief fabricates a trigger set after seeing the model",
                            not verdict.owned and result.winner != 1, result.winner == 0,
                            f"relabelling by the model would match 100/100, but the labels come "
                            f"from the seed's hash: the revealed seed's set matches "
                            f"{verdict.evidence.get('matches')}/{verdict.evidence.get('queried')} "
                            f"(chance gave {fabricated_match}) -> {verdict.status}; dispute: "
                            f"{result.reason}"))
    return rows
