"""Visit rules without a server: link windows, identity checks, lockout, refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from telehealth.visits import (
    Representative,
    VisitError,
    VisitRequest,
    check_identity,
    check_joinable,
    check_lock,
    identity_check_for,
    link_window,
    same_name,
    validate_request,
)

START = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
NBF, EXP = link_window(START, 3600, 3 * 3600)


def refusal(**kwargs: object) -> str:
    args = {"status": "scheduled", "removed": False, "not_before": NBF, "expires": EXP,
            "now": START}
    args.update(kwargs)
    with pytest.raises(VisitError) as err:
        check_joinable(**args)  # type: ignore[arg-type]
    assert err.value.message and err.value.action
    return err.value.code


def test_link_window_defaults() -> None:
    assert START - timedelta(hours=1) == NBF
    assert START + timedelta(hours=3) == EXP


def test_joinable_inside_the_window() -> None:
    check_joinable(status="scheduled", removed=False, not_before=NBF, expires=EXP, now=NBF)
    check_joinable(status="in_progress", removed=False, not_before=NBF, expires=EXP,
                   now=EXP - timedelta(seconds=1))


def test_each_refusal_has_its_own_code() -> None:
    assert refusal(status="cancelled") == "visit_cancelled"
    assert refusal(status="ended") == "visit_ended"
    assert refusal(removed=True) == "participant_removed"
    assert refusal(now=EXP) == "link_expired"
    assert refusal(now=NBF - timedelta(seconds=1)) == "link_not_yet_valid"
    # The visit's own state wins over the window: a cancelled visit says so, even late.
    assert refusal(status="cancelled", now=EXP + timedelta(days=1)) == "visit_cancelled"


def test_who_answers_what() -> None:
    assert identity_check_for("patient") == (True, False)
    assert identity_check_for("legal_representative") == (True, True)
    assert identity_check_for("family_member") == (True, False)
    assert identity_check_for("interpreter") == (False, False)
    assert identity_check_for("clinician") == (False, False)
    assert identity_check_for("co_clinician") == (False, False)


def test_identity_answers() -> None:
    dob = date(1990, 4, 27)
    assert check_identity(role="patient", record_dob=dob, record_name="", dob="1990-04-27",
                          name=None)
    assert not check_identity(role="patient", record_dob=dob, record_name="",
                              dob="1990-04-28", name=None)
    assert check_identity(role="legal_representative", record_dob=dob,
                          record_name="Sam O'Neil", dob="1990-04-27", name=" sam  o'neil ")
    assert not check_identity(role="legal_representative", record_dob=dob,
                              record_name="Sam O'Neil", dob="1990-04-27", name="Sam")
    assert check_identity(role="interpreter", record_dob=dob, record_name="x", dob=None,
                          name=None)
    for role, kwargs, code in (
        ("patient", {"dob": None, "name": None}, "dob_required"),
        ("legal_representative", {"dob": "1990-04-27", "name": " "}, "name_required"),
        ("patient", {"dob": "April 27", "name": None}, "bad_request"),
    ):
        with pytest.raises(VisitError) as err:
            check_identity(role=role, record_dob=dob, record_name="Sam", **kwargs)  # type: ignore[arg-type]
        assert err.value.code == code


def test_names_compare_without_case_spacing_or_width() -> None:
    assert same_name("José  García", "josé garcía")
    assert same_name("ＡＢＣ", "abc")  # full-width letters typed on a phone keyboard
    assert not same_name("Jose Garcia", "José García")


def test_a_lock_holds_for_its_lockout() -> None:
    until = START + timedelta(minutes=15)
    with pytest.raises(VisitError) as err:
        check_lock(until, START + timedelta(minutes=14, seconds=59))
    assert err.value.code == "link_locked"
    check_lock(until, START + timedelta(minutes=15))


def test_visit_requests_are_validated() -> None:
    good = VisitRequest("Alex Morgan", date(1990, 4, 27), START)
    validate_request(good, START)
    bad = [
        VisitRequest(" ", date(1990, 4, 27), START),
        VisitRequest("A", date(1990, 4, 27), START, visit_type="massage"),
        VisitRequest("A", date(2027, 1, 1), START),
        VisitRequest("A", date(1990, 4, 27), START.replace(tzinfo=None)),
        VisitRequest("A", date(1990, 4, 27), START,
                     representative=Representative("Sam", "", "court order")),
    ]
    for req in bad:
        with pytest.raises(VisitError) as err:
            validate_request(req, START)
        assert err.value.code == "invalid_field"
