"""Forged ownership claims: the forger's side of ``verify``, written as a thief who read our
code would write it, so that benchmarks and tests attack the verifier with it.

The forger never embedded anything into the suspect. He signs a claim for a code of his own
and builds a "reference" (and so the claim's channel fingerprints) out of the suspect's own
weights, with the claimed layer's channels reordered so that the suspect's connectivity,
read through that frame, fits his code as well as a search can make it fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticketmark.io import Ticket, save_ticket
from ticketmark.ownership.claims import Claim, make_claim
from ticketmark.ownership.keys import load_private_key, public_key_b64
from ticketmark.ownership.reference import bind
from ticketmark.ownership.signature import canonical, extract, placement, qr
from ticketmark.ownership.signature.embed import layer_connectivity
from ticketmark.ownership.signature.permutation import best_frame
from ticketmark.sparsity import Mask

__all__ = ["crafted_claim"]


def _complete(chosen: np.ndarray, start: int, size: int) -> np.ndarray:
    """A permutation p of range(size) with p[start + a] = chosen[a]."""
    rest = [i for i in range(size) if i not in set(chosen.tolist())]
    out = np.empty(size, dtype=np.int64)
    out[start:start + len(chosen)] = chosen
    free = [j for j in range(size) if not start <= j < start + len(chosen)]
    out[free] = rest
    return out


def crafted_claim(key_file: Path, suspect: Ticket, layer: str, out: Path,
                  message: str = "Forger Inc", row: int = 0, col: int = 0,
                  orientation: int = 0) -> tuple[Claim, Path, dict[str, Any]]:
    """A claim signed by ``key_file`` and a reference built from the suspect's own weights,
    the claimed layer's channels reordered to fit the forger's code (his best search)."""
    key = load_private_key(key_file)
    tag = qr.make_tag(public_key_b64(key), message, "f" * 64)
    code = qr.make_code(tag)
    w = suspect.state[layer]
    density = float(suspect.mask[layer].flatten(2).any(2).float().mean())
    conn = extract.connectivity(w, density).numpy()
    modules = placement.oriented(code.modules, orientation)
    data = placement.oriented(~qr.function_template(code.version), orientation)
    frame = best_frame(conn, modules, data)
    po = _complete(frame.rows, row, w.shape[0])
    pi = _complete(frame.cols, col, w.shape[1])
    state = dict(suspect.state)
    state[layer] = w[torch.from_numpy(po)][:, torch.from_numpy(pi)].clone()
    mask = Mask({k: (state[k] != 0) for k in suspect.mask})
    ref = Ticket(suspect.model_name, suspect.dataset, suspect.in_channels, suspect.num_classes,
                 suspect.image_size, state, mask, suspect.rewind, {})
    path = save_ticket(out, ref)
    conns = layer_connectivity(mask)
    params = {"tag": tag, "tag_fingerprint": "f" * 64, "qr_version": code.version,
              "qr_mask": code.mask, "qr_error": qr.ERROR_LEVEL, "size": code.size,
              "layer": layer, "row": row, "col": col, "orientation": orientation,
              "density": float(conns[layer].float().mean()),
              "densities": {k: float(v.float().mean()) for k, v in conns.items()},
              "min_entries": 1}
    shape = (suspect.in_channels, suspect.image_size, suspect.image_size)
    model = ref.build()
    params["canonical"] = {"model": ref.model_name, "num_classes": ref.num_classes,
                           "input_shape": list(shape),
                           "features": canonical.to_json(canonical.mask_features(
                               conns, canonical.layer_axes(model)))}
    claim = make_claim(key, "signature", ref.fingerprint(), bind(params, ref), message)
    return claim, path, {"frame_agree": frame.agree, "frame_data_agree": frame.data_agree}
