"""Interrupted (external) PAdES signing: the signer's key never reaches the server.

    server  prepare(pdf, field, cert, role_info, certify)
              -> to_sign (DER signed attributes, ~220 bytes), state (plain bytes and ints)
    client  ECDSA P-256 / SHA-256 over to_sign  (WebCrypto: raw r||s; DER accepted too),
            or RSA PKCS#1 v1.5 / SHA-256 with a clinician's own certificate (a PKCS#12)
    server  finish(state, signature)
              checks the signature against the certificate's key, embeds it with an
              RFC 3161 timestamp (B-T); after the last empty field is signed: DSS with
              the certificates and the CA's CRL, then a document timestamp (B-LTA)

The clinician signs first with a certification signature (DocMDP: form filling allowed);
the patient's or representative's field carries a FieldMDP lock (no changes after).
`PreparedSignature` holds no live objects, so it can wait in a database between the
two requests (`to_json` / `from_json`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from asn1crypto import cms as asn1_cms  # type: ignore[import-untyped]
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.api import FontEngine
from pyhanko.pdf_utils.font.opentype import (
    CIDFontType2,
    GlyphAccumulator,
    GlyphAccumulatorFactory,
)
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.signers import constants as sign_constants
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument, PdfTimeStamper
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.stamp import TextStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from consent.errors import ConsentError
from consent.pki import PracticeCA, der_set_of, der_tlv, to_asn1
from consent.workflow import SignerRoleInfo

MD = "sha256"
SIG_BYTES_RESERVED = 16 * 1024
"""Hex digits reserved for a signature's CMS: signer + CA certs, ~220 B of attributes,
72 B of ECDSA and a timestamp token with the TSA's chain come to ~3.5 KB of DER."""
FONT_FILE = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
"""Embedded in every signature appearance (PDF/A forbids the default, unembedded Courier)."""
FONT_UNICODES = (*range(0x20, 0x7F), *range(0xA0, 0x180), *range(0x2010, 0x2027), 0x20AC)
"""ASCII, Latin-1, Latin Extended-A, dashes and quotes: what printed names here use."""


def appearance_font(cache_dir: Path, source: Path = FONT_FILE) -> Path:
    """A small subset of `source` without layout tables, made once into `cache_dir`.

    pyHanko subsets the appearance font for every signature; on the full DejaVu Sans
    that costs ~0.4 s (fontTools decompiling GPOS/GSUB), on this subset a few ms.
    """
    tag = hashlib.sha256(repr((FONT_UNICODES, "upem1000")).encode()).hexdigest()[:8]
    target = cache_dir / f"appearance-{source.stem}-{tag}.ttf"
    if target.exists():
        return target
    from fontTools import subset  # type: ignore[import-untyped]
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    options = subset.Options()
    options.layout_features = []
    options.drop_tables += ["GPOS", "GSUB", "GDEF", "kern", "FFTM"]
    options.hinting = False
    options.name_IDs = ["*"]
    options.notdef_outline = True
    font = TTFont(str(source))
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=FONT_UNICODES)
    subsetter.subset(font)
    # pyHanko 0.38 writes the CID widths (/W) in font units, which PDF reads as
    # thousandths of an em: on DejaVu's 2048 units every letter stood twice as far
    # apart. At 1000 units per em the two agree.
    from fontTools.ttLib.scaleUpem import scale_upem  # type: ignore[import-untyped]

    scale_upem(font, 1000)
    tmp = target.with_name(f".{target.name}.tmp")
    font.save(str(tmp))
    tmp.replace(target)
    return target


