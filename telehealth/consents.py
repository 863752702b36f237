"""Consents for the service's faces (web API, pages, CLI): issue, open, sign, revoke.

    issue(visit, clinician)            render the consent for the visit's patient record
    open_link(token, dob, name)        a consent link's identity check -> a consent session
    prepare(doc, role, key, name)      a short-lived certificate for the signer's own key and
                                       the bytes that key must sign (interrupted signing)
    finish(doc, role, id, signature)   embed it; store the revision with its audit entry

The rules live in `consent/` (who signs, in which order, PAdES); this module adds the
records (`db/consent_store.py`), the links and the audit trail. A signer's key never
reaches the server: only its public key and a signature over prepared bytes do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from asn1crypto import x509 as asn1_x509  # type: ignore[import-untyped]

from consent.document import TemplateLibrary, render_consent, render_disclosure, render_html
from consent.errors import ConsentError
from consent.pki import (
    CA_DIR,
    MAX_CHAIN,
    MAX_CRLS,
    OutsideCertificate,
    PracticeCA,
    check_outside_certificate,
    load_trust_roots,
    make_timestamper,
)
from consent.signing import ConsentSigner, PreparedSignature
from consent.verify import Report, timestamp_times, verify
from consent.workflow import (
    CLINICIAN_FIELD,
    ClinicianRecord,
    ConsentPolicy,
    LegalRepresentative,
    PatientRecord,
    SignatureSlot,
    SignerRole,
    SignerRoleInfo,
    SigningPlan,
    check_turn,
    is_complete,
    plan_signatures,
)
from telehealth.auth import AuthError, ConsentClaims, Signer
from telehealth.config import ConfigError, Settings
from telehealth.db.consent_store import OPEN_STATUSES, ConsentStore
from telehealth.db.store import Store, new_id
from telehealth.db.tables import (
    Clinician,
    ConsentDocument,
    ConsentRevision,
    ConsentSigning,
    Participant,
    Patient,
    Visit,
)
from telehealth.visits import (
    VisitError,
    check_identity,
    check_lock,
    refusal_after,
    same_name,
)

SESSION_S = 30 * 60
"""A consent session (after the identity check) lasts this long."""
SIGNING_S = 10 * 60
"""A prepared signature waits this long for the signer's device."""
CERT_HOURS = 1.0
"""Signer certificates live this long: they sign one document, now."""
SIGNATURE_B64_LIMIT = 1400
"""Longest base64 signature taken: RSA-8192 (1,024 bytes) from a clinician's own key."""
CERT_B64_LIMIT = 16 * 1024
CRL_B64_LIMIT = 256 * 1024
"""As large as a request may be (`client_max_size`): a CRL this big is sent alone."""
_CERTIFICATE_ACTIONS = {
    "certificate_untrusted": "Sign with a certificate from a CA the practice trusts (its root "
                             "in TELEHEALTH_SIGNER_TRUST_ROOTS), and send the CA certificates "
                             "between it and yours.",
    "certificate_expired": "Renew your certificate with your CA.",
    "certificate_not_yet_valid": "Wait until your certificate becomes valid.",
    "certificate_not_yours": "Use the certificate issued for your account's e-mail address "
                             "or your name.",
    "certificate_revoked": "Your certificate was revoked: sign with another one.",
    "revocation_unknown": "Send your CA's current revocation list (telehealth sign --crl).",
    "certificate_usage": "Use your signing certificate.",
    "certificate_key_unsupported": "Use an ECDSA P-256 or RSA (2048 bits or more) "
                                   "certificate.",
}
DEFAULT_TEMPLATE = "telehealth-informed-consent"


@dataclass(frozen=True, slots=True)
class Requester:
    """Who is asking, for the audit trail: an actor, their IP and user agent."""

    actor: str
    ip: str = ""
    user_agent: str = ""

    def detail(self, **extra: Any) -> dict[str, Any]:
        return {"ip": self.ip, "user_agent": self.user_agent[:300], **extra}


@dataclass(frozen=True, slots=True)
class ConsentSession:
    """An identity-checked signer of one consent (from the `th_consent` cookie)."""

    consent_id: str
    role: str
    expires: datetime


