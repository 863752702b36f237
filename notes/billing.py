"""CPT code, modifier and place of service for a visit (pure).

Medicare defaults from DOMAIN.md; what differs by payer is a `PayerSettings`.

    psychotherapy   minutes < 16 not billable; 16-37 90832; 38-52 90834; >= 53 90837
    intake          90791 (90792 with medical services); no time threshold
    family          >= 26 minutes: 90847 with the patient present, 90846 without
    crisis          30-74 minutes 90839; then 90840 for each further 30 minutes
                    (75-104 one unit, 105-134 two, ...). Under 30 minutes CPT reports
                    the time as psychotherapy (90832 from 16 minutes).
    modifier        95 audio-video, 93 audio-only (payers: FQ, GT, or none)
    place           10 patient at home, 02 elsewhere
    90785           interactive complexity: offered with 90791/90792, 90832-90838 and
                    90853, never with 90839/90840 or family codes; never applied here

Minutes are whole minutes of synchronous contact (`notes.contact.VisitFacts.minutes`).
Every visit type but family needs the patient present: a visit the patient never
joined has no code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from notes import NotesError
from notes.contact import AUDIO_ONLY, AUDIO_VIDEO, VisitFacts
from telehealth.visits import VISIT_TYPES

INTERACTIVE_COMPLEXITY = "90785"
INTERACTIVE_COMPLEXITY_WITH = frozenset(
    {"90791", "90792", "90832", "90833", "90834", "90836", "90837", "90838", "90853"})
PSYCHOTHERAPY_MIN = 16
FAMILY_MIN = 26
CRISIS_MIN = 30
CRISIS_ADD_ON_FROM = 75
CRISIS_ADD_ON_EVERY = 30
_MODIFIER = re.compile(r"[A-Z0-9]{2}")
_POS = re.compile(r"[0-9]{2}")


@dataclass(frozen=True, slots=True)
class PayerSettings:
    """What a payer wants on a telehealth claim (defaults: Medicare)."""

    name: str = "Medicare"
    video_modifier: str | None = "95"
    """None: the payer wants no modifier for audio-video (some want `GT`)."""
    audio_only_modifier: str | None = "93"
    """`FQ` for rural and federally qualified health centers; None for none."""
    pos_home: str = "10"
    pos_elsewhere: str = "02"

    def __post_init__(self) -> None:
        for label, mod in (("video", self.video_modifier),
                           ("audio-only", self.audio_only_modifier)):
            if mod is not None and not _MODIFIER.fullmatch(mod):
                raise NotesError("invalid_field", f"The {label} modifier must be two "
                                 "capital letters or digits, like 95 or GT.")
        for pos in (self.pos_home, self.pos_elsewhere):
            if not _POS.fullmatch(pos):
                raise NotesError("invalid_field",
                                 "A place of service is two digits, like 10 or 02.")


MEDICARE = PayerSettings()


@dataclass(frozen=True, slots=True)
class AddOn:
    code: str
    units: int


@dataclass(frozen=True, slots=True)
class CodeSuggestion:
    code: str | None
    """The primary CPT code (one unit); None when there is nothing to bill."""
    reason: str
    """Why this code, or why none, in plain words for the note."""
    minutes: int
    add_ons: tuple[AddOn, ...] = ()
    """Add-on lines that follow from the minutes (90840) or were chosen."""
    optional_add_ons: tuple[str, ...] = ()
    """Offered for the clinician to choose (`choose_add_on`), never applied by itself."""
    modifier: str | None = None
    place_of_service: str | None = None
    """None when the patient's location is not known."""
    warnings: tuple[str, ...] = ()

    @property
    def billable(self) -> bool:
        return self.code is not None


def modifier_for(modality: str, payer: PayerSettings = MEDICARE) -> str | None:
    if modality == AUDIO_VIDEO:
        return payer.video_modifier
    if modality == AUDIO_ONLY:
        return payer.audio_only_modifier
    raise NotesError("invalid_field", f"Modality must be {AUDIO_VIDEO} or {AUDIO_ONLY}.")


def place_of_service(at_home: bool | None, payer: PayerSettings = MEDICARE) -> str | None:
    if at_home is None:
        return None
    return payer.pos_home if at_home else payer.pos_elsewhere


def crisis_add_on_units(minutes: int) -> int:
    """Units of 90840 after 90839: 75-104 minutes one, 105-134 two, and so on."""
    if minutes < CRISIS_ADD_ON_FROM:
        return 0
    return (minutes - CRISIS_ADD_ON_FROM) // CRISIS_ADD_ON_EVERY + 1