@dataclass(frozen=True)
class PreparedSignature:
    """Everything `finish` needs, as plain values."""

    pdf: bytes
    """The document with the signature dictionary and its zeroed placeholder."""
    field_name: str
    document_digest: bytes
    reserved_region_start: int
    reserved_region_end: int
    signed_attrs: bytes
    """DER of the signed attributes: the bytes the client signs."""
    signer_cert: bytes
    final: bool
    """No empty signature field is left after this one: bring the document to B-LTA."""
    chain: tuple[bytes, ...] = ()
    """DER of an outside signer certificate's issuers (to the root): into the CMS."""
    crls: tuple[bytes, ...] = ()
    """DER of the CRLs covering that chain: into the DSS when the document reaches B-LTA."""

    def to_json(self) -> str:
        def plain(v: Any) -> Any:
            if isinstance(v, bytes):
                return base64.b64encode(v).decode()
            if isinstance(v, tuple):
                return [plain(item) for item in v]
            return v
        return json.dumps({k: plain(v) for k, v in asdict(self).items()})

    @classmethod
    def from_json(cls, text: str) -> PreparedSignature:
        data = json.loads(text)
        for key in ("pdf", "document_digest", "signed_attrs", "signer_cert"):
            data[key] = base64.b64decode(data[key])
        for key in ("chain", "crls"):  # absent in states written before they existed
            data[key] = tuple(base64.b64decode(v) for v in data.get(key, ()))
        return cls(**data)

    def __repr__(self) -> str:
        return f"PreparedSignature(field_name={self.field_name!r}, final={self.final})"


BASE_UNICODES = range(0x20, 0x7F)
"""Always in an appearance's embedded font, whatever the text: printable ASCII."""
_FONT_PROGRAMS_KEPT = 64


