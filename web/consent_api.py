"""The consent API (`docs/consent-api.md`): signers, clinicians, and verification.

Signers (patient or legal representative) act through the `th_consent` cookie that
an identity check sets (consent link or visit link); clinicians through their web
session or API token, and only on consents of visits they may manage.
"""

from __future__ import annotations

from aiohttp import web

from telehealth.consents import DEFAULT_TEMPLATE, SESSION_S, ConsentSession, Requester
from telehealth.db.tables import ConsentDocument
from telehealth.visits import VisitError
from web.api import json_body, managed_visit
from web.keys import clinician, services
from web.security import require_clinician

routes = web.RouteTableDef()

CONSENT_COOKIE = "th_consent"
MAX_VERIFY_BYTES = 20 * 1024 * 1024
DOCUMENT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                "font-src data:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
"""The consent's own HTML, shown in an iframe: no script at all, framed only by us."""


def client_address(request: web.Request) -> str:
    """The client's address: the peer's, or behind a trusted proxy the nearest address in
    X-Forwarded-For that is not itself a trusted proxy."""
    trusted = services(request).settings.trusted_proxies
    peer = request.remote or ""
    if peer not in trusted:
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if hop not in trusted:
            return hop[:64]
    return peer


def requester_of(request: web.Request, actor: str) -> Requester:
    return Requester(actor, client_address(request), request.headers.get("User-Agent", ""))


def set_consent_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(CONSENT_COOKIE, token, httponly=True, samesite="Strict", path="/",
                        max_age=SESSION_S, secure=services(request).settings.cookie_secure)


def pdf_response(pdf: bytes, filename: str) -> web.Response:
    return web.Response(body=pdf, content_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})


def document_response(html: str) -> web.Response:
    response = web.Response(text=html, content_type="text/html")
    response.headers["Content-Security-Policy"] = DOCUMENT_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


def _filename(doc: ConsentDocument, what: str = "consent") -> str:
    return f"{what}-{doc.template_id}-{doc.id[:8]}.pdf"


# ---- signers -----------------------------------------------------------------------


async def signer_session(request: web.Request) -> tuple[ConsentSession, ConsentDocument]:
    consents = services(request).consents
    session = consents.read_session(request.cookies.get(CONSENT_COOKIE))
    return session, await consents.get(session.consent_id)


def _signer(session: ConsentSession) -> str:
    return f"{session.role}:{session.consent_id[:8]}"


@routes.post("/api/v1/consent/open")
async def open_consent(request: web.Request) -> web.Response:
    body = await json_body(request)
    token = body.get("token")
    if not isinstance(token, str) or len(token) > 4096:
        raise VisitError("link_invalid", "This link is not valid.")
    dob, name = body.get("dob"), body.get("name")
    consents = services(request).consents
    doc, session_token = await consents.open_link(
        token, dob=dob if isinstance(dob, str) else None,
        name=name if isinstance(name, str) else None,
        requester=requester_of(request, "signer:link"))
    role = consents.read_session(session_token).role
    response = web.json_response(consents.signing_view(doc, role))
    set_consent_cookie(request, response, session_token)
    return response


@routes.get("/api/v1/consent/current")
async def current(request: web.Request) -> web.Response:
    session, doc = await signer_session(request)
    return web.json_response(services(request).consents.signing_view(doc, session.role))


@routes.get("/api/v1/consent/document")
async def signer_document(request: web.Request) -> web.Response:
    session, doc = await signer_session(request)
    await services(request).consents.viewed(doc, requester_of(request, _signer(session)),
                                            "viewed")
    return document_response(doc.html)


@routes.get("/api/v1/consent/pdf")
async def signer_pdf(request: web.Request) -> web.Response:
    session, doc = await signer_session(request)
    await services(request).consents.viewed(doc, requester_of(request, _signer(session)),
                                            "downloaded")
    return pdf_response(doc.pdf, _filename(doc))


