"""What a suspect's server expects as input, and which protocol it speaks.

Trigger inputs are made in the owner's model's input space: normalised, channels first.
A thief's deployment usually takes something else: raw pixels in [0, 1] or [0, 255] that it
normalises itself, channels last, a named input tensor. An ``InputAdapter`` says how to
turn the owner's inputs into what the server takes (by flags, or a small JSON/TOML file):

    protocol   = "auto"          # "ticketmark", "kserve-v2" ("auto": from the URL's path)
    layout     = "NCHW"          # or "NHWC"
    mean       = [0.1307]        # the normalisation the SERVER applies: it computes
    std        = [0.3081]        #   (input / scale - mean) / std before its model
    scale      = 1.0             # 255 for a server fed 0..255 pixels
    datatype   = "FP32"          # KServe datatype of the input tensor (UINT8 rounds, clips)
    input_name = "input"         # KServe input tensor name
    output     = ""              # KServe output to read ("" = the first that fits)
    binary     = false           # KServe binary-data extension for input and outputs

so the client sends ``(x * std + mean) * scale``, laid out as asked. Only the values the
owner chooses matter here; nothing the suspect says changes them.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ticketmark.errors import TicketmarkError

PROTOCOLS = ("auto", "ticketmark", "kserve-v2")
V2_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer/?$")
INT_RANGES = {"UINT8": (0, 255), "INT8": (-128, 127), "UINT16": (0, 65535),
              "INT16": (-32768, 32767)}


@dataclass
class InputAdapter:
    protocol: str = "auto"
    layout: str = "NCHW"
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    scale: float = 1.0
    datatype: str = "FP32"
    input_name: str = "input"
    output: str = ""
    binary: bool = False

    def validate(self) -> InputAdapter:
        from ticketmark.serving.oip import DATATYPES

        if self.protocol not in PROTOCOLS:
            raise TicketmarkError(f"protocol must be one of {', '.join(PROTOCOLS)}, got "
                                  f"{self.protocol!r}")
        self.layout = str(self.layout).upper()
        if self.layout not in ("NCHW", "NHWC"):
            raise TicketmarkError(f"input layout must be NCHW or NHWC, got {self.layout!r}")
        if self.datatype not in DATATYPES or self.datatype == "BOOL":
            raise TicketmarkError(f"unknown input datatype {self.datatype!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not isinstance(values, list) or len(values) > 64 or not all(
                    isinstance(v, int | float) and not isinstance(v, bool)
                    and np.isfinite(v) for v in values):
                raise TicketmarkError(f"input {name} must be a list of numbers")
        if any(v <= 0 for v in self.std):
            raise TicketmarkError("input std values must be positive")
        if not isinstance(self.binary, bool):
            raise TicketmarkError(f"binary must be true or false, got {self.binary!r}")
        if not (isinstance(self.scale, int | float) and 0 < self.scale < 1e6):
            raise TicketmarkError(f"input scale must be in (0, 1e6), got {self.scale!r}")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> InputAdapter:
        """A JSON (``.json``) or TOML file with any of the fields above."""
        p = Path(path)
        try:
            text = p.read_text()
            raw = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
        except FileNotFoundError:
            raise TicketmarkError(f"no adapter file at {p}") from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise TicketmarkError(f"{p} is not a readable adapter file ({exc})") from None
        if not isinstance(raw, dict):
            raise TicketmarkError(f"{p} must hold a table of adapter fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TicketmarkError(f"{p}: unknown adapter field {unknown[0]!r} (known: "
                                  f"{', '.join(sorted(known))})")
        return cls(**raw).validate()

    def resolve_protocol(self, url_path: str) -> str:
        if self.protocol != "auto":
            return self.protocol
        return "kserve-v2" if V2_PATH.match(url_path) else "ticketmark"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Owner's (N, C, H, W) inputs -> what the server takes."""
        out = np.asarray(x, dtype=np.float64)
        channels = out.shape[1]
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (0, 1, channels):
                raise TicketmarkError(f"input {name} has {len(values)} values for "
                                      f"{channels} channels")
        if self.std:
            out = out * np.asarray(self.std, dtype=np.float64).reshape(1, -1, 1, 1)
        if self.mean:
            out = out + np.asarray(self.mean, dtype=np.float64).reshape(1, -1, 1, 1)
        out = out * float(self.scale)
        if self.layout == "NHWC":
            out = out.transpose(0, 2, 3, 1)
        if self.datatype in INT_RANGES or self.datatype.startswith(("INT", "UINT")):
            lo, hi = INT_RANGES.get(self.datatype, (-(2**31), 2**31 - 1))
            out = np.clip(np.rint(out), lo, hi)
        return np.ascontiguousarray(out)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