def b64_field(value: Any, name: str, limit: int = 4096) -> bytes:
    if not isinstance(value, str) or len(value) > limit:
        raise VisitError("invalid_field", f"'{name}' must be base64 text.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VisitError("invalid_field", f"'{name}' must be base64 text.") from None


def b64_list(value: Any, name: str, most: int, limit: int) -> list[bytes]:
    """A JSON list of at most `most` base64 strings (None = empty)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > most:
        raise VisitError("invalid_field", f"'{name}' must be a list of at most {most} "
                                          "base64 strings.")
    return [b64_field(item, name, limit) for item in value]


def kept_validation(plan: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
    """The certificates and CRLs (DER) kept with a consent for its DSS at B-LTA: those of
    signers whose certificate an outside CA issued."""
    kept = plan.get("validation") or {}
    return ([base64.b64decode(c) for c in kept.get("certs", ())],
            [base64.b64decode(c) for c in kept.get("crls", ())])


def with_validation(plan: dict[str, Any], certs: Sequence[bytes],
                    crls: Sequence[bytes]) -> dict[str, Any]:
    """`plan` with `certs` and `crls` added to what it keeps for the DSS (no repeats)."""
    old_certs, old_crls = kept_validation(plan)
    return {**plan, "validation": {
        "certs": [base64.b64encode(c).decode() for c in dict.fromkeys([*old_certs, *certs])],
        "crls": [base64.b64encode(c).decode() for c in dict.fromkeys([*old_crls, *crls])]}}


def _slots(doc: ConsentDocument) -> list[dict[str, Any]]:
    slots: list[dict[str, Any]] = doc.plan["slots"]
    return slots


def plan_of(doc: ConsentDocument) -> SigningPlan:
    """The signing plan stored with a consent (decided from the record when issued)."""
    return plan_of_json(doc.plan)


def plan_of_json(plan: dict[str, Any]) -> SigningPlan:
    """A signing plan from its stored form (`plan_json`)."""
    rep = plan.get("representative")
    return SigningPlan(
        tuple(SignatureSlot(s["field"], SignerRole(s["role"]),
                            SignerRoleInfo(s["printed_name"], s["role_label"], s["meaning"]),
                            certify=s["certify"], locks=s["locks"]) for s in plan["slots"]),
        LegalRepresentative(**rep) if rep else None)


def plan_json(plan: SigningPlan) -> dict[str, Any]:
    rep = plan.representative
    return {"slots": [{"field": s.field_name, "role": s.role.value,
                       "printed_name": s.signer.printed_name, "role_label": s.signer.role_label,
                       "meaning": s.signer.meaning, "certify": s.certify, "locks": s.locks,
                       "signed_at": None} for s in plan.slots],
            "representative": ({"name": rep.name, "relationship": rep.relationship,
                                "authority": rep.authority} if rep else None)}


def in_force(docs: Sequence[ConsentDocument], kind: str) -> ConsentDocument | None:
    """Of a patient's consents (newest first), the one of `kind` in force: the latest one
    signed, unless it was withdrawn (a withdrawal is not undone by an older consent)."""
    for doc in docs:
        if doc.kind == kind and doc.status in ("complete", "revoked"):
            return doc if doc.status == "complete" else None
    return None


def patient_record(patient: Patient) -> PatientRecord:
    rep = None
    if patient.representative_name:
        rep = LegalRepresentative(patient.representative_name,
                                  patient.representative_relationship or "",
                                  patient.representative_authority or "")
    return PatientRecord(patient.name, patient.dob, rep)


class Consents:
    """Consent operations over the practice CA, the templates and the records store."""

    def __init__(self, settings: Settings, store: Store, signer: Signer,
                 clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.store = ConsentStore(store)
        self.records = store
        """The records store (patients, the audit log); `store` holds the consent SQL."""
        self.links = signer
        self.clock = clock
        practice_templates = settings.data_dir / "templates" / "consent"
        self.library = TemplateLibrary(
            [practice_templates] if (practice_templates / "index.json").exists() else [])
        """Built-in templates plus the practice's own in <data_dir>/templates/consent."""
        self.policy = ConsentPolicy(adult_age=settings.adult_age,
                                    minor_may_consent=settings.minor_may_consent)
        self._render_lock = asyncio.Lock()

    # ---- the practice CA (made on first use; `start` makes it at server start) ------

    @cached_property
    def ca(self) -> PracticeCA:
        return PracticeCA(self.settings.data_dir / CA_DIR,
                          practice_name=self.settings.practice_name, now=self.clock)

    @cached_property
    def signer(self) -> ConsentSigner:
        return ConsentSigner(self.ca, timestamper=make_timestamper(self.ca, self.settings.tsa_url),
                             tz=self.settings.zone(), now=self.clock)

    @cached_property
    def outside_roots(self) -> list[asn1_x509.Certificate]:
        """The outside CAs clinicians' own certificates may chain to (signer_trust_roots)."""
        try:
            return load_trust_roots(self.settings.signer_trust_roots)
        except ConsentError as e:
            raise ConfigError(f"TELEHEALTH_SIGNER_TRUST_ROOTS: {e.message}") from None

    def trust_roots(self) -> list[asn1_x509.Certificate]:
        """What verification trusts: the practice root and the outside signer roots."""
        return [self.ca.root_asn1, *self.outside_roots]

    async def start(self) -> None:
        """Create the CA, TSA and appearance font now rather than on the first signature;
        read the outside trust roots (a wrong path stops the start)."""
        await asyncio.to_thread(lambda: (self.signer, self.outside_roots))

    # ---- reading -------------------------------------------------------------------

    async def get(self, consent_id: str) -> ConsentDocument:
        doc = await self.store.document(consent_id)
        if doc is None:
            raise VisitError("not_found", "No such consent.")
        return doc

    def consent_link(self, doc: ConsentDocument) -> str:
        """The patient's (or representative's) link: deterministic for a consent."""
        slot = _slots(doc)[-1]
        expires = doc.issued_at + timedelta(days=self.settings.consent_link_valid_days)
        token = self.links.consent_link(
            ConsentClaims(doc.id, slot["role"], doc.issued_at - timedelta(minutes=5), expires))
        return f"{self.settings.base_url}/c/{token}"

    def summary(self, doc: ConsentDocument, *, with_link: bool = False) -> dict[str, Any]:
        slots = _slots(doc)
        pending = [s for s in slots if not s["signed_at"]]
        out: dict[str, Any] = {
            "id": doc.id,
            "template": {"id": doc.template_id, "version": doc.template_version,
                         "title": doc.title, "kind": doc.kind, "sha256": doc.template_sha256},
            "status": doc.status,
            "fields": [{"name": s["field"], "role": s["role"], "printed_name": s["printed_name"],
                        "role_label": s["role_label"], "meaning": s["meaning"],
                        "signed_at": s["signed_at"]} for s in slots],
            "next_field": pending[0]["field"] if pending and doc.status != "revoked" else None,
            "sha256": doc.sha256,
            "issued_at": doc.issued_at.isoformat(),
            "completed_at": doc.completed_at.isoformat() if doc.completed_at else None,
            "revoked_at": doc.revoked_at.isoformat() if doc.revoked_at else None,
            "visit_id": doc.visit_id,
        }
        if with_link and doc.status in OPEN_STATUSES:
            out["consent_link"] = self.consent_link(doc)
        return out

    async def for_patient(self, patient_id: str | None) -> Sequence[ConsentDocument]:
        if patient_id is None:
            return []
        return await self.store.documents_for_patient(patient_id)

    async def on_file(self, patient_id: str | None, kind: str = "telehealth"
                      ) -> ConsentDocument | None:
        """The patient's consent of `kind` in force (`in_force`)."""
        return in_force(await self.for_patient(patient_id), kind)

    # ---- issuing -------------------------------------------------------------------

    def templates(self) -> list[dict[str, str]]:
        return [{"id": t.id, "version": t.version, "title": t.title, "kind": t.kind}
                for t in self.library.templates.values()]

    async def issue(self, visit: Visit, clinician: Clinician, requester: Requester,
                    template_id: str = DEFAULT_TEMPLATE) -> tuple[ConsentDocument, bool]:
        """A consent of `template_id` for the visit's patient; (it, whether it is new).

        One that is still being signed is given back instead of a second one."""
        try:
            template = self.library.template(template_id)
        except ConsentError as e:
            raise VisitError("unknown_template", e.message) from None
        patient = await self.records.patient(visit.patient_id) if visit.patient_id else None
        if patient is None:
            raise VisitError("not_found", "This visit has no patient record.")
        for doc in await self.store.documents_for_patient(patient.id):
            if doc.template_id == template.id and doc.status in OPEN_STATUSES:
                return await self.get(doc.id), False
        now = self.clock()
        record = patient_record(patient)
        clinician_record = ClinicianRecord(clinician.name, clinician.credentials)
        try:
            plan = plan_signatures(record, clinician_record, now.date(), self.policy)
        except ConsentError as e:
            raise VisitError(e.code, e.message,
                             "Add the legal representative (name, relationship and "
                             "authority) to the patient's record first.") from None
        disclosure = self.library.disclosure()
        kwargs: dict[str, Any] = {
            "practice_name": self.settings.practice_name, "patient": record,
            "clinician": clinician_record, "plan": plan,
            "issued_at": now.astimezone(self.settings.zone())}
        async with self._render_lock:  # WeasyPrint: one document at a time, off the loop
            html = render_html(template, disclosure, **kwargs)
            pdf = await asyncio.to_thread(render_consent, template, disclosure, **kwargs)
        digest = hashlib.sha256(pdf).hexdigest()
        doc = ConsentDocument(
            id=new_id(), patient_id=patient.id, visit_id=visit.id, clinician_id=clinician.id,
            template_id=template.id, template_version=template.version,
            template_sha256=template.sha256, kind=template.kind, title=template.title,
            plan=plan_json(plan), html=html, pdf=pdf, sha256=digest, revision=1,
            status="awaiting_clinician", issued_at=now, completed_at=None, revoked_at=None,
            revoke_reason="", disclosure_accepted={}, failed_checks=0, locked_until=None)
        first = ConsentRevision(document_id=doc.id, seq=1, at=now, what="issued",
                                sha256=digest, prev_sha256=None, pdf=pdf)
        await self.store.add_document(doc, first, actor=requester.actor, detail=requester.detail(
            template=template.id, version=template.version, template_sha256=template.sha256,
            sha256=digest, visit=visit.id,
            signer_role=plan.slots[-1].role.value,
            representative_authority_sha256=hashlib.sha256(
                plan.representative.authority.encode()).hexdigest()
            if plan.representative else None))
        return doc, True

    # ---- the signer's identity -----------------------------------------------------

    async def open_link(self, token: str, *, dob: str | None, name: str | None,
                        requester: Requester) -> tuple[ConsentDocument, str]:
        """Check a consent link and the identity answers; (the consent, a session token)."""
        claims = self.links.read_consent_link(token)
        doc = await self.store.document(claims.consent_id)
        if doc is None:
            raise AuthError("link_invalid", "This link is not valid.")
        now = self.clock()
        if now < claims.not_before:
            raise VisitError("link_not_yet_valid", "This link is not open yet.")
        if doc.status == "revoked":
            raise VisitError("consent_revoked", "This consent was withdrawn.",
                             "If you want to give consent again, ask your practice for a new form.")
        if now >= claims.expires and doc.status != "complete":
            raise VisitError("link_expired", "This consent link has expired.",
                             "Ask your practice to send you a new link.")
        check_lock(doc.locked_until, now)
        patient = await self.records.patient(doc.patient_id)
        assert patient is not None
        record_name = (patient.representative_name or ""
                       if claims.role == "legal_representative" else patient.name)
        subject = f"consent:{doc.id}"
        actor = f"{claims.role}:link"
        passed = check_identity(role=claims.role, record_dob=patient.dob,
                                record_name=record_name, dob=dob, name=name)
        failed = await self.records.count_identity_attempt(
            ConsentDocument, doc.id, passed=passed, now=now,
            max_attempts=self.settings.dob_max_attempts, lockout_s=self.settings.dob_lockout_s)
        if failed is not None:
            await self.records.append_audit(at=now, actor=actor, action="consent.identity_failed",
                                          subject=subject, detail=requester.detail(
                                              locked=failed.locked_until is not None))
            raise refusal_after(failed)
        await self.records.append_audit(at=now, actor=actor, action="consent.identity_verified",
                                      subject=subject, detail=requester.detail(via="consent_link"))
        return doc, self.session_token(doc, claims.role)

    def session_token(self, doc: ConsentDocument, role: str) -> str:
        """A consent session for a signer whose identity was just checked."""
        now = self.clock()
        return self.links.consent_session(
            ConsentClaims(doc.id, role, now, now + timedelta(seconds=SESSION_S)))

    def read_session(self, token: str | None) -> ConsentSession:
        if not token:
            raise VisitError("no_consent_session", "Please open your consent link again.",
                             "For your privacy, the signing page closes after 30 minutes.")
        try:
            claims = self.links.read_consent_session(token)
        except AuthError:
            raise VisitError("no_consent_session", "Please open your consent link again.") from None
        if self.clock() >= claims.expires:
            raise VisitError("no_consent_session", "Please open your consent link again.",
                             "For your privacy, the signing page closes after 30 minutes.")
        return ConsentSession(claims.consent_id, claims.role, claims.expires)

    async def gate(self, visit: Visit, person: Participant, required: bool) -> dict[str, Any]:
        """The visit link's consent gate: on file, or what this participant may sign."""
        docs = await self.for_patient(visit.patient_id)  # one query: every join asks
        on_file = in_force(docs, "telehealth")
        doc = None if on_file else next(
            (d for d in docs if d.kind == "telehealth" and d.status in OPEN_STATUSES), None)
        signable = (doc is not None and person.role in ("patient", "legal_representative")
                    and _slots(doc)[-1]["role"] == person.role)
        shown = on_file or doc
        return {"required": required, "on_file": on_file is not None,
                "consent_id": shown.id if shown is not None else None,
                "signable": required and signable}

    async def record_visit_identity(self, doc_id: str, role: str, requester: Requester) -> None:
        await self.records.append_audit(at=self.clock(), actor=f"{role}:visit_link",
                                      action="consent.identity_verified",
                                      subject=f"consent:{doc_id}",
                                      detail=requester.detail(via="visit_link"))

    # ---- what the signer sees ------------------------------------------------------

    def _slot_for(self, doc: ConsentDocument, role: str) -> dict[str, Any]:
        for slot in _slots(doc):
            if slot["role"] == role:
                return slot
        raise VisitError("no_representative_on_record" if role == "legal_representative"
                         else "forbidden", "You are not a signer of this consent.")

    def signing_view(self, doc: ConsentDocument, role: str) -> dict[str, Any]:
        slot = self._slot_for(doc, role)
        disclosure = self.library.disclosure()
        accepted = doc.disclosure_accepted.get(role)
        signed_before = all(s["signed_at"] for s in _slots(doc)[:_slots(doc).index(slot)])
        return {
            "consent": self.summary(doc),
            "signer": {"field": slot["field"], "role": role, "printed_name": slot["printed_name"],
                       "role_label": slot["role_label"], "meaning": slot["meaning"]},
            "disclosure": {"id": disclosure.id, "version": disclosure.version,
                           "title": disclosure.title,
                           "html": str(render_disclosure(disclosure, self.settings.practice_name)),
                           "accepted": bool(accepted)},
            "ready": doc.status in OPEN_STATUSES and signed_before and not slot["signed_at"],
        }

    async def viewed(self, doc: ConsentDocument, requester: Requester, what: str) -> None:
        """Record that the document was shown (`viewed`) or its PDF taken (`downloaded`)."""
        await self.records.append_audit(at=self.clock(), actor=requester.actor,
                                      action=f"consent.{what}", subject=f"consent:{doc.id}",
                                      detail=requester.detail(sha256=doc.sha256))

    async def accept_disclosure(self, doc: ConsentDocument, role: str, version: Any,
                                requester: Requester) -> None:
        disclosure = self.library.disclosure()
        if version != disclosure.version:
            raise VisitError("invalid_field", "That is not the current disclosure; reload.")
        self._slot_for(doc, role)
        now = self.clock()
        accepted = {**doc.disclosure_accepted, role: {
            "id": disclosure.id, "version": disclosure.version, "at": now.isoformat()}}
        await self.store.update(doc.id, {"disclosure_accepted": accepted}, at=now,
                                action="consent.disclosure_accepted", actor=requester.actor,
                                detail=requester.detail(disclosure=disclosure.id,
                                                        version=disclosure.version,
                                                        sha256=disclosure.sha256))

    # ---- signing -------------------------------------------------------------------

    async def prepare(self, doc: ConsentDocument, role: str, *, public_key: Any,
                      typed_name: Any, requester: Requester, email: str | None = None,
                      certificate: Any = None, chain: Any = None, crls: Any = None
                      ) -> dict[str, Any]:
        """Issue the signer's certificate and prepare the bytes their key signs.

        A clinician may instead send a certificate of their own from an outside CA
        (`certificate`, its issuers in `chain`, their CRLs in `crls`; base64 DER): it
        must be valid now, name them (`email`, their account's, or their name) and
        chain to one of `signer_trust_roots`. Patients and representatives always sign
        with a device key the practice CA certifies."""
        if doc.status == "revoked":
            raise VisitError("consent_revoked", "This consent was withdrawn.")
        slot_json = self._slot_for(doc, role)
        own_certificate = certificate is not None or chain is not None or crls is not None
        if own_certificate and role != "clinician":
            raise VisitError("certificate_not_allowed",
                             "Only a clinician may sign with a certificate of their own.",
                             "Sign on this device: the practice certifies its key.")
        if own_certificate and public_key is not None:
            raise VisitError("invalid_field", "Send 'public_key' or 'certificate', not both.")
        if own_certificate and certificate is None:
            raise VisitError("invalid_field", "'chain' and 'crls' come with a 'certificate'.")
        plan = plan_of(doc)
        signed = [s["field"] for s in _slots(doc) if s["signed_at"]]
        try:
            slot = check_turn(plan, signed, slot_json["field"])
        except ConsentError as e:
            if e.code == "out_of_order":
                raise VisitError("not_ready", "Your clinician has not signed this form yet.",
                                 "This page will update by itself once they have.") from None
            raise
        if role != "clinician" and role not in doc.disclosure_accepted:
            raise VisitError("disclosure_required",
                             "Please first agree to use electronic records and signatures.")
        if not isinstance(typed_name, str) or not same_name(typed_name,
                                                            slot.signer.printed_name):
            raise VisitError("name_mismatch",
                             "Type your full name exactly as it appears on the form.")
        path: tuple[bytes, ...] = ()
        revocation: tuple[bytes, ...] = ()
        if certificate is not None:
            outside = await self._outside_certificate(certificate, chain, crls,
                                                      slot.signer.printed_name, email)
            signer_cert, cert_der = outside.asn1, outside.der
            serial = outside.certificate.serial_number
            path, revocation = outside.path, outside.crls
            source: dict[str, Any] = {
                "certificate_source": "pkcs12",
                "certificate_subject": outside.certificate.subject.rfc4514_string(),
                "certificate_issuer": outside.certificate.issuer.rfc4514_string(),
                "certificate_matched_by": outside.matched}
        else:
            key = b64_field(public_key, "public_key")
            issued = self.ca.issue_signer_certificate(key, slot.signer.printed_name, role,
                                                      email=email, hours=CERT_HOURS)
            signer_cert, cert_der = issued.asn1, issued.der
            serial = issued.certificate.serial_number
            source = {"certificate_source": "practice_ca"}
        to_sign, state = await self.signer.prepare(doc.pdf, slot.field_name, signer_cert,
                                                   slot.signer, slot.certify, chain=path,
                                                   crls=revocation)
        now = self.clock()
        signing = ConsentSigning(id=new_id(), document_id=doc.id, field_name=slot.field_name,
                                 base_revision=doc.revision, state=state.to_json(),
                                 created_at=now, expires_at=now + timedelta(seconds=SIGNING_S))
        await self.store.add_signing(signing)
        await self.records.append_audit(
            at=now, actor=requester.actor, action="consent.certificate_issued",
            subject=f"consent:{doc.id}", detail=requester.detail(
                field=slot.field_name, certificate_serial=format(serial, "x"),
                certificate_sha256=hashlib.sha256(cert_der).hexdigest(), **source))
        return {"signing_id": signing.id, "to_sign": base64.b64encode(to_sign).decode(),
                "certificate": base64.b64encode(cert_der).decode()}

    async def _outside_certificate(self, certificate: Any, chain: Any, crls: Any,
                                   printed_name: str, email: str | None
                                   ) -> OutsideCertificate:
        cert_der = b64_field(certificate, "certificate", CERT_B64_LIMIT)
        chain_der = b64_list(chain, "chain", MAX_CHAIN, CERT_B64_LIMIT)
        crls_der = b64_list(crls, "crls", MAX_CRLS, CRL_B64_LIMIT)
        try:
            return await check_outside_certificate(
                cert_der, chain_der, crls_der, self.outside_roots, now=self.clock(),
                email=email, name=printed_name, same_name=same_name)
        except ConsentError as e:
            raise VisitError(e.code, f"Your certificate cannot sign: {e.message}.",
                             _CERTIFICATE_ACTIONS.get(e.code, "")) from None

    async def finish(self, doc: ConsentDocument, role: str, *, signing_id: Any, signature: Any,
                     requester: Requester) -> ConsentDocument:
        """Embed the signer's signature; the new revision and its audit entry, or nothing."""
        if not isinstance(signing_id, str):
            raise VisitError("invalid_field", "'signing_id' is required.")
        signing = await self.store.signing(signing_id)
        now = self.clock()
        if signing is None or signing.document_id != doc.id:
            raise VisitError("signing_expired", "This signing step is no longer open.",
                             "Press Sign again.")
        slot = self._slot_for(doc, role)
        if signing.field_name != slot["field"]:
            raise VisitError("forbidden", "This signing step is someone else's.")
        if now >= signing.expires_at:
            raise VisitError("signing_expired", "This signing step took too long.",
                             "Press Sign again.")
        if doc.status == "revoked":
            raise VisitError("consent_revoked", "This consent was withdrawn.")
        if doc.revision != signing.base_revision:
            raise VisitError("signing_conflict", "This consent changed since you began signing.",
                             "Open it again.")
        state = PreparedSignature.from_json(signing.state)
        kept_certs, kept_crls = kept_validation(doc.plan)
        signed_pdf = await self.signer.finish(
            state, b64_field(signature, "signature", SIGNATURE_B64_LIMIT),
            extra_certs=kept_certs, extra_crls=kept_crls)
        digest = hashlib.sha256(signed_pdf).hexdigest()
        slots = [dict(s) for s in _slots(doc)]
        for s in slots:
            if s["field"] == slot["field"]:
                s["signed_at"] = now.isoformat()
        complete = is_complete(plan_of(doc), [s["field"] for s in slots if s["signed_at"]])
        cert = asn1_x509.Certificate.load(state.signer_cert)
        serial = format(cert.serial_number, "x")
        revision = ConsentRevision(
            document_id=doc.id, seq=doc.revision + 1, at=now, what=f"signed by {role}",
            field_name=slot["field"], signer_role=role, certificate_serial=serial,
            certificate_sha256=hashlib.sha256(state.signer_cert).hexdigest(),
            sha256=digest, prev_sha256=doc.sha256, pdf=signed_pdf)
        plan = {**doc.plan, "slots": slots}
        if state.chain or state.crls:  # an outside certificate: for the DSS at B-LTA
            plan = with_validation(plan, state.chain, state.crls)
        values: dict[str, Any] = {
            "plan": plan,
            "status": "complete" if complete else "awaiting_patient",
            "completed_at": now if complete else None}
        await self.store.store_revision(
            doc, revision, pdf=signed_pdf, values=values, action="consent.signed",
            actor=requester.actor, signing_id=signing.id, detail=requester.detail(
                field=slot["field"], role=role, sha256_before=doc.sha256, sha256_after=digest,
                certificate_serial=serial, complete=complete,
                certificate_source="pkcs12" if state.chain else "practice_ca",
                pades_level="B-LTA" if complete else "B-T"))
        return await self.get(doc.id)

    async def revoke(self, doc: ConsentDocument, *, reason: Any, requester: Requester
                     ) -> ConsentDocument:
        """The patient withdraws the consent: recorded; the document is kept as it is."""
        if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
            raise VisitError("invalid_field", "'reason' must be text of at most 500 characters.")
        now = self.clock()
        done = await self.store.update(
            doc.id, {"status": "revoked", "revoked_at": now, "revoke_reason": reason or ""},
            at=now, action="consent.revoked", actor=requester.actor,
            only_statuses=(*OPEN_STATUSES, "complete"),
            detail=requester.detail(sha256=doc.sha256, had_status=doc.status))
        if not done:
            raise VisitError("consent_revoked", "This consent was already withdrawn.")
        return await self.get(doc.id)

    # ---- afterwards ----------------------------------------------------------------

    async def verify(self, pdf: bytes) -> Report:
        return await verify(pdf, self.trust_roots(), [self.ca.current_crl_der()])

    async def renew_archives(self, *, margin: timedelta, requester: Requester
                             ) -> list[dict[str, Any]]:
        """A new archive timestamp on every signed consent whose last one's TSA
        certificate expires within `margin`."""
        from consent.archive import last_archive_timestamp_expiry

        done = []
        now = self.clock()
        for doc_id in await self.store.documents_with_status(("complete", "revoked")):
            doc = await self.get(doc_id)
            expiry = last_archive_timestamp_expiry(doc.pdf)
            if expiry is None or expiry - now > margin:
                continue
            renewed = await self.signer.renew_archive_timestamp(doc.pdf)
            digest = hashlib.sha256(renewed).hexdigest()
            revision = ConsentRevision(
                document_id=doc.id, seq=doc.revision + 1, at=now, what="archive timestamp",
                sha256=digest, prev_sha256=doc.sha256, pdf=renewed)
            await self.store.store_revision(
                doc, revision, pdf=renewed, values={}, action="consent.archive_renewed",
                only_statuses=("complete", "revoked"),
                actor=requester.actor, detail=requester.detail(
                    sha256_before=doc.sha256, sha256_after=digest,
                    previous_expiry=expiry.isoformat()))
            done.append({"id": doc.id, "previous_expiry": expiry.isoformat(), "sha256": digest})
        return done

    async def certificate(self, doc: ConsentDocument) -> bytes:
        """The certificate of completion: signers, events and hashes, as a PDF."""
        from consent.completion import (
            CompletionRecord,
            EventLine,
            RevisionLine,
            SignerLine,
            render_certificate,
        )

        patient = await self.records.patient(doc.patient_id)
        assert patient is not None
        revisions = await self.store.revisions(doc.id)
        entries = await self.records.audit_for(f"consent:{doc.id}")
        slots = {s["field"]: s for s in _slots(doc)}
        stamped = timestamp_times(doc.pdf)
        signers = tuple(
            SignerLine(role_label=slots[r.field_name]["role_label"],
                       printed_name=slots[r.field_name]["printed_name"],
                       field_name=r.field_name, signed_at=r.at,
                       certificate_serial=r.certificate_serial or "",
                       certificate_sha256=r.certificate_sha256 or "",
                       timestamp_time=stamped.get(r.field_name))
            for r in revisions if r.field_name is not None and r.field_name in slots)
        record = CompletionRecord(
            practice_name=self.settings.practice_name, document_id=doc.id,
            template_id=doc.template_id, template_version=doc.template_version,
            template_title=doc.title, template_sha256=doc.template_sha256,
            patient_name=patient.name, patient_dob=patient.dob, status=doc.status,
            issued_at=doc.issued_at, completed_at=doc.completed_at, revoked_at=doc.revoked_at,
            revoke_reason=doc.revoke_reason, original_sha256=revisions[0].sha256,
            final_sha256=doc.sha256, signers=signers,
            revisions=tuple(RevisionLine(r.seq, r.at, r.what, r.sha256, r.prev_sha256)
                            for r in revisions),
            events=tuple(EventLine(e.at, e.action, e.actor, str(e.detail.get("ip", "")),
                                   str(e.detail.get("user_agent", ""))) for e in entries),
            representative=plan_of(doc).representative,
            generated_at=self.clock())
        async with self._render_lock:
            return await asyncio.to_thread(render_certificate, record, self.settings.zone())


__all__ = ["CLINICIAN_FIELD", "ConsentSession", "Consents", "Requester"]