@routes.post("/api/v1/consent/disclosure")
async def disclosure(request: web.Request) -> web.Response:
    session, doc = await signer_session(request)
    body = await json_body(request)
    if body.get("accepted") is not True:
        raise VisitError("invalid_field", "'accepted' must be true.")
    await services(request).consents.accept_disclosure(
        doc, session.role, body.get("version"), requester_of(request, _signer(session)))
    return web.json_response({"ok": True})


@routes.post("/api/v1/consent/prepare")
async def signer_prepare(request: web.Request) -> web.Response:
    session, doc = await signer_session(request)
    body = await json_body(request)
    prepared = await services(request).consents.prepare(
        doc, session.role, public_key=body.get("public_key"), typed_name=body.get("typed_name"),
        requester=requester_of(request, _signer(session)), certificate=body.get("certificate"),
        chain=body.get("chain"), crls=body.get("crls"))  # refused: a clinician's option only
    return web.json_response(prepared)


@routes.post("/api/v1/consent/finish")
async def signer_finish(request: web.Request) -> web.Response:
    session, doc = await signer_session(request)
    body = await json_body(request)
    consents = services(request).consents
    doc = await consents.finish(doc, session.role, signing_id=body.get("signing_id"),
                                signature=body.get("signature"),
                                requester=requester_of(request, _signer(session)))
    return web.json_response({"consent": consents.summary(doc)})


@routes.post("/api/v1/consent/revoke")
async def signer_revoke(request: web.Request) -> web.Response:
    session, doc = await signer_session(request)
    body = await json_body(request)
    consents = services(request).consents
    doc = await consents.revoke(doc, reason=body.get("reason"),
                                requester=requester_of(request, _signer(session)))
    return web.json_response({"consent": consents.summary(doc)})


@routes.get("/api/v1/join/consent")
async def join_consent(request: web.Request) -> web.Response:
    """The visit link's consent gate, polled with the WebSocket ticket."""
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise VisitError("link_invalid", "This link is not valid.")
    svc = services(request)
    visit, person = await svc.check_ticket(auth[len("Bearer "):])
    gate = await svc.consent_gate(visit, person)
    response = web.json_response(gate)
    if gate["signable"]:
        await grant_visit_consent(request, response, gate["consent_id"], person.role)
    return response


async def grant_visit_consent(request: web.Request, response: web.StreamResponse,
                              consent_id: str, role: str) -> None:
    """A consent session for a visit participant whose identity was just checked."""
    consents = services(request).consents
    doc = await consents.get(consent_id)
    await consents.record_visit_identity(doc.id, role, requester_of(request, f"{role}:visit"))
    set_consent_cookie(request, response, consents.session_token(doc, role))


# ---- clinicians --------------------------------------------------------------------


@routes.get("/api/v1/consent/templates")
@require_clinician
async def templates(request: web.Request) -> web.Response:
    return web.json_response({"templates": services(request).consents.templates()})


@routes.post("/api/v1/visits/{visit_id}/consents")
@require_clinician
async def issue(request: web.Request) -> web.Response:
    visit = await managed_visit(request)
    body = await json_body(request)
    template_id = body.get("template_id", DEFAULT_TEMPLATE)
    if not isinstance(template_id, str):
        raise VisitError("invalid_field", "'template_id' must be text.")
    me = clinician(request)
    consents = services(request).consents
    doc, created = await consents.issue(visit, me, clinician_requester(request), template_id)
    return web.json_response({"consent": consents.summary(doc, with_link=True)},
                             status=201 if created else 200)


@routes.get("/api/v1/visits/{visit_id}/consents")
@require_clinician
async def visit_consents(request: web.Request) -> web.Response:
    visit = await managed_visit(request)
    consents = services(request).consents
    docs = await consents.for_patient(visit.patient_id)
    return web.json_response({"consents": [consents.summary(d, with_link=True) for d in docs]})


async def managed_consent(request: web.Request) -> ConsentDocument:
    """A consent of a visit the clinician may manage (anything else: not found)."""
    svc = services(request)
    doc = await svc.consents.store.document(request.match_info["consent_id"])
    me = clinician(request)
    if doc is not None and doc.clinician_id == me.id:
        return doc
    visit = await svc.store.visit(doc.visit_id) if doc is not None and doc.visit_id else None
    if doc is None or visit is None or not await svc.may_manage(me, visit):
        raise VisitError("not_found", "No such consent.")
    return doc


