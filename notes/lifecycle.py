"""A progress note's life (pure): draft -> signed, or draft -> awaiting co-signature ->
signed; after signing only addenda.

    edit(note, changes)          a draft's new sections; carried-over text stops being
                                 marked once edited (or marked reviewed)
    check_signable(note)         every section written, nothing carried over unreviewed
    signers(...)                 the note's signature slots: the author, then the
                                 supervisor when the author needs a co-signature
    check_addendum(status, ...)  only a signed note takes addenda; reason and text needed

Copy-forward invites "cloned note" denials, so text carried from the last note stays
marked until the clinician edits it or says it is reviewed, and a note with marked text
cannot be signed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from consent.workflow import SignatureSlot, SignerRole, SignerRoleInfo, SigningPlan
from notes import NotesError
from notes.formats import NoteFormat

DRAFT = "draft"
AWAITING_COSIGN = "awaiting_cosign"
SIGNED = "signed"
AUTHOR_FIELD = "author_signature"
SUPERVISOR_FIELD = "supervisor_signature"
MAX_SECTION = 20_000


@dataclass(frozen=True)
class Draft:
    sections: dict[str, str]
    carried: tuple[str, ...]
    """Sections whose text came from the last note and is not yet edited or reviewed."""


def check_editable(status: str) -> None:
    if status != DRAFT:
        raise NotesError("note_signed", "A signed note cannot be changed.",
                         "Add an addendum instead; the signed note stays as it is.")


def edit(status: str, fmt: NoteFormat, draft: Draft, changes: Mapping[str, object],
         reviewed: Sequence[str] = ()) -> Draft:
    """The draft after `changes` (section key -> text) and `reviewed` carried sections."""
    check_editable(status)
    sections = dict(draft.sections)
    touched = set(reviewed)
    for key, text in changes.items():
        if key not in fmt.keys:
            raise NotesError("unknown_section", f"The {fmt.title} format has no section "
                                                f"{key!r}.")
        if not isinstance(text, str) or len(text) > MAX_SECTION:
            raise NotesError("invalid_field", f"Section {key!r} must be text of at most "
                                              f"{MAX_SECTION} characters.")
        if text != sections.get(key, ""):
            touched.add(key)
        sections[key] = text
    return Draft(sections, tuple(k for k in draft.carried if k not in touched))


def carry_forward(fmt: NoteFormat, last_sections: Mapping[str, str]) -> Draft:
    """A draft that starts from the clinician's last note of the same format."""
    sections = {k: last_sections.get(k, "") for k in fmt.keys}
    return Draft(sections, tuple(k for k in fmt.keys if sections[k].strip()))


def check_signable(status: str, fmt: NoteFormat, draft: Draft) -> None:
    check_editable(status)
    empty = [s for s in fmt.sections if not draft.sections.get(s.key, "").strip()]
    if empty:
        raise NotesError("sections_empty", f"Write the {', '.join(s.title for s in empty)} "
                         f"section{'s' if len(empty) > 1 else ''} before signing.",
                         sections=[s.key for s in empty])
    if draft.carried:
        titles = [s.title for s in fmt.sections if s.key in draft.carried]
        raise NotesError("carried_unreviewed",
                         f"Review the text carried over from the last note: {', '.join(titles)}.",
                         "Edit it or mark it reviewed, then sign.", sections=list(draft.carried))


def signers(author_name: str, author_credentials: str, supervisor: tuple[str, str] | None
            ) -> SigningPlan:
    """The author signs first (a certification signature); a supervisor co-signs last
    when the author needs it. The last signature locks the document."""
    def label(credentials: str, what: str) -> str:
        return what + (f", {credentials}" if credentials else "")

    author = SignatureSlot(
        AUTHOR_FIELD, SignerRole.CLINICIAN,
        SignerRoleInfo(author_name, label(author_credentials, "Clinician"),
                       "I wrote this note and attest that it is accurate and complete"),
        certify=True, locks=supervisor is None)
    if supervisor is None:
        return SigningPlan((author,), None)
    cosign = SignatureSlot(
        SUPERVISOR_FIELD, SignerRole.CLINICIAN,
        SignerRoleInfo(supervisor[0], label(supervisor[1], "Supervisor"),
                       "I reviewed this note as the supervising clinician"),
        certify=False, locks=True)
    return SigningPlan((author, cosign), None)


def status_after_signature(field_name: str, plan: SigningPlan) -> str:
    last = plan.slots[-1].field_name
    return SIGNED if field_name == last else AWAITING_COSIGN


def check_addendum(status: str, reason: object, text: object) -> tuple[str, str]:
    if status == DRAFT:
        raise NotesError("note_not_signed", "A draft is edited, not amended.",
                         "Change the draft itself; addenda are for signed notes.")
    if status != SIGNED:
        raise NotesError("note_not_signed", "This note waits for its co-signature.",
                         "Add the addendum once the supervisor has co-signed.")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise NotesError("invalid_field", "An addendum needs a reason (at most 500 characters).")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_SECTION:
        raise NotesError("invalid_field", "An addendum needs its text.")
    return reason.strip(), text.strip()
