"""Trigger sets (scheme 3): determinism, commitments, the test, embedding and verification."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from tests.trigger_support import fresh_claim, marked_conv
from ticketmark.errors import TicketmarkError
from ticketmark.io import load_ticket
from ticketmark.ownership.claims import Claim, make_claim
from ticketmark.ownership.keys import keygen, load_private_key
from ticketmark.ownership.trigger.commitment import (
    folder_claim_params,
    load_reveal,
    new_nonce,
    owner_reveal,
    save_reveal,
)
from ticketmark.ownership.trigger.folder import folder_hash, load_folder, write_folder
from ticketmark.ownership.trigger.generate import TriggerParams, generate
from ticketmark.ownership.trigger.stats import binomial_p, calibrate_null
from ticketmark.ownership.trigger.verify import verify_claim
from ticketmark.ownership.verdict import NOT_OWNED, OWNED, VerifyOptions
from ticketmark.training import predict

P_RGB = TriggerParams(16, 3, 32, 32, 10, -2.0, 2.5)
P_DIGITS = TriggerParams(100, 1, 8, 8, 10, -0.8, 1.8)


def random_seed() -> bytes:
    return os.urandom(32)


def _digest(s) -> str:
    return hashlib.sha256(s.x.numpy().tobytes() + s.y.numpy().tobytes()).hexdigest()


def test_same_seed_bit_identical():
    seed = bytes(range(32))
    a, b = generate(seed, P_RGB), generate(seed, P_RGB)
    assert a.x.dtype == torch.float32 and a.x.shape == (16, 3, 32, 32)
    assert a.x.numpy().tobytes() == b.x.numpy().tobytes() and torch.equal(a.y, b.y)
    # Pinned: the generator is a published format; any change needs a new version string.
    assert _digest(a) == "1c831ccbb51adf2cdbf530f54821780d3a72aa0facb99c73a8eb79bcaa44f3a6"
    assert float(a.x.min()) >= -2.0 and float(a.x.max()) <= 2.5
    bases = np.linspace(-1, 1, 8 * 3 * 32 * 32, dtype=np.float32).reshape(8, 3, 32, 32)
    patch = generate(seed, TriggerParams(8, 3, 32, 32, 10, -2.0, 2.5, groups=4, mark="patch",
                                         patch=5), bases)
    assert _digest(patch) == "17de8bbbb77b6680ed78df95a8c97e247107d061b32139a86f1c3fb701c1b054"
    blend = generate(seed, TriggerParams(8, 3, 32, 32, 10, -2.0, 2.5, groups=4, mark="blend",
                                         alpha=0.5), bases)
    assert _digest(blend) == "0e38f52c84b232dc4a654a9c10a7fbe9ed1512a442fb7fccc871c7a47543fbdc"


def test_stamped_marks_touch_only_their_patch_and_share_a_label_per_group():
    seed = random_seed()
    bases = np.random.default_rng(0).normal(size=(100, 1, 28, 28)).astype(np.float32)
    p = TriggerParams(100, 1, 28, 28, 10, -0.5, 2.8, groups=20, mark="patch", patch=7)
    s = generate(seed, p, bases)
    changed = (s.x.numpy() != bases).reshape(100, -1).sum(1)
    assert changed.max() <= 49 and changed.min() > 0  # inside one 7x7 patch each
    assert torch.equal(s.groups, torch.arange(20).repeat_interleave(5))
    assert all(len(set(s.y[s.groups == g].tolist())) == 1 for g in range(20))
    moved = bases.copy()
    moved[0, 0, 0, 0] += 1.0  # other bases: the labels are drawn again
    assert not torch.equal(generate(seed, p, moved).y, s.y)
    with pytest.raises(TicketmarkError, match="base images"):
        generate(seed, p, None)


def test_different_seeds_differ_and_labels_cover_classes():
    a, b = generate(random_seed(), P_DIGITS), generate(random_seed(), P_DIGITS)
    assert not torch.equal(a.x, b.x)
    big = generate(b"\x01" * 32, TriggerParams(5000, 1, 4, 4, 10, 0.0, 1.0))
    counts = np.bincount(big.y.numpy(), minlength=10)
    assert counts.min() > 400 and counts.max() < 600  # uniform over classes


def test_seed_derived_from_key(tmp_path):
    key = load_private_key(keygen(tmp_path / "o")[0])
    assert owner_reveal(key, "t1").seed == owner_reveal(key, "t1").seed  # re-derivable
    assert owner_reveal(key, "t1").seed != owner_reveal(key, "t2").seed
    other = load_private_key(keygen(tmp_path / "p")[0])
    assert owner_reveal(other, "t1").seed != owner_reveal(key, "t1").seed
    assert new_nonce() != new_nonce()


@pytest.mark.parametrize("bad", [{"size": 0}, {"classes": 1}, {"lo": 3.0}, {"height": "x"}])
def test_bad_params_rejected(bad):
    with pytest.raises(TicketmarkError):
        TriggerParams.from_dict({**P_DIGITS.to_dict(), **bad})


def test_binomial_and_calibration():
    assert binomial_p(0, 100, 0.1) == pytest.approx(1.0)
    assert binomial_p(100, 100, 0.1) == pytest.approx(1e-100, rel=1e-6)
    assert 1e-6 < binomial_p(20, 100, 0.1) < 0.01
    assert calibrate_null([10, 12], [100, 100], 10) > 0.11  # upper bound above pooled rate
    assert calibrate_null([0], [100], 10) == pytest.approx(0.1)  # never below chance


def test_reveal_file_roundtrip_and_malformed(tmp_path):
    key = load_private_key(keygen(tmp_path / "o")[0])
    bases = np.ones((4, 1, 8, 8), dtype=np.float32)
    rev = owner_reveal(key, "n", [3, 1], bases)
    path = save_reveal(tmp_path / "s.json", rev)
    back = load_reveal(path)
    assert (back.token, back.excluded) == (rev.token, [1, 3])
    assert back.bases is not None and np.array_equal(back.bases, bases)
    assert path.stat().st_mode & 0o077 == 0
    for text in ["nope", json.dumps({"format": "x"}), json.dumps({
            "format": "ticketmark-trigger-reveal/2", "reveal": "abcd"})]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(TicketmarkError, match="not a trigger reveal|bytes"):
            load_reveal(tmp_path / "bad.json")
    # The old format (a bare seed, not bound to any key) is refused with a clear message.
    (tmp_path / "old.json").write_text(json.dumps({
        "format": "ticketmark-trigger-seed/1", "kind": "derived", "seed": "00" * 32}))
    with pytest.raises(TicketmarkError, match="old .* not bound to the owner's key"):
        load_reveal(tmp_path / "old.json")


def test_embed_reaches_trigger_accuracy_and_verifies(conv_ticket, tmp_path):
    m = marked_conv(conv_ticket)
    assert m.report["trigger_acc"] >= 95.0
    assert m.report["plain_trigger_acc"] < 40.0
    marked = load_ticket(m.ticket)
    assert marked.fingerprint() == load_ticket(conv_ticket).fingerprint()  # same mask, rewind
    assert marked.meta["history"][-1]["kind"] == "trigger-embed"
    v = verify_claim(str(m.ticket), m.claim, VerifyOptions(reveal=m.seed_file,
                                                           report_dir=tmp_path))
    assert v.status == OWNED, v.reason
    assert v.evidence["matches"] >= 95 and v.p_value < 1e-60
    assert (tmp_path / "trigger_confusion.png").stat().st_size > 1000


def test_forged_set_rejected_by_commitment(conv_ticket, tmp_path):
    """A forger who picks inputs after seeing the model cannot match the commitment."""
    m = marked_conv(conv_ticket)
    suspect = load_ticket(conv_ticket).build()
    owner = load_private_key(m.key_file)
    # 1. Inputs the model already maps to the forger's labels, as a folder set.
    forged = generate(random_seed(), m.params)
    forged.y = predict(suspect, forged.x).argmax(1)  # 100% "matches" by construction
    write_folder(forged, tmp_path / "forged", m.params.lo, m.params.hi)
    with pytest.raises(TicketmarkError, match="folder"):  # the claim is a seed claim
        verify_claim(str(conv_ticket), m.claim, VerifyOptions(reveal=tmp_path / "forged"))
    cp = folder_claim_params("f" * 64, m.params, m.claim.public_key)
    folder_claim = make_claim(owner, "trigger", "0" * 64, cp)  # committed to another folder
    v = verify_claim(str(conv_ticket), folder_claim, VerifyOptions(reveal=tmp_path / "forged"))
    assert v.status == NOT_OWNED and v.evidence["reveal_valid"] is False
    # 2. The owner's reveal with the misses "excluded" after the fact.
    rev = load_reveal(m.seed_file)
    seed = rev.seed
    true_set = generate(seed, m.params)
    misses = (predict(suspect, true_set.x).argmax(1) != true_set.y).nonzero().flatten()
    rev.excluded = [int(i) for i in misses]
    cherry = save_reveal(tmp_path / "cherry.json", rev)
    v = verify_claim(str(conv_ticket), m.claim, VerifyOptions(reveal=cherry))
    assert v.status == NOT_OWNED and "not the committed one" in v.reason
    # 3. A tampered claim (the forger's own key pasted in) fails its signature.
    forger = load_private_key(keygen(tmp_path / "forger")[0])
    body = {**m.claim.body,
            "owner_public_key": make_claim(forger, "trigger", "", {}).public_key}
    v = verify_claim(str(m.ticket), Claim(body, m.claim.signature),
                     VerifyOptions(reveal=m.seed_file))
    assert v.status == NOT_OWNED and v.evidence["signature_valid"] is False


def test_seed_search_cannot_forge(conv_ticket):
    """Grinding seeds against an unmarked model: the best of 200 stays far above 1e-6."""
    model = load_ticket(conv_ticket).build()
    sets = [generate(random_seed(), P_DIGITS) for _ in range(200)]
    pred = predict(model, torch.cat([s.x for s in sets])).argmax(1).view(200, -1)
    matches = (pred == torch.stack([s.y for s in sets])).sum(1)
    assert binomial_p(int(matches.max()), 100, 0.1) > 1e-4


def test_random_seed_on_unmarked_model_is_not_owned(conv_ticket, tmp_path):
    params = TriggerParams(100, 1, 8, 8, 10, -0.8137, 1.8449)
    claim, seed_file, _ = fresh_claim(params, tmp_path)
    v = verify_claim(str(conv_ticket), claim, VerifyOptions(reveal=seed_file))
    assert v.status == NOT_OWNED and v.evidence["reveal_valid"] is True
    assert v.p_value > 1e-3  # far above the 1e-6 threshold


def test_excluded_slots_count_as_misses(conv_ticket, tmp_path):
    params = TriggerParams(100, 1, 8, 8, 10, -0.8137, 1.8449)
    claim, seed_file, _ = fresh_claim(params, tmp_path, excluded=list(range(0, 100, 2)))
    v = verify_claim(str(conv_ticket), claim, VerifyOptions(reveal=seed_file))
    assert v.evidence["queried"] == 50 and v.evidence["slots"] == 100
    assert v.evidence["p_top1"] == pytest.approx(binomial_p(v.evidence["matches"], 100, 0.1))
    assert v.p_value >= v.evidence["p_top1"]  # the verdict's p: both tests, Bonferroni


def test_reference_is_not_a_null_and_null_models_are_checked(conv_ticket, tmp_path):
    """The owner's own (marked) reference never calibrates the null; null models are models
    known to be unmarked, and for a derived set only their own p-values are reported."""
    m = marked_conv(conv_ticket)
    v = verify_claim(str(m.ticket), m.claim, VerifyOptions(reveal=m.seed_file,
                                                           reference=m.ticket))
    assert v.status == OWNED and v.p_value < 1e-60, v.reason
    assert "not used" in v.evidence["reference"]
    v = verify_claim(str(m.ticket), m.claim, VerifyOptions(reveal=m.seed_file,
                                                           null_models=conv_ticket))
    assert v.status == OWNED and "checked on 1" in v.evidence["null"]
    assert v.evidence["null_smallest_p"] > 1e-3


def test_folder_set_commitment(conv_ticket, tmp_path):
    m = marked_conv(conv_ticket)
    seed = load_reveal(m.seed_file).seed
    folder = write_folder(generate(seed, m.params), tmp_path / "set", m.params.lo, m.params.hi)
    trig, params = load_folder(folder, 1, 8, 8, 10, m.params.lo, m.params.hi)
    assert params == m.params and torch.equal(trig.y, generate(seed, m.params).y)
    owner = load_private_key(m.key_file)
    claim = make_claim(owner, "trigger", "0" * 64,
                       folder_claim_params(folder_hash(folder), params, m.claim.public_key))
    v = verify_claim(str(m.ticket), claim, VerifyOptions(reveal=folder))
    assert v.status == OWNED and v.evidence["kind"] == "folder"
    # The same commitment under another key's signature opens nothing.
    thief = load_private_key(keygen(tmp_path / "thief")[0])
    copied = make_claim(thief, "trigger", "0" * 64, claim.params)
    v = verify_claim(str(m.ticket), copied, VerifyOptions(reveal=folder))
    assert v.status == NOT_OWNED and v.evidence["reveal_valid"] is False
    tampered = shutil.copytree(folder, tmp_path / "tampered")
    labels = (tampered / "labels.txt").read_text().splitlines()
    labels[0] = str((int(labels[0]) + 1) % 10)
    (tampered / "labels.txt").write_text("\n".join(labels) + "\n")
    v = verify_claim(str(m.ticket), claim, VerifyOptions(reveal=tampered))
    assert v.status == NOT_OWNED and v.evidence["reveal_valid"] is False


def _one_line_error(res):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_cli_bad_input(conv_ticket, tmp_path):
    m = marked_conv(conv_ticket)
    res = run_cli("trigger", "embed", "--ticket", conv_ticket, "--key", tmp_path / "none.pem",
                  "--out", tmp_path / "o")
    assert "no private key" in _one_line_error(res)
    res = run_cli("trigger", "embed", "--ticket", conv_ticket, "--key", m.key_file,
                  "--out", tmp_path / "o", "--ratio", "1.5")
    assert "ratio" in _one_line_error(res)
    assert not (tmp_path / "o.safetensors").exists()
    res = run_cli("verify", "--suspect", m.ticket, "--claim", m.claim_file)
    assert "--reveal" in _one_line_error(res)


@pytest.mark.slow
def test_cli_embed_then_verify(conv_ticket, tmp_path):
    m = marked_conv(conv_ticket)
    res = run_cli("trigger", "embed", "--ticket", conv_ticket, "--key", m.key_file,
                  "--out", tmp_path / "t3", "--epochs", "8", "--ratio", "0.3", "-q")
    assert res.returncode == 0, res.stderr
    claim, seed = tmp_path / "t3.trigger-claim.json", tmp_path / "t3.trigger-reveal.json"
    res = run_cli("verify", "--suspect", tmp_path / "t3.safetensors", "--claim", claim,
                  "--reveal", seed, "--report", tmp_path / "rep")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OWNED" in res.stdout and (tmp_path / "rep" / "trigger_confusion.png").is_file()
    res = run_cli("verify", "--suspect", conv_ticket, "--claim", claim, "--reveal", seed)
    assert res.returncode == 1 and "NOT OWNED" in res.stdout
    res = run_cli("trigger", "make", "--claim", claim, "--reveal", seed,
                  "--out", tmp_path / "set")
    assert res.returncode == 0 and len(list((tmp_path / "set").glob("*.png"))) == 100
    res = run_cli("trigger", "make", "--claim", m.claim_file, "--reveal", seed,
                  "--out", tmp_path / "other")
    assert "does not open" in _one_line_error(res)


def test_avoid_natural_excludes_predicted_groups(conv_ticket, tmp_path):
    from ticketmark.ownership.trigger.embed import EmbedConfig, embed

    plain = load_ticket(conv_ticket)
    owner = load_private_key(keygen(tmp_path / "o")[0])
    res = embed(plain, EmbedConfig(size=60, epochs=1, mark="abstract", avoid_natural=True),
                owner, progress=False)
    assert res.reveal is not None
    params = TriggerParams.from_dict(res.claim_params["trigger"])
    full = generate(res.reveal.seed, params)
    natural = predict(plain.build(), full.x).argmax(1)
    assert res.trigger.excluded() == [int(i) for i in (natural == full.y).nonzero().flatten()]
    assert res.report["plain_trigger_acc"] == 0.0  # no kept label is the natural one
    claim = make_claim(owner, "trigger", plain.fingerprint(), res.claim_params)
    kept = save_reveal(tmp_path / "s.json", res.reveal)
    v = verify_claim(str(conv_ticket), claim, VerifyOptions(reveal=kept))
    assert v.evidence["reveal_valid"] and v.evidence["matches"] == 0
    res.reveal.excluded = []  # the exclusions are committed
    dropped = save_reveal(tmp_path / "d.json", res.reveal)
    assert not verify_claim(str(conv_ticket), claim, VerifyOptions(reveal=dropped)
                            ).evidence["reveal_valid"]


def test_embed_folder_set_commits_to_the_folder(conv_ticket, tmp_path):
    from ticketmark.ownership.trigger.embed import EmbedConfig, embed

    plain = load_ticket(conv_ticket)
    folder = write_folder(generate(random_seed(), P_DIGITS), tmp_path / "set", -0.8, 1.8)
    owner = load_private_key(keygen(tmp_path / "o")[0])
    res = embed(plain, EmbedConfig(epochs=1), owner, folder=folder, progress=False)
    assert res.claim_params["kind"] == "folder" and res.report["slots"] == 100
    claim = make_claim(owner, "trigger", plain.fingerprint(), res.claim_params)
    v = verify_claim(str(conv_ticket), claim, VerifyOptions(reveal=folder))
    assert v.evidence["reveal_valid"] and v.status == NOT_OWNED  # plain: chance level
    with pytest.raises(TicketmarkError, match="reveal the folder"):
        verify_claim(str(conv_ticket), claim, VerifyOptions(reveal=tmp_path / "set" /
                                                            "labels.txt"))