class _AppearanceFont:
    """The appearance font parsed once and shared by every signature's glyph accumulator.

    pyHanko parses the font file for every signature, shapes the text, then subsets the
    parsed font in place to the glyphs used and writes it out with fontTools (~10 ms
    here). Instead the font stays parsed, and what is embedded is a subset holding
    printable ASCII plus whatever else the text used, made once per such extra set and
    kept (most names need no extra glyphs, so after the first signature a font program
    costs nothing). The embedded font is a few KB larger than an exact subset.
    """

    def __init__(self, path: Path) -> None:
        import uharfbuzz as hb  # type: ignore[import-untyped]
        from fontTools.ttLib import TTFont

        self.data = path.read_bytes()
        self.tt = tt = TTFont(io.BytesIO(self.data))
        self.hb_font = hb.Font(hb.Face(self.data))
        self.ps_name: str = next(n for n in tt["name"].names if n.nameID == 6).toUnicode()
        self.units_per_em: int = tt["head"].unitsPerEm
        self.glyph_set = tt.getGlyphSet(preferCFF=True)
        for tag in ("hhea", "OS/2", "post", "hmtx", "maxp", "cmap"):
            tt[tag]  # loaded now: later signatures only read the shared font
        cmap = tt.getBestCmap()
        self.base_gids = frozenset(tt.getGlyphID(cmap[c]) for c in BASE_UNICODES if c in cmap)
        self._programs: OrderedDict[frozenset[int], tuple[bytes, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def program(self, gids: Iterable[int]) -> tuple[bytes, bytes]:
        """The TrueType program (plain and deflated) with ASCII and `gids` (GIDs kept)."""
        extra = frozenset(gids) - self.base_gids
        with self._lock:
            cached = self._programs.get(extra)
            if cached is not None:
                self._programs.move_to_end(extra)
                return cached
        program = self._make_program(extra)
        with self._lock:
            self._programs[extra] = program
            while len(self._programs) > _FONT_PROGRAMS_KEPT:
                self._programs.popitem(last=False)
        return program

    def _make_program(self, extra: frozenset[int]) -> tuple[bytes, bytes]:
        from fontTools import subset
        from fontTools.ttLib import TTFont

        # As pyHanko's GlyphAccumulator._extract_subset, on a copy of the font.
        options = subset.Options(layout_closure=False)
        options.drop_tables += ["GPOS", "GDEF", "GSUB"]
        options.retain_gids = True
        font = TTFont(io.BytesIO(self.data))
        subsetter = subset.Subsetter(options=options)
        subsetter.populate(gids=sorted(self.base_gids | extra))
        subsetter.subset(font)
        out = io.BytesIO()
        font.save(out)
        return out.getvalue(), zlib.compress(out.getvalue())


@functools.lru_cache(maxsize=8)
def _appearance_font(path: Path) -> _AppearanceFont:
    """One parsed appearance font per file, for every signer in the process."""
    return _AppearanceFont(path)


class _SharedCIDFont(CIDFontType2):
    """The CIDFont of one appearance, embedding a cached program instead of saving the
    (subset in place) font again."""

    def __init__(self, font: _AppearanceFont, accumulator: _SharedGlyphAccumulator) -> None:
        super().__init__(font.tt, font.ps_name, accumulator.subset_prefix)
        self._font = font
        self._accumulator = accumulator

    def set_font_file(self, writer: BasePdfFileWriter) -> generic.IndirectObject:
        plain, deflated = self._font.program(self._accumulator.glyph_ids())
        stream = generic.StreamObject(
            {generic.pdf_name("/Filter"): generic.pdf_name("/FlateDecode")},
            stream_data=plain, encoded_data=deflated)
        ref: generic.IndirectObject = writer.add_object(stream)
        self._font_descriptor[generic.pdf_name("/FontFile2")] = ref
        return ref


class _SharedGlyphAccumulator(GlyphAccumulator):
    """pyHanko's glyph accumulator on the shared, already parsed appearance font."""

    def __init__(self, writer: BasePdfFileWriter, font: _AppearanceFont, font_size: int,
                 obj_stream: Any = None) -> None:
        # GlyphAccumulator.__init__ (pyHanko 0.38) for a TrueType font, without reading
        # and parsing the font file again.
        FontEngine.__init__(self, writer, font.ps_name, embedded_subset=True,
                            obj_stream=obj_stream, font_size=font_size)
        self._font_ref = writer.allocate_placeholder()
        self.hb_font = font.hb_font
        self.tt = font.tt
        self.cff_charset = None
        self.use_raw_gids = True
        self.cidfont_obj = _SharedCIDFont(font, self)
        self.features = None
        self.units_per_em = font.units_per_em
        self._glyphs = {}
        self._glyph_set = font.glyph_set
        self._cid_to_unicode = {}
        self._GlyphAccumulator__reverse_cmap = None
        self.ot_language_tag = self.ot_script_tag = None
        self.writing_direction = self.bcp47_lang_code = None
        # Never subset the shared font in place: _SharedCIDFont embeds a cached program.
        self._subset_created = True
        self._write_prepared = False

    def glyph_ids(self) -> Iterator[int]:
        return iter(self._glyphs)


@dataclass(frozen=True)
class _SharedFontFactory(GlyphAccumulatorFactory):
    """Glyph accumulators on the appearance font parsed once (see `_AppearanceFont`)."""

    font: _AppearanceFont | None = None

    def create_font_engine(self, writer: BasePdfFileWriter,
                           obj_stream: Any = None) -> GlyphAccumulator:
        assert self.font is not None
        if obj_stream is None and writer.stream_xrefs and self.create_objstream_if_needed:
            obj_stream = writer.prepare_object_stream()  # type: ignore[no-untyped-call]
        return _SharedGlyphAccumulator(writer, self.font, self.font_size, obj_stream)


_CONTENT_TYPE_DATA = asn1_cms.CMSAttribute({"type": "content_type", "values": ["data"]}).dump()
_SIGNING_CERTIFICATE_V2 = asn1_cms.CMSAttributeType("signing_certificate_v2").dump()


def pades_signed_attrs(document_digest: bytes, signer_cert: asn1_x509.Certificate) -> bytes:
    """The DER signed attributes of a PAdES signature over `document_digest` (SHA-256):
    content type, message digest and signing-certificate-v2, as pyHanko's
    `ExternalSigner.signed_attrs(..., use_pades=True)` makes them (byte for byte), put
    together from DER pieces: asn1crypto took ~6 ms to build and dump the nesting."""
    tbs = signer_cert["tbs_certificate"]
    ess_cert_id_v2 = der_tlv(  # hashAlgorithm left out: SHA-256 is its DEFAULT
        0x30, der_tlv(0x04, hashlib.sha256(signer_cert.dump()).digest()),
        der_tlv(0x30, der_tlv(0x30, der_tlv(0xA4, tbs["issuer"].dump())),
                tbs["serial_number"].dump()))
    signing_certificate_v2 = der_tlv(
        0x30, _SIGNING_CERTIFICATE_V2, der_set_of(der_tlv(0x30, der_tlv(0x30, ess_cert_id_v2))))
    message_digest = asn1_cms.CMSAttribute(
        {"type": "message_digest", "values": [document_digest]}).dump()
    return der_set_of(_CONTENT_TYPE_DATA, message_digest, signing_certificate_v2)


class _PdfASigner(signers.PdfSigner):
    """Registers only the PAdES extension: with a P-256 key pyHanko would also register
    ISO 32002 and write /Version 2.0, which is not PDF/A-2."""

    def register_extensions(self, pdf_out: BasePdfFileWriter, *, md_algorithm: str) -> None:
        pdf_out.ensure_output_version(version=(1, 7))  # type: ignore[no-untyped-call]
        pdf_out.register_extension(sign_constants.ESIC_EXTENSION_1)


def der_signature(signature: bytes) -> bytes:
    """An ECDSA P-256 signature as DER, given DER or WebCrypto's raw r||s (64 bytes)."""
    if len(signature) == 64:
        return encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                    int.from_bytes(signature[32:], "big"))
    try:
        r, s = decode_dss_signature(signature)
    except ValueError as e:
        raise ConsentError("bad_signature", "the signature is neither DER nor r||s") from e
    return encode_dss_signature(r, s)


def signature_fields(reader: PdfFileReader) -> dict[str, bool]:
    """Each signature field's name and whether it is signed."""
    return {name: value is not None
            for name, value, _ in fields.enumerate_sig_fields(reader, filled_status=None)}


class ConsentSigner:
    """Prepares and finishes signatures on consent PDFs for the practice CA.

    `timestamper` replaces the built-in TSA (an outside TSA URL by setting); `tz` is the
    zone the appearance shows the signing time in.
    """

    def __init__(self, ca: PracticeCA, *, timestamper: TimeStamper | None = None,
                 tz: tzinfo = UTC, now: Callable[[], datetime] | None = None) -> None:
        self.ca = ca
        self.timestamper = timestamper or ca.timestamper()
        self.tz = tz
        self.now = now or ca.now
        font_path = appearance_font(ca.directory)
        self._font = _SharedFontFactory(str(font_path), font_size=9,
                                        font=_appearance_font(font_path))
        self._registry = SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [ca.root_asn1])

    def validation_context(self) -> ValidationContext:
        """Offline: the practice root, its current CRL, the TSA certificate."""
        return ValidationContext(
            trust_roots=[self.ca.root_asn1], other_certs=[self.ca.tsa_cert_asn1],
            crls=[self.ca.current_crl_der()], allow_fetching=False,
            revocation_mode="hard-fail", moment=self.now())

    def appearance_text(self, role_info: SignerRoleInfo, when: datetime) -> str:
        local = when.astimezone(self.tz)
        return "\n".join((
            role_info.printed_name, role_info.role_label,
            "Signed " + local.strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)"),
            role_info.meaning))

    async def prepare(self, pdf_bytes: bytes, field_name: str, signer_cert: asn1_x509.Certificate,
                      role_info: SignerRoleInfo, certify: bool, *,
                      chain: Sequence[bytes] = (), crls: Sequence[bytes] = ()
                      ) -> tuple[bytes, PreparedSignature]:
        """The DER signed attributes the client signs, and the state `finish` takes.

        `signer_cert` is the practice CA's (no `chain`), or a signer's own certificate
        from an outside CA, checked beforehand (`consent.pki.check_outside_certificate`),
        with its issuers in `chain` and their revocation lists in `crls`."""
        try:  # one parse: the writer's reader answers the questions about the document
            writer = IncrementalPdfFileWriter(io.BytesIO(pdf_bytes), strict=False)
            existing = signature_fields(writer.prev)
        except Exception as e:  # a broken input is the caller's error, not a crash
            raise ConsentError("bad_document", "the document cannot be read as a PDF") from e
        # The filled signature fields (signatures and document timestamps): counted
        # without `reader.embedded_signatures`, which parses each /Contents placeholder
        # in pure Python (~10 ms a signature).
        signed_before = sum(existing.values())
        if field_name not in existing:
            raise ConsentError("no_such_field", f"the document has no field {field_name!r}")
        if existing[field_name]:
            raise ConsentError("field_already_signed", f"{field_name} is already signed")
        if certify and signed_before:
            raise ConsentError("out_of_order", "the certification signature must be the first")
        if not certify and not signed_before:
            raise ConsentError("out_of_order", "the clinician signs before anyone else")
        final = not any(not signed for name, signed in existing.items() if name != field_name)

        when = self.now()
        text = self.appearance_text(role_info, when).replace("%", "%%")
        style = TextStampStyle(stamp_text=text, border_width=1,
                               text_box_style=TextBoxStyle(font=self._font, font_size=9))
        meta = signers.PdfSignatureMetadata(
            field_name=field_name, md_algorithm=MD, certify=certify,
            docmdp_permissions=fields.MDPPerm.FILL_FORMS if certify else fields.MDPPerm.NO_CHANGES,
            subfilter=fields.SigSeedSubFilter.PADES, reason=role_info.meaning,
            name=role_info.printed_name)
        external = signers.ExternalSigner(signer_cert, self._registry_for(chain),
                                          signature_value=signature_size(signer_cert))
        pdf_signer = _PdfASigner(meta, external, timestamper=self.timestamper, stamp_style=style)
        output = io.BytesIO()
        # An outside chain travels in the CMS too: room for it (hex digits, twice over).
        reserved = SIG_BYTES_RESERVED + 4 * sum(len(c) for c in chain) + (
            4 * (len(signer_cert.dump()) + signature_size(signer_cert)) if chain else 0)
        prepared, _tbs, _ = await pdf_signer.async_digest_doc_for_signing(
            writer, existing_fields_only=True, bytes_reserved=reserved, output=output)
        # What `external.signed_attrs(..., use_pades=True)` returns (PAdES leaves the
        # signing time out), without its cost.
        to_sign = pades_signed_attrs(prepared.document_digest, signer_cert)
        state = PreparedSignature(
            pdf=output.getvalue(), field_name=field_name,
            document_digest=prepared.document_digest,
            reserved_region_start=prepared.reserved_region_start,
            reserved_region_end=prepared.reserved_region_end, signed_attrs=to_sign,
            signer_cert=signer_cert.dump(), final=final, chain=tuple(chain), crls=tuple(crls))
        return to_sign, state

    def _registry_for(self, chain: Sequence[bytes]) -> Any:
        """The certificates a signature's CMS carries besides the signer's."""
        if not chain:
            return self._registry
        return SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [asn1_x509.Certificate.load(der) for der in chain])

    async def finish(self, state: PreparedSignature, signature: bytes, *,
                     extra_certs: Iterable[bytes] = (), extra_crls: Iterable[bytes] = ()
                     ) -> bytes:
        """The signed document; ConsentError("bad_signature") if `signature` is not the
        signer's over `state.signed_attrs` (nothing is embedded then).

        ECDSA P-256 (WebCrypto's r||s or DER) or RSA PKCS#1 v1.5 with SHA-256, by the
        certificate's key. When this is the last signature, `extra_certs`/`extra_crls`
        (validation data kept from earlier signers with outside certificates) go into
        the DSS with this signer's own (`state.chain`, `state.crls`)."""
        cert = asn1_x509.Certificate.load(state.signer_cert)
        sig_value = verify_signature(cert, signature, state.signed_attrs)
        external = signers.ExternalSigner(cert, self._registry_for(state.chain),
                                          signature_value=sig_value)
        signed_data = await external.async_sign_prescribed_attributes(
            MD, asn1_cms.CMSAttributes.load(state.signed_attrs), timestamper=self.timestamper)
        output = io.BytesIO(state.pdf)
        prepared = PreparedByteRangeDigest(state.document_digest, state.reserved_region_start,
                                           state.reserved_region_end)
        await PdfTBSDocument.async_finish_signing(output, prepared, signed_data)
        signed = output.getvalue()
        if state.final:
            signed = await self.make_lta(signed, extra_certs=(*extra_certs, *state.chain),
                                         extra_crls=(*extra_crls, *state.crls))
        return signed

    async def make_lta(self, pdf_bytes: bytes, *, extra_certs: Iterable[bytes] = (),
                       extra_crls: Iterable[bytes] = ()) -> bytes:
        """B-LT then B-LTA: a DSS with every certificate and the CA's CRL, then a
        document timestamp over all of it (one incremental revision).

        `extra_certs` and `extra_crls` (DER) join them: the chains and revocation lists
        of signers whose certificates an outside CA issued."""
        output = io.BytesIO(pdf_bytes)
        reader = PdfFileReader(output, strict=False)
        certs: dict[bytes, asn1_x509.Certificate] = {}
        for cert in (self.ca.root_asn1, self.ca.tsa_cert_asn1,
                     *(asn1_x509.Certificate.load(der) for der in extra_certs)):
            certs[cert.sha256] = cert
        for sig in reader.embedded_signatures:
            # The signer's chain, and the chains of the TSAs (the built-in one or an
            # outside one) that timestamped the signatures.
            for signed_data in (sig.signed_data, *_timestamp_tokens(sig.signer_info)):
                for choice in signed_data["certificates"] or ():
                    if choice.name == "certificate":
                        certs[choice.chosen.sha256] = choice.chosen
        crls = {der: asn1_crl.CertificateList.load(der)
                for der in (self.ca.current_crl_der(), *extra_crls)}
        writer = IncrementalPdfFileWriter(output, strict=False)
        DocumentSecurityStore.supply_dss_in_writer(
            writer, None, certs=list(certs.values()), crls=list(crls.values()))
        await PdfTimeStamper(self.timestamper).async_timestamp_pdf(
            writer, MD, None, in_place=True)  # its TSA's certificates: in the DSS already
        return output.getvalue()

    async def renew_archive_timestamp(self, pdf_bytes: bytes) -> bytes:
        """A new document timestamp (and fresh CRL) over a B-LTA document, before the
        last one's TSA certificate expires."""
        output = io.BytesIO(pdf_bytes)
        reader = PdfFileReader(output, strict=False)
        await PdfTimeStamper(self.timestamper).async_update_archival_timestamp_chain(
            reader, self.validation_context(), in_place=True)
        return output.getvalue()


