"""RFC 3161 trusted time for claims: when did a claim (and so its ticket) exist?

A dispute between an owner and a thief who erased the owner's credential before signing his
own copy cannot be settled from the models alone: both references derive from each other.
What separates them is which claim existed first, and a time-stamp token from a TSA both
parties trust proves "this exact claim existed at time T" (RFC 3161, used for code signing).

The token covers the SHA-256 of the claim's canonical JSON (body and signature, sorted keys,
no spaces: ``claims.canonical``), so any change to the claim breaks it. Tokens are stored
beside the claim as ``CLAIM.tst`` (DER ``ContentInfo``).

Verification (``check_token``) reads the token with asn1crypto and checks, each failure a
reason a person can read:

1. the message imprint equals the claim's hash (a token for another claim is rejected);
2. the CMS signed attributes bind the TSTInfo (content type and message digest);
3. the signer's signature over those attributes (cryptography: RSA PKCS#1 v1.5 / PSS, ECDSA);
4. the signer certificate is a time-stamping certificate (extended key usage
   ``timeStamping``) valid at the token's time;
5. its chain reaches a certificate in the trust store the user names (``--tsa-cert``), each
   link checked with ``Certificate.verify_directly_issued_by``, each issuer a CA, every
   certificate valid at the token's time.

A token that fails is never used: the dispute treats the claim as untimestamped.
"""

from __future__ import annotations

import hashlib
import secrets
import urllib.parse
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from ticketmark.errors import TicketmarkError
from ticketmark.io.atomic import atomic_write_bytes
from ticketmark.ownership.claims import Claim, canonical, load_claim

TOKEN_SUFFIX = ".tst"
MAX_CHAIN = 8
_DER = Encoding.DER
_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def claim_digest(claim: Claim) -> bytes:
    """SHA-256 of the claim's canonical JSON: what the TSA signs."""
    return hashlib.sha256(canonical(claim.to_json())).digest()


def token_path(claim_path: str | Path) -> Path:
    """Where a claim's token lives: beside it, ``CLAIM.tst``."""
    return Path(str(claim_path) + TOKEN_SUFFIX)


# --- requesting -------------------------------------------------------------------------


def check_tsa_url(url: str) -> str:
    """Refuse anything but http(s) before any work is done."""
    if not url.startswith(("http://", "https://")):
        raise TicketmarkError(f"--tsa must be an http:// or https:// URL, got {url!r}")
    return url


MAX_REPLY = 1 << 20


def _post_query(url: str, query: bytes, timeout: float) -> bytes:
    """POST the query through ``ticketmark.transport``: ``timeout`` bounds each socket
    operation and, as one ``Deadline``, the whole exchange (a TSA that drips its reply is
    cut off); redirects are not followed."""
    from ticketmark.transport import Deadline, DeadlinePassed, TransportError, request

    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TicketmarkError(f"--tsa is not a valid URL: {url[:200]!r} ({exc})") from None
    if not parts.hostname:
        raise TicketmarkError(f"--tsa is not a valid URL: {url[:200]!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        reply = request("POST", parts.scheme, parts.hostname, port, target, query,
                        {"Content-Type": "application/timestamp-query"}, timeout,
                        Deadline(timeout), MAX_REPLY)
    except DeadlinePassed:
        raise TicketmarkError(f"time-stamp authority {url} did not answer within "
                              f"{timeout:g} s") from None
    except TransportError as exc:
        raise TicketmarkError(f"time-stamp authority {url} did not answer ({exc.kind}: "
                              f"{exc.detail})") from None
    if reply.status != 200:
        raise TicketmarkError(f"time-stamp authority {url} did not answer (HTTP "
                              f"{reply.status} {reply.reason})")
    if len(reply.body) > MAX_REPLY:
        raise TicketmarkError(f"time-stamp authority {url} answered more than {MAX_REPLY} "
                              "bytes")
    return reply.body


