"""Who signs which consent, in which order (pure: no I/O, no PDF).

    plan_signatures(patient, clinician, today, policy)  decided from the record, before rendering
      1. clinician_signature        certification (the clinician obtaining consent)
      2. patient_signature          approval that locks the document
         or representative_signature   when a representative signs for the patient

    check_turn(plan, signed_fields, field)  -> the slot, or ConsentError("out_of_order")

An adult patient signs for themself unless the record holds a legal representative,
who then signs. A minor's consent is signed by the representative unless
`ConsentPolicy.minor_may_consent`. A representative not on record cannot sign.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from consent.errors import ConsentError

CLINICIAN_FIELD = "clinician_signature"
PATIENT_FIELD = "patient_signature"
REPRESENTATIVE_FIELD = "representative_signature"


class SignerRole(StrEnum):
    CLINICIAN = "clinician"
    PATIENT = "patient"
    LEGAL_REPRESENTATIVE = "legal_representative"


@dataclass(frozen=True)
class LegalRepresentative:
    name: str
    relationship: str
    """In the practice's words: "mother", "legal guardian", "health care agent"."""
    authority: str
    """Basis of authority: "parent of a minor", "court order 2024-123", "POA for health care"."""


@dataclass(frozen=True)
class PatientRecord:
    name: str
    dob: date
    representative: LegalRepresentative | None = None

    def __repr__(self) -> str:  # never put names or DOBs in logs
        return "PatientRecord(...)"


@dataclass(frozen=True)
class ClinicianRecord:
    name: str
    credentials: str = ""
    """Degrees and licenses as printed after the name: "PhD, LP"."""


@dataclass(frozen=True)
class ConsentPolicy:
    adult_age: int = 18
    """Age from which a patient signs for themself."""
    minor_may_consent: bool = False
    """Some states let minors consent to mental-health care on their own."""


@dataclass(frozen=True)
class SignerRoleInfo:
    """What a signature's appearance says about its signer."""

    printed_name: str
    role_label: str
    """"Clinician, PhD, LP" / "Patient" / "Legal representative (mother)"."""
    meaning: str
    """What the signature means, printed on it (21 CFR 11.50)."""

    def __repr__(self) -> str:
        return f"SignerRoleInfo(role_label={self.role_label!r})"


@dataclass(frozen=True)
class SignatureSlot:
    field_name: str
    role: SignerRole
    signer: SignerRoleInfo
    certify: bool
    """The clinician's certification signature (DocMDP: form filling still allowed)."""
    locks: bool
    """The last signature locks the document (FieldMDP, no changes after)."""


@dataclass(frozen=True)
class SigningPlan:
    slots: tuple[SignatureSlot, ...]
    representative: LegalRepresentative | None
    """The representative who signs, with their authority (for the record), if any."""

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(slot.field_name for slot in self.slots)

    def slot(self, field_name: str) -> SignatureSlot:
        for slot in self.slots:
            if slot.field_name == field_name:
                return slot
        raise ConsentError("unknown_field", f"this consent has no field {field_name!r}")


def age_on(dob: date, day: date) -> int:
    return day.year - dob.year - ((day.month, day.day) < (dob.month, dob.day))


def patient_signer(patient: PatientRecord, today: date, policy: ConsentPolicy,
                   requested: SignerRole | None = None) -> SignerRole:
    """Who signs for the patient: the patient or the legal representative."""
    minor = age_on(patient.dob, today) < policy.adult_age
    if requested is SignerRole.CLINICIAN:
        raise ConsentError("bad_role", "the clinician does not sign for the patient")
    if requested is SignerRole.LEGAL_REPRESENTATIVE or patient.representative is not None:
        if patient.representative is None:
            raise ConsentError("no_representative_on_record",
                               "only a representative on the patient's record may sign")
        if requested is SignerRole.PATIENT and (not minor or policy.minor_may_consent):
            return SignerRole.PATIENT
        return SignerRole.LEGAL_REPRESENTATIVE
    if minor and not policy.minor_may_consent:
        raise ConsentError("no_representative_on_record",
                           "a minor's consent is signed by a legal representative on record")
    return SignerRole.PATIENT


def plan_signatures(patient: PatientRecord, clinician: ClinicianRecord, today: date,
                    policy: ConsentPolicy = ConsentPolicy(),
                    requested: SignerRole | None = None) -> SigningPlan:
    """The signature fields of a consent, in signing order, decided before rendering."""
    role = patient_signer(patient, today, policy, requested)
    label = "Clinician" + (f", {clinician.credentials}" if clinician.credentials else "")
    slots = [SignatureSlot(
        CLINICIAN_FIELD, SignerRole.CLINICIAN,
        SignerRoleInfo(clinician.name, label,
                       "Signed as the clinician obtaining consent"),
        certify=True, locks=False)]
    representative = None
    if role is SignerRole.LEGAL_REPRESENTATIVE:
        representative = patient.representative
        assert representative is not None
        slots.append(SignatureSlot(
            REPRESENTATIVE_FIELD, role,
            SignerRoleInfo(representative.name,
                           f"Legal representative ({representative.relationship})",
                           "I consent to telehealth services on the patient's behalf"),
            certify=False, locks=True))
    else:
        slots.append(SignatureSlot(
            PATIENT_FIELD, role,
            SignerRoleInfo(patient.name, "Patient", "I consent to telehealth services"),
            certify=False, locks=True))
    return SigningPlan(tuple(slots), representative)


def check_turn(plan: SigningPlan, signed_fields: Collection[str], field_name: str
               ) -> SignatureSlot:
    """The slot for `field_name` if it is its turn; else ConsentError naming why."""
    slot = plan.slot(field_name)
    if field_name in signed_fields:
        raise ConsentError("field_already_signed", f"{field_name} is already signed")
    pending = [s for s in plan.slots if s.field_name not in signed_fields]
    if not pending:
        raise ConsentError("already_complete", "every signature is already on this consent")
    if pending[0].field_name != field_name:
        raise ConsentError("out_of_order",
                           f"{pending[0].field_name} must be signed before {field_name}")
    return slot


def is_complete(plan: SigningPlan, signed_fields: Collection[str]) -> bool:
    return all(slot.field_name in signed_fields for slot in plan.slots)