def _psychotherapy(minutes: int) -> tuple[str | None, str]:
    if minutes < PSYCHOTHERAPY_MIN:
        return None, (f"{minutes} minutes of psychotherapy: under {PSYCHOTHERAPY_MIN} "
                      "minutes is not billable.")
    if minutes < 38:
        return "90832", f"Psychotherapy, {minutes} minutes (16-37): 90832."
    if minutes < 53:
        return "90834", f"Psychotherapy, {minutes} minutes (38-52): 90834."
    return "90837", f"Psychotherapy, {minutes} minutes (53 or more): 90837."


def suggest_code(
    visit_type: str, minutes: int, modality: str, at_home: bool | None,
    payer: PayerSettings = MEDICARE, *, patient_present: bool, medical_services: bool = False,
) -> CodeSuggestion:
    """The code a visit bills as.

    `minutes`: whole minutes of synchronous contact (for a family visit, with the
    family, the patient or not). `at_home`: where the patient was (None: not known).
    `patient_present`: the patient themself was in contact with a clinician.
    `medical_services`: an intake with medical services (90792 instead of 90791).
    """
    if visit_type not in VISIT_TYPES:
        raise NotesError("invalid_field", f"Visit type must be one of {', '.join(VISIT_TYPES)}.")
    if minutes < 0:
        raise NotesError("invalid_field", "Minutes cannot be negative.")
    modifier = modifier_for(modality, payer)
    pos = place_of_service(at_home, payer)
    warnings: list[str] = []
    if pos is None:
        warnings.append("The patient's location was not recorded: the place of service "
                        "(home or elsewhere) must be filled in by hand.")
    code: str | None
    add_ons: tuple[AddOn, ...] = ()
    if visit_type == "family":
        if minutes < FAMILY_MIN:
            code, reason = None, (f"{minutes} minutes of family psychotherapy: under "
                                  f"{FAMILY_MIN} minutes is not billable.")
        elif patient_present:
            code, reason = "90847", (f"Family psychotherapy with the patient present, "
                                     f"{minutes} minutes: 90847.")
        else:
            code, reason = "90846", (f"Family psychotherapy without the patient, "
                                     f"{minutes} minutes: 90846.")
    elif not patient_present:
        code, reason = None, "The patient never joined the visit: there is nothing to bill."
    elif visit_type == "intake":
        code = "90792" if medical_services else "90791"
        what = "with medical services" if medical_services else "without medical services"
        reason = f"Psychiatric diagnostic evaluation {what} (no time threshold): {code}."
    elif visit_type == "crisis":
        if minutes >= CRISIS_MIN:
            code = "90839"
            units = crisis_add_on_units(minutes)
            add_ons = (AddOn("90840", units),) if units else ()
            extra = f" plus 90840 x {units}" if units else ""
            reason = f"Psychotherapy for crisis, {minutes} minutes: 90839{extra}."
        else:
            code, why = _psychotherapy(minutes)
            reason = (f"Crisis psychotherapy under {CRISIS_MIN} minutes is reported as "
                      f"psychotherapy. {why}")
    else:
        code, reason = _psychotherapy(minutes)
    offered = (INTERACTIVE_COMPLEXITY,) if code in INTERACTIVE_COMPLEXITY_WITH else ()
    return CodeSuggestion(code=code, reason=reason, minutes=minutes, add_ons=add_ons,
                          optional_add_ons=offered, modifier=modifier,
                          place_of_service=pos, warnings=tuple(warnings))


def suggest_for(
    facts: VisitFacts, payer: PayerSettings = MEDICARE, *, medical_services: bool = False
) -> CodeSuggestion:
    """`suggest_code` from what the timeline says (`notes.contact.visit_facts`)."""
    return suggest_code(
        facts.visit_type, facts.minutes, facts.modality.kind,
        facts.location.at_home if facts.location is not None else None, payer,
        patient_present=facts.patient_present, medical_services=medical_services)


def choose_add_on(suggestion: CodeSuggestion, code: str) -> CodeSuggestion:
    """The clinician takes an offered add-on (90785): it becomes a line of its own."""
    if code not in suggestion.optional_add_ons:
        raise NotesError("add_on_not_offered", f"{code} cannot be added to this visit's code.",
                         "Only the add-ons offered with the suggested code can be chosen.")
    return replace(suggestion, add_ons=(*suggestion.add_ons, AddOn(code, 1)),
                   optional_add_ons=tuple(c for c in suggestion.optional_add_ons if c != code))