def request_token(digest: bytes, url: str, timeout: float = 30.0) -> bytes:
    """Ask the TSA at ``url`` for a token over ``digest``; return the token's DER.

    The request carries a fresh nonce and asks for the TSA's certificate, and the reply is
    checked to answer this request (status granted, same imprint, same nonce).
    """
    check_tsa_url(url)
    nonce = secrets.randbits(63)
    req = tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                            "hashed_message": digest},
        "nonce": nonce,
        "cert_req": True,
    })
    body = _post_query(url, req.dump(), timeout)
    try:
        reply = tsp.TimeStampResp.load(body)
        status = reply["status"]["status"].native
        token = reply["time_stamp_token"]
    except (ValueError, TypeError, KeyError) as exc:
        raise TicketmarkError(f"{url} did not send an RFC 3161 reply ({exc})") from None
    if status not in ("granted", "granted_with_mods") or token.native is None:
        text = reply["status"]["status_string"].native
        raise TicketmarkError(f"time-stamp authority {url} refused the request: {status}"
                              + (f" ({'; '.join(text)})" if text else ""))
    info = _tst_info(token)
    if info["message_imprint"]["hashed_message"].native != digest:
        raise TicketmarkError(f"{url} stamped another hash than the one sent")
    if info["nonce"].native != nonce:
        raise TicketmarkError(f"{url} answered with another request's nonce (a replayed reply)")
    return token.dump()


def timestamp_claim(claim_path: str | Path, url: str, timeout: float = 30.0) -> Path:
    """Request a token for the claim at ``claim_path`` and store it beside it."""
    claim = load_claim(claim_path)
    token = request_token(claim_digest(claim), url, timeout)
    out = token_path(claim_path)
    atomic_write_bytes(out, token)
    return out


# --- verifying --------------------------------------------------------------------------


@dataclass
class TimestampCheck:
    """The outcome of checking one token: ``valid`` and its time, or the reason it failed."""

    valid: bool
    reason: str
    time: str | None = None  # ISO 8601 UTC of the token's genTime
    tsa: str | None = None  # the signing certificate's subject
    serial: int | None = None

    @property
    def when(self) -> datetime | None:
        return datetime.fromisoformat(self.time) if self.time else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_trust_store(paths: list[Path]) -> list[x509.Certificate]:
    """PEM (one or many certificates per file) or DER certificates the user trusts."""
    certs: list[x509.Certificate] = []
    for p in paths:
        if not Path(p).is_file():
            raise TicketmarkError(f"no certificate file at {p}")
        data = Path(p).read_bytes()
        try:
            certs += (x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                      else [x509.load_der_x509_certificate(data)])
        except ValueError as exc:
            raise TicketmarkError(f"{p} holds no readable certificate ({exc})") from None
    if not certs:
        raise TicketmarkError("the TSA trust store is empty")
    return certs


def _tst_info(token: cms.ContentInfo) -> tsp.TSTInfo:
    if token["content_type"].native != "signed_data":
        raise ValueError("the token is not CMS SignedData")
    encap = token["content"]["encap_content_info"]
    if encap["content_type"].native != "tst_info":
        raise ValueError("the token does not carry a TSTInfo")
    return encap["content"].parsed


def _verify_signature(cert: x509.Certificate, signer: cms.SignerInfo, data: bytes) -> None:
    """Check ``signer``'s signature over ``data`` with ``cert``'s key (raises on failure)."""
    digest = signer["digest_algorithm"]["algorithm"].native
    if digest not in _HASHES:
        raise ValueError(f"unsupported digest {digest}")
    algo = _HASHES[digest]()
    sig_algo = signer["signature_algorithm"]
    sig = signer["signature"].native
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if sig_algo.signature_algo == "rsassa_pss":
            params = sig_algo["parameters"]
            pad: padding.AsymmetricPadding = padding.PSS(
                padding.MGF1(_HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"]
                                     .native]()), params["salt_length"].native)
        else:
            pad = padding.PKCS1v15()
        key.verify(sig, data, pad, algo)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(sig, data, ec.ECDSA(algo))
    else:
        raise ValueError(f"unsupported TSA key type {type(key).__name__}")


def _signer_cert(signed: cms.SignedData, signer: cms.SignerInfo) -> x509.Certificate:
    sid = signer["sid"]
    for choice in signed["certificates"] or []:
        if choice.name != "certificate":
            continue
        c = choice.chosen
        if sid.name == "issuer_and_serial_number":
            ok = (c.issuer == sid.chosen["issuer"]
                  and c.serial_number == sid.chosen["serial_number"].native)
        else:
            ok = c.key_identifier == sid.chosen.native
        if ok:
            return x509.load_der_x509_certificate(c.dump())
    raise ValueError("the token does not include its signer's certificate")


