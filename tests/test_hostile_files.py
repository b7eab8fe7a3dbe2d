"""Hostile model files, second round (issue 30): one regression test per class.

* weights of unusual dtypes (bool, uint16/32/64 safetensors; ONNX STRING, BFLOAT16, FLOAT8,
  INT4, COMPLEX initializers) end in a verdict, not exit 3;
* files whose tensors promise far more memory than they hold (stride-0 and shared-storage
  views in a ``.pt``, a deflated ``.pt`` archive, ONNX initializers all pointing at one
  external file) are refused before anything is materialised, and the process's peak
  memory does not grow;
* ONNX external data with a negative offset, or a range past its file, is one error line;
* a folder shard that is a link leaving the folder is one error line;
* a trigger reveal whose ``bases`` .npy header claims a huge shape is one error line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests import hostile_files as hf
from tests.hostile_support import cli, trigger_claim
from ticketmark.errors import TicketmarkError
from ticketmark.io import load_ticket
from ticketmark.io.suspect import load_suspect_weights
from ticketmark.ownership.claims import make_claim, save_claim
from ticketmark.ownership.keys import keygen, load_private_key

LAYER = "2.weight"  # conv2's second conv: the claimed layer


@pytest.fixture(scope="module")
def signature_claim(conv_ticket, tmp_path_factory) -> Path:
    """A claim over conv_ticket's layer 2.weight (signed, no embedding: a verdict is what
    matters here, not which one)."""
    from ticketmark.ownership.signature import qr

    root = tmp_path_factory.mktemp("hostile_files")
    key = load_private_key(keygen(root / "k")[0])
    code = qr.make_code("hostile1", mask=0)
    claim = make_claim(key, "signature", load_ticket(conv_ticket).fingerprint(), {
        "tag": "hostile1", "tag_fingerprint": "0" * 64, "qr_version": code.version,
        "qr_mask": 0, "size": code.size, "layer": LAYER, "row": 0, "col": 0,
        "orientation": 0, "density": 0.5, "densities": {LAYER: 0.5}})
    return save_claim(root / "claim.json", claim)


@pytest.fixture(scope="module")
def state(conv_ticket) -> dict[str, torch.Tensor]:
    return dict(load_ticket(conv_ticket).state)


def _peak_kb() -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+)", text, re.M).group(1))


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint16, torch.uint32, torch.uint64])
def test_safetensors_of_unusual_dtypes_give_a_verdict(tmp_path, state, signature_claim, dtype):
    """The claimed layer stored as bool/unsigned: torch has no abs for them (was exit 3)."""
    path = hf.safetensors_dtype(tmp_path / "odd.safetensors", dtype, state, LAYER)
    res = cli("verify", "--suspect", path, "--claim", signature_claim)
    res.assert_verdict_or_error(verdicts=(0, 1))
    assert res.code in (0, 1), res.err


@pytest.mark.parametrize("kind", ["STRING", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E5M2", "INT4",
                                  "BOOL", "UINT64", "COMPLEX64"])
def test_onnx_initializers_of_unusual_kinds_give_a_verdict(tmp_path, state, signature_claim,
                                                           kind):
    path = hf.onnx_dtype(tmp_path / "odd.onnx", kind, state, LAYER)
    res = cli("verify", "--suspect", path, "--claim", signature_claim)
    res.assert_verdict_or_error(verdicts=(0, 1))
    assert res.code in (0, 1), res.err
    weights = load_suspect_weights(path)
    if kind in ("STRING", "COMPLEX64"):  # not weights: skipped
        assert LAYER not in weights
    else:
        assert weights[LAYER].dtype in (torch.float32, torch.int8, torch.uint8, torch.int64)


@pytest.mark.parametrize(("make", "needle"), [
    (lambda root: hf.pt_stride0(root / "stride0.pt"), "would take 4,398,046,511,104 bytes"),
    (lambda root: hf.pt_shared(root / "shared.pt", views=100, mib=16), "would take"),
    (lambda root: hf.pt_zip_bomb(root / "bomb.pt", mib=64), "inflate"),
    (lambda root: hf.onnx_shared_external(root / "onnx", views=100, mib=16), "would take"),
], ids=["pt-stride0", "pt-shared-storage", "pt-deflated", "onnx-shared-external"])
def test_files_promising_more_memory_than_they_hold_are_refused(tmp_path, make, needle,
                                                                signature_claim):
    path = make(tmp_path)
    before = _peak_kb()
    with pytest.raises(TicketmarkError, match=needle):
        load_suspect_weights(path)
    grown_mb = (_peak_kb() - before) / 1024
    assert grown_mb < 64, grown_mb  # the naive loaders took 1.6 GB to 4 TB here
    line = cli("verify", "--suspect", path, "--claim", signature_claim).one_error()
    assert "refused" in line


def test_tied_weights_and_half_precision_still_load(tmp_path):
    """Legitimate sharing (one storage read twice) and fp16 -> fp32 stay within the bound."""
    w = torch.randn(256, 64)
    torch.save({"embed.weight": w, "head.weight": w, "half.weight": w.half()},
               tmp_path / "tied.pt")
    out = load_suspect_weights(tmp_path / "tied.pt")
    assert torch.equal(out["embed.weight"], out["head.weight"])
    assert out["half.weight"].dtype == torch.float32
    out["embed.weight"].add_(1)  # own memory: the copies are independent of the file
    assert not torch.equal(out["embed.weight"], out["head.weight"])


@pytest.mark.parametrize(("offset", "length", "dims", "needle"), [
    (-8, 16, [4], "offset -8"),
    (4000, None, [64], "offset 4,000"),
    (0, 8, [64], "length says 8"),
    (0, 256, [2**40, 2**40], "needs"),
])
def test_onnx_external_ranges_are_checked(tmp_path, offset, length, dims, needle,
                                          signature_claim):
    path = hf.onnx_external(tmp_path / "m", offset, length, dims)
    with pytest.raises(TicketmarkError, match=needle):
        load_suspect_weights(path)
    cli("verify", "--suspect", path, "--claim", signature_claim).one_error()


def test_onnx_external_range_inside_its_file_reads(tmp_path):
    path = hf.onnx_external(tmp_path / "m", 16, 256, [64])
    assert load_suspect_weights(path)["layer.weight"].shape == (64,)


def test_folder_shard_linking_out_is_refused(tmp_path, conv_ticket, signature_claim):
    """A shard that is a link to the owner's ticket would be read as the suspect's."""
    from safetensors.torch import save_file

    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a.weight": torch.ones(2)}, str(folder / "model-00001-of-00002.safetensors"))
    (folder / "model-00002-of-00002.safetensors").symlink_to(conv_ticket)
    with pytest.raises(TicketmarkError, match="link to a file outside the folder"):
        load_suspect_weights(folder)
    line = cli("verify", "--suspect", folder, "--claim", signature_claim).one_error()
    assert "outside the folder" in line
    # A link to a file inside the folder is the folder's own file.
    (folder / "model-00002-of-00002.safetensors").unlink()
    save_file({"b.weight": torch.ones(2)}, str(folder / "shard.bin.safetensors"))
    (folder / "model-00002-of-00002.safetensors").symlink_to(folder / "shard.bin.safetensors")
    with pytest.raises(TicketmarkError, match="repeats tensor"):  # read, and a duplicate
        load_suspect_weights(folder)


@pytest.mark.parametrize(("npy", "needle"), [
    (hf.npy_claiming((1 << 20, 3, 1 << 10, 1 << 10)), "exceeds the limit"),
    (hf.npy_claiming((2**62, 2**62)), "exceeds the limit"),
    (hf.npy_claiming((0, 2**40, 2**40), b""), "exceeds the limit"),
    (hf.npy_claiming((1, 1, 8, 8)), "bytes follow"),
    (hf.npy_claiming((1, 1, 2, 2), descr="|O"), "dtype"),
    (hf.npy_claiming((1, 1, 2, 2)).replace(b"False", b"Fa\xc5{\x94lse"), "not a .npy"),
], ids=["3.6TiB", "overflow", "zero-times-huge", "short", "object", "tokenizer-error"])
def test_reveal_npy_header_is_checked_before_allocation(tmp_path, npy, needle):
    from ticketmark.ownership.trigger.commitment import load_reveal

    claim, reveal = trigger_claim(tmp_path / "c")
    bad = hf.reveal_with_bases(reveal, tmp_path / "bad.json", npy)
    before = _peak_kb()
    with pytest.raises(TicketmarkError, match=needle):
        load_reveal(bad)
    assert (_peak_kb() - before) / 1024 < 64
    line = cli("verify", "--suspect", "http://127.0.0.1:9/predict", "--claim", claim,
               "--reveal", bad).one_error()
    assert "reveal" in line and json.dumps(str(bad))[1:-1] in line


def test_float8_safetensors_read_exactly_as_float32(tmp_path):
    """float8 is read a chunk at a time (4x, not 5x, its bytes at the peak): values exact."""
    from safetensors.torch import save_file

    from ticketmark.io import suspect

    w = torch.randn(300, 50)
    save_file({"a.weight": w.to(torch.float8_e4m3fn), "b.weight": w.to(torch.float8_e5m2)},
              str(tmp_path / "f8.safetensors"))
    old, suspect._CHUNK = suspect._CHUNK, 4096  # several chunks per tensor
    try:
        out = load_suspect_weights(tmp_path / "f8.safetensors")
    finally:
        suspect._CHUNK = old
    assert torch.equal(out["a.weight"], w.to(torch.float8_e4m3fn).float())
    assert torch.equal(out["b.weight"], w.to(torch.float8_e5m2).float())


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_empty_tensor_with_huge_dimensions_is_skipped(tmp_path, state, signature_claim, fmt):
    """A (55649, 6922, 0, 0) claimed layer holds nothing, yet per-kernel statistics over it
    asked for 3 GB (found by fuzzing; a larger one was killed by the OOM killer)."""
    from safetensors.torch import save_file

    bad = dict(state)
    bad[LAYER] = torch.zeros(55649, 6922, 0, 0)
    path = tmp_path / f"empty.{fmt}"
    if fmt == "pt":
        torch.save(bad, path)
    else:
        save_file({k: v.contiguous() for k, v in bad.items()}, str(path))
    assert LAYER not in load_suspect_weights(path)
    before = _peak_kb()
    res = cli("verify", "--suspect", path, "--claim", signature_claim)
    res.assert_verdict_or_error()
    assert (_peak_kb() - before) / 1024 < 200


def test_found_by_fuzzing_nul_location_stride_overflow_link_loop(tmp_path):
    """Three exit-3 cases the slow fuzzers found: an ONNX external location holding a NUL
    byte, an empty .pt view whose contiguous strides overflow, a folder of looping links."""
    path = hf.onnx_external(tmp_path / "nul", 0, 256, [64])
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for e in model.graph.initializer[1].external_data:
        if e.key == "location":
            e.value = "w\x00"
    onnx.save(model, str(path))
    with pytest.raises(TicketmarkError, match="outside the model's folder"):
        load_suspect_weights(path)
    torch.save({"w": torch.zeros(1).as_strided([0, 330, 57481977, 486232620], [0, 0, 0, 0]),
                "b": torch.ones(3)}, tmp_path / "empty.pt")
    assert list(load_suspect_weights(tmp_path / "empty.pt")) == ["b"]
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "a.safetensors").symlink_to(loop / "b.safetensors")
    (loop / "b.safetensors").symlink_to(loop / "a.safetensors")
    with pytest.raises(TicketmarkError, match="outside the folder"):
        load_suspect_weights(loop)


def test_trigger_folder_is_read_only_through_its_own_files(tmp_path, monkeypatch):
    """A claimant's trigger folder: an image linked to a file outside is refused, and a
    decompression bomb is one error (PIL only warned, an extra stderr line)."""
    from PIL import Image

    from ticketmark.ownership.trigger.folder import folder_hash, load_folder

    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(2):
        Image.new("L", (20, 20), 40 * i).save(folder / f"{i}.png")
    (folder / "labels.txt").write_text("0\n1\n")
    assert len(folder_hash(folder)) == 64 and load_folder(folder, 1, 8, 8, 10, -1, 1)
    outside = tmp_path / "owner.png"
    Image.new("L", (20, 20), 7).save(outside)
    (folder / "2.png").symlink_to(outside)
    (folder / "labels.txt").write_text("0\n1\n2\n")
    with pytest.raises(TicketmarkError, match="outside the folder"):
        folder_hash(folder)
    (folder / "2.png").unlink()
    (folder / "labels.txt").write_text("0\n1\n")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 20x20 = 400 pixels: a "bomb"
    with pytest.raises(TicketmarkError, match="not a readable image"):
        load_folder(folder, 1, 8, 8, 10, -1, 1)


def test_legacy_pickle_with_odd_protocol_gives_no_warning_line(tmp_path, signature_claim):
    """A damaged pre-zip .pt whose pickle claims protocol 188: torch's warning reached the
    user beside the verdict (or beside the one error line)."""
    torch.save({"w": torch.randn(4, 4)}, tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    raw = bytearray((tmp_path / "l.pt").read_bytes())
    protos = [i for i in range(len(raw) - 1) if raw[i] == 0x80 and raw[i + 1] == 0x02]
    raw[protos[2] + 1] = 188  # the main pickle's protocol byte
    (tmp_path / "bad.pt").write_bytes(bytes(raw))
    res = cli("verify", "--suspect", tmp_path / "bad.pt", "--claim", signature_claim)
    res.assert_verdict_or_error()
    assert res.err.strip() == "" or res.code == 2, res.err
    assert "Warning" not in res.err


def test_onnx_double_beyond_float32_gives_no_warning_line(tmp_path, state, signature_claim):
    """A DOUBLE initializer of 1e300 becomes inf when the loader casts it to float32; numpy's
    overflow warning from that cast must not reach the user beside the verdict."""
    from onnx import TensorProto, helper

    bad = dict(state)
    w = bad.pop(LAYER)
    odd = helper.make_tensor(LAYER, TensorProto.DOUBLE, list(w.shape),
                             [1e300] * w.numel())
    path = hf._onnx(tmp_path / "d.onnx", {k: v.numpy() for k, v in bad.items()}, [odd])
    res = cli("verify", "--suspect", path, "--claim", signature_claim)
    res.assert_verdict_or_error()
    assert "Warning" not in res.err, res.err
