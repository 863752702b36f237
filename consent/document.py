"""Consent templates and documents: jinja2 HTML -> WeasyPrint PDF/A-2b -> empty signature fields.

    TemplateLibrary([practice_dir, ...])   index.json in each directory (built-ins first;
                                           a practice adds templates without code)
    render_consent(...)                    one PDF, every signature field already in it

Every signature field is created here, before the first signature: a field added after
the clinician's certification signature would invalidate it. The signature blocks sit
on their own last page at fixed positions (CSS heights in the template), so the field
boxes are computed, not searched for.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields

from consent.errors import ConsentError
from consent.workflow import ClinicianRecord, PatientRecord, SigningPlan

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
KINDS = ("telehealth", "treatment", "release_of_information", "recording")

# The template's page and signature-page geometry (keep in step with its CSS).
PAGE_W_PT, PAGE_H_PT = 612.0, 792.0  # US letter
MARGIN_TOP_MM, MARGIN_SIDE_MM = 18.0, 18.0
HEADING_MM, BLOCK_MM, LABEL_MM, BOX_MM = 10.0, 60.0, 8.0, 36.0
_PT_PER_MM = 72 / 25.4


@dataclass(frozen=True)
class ConsentTemplate:
    id: str
    version: str
    title: str
    kind: str
    path: Path

    @property
    def source(self) -> bytes:
        return self.path.read_bytes()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source).hexdigest()


class TemplateLibrary:
    """Consent templates and e-signature disclosures found in `directories`' index.json."""

    def __init__(self, directories: Sequence[Path] = ()) -> None:
        self.templates: dict[tuple[str, str], ConsentTemplate] = {}
        self.disclosures: dict[tuple[str, str], ConsentTemplate] = {}
        for directory in (BUILTIN_TEMPLATES, *directories):
            index = json.loads((Path(directory) / "index.json").read_text())
            for entry in index.get("templates", []):
                self._add(self.templates, directory, entry, entry["kind"])
            for entry in index.get("disclosures", []):
                self._add(self.disclosures, directory, entry, "disclosure")

    @staticmethod
    def _add(into: dict[tuple[str, str], ConsentTemplate], directory: Path,
             entry: dict[str, Any], kind: str) -> None:
        if kind not in (*KINDS, "disclosure"):
            raise ConsentError("unknown_template", f"template kind {kind!r} is not one of {KINDS}")
        template = ConsentTemplate(str(entry["id"]), str(entry["version"]), str(entry["title"]),
                                   kind, Path(directory) / entry["path"])
        into[(template.id, template.version)] = template

    @staticmethod
    def _pick(among: dict[tuple[str, str], ConsentTemplate], template_id: str,
              version: str | None) -> ConsentTemplate:
        matching = [t for (tid, _), t in among.items() if tid == template_id
                    and (version is None or t.version == version)]
        if not matching:
            raise ConsentError("unknown_template", f"no template {template_id!r} {version or ''}")
        return max(matching, key=lambda t: (len(t.version), t.version))

    def template(self, template_id: str, version: str | None = None) -> ConsentTemplate:
        """The given version, or the latest one."""
        return self._pick(self.templates, template_id, version)

    def disclosure(self, disclosure_id: str = "esign-disclosure",
                   version: str | None = None) -> ConsentTemplate:
        return self._pick(self.disclosures, disclosure_id, version)


def _environment(directory: Path) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(directory)),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def render_disclosure(disclosure: ConsentTemplate, practice_name: str) -> Markup:
    template = _environment(disclosure.path.parent).get_template(disclosure.path.name)
    return Markup(template.render(practice_name=practice_name))


def signature_box(index: int) -> tuple[int, int, int, int]:
    """The PDF box (x1, y1, x2, y2 in points) of the `index`th signature block's frame."""
    top_mm = MARGIN_TOP_MM + HEADING_MM + index * BLOCK_MM + LABEL_MM
    x1 = MARGIN_SIDE_MM * _PT_PER_MM
    x2 = PAGE_W_PT - MARGIN_SIDE_MM * _PT_PER_MM
    y2 = PAGE_H_PT - top_mm * _PT_PER_MM
    y1 = y2 - BOX_MM * _PT_PER_MM
    return round(x1) + 2, round(y1) + 2, round(x2) - 2, round(y2) - 2


def render_html(template: ConsentTemplate, disclosure: ConsentTemplate, *,
                practice_name: str, patient: PatientRecord, clinician: ClinicianRecord,
                plan: SigningPlan, issued_at: datetime) -> str:
    labels = {"clinician": "Clinician obtaining consent", "patient": "Patient",
              "legal_representative": "Legal representative"}
    blocks = [{"label": labels[slot.role.value], "printed_name": slot.signer.printed_name,
               "role_label": slot.signer.role_label, "meaning": slot.signer.meaning}
              for slot in plan.slots]
    jinja_template = _environment(template.path.parent).get_template(template.path.name)
    return jinja_template.render(
        practice_name=practice_name, patient_name=patient.name,
        patient_dob=patient.dob.isoformat(),
        template={"id": template.id, "version": template.version, "title": template.title,
                  "sha256": template.sha256},
        issued_at=issued_at.strftime("%Y-%m-%d %H:%M %Z"),
        clinician_name=clinician.name, clinician_credentials=clinician.credentials,
        representative=plan.representative, signature_blocks=blocks,
        disclosure_html=render_disclosure(disclosure, practice_name))


def html_to_pdf(html: str) -> bytes:
    from weasyprint import HTML  # type: ignore[import-untyped]  # heavy: imported only when a document is rendered

    with warnings.catch_warnings():
        # WeasyPrint 70 opens its sRGB profile for PDF/A and never closes it.
        warnings.simplefilter("ignore", ResourceWarning)
        pdf: bytes = HTML(string=html, base_url=str(BUILTIN_TEMPLATES)).write_pdf(
            pdf_variant="pdf/a-2b")
        gc.collect()
    return pdf


def add_signature_fields(pdf: bytes, plan: SigningPlan) -> bytes:
    """Every signature field of `plan`, on the last page over its block, in one revision."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    last_page = writer.root["/Pages"]["/Count"] - 1
    for index, slot in enumerate(plan.slots):
        spec = fields.SigFieldSpec(
            slot.field_name, on_page=last_page, box=signature_box(index),
            empty_field_appearance=True,
            readable_field_name=f"{slot.signer.role_label} signature",
            field_mdp_spec=(fields.FieldMDPSpec(fields.FieldMDPAction.ALL)
                            if slot.locks else None),
            doc_mdp_update_value=fields.MDPPerm.NO_CHANGES if slot.locks else None)
        fields.append_signature_field(writer, spec)
    out = io.BytesIO()
    writer.write(out)  # type: ignore[no-untyped-call]
    return out.getvalue()


def render_consent(template: ConsentTemplate, disclosure: ConsentTemplate, *,
                   practice_name: str, patient: PatientRecord, clinician: ClinicianRecord,
                   plan: SigningPlan, issued_at: datetime) -> bytes:
    """The consent as a PDF/A-2b with all of `plan`'s signature fields, unsigned."""
    html = render_html(template, disclosure, practice_name=practice_name, patient=patient,
                       clinician=clinician, plan=plan, issued_at=issued_at)
    return add_signature_fields(html_to_pdf(html), plan)