def _valid_at(cert: x509.Certificate, when: datetime) -> bool:
    return cert.not_valid_before_utc <= when <= cert.not_valid_after_utc


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _chain_to_trust(leaf: x509.Certificate, pool: list[x509.Certificate],
                    trusted: list[x509.Certificate], when: datetime) -> str | None:
    """None if ``leaf`` chains to a trusted certificate, else why not."""
    trusted_der = {t.public_bytes(_DER) for t in trusted}
    cert = leaf
    for _ in range(MAX_CHAIN):
        if cert.public_bytes(_DER) in trusted_der:
            return None
        issuers = [c for c in trusted + pool
                   if c.subject == cert.issuer and c.public_bytes(_DER) != cert.public_bytes(_DER)]
        parent = None
        for cand in issuers:
            try:
                cert.verify_directly_issued_by(cand)
            except (ValueError, TypeError, InvalidSignature):
                continue
            parent = cand
            break
        if parent is None:
            return (f"the TSA certificate ({leaf.subject.rfc4514_string()}) does not chain to "
                    "a certificate in the trust store (an untrusted TSA)")
        if not _is_ca(parent):
            return f"{parent.subject.rfc4514_string()} signs certificates but is not a CA"
        if not _valid_at(parent, when):
            return (f"issuer {parent.subject.rfc4514_string()} was not valid at the token's "
                    "time")
        cert = parent
    return "the certificate chain is too long"


def check_token(token_der: bytes, claim: Claim, trusted: list[x509.Certificate]) -> TimestampCheck:
    """Check a token against the claim it should cover and the user's trust store."""
    try:
        token = cms.ContentInfo.load(token_der)
        info = _tst_info(token)
        signed = token["content"]
        when = info["gen_time"].native.astimezone(UTC)
        serial = int(info["serial_number"].native)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return TimestampCheck(False, f"not a readable RFC 3161 token ({exc})")
    base = {"time": when.isoformat(), "serial": serial}
    imprint = info["message_imprint"]
    algo = imprint["hash_algorithm"]["algorithm"].native
    if algo not in _HASHES:
        return TimestampCheck(False, f"the token hashes with {algo}, not SHA-2", **base)
    if algo != "sha256" or imprint["hashed_message"].native != claim_digest(claim):
        return TimestampCheck(False, "the token's message imprint is not this claim's hash "
                                     "(a token for another claim, or the claim was changed)",
                              **base)
    signers = signed["signer_infos"]
    if len(signers) != 1:
        return TimestampCheck(False, f"the token has {len(signers)} signers, not one", **base)
    signer = signers[0]
    try:
        cert = _signer_cert(signed, signer)
        attrs = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
        if attrs.get("content_type") is None or attrs["content_type"].native != "tst_info":
            raise ValueError("the signed attributes do not name a TSTInfo")
        h = hashlib.new(signer["digest_algorithm"]["algorithm"].native)
        h.update(signed["encap_content_info"]["content"].contents)
        if attrs.get("message_digest") is None or attrs["message_digest"].native != h.digest():
            raise ValueError("the TSTInfo was changed after signing (message digest differs)")
        # The signature covers the DER of the attributes as a SET (RFC 5652, 5.4).
        _verify_signature(cert, signer, signer["signed_attrs"].untag().dump())
    except InvalidSignature:
        return TimestampCheck(False, "the token's signature does not verify (forged or "
                                     "altered)", **base)
    except (ValueError, TypeError, KeyError) as exc:
        return TimestampCheck(False, f"the token's signature cannot be checked: {exc}", **base)
    base["tsa"] = cert.subject.rfc4514_string()
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        stamping = ExtendedKeyUsageOID.TIME_STAMPING in eku
    except x509.ExtensionNotFound:
        stamping = False
    if not stamping:
        return TimestampCheck(False, "the signing certificate is not a time-stamping "
                                     "certificate (no timeStamping key usage)", **base)
    if not _valid_at(cert, when):
        return TimestampCheck(False, "the TSA certificate was not valid at the token's time "
                                     "(expired or not yet valid)", **base)
    pool = [x509.load_der_x509_certificate(c.chosen.dump())
            for c in signed["certificates"] or [] if c.name == "certificate"]
    why = _chain_to_trust(cert, pool, trusted, when)
    if why is not None:
        return TimestampCheck(False, why, **base)
    return TimestampCheck(True, f"trusted time {when.isoformat()} from {base['tsa']}", **base)


def check_claim_token(claim_path: str | Path, trusted: list[x509.Certificate],
                      token: str | Path | None = None) -> TimestampCheck:
    """Check the token stored beside ``claim_path`` (or at ``token``)."""
    path = Path(token) if token is not None else token_path(claim_path)
    if not path.is_file():
        return TimestampCheck(False, f"no time-stamp token ({path.name} beside the claim)")
    return check_token(path.read_bytes(), load_claim(claim_path), trusted)