def clinician_requester(request: web.Request) -> Requester:
    """The logged-in clinician, for the audit trail."""
    return requester_of(request, f"clinician:{clinician(request).id}")


@routes.get("/api/v1/consents/{consent_id}")
@require_clinician
async def consent_detail(request: web.Request) -> web.Response:
    doc = await managed_consent(request)
    svc = services(request)
    entries = await svc.store.audit_for(f"consent:{doc.id}")
    return web.json_response({
        "consent": svc.consents.summary(doc, with_link=True),
        "events": [{"at": e.at.isoformat(), "action": e.action, "actor": e.actor}
                   for e in entries]})


@routes.get("/api/v1/consents/{consent_id}/pdf")
@require_clinician
async def clinician_pdf(request: web.Request) -> web.Response:
    doc = await managed_consent(request)
    await services(request).consents.viewed(doc, clinician_requester(request), "downloaded")
    return pdf_response(doc.pdf, _filename(doc))


@routes.get("/api/v1/consents/{consent_id}/document")
@require_clinician
async def clinician_document(request: web.Request) -> web.Response:
    doc = await managed_consent(request)
    await services(request).consents.viewed(doc, clinician_requester(request), "viewed")
    return document_response(doc.html)


@routes.get("/api/v1/consents/{consent_id}/certificate")
@require_clinician
async def certificate(request: web.Request) -> web.Response:
    doc = await managed_consent(request)
    consents = services(request).consents
    pdf = await consents.certificate(doc)
    await consents.viewed(doc, clinician_requester(request), "certificate_downloaded")
    return pdf_response(pdf, _filename(doc, "certificate"))


@routes.post("/api/v1/consents/{consent_id}/prepare")
@require_clinician
async def clinician_prepare(request: web.Request) -> web.Response:
    doc = await managed_consent(request)
    me = clinician(request)
    if doc.clinician_id != me.id:
        raise VisitError("forbidden", "Only the clinician who issued this consent signs it.")
    body = await json_body(request)
    prepared = await services(request).consents.prepare(
        doc, "clinician", public_key=body.get("public_key"), typed_name=body.get("typed_name"),
        requester=clinician_requester(request), email=me.email, certificate=body.get("certificate"),
        chain=body.get("chain"), crls=body.get("crls"))
    return web.json_response(prepared)


@routes.post("/api/v1/consents/{consent_id}/finish")
@require_clinician
async def clinician_finish(request: web.Request) -> web.Response:
    doc = await managed_consent(request)
    if doc.clinician_id != clinician(request).id:
        raise VisitError("forbidden", "Only the clinician who issued this consent signs it.")
    body = await json_body(request)
    consents = services(request).consents
    doc = await consents.finish(doc, "clinician", signing_id=body.get("signing_id"),
                                signature=body.get("signature"),
                                requester=clinician_requester(request))
    return web.json_response({"consent": consents.summary(doc, with_link=True)})


# ---- anyone ------------------------------------------------------------------------


@routes.post("/api/v1/consent/verify")
async def verify_upload(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_VERIFY_BYTES:
        raise VisitError("too_large", "The file is larger than 20 MB.")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_VERIFY_BYTES:
            raise VisitError("too_large", "The file is larger than 20 MB.")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise VisitError("bad_request", "Send the PDF as the request body.")
    report = await services(request).consents.verify(data)
    return web.json_response(report.to_dict())


@routes.get("/consent/ca.pem")
async def ca_certificate(request: web.Request) -> web.Response:
    """The practice's trust root, for verifying its consents anywhere."""
    from cryptography.hazmat.primitives.serialization import Encoding

    ca = services(request).consents.ca
    return web.Response(body=ca.root.public_bytes(Encoding.PEM),
                        content_type="application/x-pem-file")


@routes.get("/consent/crl.der")
async def crl(request: web.Request) -> web.Response:
    """The practice CA's current revocation list."""
    return web.Response(body=services(request).consents.ca.current_crl_der(),
                        content_type="application/pkix-crl")