def _timestamp_tokens(signer_info: asn1_cms.SignerInfo) -> Iterator[asn1_cms.SignedData]:
    """The SignedData of each RFC 3161 token in a signature's unsigned attributes."""
    for attr in signer_info["unsigned_attrs"] or ():
        if attr["type"].native == "signature_time_stamp_token":
            for token in attr["values"]:
                yield token["content"]


def _public_key(cert: asn1_x509.Certificate) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    key = load_der_public_key(cert.public_key.dump())
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise ConsentError("bad_public_key", "the signer's certificate is neither ECDSA nor RSA")
    return key


def signature_size(cert: asn1_x509.Certificate) -> int:
    """Bytes a signature by `cert`'s key takes in the CMS: 72 for P-256 DER (at most),
    the modulus size for RSA."""
    key = _public_key(cert)
    return (key.key_size + 7) // 8 if isinstance(key, rsa.RSAPublicKey) else 72


def verify_signature(cert: asn1_x509.Certificate, signature: bytes, signed_attrs: bytes) -> bytes:
    """The signature value for the CMS (DER for ECDSA, as is for RSA), once it checks out
    against `cert`'s key over `signed_attrs` with SHA-256; else ConsentError."""
    key = _public_key(cert)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed_attrs, padding.PKCS1v15(), hashes.SHA256())
            return signature
        sig_der = der_signature(signature)
        key.verify(sig_der, signed_attrs, ec.ECDSA(hashes.SHA256()))
        return sig_der
    except InvalidSignature:
        raise ConsentError("bad_signature",
                           "the signature does not match the document and key") from None


__all__ = ["ConsentSigner", "PreparedSignature", "der_signature", "pades_signed_attrs",
           "signature_fields", "signature_size", "to_asn1", "verify_signature"]
