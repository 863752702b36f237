"""CPT code, modifier and place of service at every boundary in DOMAIN.md. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notes import NotesError
from notes.billing import (
    INTERACTIVE_COMPLEXITY,
    MEDICARE,
    AddOn,
    CodeSuggestion,
    PayerSettings,
    choose_add_on,
    crisis_add_on_units,
    suggest_code,
    suggest_for,
)
from notes.contact import AUDIO_ONLY, AUDIO_VIDEO, Event, Person, visit_facts

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def suggest(visit_type: str, minutes: int, modality: str = AUDIO_VIDEO,
            at_home: bool | None = True, payer: PayerSettings = MEDICARE,
            **kw: Any) -> CodeSuggestion:
    kw.setdefault("patient_present", True)
    return suggest_code(visit_type, minutes, modality, at_home, payer, **kw)


# ---- codes by minutes -------------------------------------------------------------------


@pytest.mark.parametrize(("minutes", "code"), [
    (0, None), (1, None), (15, None), (16, "90832"), (37, "90832"), (38, "90834"),
    (52, "90834"), (53, "90837"), (90, "90837"), (240, "90837"),
])
def test_psychotherapy_boundaries(minutes: int, code: str | None) -> None:
    s = suggest("psychotherapy", minutes)
    assert s.code == code and s.billable is (code is not None) and s.add_ons == ()
    assert s.minutes == minutes


def test_under_16_minutes_of_psychotherapy_is_flagged_not_billable() -> None:
    s = suggest("psychotherapy", 15)
    assert s.code is None and not s.billable
    assert "under 16 minutes" in s.reason and "not billable" in s.reason
    assert s.optional_add_ons == ()


@pytest.mark.parametrize(("minutes", "present", "code"), [
    (0, True, None), (25, True, None), (26, True, "90847"), (50, True, "90847"),
    (0, False, None), (25, False, None), (26, False, "90846"), (80, False, "90846"),
])
def test_family_boundaries_with_and_without_the_patient(
    minutes: int, present: bool, code: str | None,
) -> None:
    s = suggest("family", minutes, patient_present=present)
    assert s.code == code
    if code is None:
        assert "under 26 minutes" in s.reason
    else:
        assert ("with the patient" if present else "without the patient") in s.reason


@pytest.mark.parametrize(("minutes", "units"), [
    (30, 0), (74, 0), (75, 1), (104, 1), (105, 2), (134, 2), (135, 3), (164, 3), (165, 4),
])
def test_crisis_first_hour_and_add_on_units(minutes: int, units: int) -> None:
    s = suggest("crisis", minutes)
    assert s.code == "90839"
    assert s.add_ons == ((AddOn("90840", units),) if units else ())
    assert crisis_add_on_units(minutes) == units
    assert s.optional_add_ons == ()  # 90785 never goes with 90839/90840


@pytest.mark.parametrize(("minutes", "code"), [(29, "90832"), (16, "90832"), (15, None),
                                               (0, None)])
def test_crisis_under_30_minutes_is_reported_as_psychotherapy(
    minutes: int, code: str | None,
) -> None:
    s = suggest("crisis", minutes)
    assert s.code == code and s.add_ons == ()
    assert "under 30 minutes" in s.reason


@pytest.mark.parametrize("minutes", [0, 1, 45, 200])
def test_intake_has_no_time_threshold(minutes: int) -> None:
    assert suggest("intake", minutes).code == "90791"
    assert suggest("intake", minutes, medical_services=True).code == "90792"


@pytest.mark.parametrize(("visit_type", "minutes"), [
    ("psychotherapy", 60), ("intake", 60), ("crisis", 90), ("crisis", 20),
])
def test_a_visit_the_patient_never_joined_has_no_code(visit_type: str, minutes: int) -> None:
    s = suggest(visit_type, minutes, patient_present=False)
    assert s.code is None and s.add_ons == () and s.optional_add_ons == ()
    assert "never joined" in s.reason


# ---- modifier and place of service ----------------------------------------------------------


def test_modifier_95_for_video_and_93_for_audio_only() -> None:
    assert suggest("psychotherapy", 45, AUDIO_VIDEO).modifier == "95"
    assert suggest("psychotherapy", 45, AUDIO_ONLY).modifier == "93"


def test_payer_settings_override_the_modifier_and_place() -> None:
    gt = PayerSettings(name="Old plan", video_modifier="GT", audio_only_modifier=None)
    assert suggest("psychotherapy", 45, AUDIO_VIDEO, payer=gt).modifier == "GT"
    assert suggest("psychotherapy", 45, AUDIO_ONLY, payer=gt).modifier is None
    fqhc = PayerSettings(audio_only_modifier="FQ")
    assert suggest("psychotherapy", 45, AUDIO_ONLY, payer=fqhc).modifier == "FQ"
    office = PayerSettings(pos_home="11", pos_elsewhere="11")
    assert suggest("psychotherapy", 45, at_home=True, payer=office).place_of_service == "11"


def test_place_of_service_10_at_home_02_elsewhere() -> None:
    assert suggest("psychotherapy", 45, at_home=True).place_of_service == "10"
    assert suggest("psychotherapy", 45, at_home=False).place_of_service == "02"
    assert suggest("psychotherapy", 45, at_home=False).warnings == ()


def test_an_unknown_location_leaves_the_place_open_with_a_warning() -> None:
    s = suggest("psychotherapy", 45, at_home=None)
    assert s.place_of_service is None and s.code == "90834"
    assert any("location" in w for w in s.warnings)


def test_modifier_and_place_are_given_even_when_not_billable() -> None:
    s = suggest("psychotherapy", 10, AUDIO_ONLY, at_home=False)
    assert (s.code, s.modifier, s.place_of_service) == (None, "93", "02")


# ---- 90785 interactive complexity ------------------------------------------------------------


@pytest.mark.parametrize(("visit_type", "minutes", "offered"), [
    ("intake", 50, True), ("psychotherapy", 16, True), ("psychotherapy", 38, True),
    ("psychotherapy", 53, True), ("crisis", 20, True), ("psychotherapy", 15, False),
    ("crisis", 30, False), ("crisis", 120, False), ("family", 50, False),
])
def test_90785_is_offered_never_applied(visit_type: str, minutes: int, offered: bool) -> None:
    s = suggest(visit_type, minutes)
    assert s.optional_add_ons == ((INTERACTIVE_COMPLEXITY,) if offered else ())
    assert all(a.code != INTERACTIVE_COMPLEXITY for a in s.add_ons)


def test_choosing_90785_adds_it_once() -> None:
    s = choose_add_on(suggest("psychotherapy", 45), "90785")
    assert s.code == "90834" and s.add_ons == (AddOn("90785", 1),)
    assert s.optional_add_ons == ()
    with pytest.raises(NotesError) as err:
        choose_add_on(s, "90785")
    assert err.value.code == "add_on_not_offered"


def test_90785_cannot_be_chosen_with_crisis_codes() -> None:
    s = suggest("crisis", 80)
    with pytest.raises(NotesError):
        choose_add_on(s, "90785")
    assert s.add_ons == (AddOn("90840", 1),)


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "kw"), [
    (("group", 30, AUDIO_VIDEO, True), {}),
    (("psychotherapy", -1, AUDIO_VIDEO, True), {}),
    (("psychotherapy", 30, "video", True), {}),
])
def test_bad_input_is_refused(args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    with pytest.raises(NotesError) as err:
        suggest_code(*args, patient_present=True, **kw)
    assert err.value.code == "invalid_field"


@pytest.mark.parametrize("settings", [
    {"video_modifier": "gt"}, {"audio_only_modifier": "930"}, {"pos_home": "1"},
    {"pos_elsewhere": "O2"},
])
def test_bad_payer_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(NotesError):
        PayerSettings(**settings)


# ---- from a timeline ------------------------------------------------------------------------


def ev(minute: float, pid: str | None, kind: str, **detail: Any) -> Event:
    return Event(kind, T0 + timedelta(minutes=minute), pid, detail)


PEOPLE = [Person("dr", "clinician", "Dana Rivera"), Person("p", "patient", "Alex Morgan"),
          Person("f", "family_member", "Lee Morgan")]


def test_an_audio_only_hour_at_home_from_the_timeline() -> None:
    events = [ev(-1, "p", "location", state="CA", at_home=True), ev(0, "dr", "admitted"),
              ev(1, "p", "admitted", by="dr"),
              ev(1, "p", "media_state", audio=True, video=False, reason="no camera"),
              ev(20, "p", "reconnecting"), ev(21, "p", "rejoined"), ev(55, "dr", "ended")]
    facts = visit_facts(events, PEOPLE, visit_type="psychotherapy")
    s = suggest_for(facts)
    assert facts.minutes == 53 and facts.modality.reason == "no camera"
    assert (s.code, s.modifier, s.place_of_service) == ("90837", "93", "10")
    # One more minute of dropped connection and it is a 90834.
    events[-2] = ev(22, "p", "rejoined")
    assert suggest_for(visit_facts(events, PEOPLE, visit_type="psychotherapy")).code == "90834"


def test_the_patient_never_joined_from_the_timeline() -> None:
    events = [ev(0, "dr", "admitted"), ev(1, "p", "waiting"), ev(50, "dr", "ended")]
    for visit_type in ("psychotherapy", "intake", "crisis", "family"):
        s = suggest_for(visit_facts(events, PEOPLE, visit_type=visit_type))
        assert s.code is None, visit_type
        assert s.place_of_service is None  # no location given either


def test_a_family_visit_without_the_patient_from_the_timeline() -> None:
    events = [ev(-1, "f", "location", state="WA", at_home=False), ev(0, "dr", "admitted"),
              ev(2, "f", "admitted", by="dr"), ev(28, "dr", "ended")]
    facts = visit_facts(events, PEOPLE, visit_type="family")
    s = suggest_for(facts)
    assert (facts.minutes, s.code, s.place_of_service) == (26, "90846", "02")
    events[-1] = ev(27.9, "dr", "ended")
    assert suggest_for(visit_facts(events, PEOPLE, visit_type="family")).code is None


# ---- properties -------------------------------------------------------------------------------

_ORDER = {None: 0, "90832": 1, "90834": 2, "90837": 3}


@given(st.integers(0, 600), st.integers(0, 600))
def test_more_psychotherapy_minutes_never_give_a_shorter_code(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert _ORDER[suggest("psychotherapy", lo).code] <= _ORDER[suggest("psychotherapy", hi).code]


@given(st.integers(30, 1000))
def test_crisis_units_cover_the_time_in_30_minute_blocks(minutes: int) -> None:
    units = crisis_add_on_units(minutes)
    # 90839 covers up to 74 minutes; each 90840 the next 30, attained from its 16th minute.
    assert minutes < 60 + 30 * (units + 1) - 15
    assert units == 0 or 60 + 30 * units - 15 <= minutes
    assert INTERACTIVE_COMPLEXITY not in suggest("crisis", minutes).optional_add_ons
