"""Who signs a consent, and in which order: the pure rules, no PDF, no loop."""

from __future__ import annotations

from datetime import date

import pytest

from consent.errors import ConsentError
from consent.workflow import (
    CLINICIAN_FIELD,
    PATIENT_FIELD,
    REPRESENTATIVE_FIELD,
    ClinicianRecord,
    ConsentPolicy,
    LegalRepresentative,
    PatientRecord,
    SignerRole,
    age_on,
    check_turn,
    is_complete,
    plan_signatures,
)

TODAY = date(2026, 12, 1)
CLINICIAN = ClinicianRecord("Dana Smith", "PhD, LP")
GUARDIAN = LegalRepresentative("Robin Roe", "mother", "parent of a minor")
ADULT = PatientRecord("Alex Doe", date(1990, 4, 27))
MINOR = PatientRecord("Sam Roe", date(2014, 6, 2), GUARDIAN)
MINOR_ALONE = PatientRecord("Sam Roe", date(2014, 6, 2))


def test_adult_signs_after_the_clinician() -> None:
    plan = plan_signatures(ADULT, CLINICIAN, TODAY)
    assert plan.field_names == (CLINICIAN_FIELD, PATIENT_FIELD)
    clinician, patient = plan.slots
    assert clinician.certify and not clinician.locks
    assert clinician.signer.role_label == "Clinician, PhD, LP"
    assert patient.locks and not patient.certify and patient.role is SignerRole.PATIENT
    assert patient.signer.meaning == "I consent to telehealth services"
    assert plan.representative is None


def test_minor_is_signed_by_representative_on_record() -> None:
    plan = plan_signatures(MINOR, CLINICIAN, TODAY)
    assert plan.field_names == (CLINICIAN_FIELD, REPRESENTATIVE_FIELD)
    assert plan.slots[1].signer.printed_name == "Robin Roe"
    assert plan.slots[1].signer.role_label == "Legal representative (mother)"
    assert plan.representative == GUARDIAN


def test_minor_without_representative_is_refused() -> None:
    with pytest.raises(ConsentError) as caught:
        plan_signatures(MINOR_ALONE, CLINICIAN, TODAY)
    assert caught.value.code == "no_representative_on_record"


def test_minor_may_consent_by_setting() -> None:
    policy = ConsentPolicy(minor_may_consent=True)
    assert plan_signatures(MINOR_ALONE, CLINICIAN, TODAY, policy).field_names[1] == PATIENT_FIELD
    # With a guardian on record the guardian still signs unless the minor is asked for.
    assert plan_signatures(MINOR, CLINICIAN, TODAY, policy).field_names[1] == REPRESENTATIVE_FIELD
    assert plan_signatures(MINOR, CLINICIAN, TODAY, policy,
                           requested=SignerRole.PATIENT).field_names[1] == PATIENT_FIELD
    # Without the setting a minor cannot be asked to sign.
    assert plan_signatures(MINOR, CLINICIAN, TODAY,
                           requested=SignerRole.PATIENT).field_names[1] == REPRESENTATIVE_FIELD


def test_representative_not_on_record_cannot_sign() -> None:
    with pytest.raises(ConsentError) as caught:
        plan_signatures(ADULT, CLINICIAN, TODAY, requested=SignerRole.LEGAL_REPRESENTATIVE)
    assert caught.value.code == "no_representative_on_record"


def test_eighteenth_birthday_is_adult() -> None:
    assert age_on(date(2008, 12, 1), TODAY) == 18
    assert age_on(date(2008, 12, 2), TODAY) == 17
    assert plan_signatures(PatientRecord("A", date(2008, 12, 1)), CLINICIAN,
                           TODAY).field_names[1] == PATIENT_FIELD
    with pytest.raises(ConsentError):
        plan_signatures(PatientRecord("A", date(2008, 12, 2)), CLINICIAN, TODAY)


def test_order_is_enforced() -> None:
    plan = plan_signatures(ADULT, CLINICIAN, TODAY)
    with pytest.raises(ConsentError) as caught:
        check_turn(plan, set(), PATIENT_FIELD)
    assert caught.value.code == "out_of_order"
    assert check_turn(plan, set(), CLINICIAN_FIELD).certify
    with pytest.raises(ConsentError) as caught:
        check_turn(plan, {CLINICIAN_FIELD}, CLINICIAN_FIELD)
    assert caught.value.code == "field_already_signed"
    assert check_turn(plan, {CLINICIAN_FIELD}, PATIENT_FIELD).locks
    assert not is_complete(plan, {CLINICIAN_FIELD})
    assert is_complete(plan, {CLINICIAN_FIELD, PATIENT_FIELD})
    with pytest.raises(ConsentError) as caught:
        check_turn(plan, {CLINICIAN_FIELD}, REPRESENTATIVE_FIELD)
    assert caught.value.code == "unknown_field"


def test_records_keep_names_out_of_reprs() -> None:
    assert "Alex" not in repr(ADULT) and "1990" not in repr(ADULT)
    assert "Dana" not in repr(plan_signatures(ADULT, CLINICIAN, TODAY).slots[0].signer)
