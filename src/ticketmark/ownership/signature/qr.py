"""The QR side of the signature: the tag, its module matrix, and reading it back.

The QR payload is a short *tag* that binds the owner's public key, message and the source
ticket's fingerprint (a truncated SHA-256). Ten base32 characters (50 bits) fit the
alphanumeric mode of a version 1 code at error level H, the smallest code there is
(21 x 21 modules), so it fits even a 32-channel layer and costs the fewest mask changes.

Module matrices are ``numpy`` bool arrays with ``True`` = dark. Reading uses zxing-cpp, an
independent decoder: first the raw extracted block, then, if that fails, the same block
with its *function patterns* (finders, separators, timing, alignment, format and version
information, all fixed by the version and mask pattern recorded in the claim) restored.
Data modules are never touched, so an assisted decode still proves the data survived.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import segno
import zxingcpp

from ticketmark.errors import TicketmarkError

TAG_CHARS = 10
TAG_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # base32: what make_tag emits
ERROR_LEVEL = "H"
MAX_VERSION = 10

# Centres of alignment patterns per version (ISO/IEC 18004 table E.1), versions 2-10.
_ALIGNMENT = {
    1: [], 2: [6, 18], 3: [6, 22], 4: [6, 26], 5: [6, 30], 6: [6, 34],
    7: [6, 22, 38], 8: [6, 24, 42], 9: [6, 26, 46], 10: [6, 28, 50],
}


def make_tag(public_key_b64: str, message: str, fingerprint: str) -> str:
    """Ten base32 characters of SHA-256 over (key, message, fingerprint), length-prefixed.

    Length prefixes keep the three fields from sliding into each other ("ab"+"c" vs
    "a"+"bc"), so the tag commits to each of them separately.
    """
    h = hashlib.sha256(b"ticketmark-signature-tag/1")
    for part in (public_key_b64, message, fingerprint):
        raw = part.encode()
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return base64.b32encode(h.digest()).decode()[:TAG_CHARS]


@dataclass(frozen=True)
class Code:
    """A QR code as drawn into the ticket: text, version, mask pattern and modules."""

    text: str
    version: int
    mask: int
    modules: np.ndarray  # (n, n) bool, True = dark

    @property
    def size(self) -> int:
        return int(self.modules.shape[0])


def make_code(text: str, mask: int | None = None, version: int | None = None) -> Code:
    """Encode ``text`` at error level H in the smallest version (or ``version``).

    ``mask`` fixes the mask pattern (0-7) so the verifier can rebuild the exact modules.
    """
    if mask is not None and not 0 <= mask <= 7:
        raise TicketmarkError(f"QR mask pattern must be 0-7, got {mask}")
    try:
        qr = segno.make_qr(text, error=ERROR_LEVEL.lower(), boost_error=False, mask=mask,
                           version=version)
    except (segno.DataOverflowError, ValueError) as exc:
        raise TicketmarkError(f"cannot encode {text!r} as a QR code: {exc}") from None
    if int(qr.version) > MAX_VERSION:
        raise TicketmarkError(f"QR version {qr.version} is larger than supported ({MAX_VERSION})")
    modules = np.array([list(row) for row in qr.matrix], dtype=bool)
    return Code(text, int(qr.version), int(qr.mask), modules)


def all_masks(text: str) -> list[Code]:
    """The same text under each of the 8 mask patterns (the embedder picks the best fit)."""
    first = make_code(text)
    return [make_code(text, m, first.version) for m in range(8)]


@functools.lru_cache(maxsize=64)
def variable_modules(version: int, mask: int, length: int = TAG_CHARS) -> np.ndarray:
    """Bool matrix of the modules that differ between tags (data that depends on the tag).

    Everything else (function patterns, format bits, the mode and length header, the
    terminator and its error-correction share) is the same for every tag of this length,
    version and mask pattern, so it carries no evidence that *this* tag is present. Found
    by encoding 64 fixed pseudo-random tags: a module that never changes is constant.
    """
    rng = np.random.default_rng(20211206 + 97 * version + mask)
    alphabet = list(TAG_ALPHABET)
    codes = np.stack([make_code("".join(rng.choice(alphabet, length)), mask=mask,
                                version=version).modules for _ in range(64)])
    out = (codes != codes[0]).any(axis=0)
    out.setflags(write=False)
    return out


def function_template(version: int) -> np.ndarray:
    """Bool matrix of the modules fixed by version, error level and mask (not data).

    Finder patterns with separators, timing lines, alignment patterns, both copies of the
    format information with the dark module, and the version information (version >= 7).
    """
    if version not in _ALIGNMENT:
        raise TicketmarkError(f"QR version {version} is not supported (1-{MAX_VERSION})")
    n = 17 + 4 * version
    f = np.zeros((n, n), dtype=bool)
    f[:9, :9] = True  # top-left finder, separator and format bits
    f[:9, n - 8:] = True  # top-right finder, separator and format bits (row 8)
    f[n - 8:, :9] = True  # bottom-left finder, separator, format bits (col 8), dark module
    f[6, :] = True
    f[:, 6] = True
    centres = _ALIGNMENT[version]
    for r in centres:
        for c in centres:
            if (r, c) in {(6, 6), (6, centres[-1]), (centres[-1], 6)}:
                continue  # these would overlap a finder pattern
            f[r - 2:r + 3, c - 2:c + 3] = True
    if version >= 7:
        f[:6, n - 11:n - 8] = True
        f[n - 11:n - 8, :6] = True
    return f


def restore_function_patterns(extracted: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """``extracted`` with its function modules taken from ``expected``; data untouched."""
    version = (expected.shape[0] - 17) // 4
    template = function_template(version)
    return np.where(template, expected, extracted)


def render(modules: np.ndarray, scale: int = 8, quiet: int = 4,
           invert: bool = False) -> np.ndarray:
    """A grayscale uint8 image (dark = 0) with a quiet zone, upscaled for the reader."""
    light = ~modules if not invert else modules
    img = np.pad(light, quiet, constant_values=not invert).astype(np.uint8) * 255
    return np.kron(img, np.ones((scale, scale), dtype=np.uint8))


def read(modules: np.ndarray) -> str | None:
    """Decode a module matrix with zxing-cpp, trying both polarities; None if unreadable."""
    for invert in (False, True):
        for pure in (True, False):
            img = render(modules, invert=invert)
            found = zxingcpp.read_barcodes(img, formats=zxingcpp.BarcodeFormat.QRCode,
                                           is_pure=pure, try_invert=False)
            for barcode in found:
                if barcode.valid and barcode.text:
                    return str(barcode.text)
    return None


def decode(extracted: np.ndarray, expected: np.ndarray) -> tuple[str | None, str]:
    """Read the block raw, else with function patterns restored.

    Returns (text, how) where how is ``"raw"``, ``"assisted"`` or ``"failed"``.
    """
    text = read(extracted)
    if text is not None:
        return text, "raw"
    text = read(restore_function_patterns(extracted, expected))
    if text is not None:
        return text, "assisted"
    return None, "failed"
