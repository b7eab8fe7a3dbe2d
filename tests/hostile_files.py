"""Adversarial model files (issue 30), for the tests and benchmarks/bench_hostile_memory.py.

Each maker writes a small file that a naive loader turns into far more memory than its
size, or into a dtype the verifier cannot compute with, and returns the path to pass as a
suspect. ``legit_*`` write honest files of about the same size, the baseline for a
memory ratio.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

MIB = 1 << 20


def legit_safetensors(path: Path, mib: int = 16) -> Path:
    from safetensors.torch import save_file

    save_file({"layer.weight": torch.randn(mib * MIB // 4 // 64, 64)}, str(path))
    return path


def legit_pt(path: Path, mib: int = 16) -> Path:
    torch.save({"layer.weight": torch.randn(mib * MIB // 4 // 64, 64)}, path)
    return path


def legit_onnx(path: Path, mib: int = 16) -> Path:
    return _onnx(path, {"layer.weight": np.random.default_rng(0).standard_normal(
        (mib * MIB // 4 // 64, 64), dtype=np.float32)})


def pt_stride0(path: Path, side: int = 1 << 20) -> Path:
    """1.6 KB on disk; a (side, side) float32 view of one element (4 TB at 2**20)."""
    torch.save({"layer.weight": torch.zeros(1).expand(side, side)}, path)
    return path


def pt_shared(path: Path, views: int = 100, mib: int = 16) -> Path:
    """One ``mib`` MiB storage saved once; ``views`` tensors over all of it."""
    base = torch.zeros(mib * MIB // 4)
    torch.save({f"layer{i}.weight": base.view(-1, 64) for i in range(views)}, path)
    return path


def pt_zip_bomb(path: Path, mib: int = 256) -> Path:
    """A torch.save archive whose storage member is deflated: kilobytes inflating to MiBs."""
    plain = io.BytesIO()
    torch.save({"layer.weight": torch.zeros(mib * MIB // 4)}, plain)
    plain.seek(0)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    return path


def _onnx(path: Path, arrays: dict[str, np.ndarray], extra: list | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(a, name) for name, a in arrays.items()] + (extra or [])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              initializer=inits)
    onnx.save(helper.make_model(graph), str(path))
    return path


def _external(name: str, dims: list[int], location: str, offset: int, length: int | None,
              data_type: int = 1):
    from onnx import TensorProto

    t = TensorProto(name=name, data_type=data_type, dims=dims)
    t.data_location = TensorProto.EXTERNAL
    entries = [("location", location), ("offset", str(offset))]
    if length is not None:
        entries.append(("length", str(length)))
    for k, v in entries:
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def onnx_shared_external(folder: Path, views: int = 100, mib: int = 16) -> Path:
    """``views`` initializers, each all of one ``mib`` MiB external file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(b"\0" * (mib * MIB))
    n = mib * MIB // 4
    tensors = [_external(f"layer{i}.weight", [n // 64, 64], "weights.bin", 0, n * 4)
               for i in range(views)]
    return _onnx(folder / "model.onnx", {}, tensors)


def onnx_external(folder: Path, offset: int, length: int | None, dims: list[int]) -> Path:
    """One external initializer with the given offset/length over a 4 KiB file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(b"\0" * 4096)
    return _onnx(folder / "model.onnx", {"ok.weight": np.ones((4, 4), np.float32)},
                 [_external("layer.weight", dims, "weights.bin", offset, length)])


def onnx_dtype(path: Path, kind: str, state: dict[str, torch.Tensor] | None = None,
               layer: str = "odd.weight") -> Path:
    """``state`` (default: one small conv weight) with ``layer`` stored as ONNX ``kind``."""
    from onnx import TensorProto, helper

    state = dict(state or {"conv.weight": torch.randn(4, 1, 3, 3)})
    w = state.pop(layer, torch.linspace(-1, 1, 6).reshape(2, 3))
    if kind == "STRING":
        odd = helper.make_tensor(layer, TensorProto.STRING, [2], [b"a", b"b"])
    else:
        odd = helper.make_tensor(layer, getattr(TensorProto, kind), list(w.shape),
                                 w.detach().float().numpy().reshape(-1))
    arrays = {k: v.detach().numpy() for k, v in state.items()}
    return _onnx(path, arrays, [odd])


def safetensors_dtype(path: Path, dtype: torch.dtype,
                      state: dict[str, torch.Tensor] | None = None,
                      layer: str = "conv.weight") -> Path:
    """``state`` (default: one small conv) with ``layer`` stored as ``dtype``."""
    from safetensors.torch import save_file

    state = dict(state or {"conv.weight": torch.randn(4, 1, 3, 3), "conv.bias": torch.zeros(4)})
    w = state[layer]
    state[layer] = (w != 0) if dtype == torch.bool else (w.abs() * 10).to(dtype)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def npy_claiming(shape: tuple[int, ...], payload: bytes = b"\0" * 64,
                 descr: str = "<f4") -> bytes:
    """A .npy whose header claims ``shape`` over ``payload`` bytes."""
    header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + repr(shape) \
        + ", }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + payload


def reveal_with_bases(src: Path, dst: Path, npy: bytes) -> Path:
    """A copy of reveal file ``src`` whose ``bases`` field is the given .npy bytes."""
    obj = json.loads(src.read_text())
    obj["bases"] = base64.b64encode(npy).decode()
    dst.write_text(json.dumps(obj))
    return dst
