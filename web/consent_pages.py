"""The consent pages: `GET /c/<token>` (a signer's consent link) and `GET /verify`.

`/c/<token>` answers, like `/v/<token>`, the states of a link a person can act on
without being asked anything first: a link that is not genuine, expired (unless the
consent is already signed: then it still shows the signed copy), withdrawn or locked
gets a page saying so and what to do. Otherwise the consent page, whose script walks
identity check -> read -> e-signature disclosure -> typed name and signature -> done
(consent.js, consentsign.js). Before the identity check the page names neither the
patient nor the consent; the token stays in the path (never in a query string) and the
access log names only the route.

`GET /verify` is the public upload page: verify.js sends the PDF's bytes to
`POST /api/v1/consent/verify` and shows the report.
"""

from __future__ import annotations

from aiohttp import web

from telehealth.auth import AuthError
from web.keys import services
from web.pages import refusal_page
from web.render import page

routes = web.RouteTableDef()
MAX_VERIFY_BYTES = 20 * 1024 * 1024
_AGAIN = "Open the whole link from your message again, or ask your practice to send it again."


@routes.get("/c/{token}")
async def consent_page(request: web.Request) -> web.Response:
    svc = services(request)
    now = svc.clock()
    try:
        claims = svc.signer.read_consent_link(request.match_info["token"])
    except AuthError:
        return refusal_page(request, "link_invalid", _AGAIN)
    doc = await svc.consents.store.document(claims.consent_id)
    if doc is None:
        return refusal_page(request, "link_invalid", _AGAIN)
    if doc.status == "revoked":
        return page(request, "message.html", status=410, heading="This consent was withdrawn",
                    message="This consent was withdrawn, so this link no longer works.",
                    action="If you want to give consent again, please ask your practice for a "
                           "new form.", when=None, when_label="", tone="info")
    if now >= claims.expires and doc.status != "complete":
        return page(request, "message.html", status=410, heading="This link has expired",
                    message=f"Consent links work for {svc.settings.consent_link_valid_days} days "
                            "after the practice sends them.",
                    action="Please ask your practice to send you a new consent link.",
                    when=None, when_label="", tone="problem")
    if doc.locked_until is not None and now < doc.locked_until:
        return refusal_page(request, "link_locked",
                            "Please wait and try again, or call your practice.",
                            doc.locked_until.isoformat(), "You can try again at")
    return page(request, "consent.html", data={"practice_name": svc.settings.practice_name})


@routes.get("/verify")
async def verify_page(request: web.Request) -> web.Response:
    return page(request, "verify.html", data={"max_bytes": MAX_VERIFY_BYTES})
