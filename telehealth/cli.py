"""The `telehealth` command: serve, clinician, visit, join, sign, consent, note, audit.

Administrative commands (clinician, visit) work on the records store directly,
with the same settings as `serve` (`--data-dir`, `DATABASE_URL`, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from consent.errors import ConsentError
from notes import NotesError
from telehealth.auth import AuthError, hash_password, new_opaque_token
from telehealth.config import ConfigError, Settings, load_settings
from telehealth.consents import DEFAULT_TEMPLATE
from telehealth.db.engine import migrate
from telehealth.db.store import StoreError
from telehealth.services import Services
from telehealth.visits import VisitError

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
T = TypeVar("T")
NO_CLINICIAN = "no clinician has that email"


class CliError(Exception):
    """A command that cannot go on: printed as `error: ...`, exit code 2."""


def _need(found: T | None, missing: str) -> T:
    if found is None:
        raise CliError(missing)
    return found


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        host=getattr(args, "host", None), port=getattr(args, "port", None),
        data_dir=getattr(args, "data_dir", None), public_url=getattr(args, "public_url", None),
    )


async def _with_services(settings: Settings, work: Callable[[Services], Awaitable[int]]) -> int:
    from telehealth.app import build_services

    svc = build_services(settings)
    try:
        await migrate(svc.store.engine)
        return await work(svc)
    finally:
        await svc.store.engine.dispose()


def _write(path: str, data: bytes) -> Path:
    out = Path(path)
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}") from None
    return out


def _out(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


# ---- serve -----------------------------------------------------------------


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from telehealth.app import build_app
    from web.security import RedactingAccessLogger

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # its subsetting chatter
    app = build_app(settings)
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger,
                           access_log=logging.getLogger("telehealth.access"))
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    print(f"telehealth is running: open {settings.base_url}/ (data in {settings.data_dir})",
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
    return 0


# ---- clinicians ------------------------------------------------------------


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password again: "):
            raise SystemExit("The two passwords differ.")
        return first
    return sys.stdin.readline().rstrip("\n")


async def cmd_clinician_create(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password()
    if len(password) < 10:
        raise CliError("the password needs at least 10 characters")

    async def work(svc: Services) -> int:
        row = await svc.store.create_clinician(
            email=args.email, name=args.name, credentials=args.credentials or "",
            password_hash=hash_password(password), now=svc.clock())
        _out(args, {"clinician_id": row.id, "email": row.email},
             f"Clinician {row.email} created.")
        return 0

    return await _with_services(settings, work)


async def cmd_clinician_token(args: argparse.Namespace, settings: Settings) -> int:
    async def work(svc: Services) -> int:
        found = _need(await svc.store.clinician_by_email(args.email), NO_CLINICIAN)
        token, digest = new_opaque_token()
        await svc.store.add_api_token(
            token_hash=digest, clinician_id=found.id, label=args.label or "", now=svc.clock(),
            ttl=timedelta(days=svc.settings.api_token_ttl_days))
        _out(args, {"api_token": token}, token)
        return 0

    return await _with_services(settings, work)


# ---- visits ----------------------------------------------------------------


async def cmd_visit_create(args: argparse.Namespace, settings: Settings) -> int:
    from web.api import visit_request

    body: dict[str, Any] = {
        "patient_name": args.patient_name, "patient_dob": args.patient_dob,
        "scheduled_start": args.start or datetime.now(UTC).isoformat(timespec="minutes"),
        "visit_type": args.type, "patient_contact": args.contact or "",
    }
    if args.representative_name:
        body["legal_representative"] = {
            "name": args.representative_name,
            "relationship": args.representative_relationship or "",
            "authority": args.representative_authority or ""}

    async def work(svc: Services) -> int:
        found = _need(await svc.store.clinician_by_email(args.clinician), NO_CLINICIAN)
        created = await svc.create_visit(visit_request(body), found)
        data = {"visit_id": created.visit.id,
                "patient_link": created.link_for_role("patient"),
                "clinician_link": created.link_for_role("clinician")}
        _out(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))
        return 0

    return await _with_services(settings, work)


async def cmd_visit_list(args: argparse.Namespace, settings: Settings) -> int:
    from web.api import visit_json

    async def work(svc: Services) -> int:
        found = _need(await svc.store.clinician_by_email(args.clinician), NO_CLINICIAN)
        visits = [visit_json(v) for v in await svc.store.visits_for(found.id)]
        _out(args, {"visits": visits}, "\n".join(
            f"{v['id']}  {v['scheduled_start']}  {v['visit_type']:<13} {v['status']}"
            for v in visits) or "No visits.")
        return 0

    return await _with_services(settings, work)


async def cmd_visit_finish(args: argparse.Namespace, settings: Settings) -> int:
    async def work(svc: Services) -> int:
        visit = _need(await svc.store.visit(args.visit_id), "no such visit")
        await svc.finish_visit(visit, args.reason, actor="cli")
        _out(args, {"visit_id": visit.id, "status": args.reason}, f"Visit {args.reason}.")
        return 0

    return await _with_services(settings, work)


async def cmd_visit_add(args: argparse.Namespace, settings: Settings) -> int:
    async def work(svc: Services) -> int:
        visit = _need(await svc.store.visit(args.visit_id), "no such visit")
        colleague = None
        if args.email:
            colleague = _need(await svc.store.clinician_by_email(args.email), NO_CLINICIAN)
        person, link = await svc.add_participant(visit, role=args.role, name=args.name or "",
                                                 clinician=colleague)
        _out(args, {"participant_id": person.id, "role": person.role, "link": link},
             f"{person.role}: {link}")
        return 0

    return await _with_services(settings, work)


async def cmd_consent_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Verify a signed PDF offline against the practice CA and the outside signer roots
    (`signer_trust_roots`), or only `--trust`; 0 when good."""
    from consent.pki import CA_DIR, load_trust_root, load_trust_roots
    from consent.verify import verify

    root_file = Path(args.trust) if args.trust else settings.data_dir / CA_DIR / "ca-cert.pem"
    if not root_file.exists():
        raise CliError(f"no trust root at {root_file} (the practice CA is made on first "
                       "signing; or give --trust CERT.pem)")
    try:
        pdf = Path(args.file).read_bytes()  # noqa: ASYNC240 (a CLI: nothing else runs)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    roots = [load_trust_root(root_file)]
    if not args.trust:  # the practice CA and the outside CAs clinicians may sign with
        roots += load_trust_roots(settings.signer_trust_roots)
    report = await verify(pdf, roots)
    lines = [f"bottom line: {report.bottom_line}" + (f" ({report.reason})" if report.reason
                                                      else "")]
    if report.pades_level:
        lines.append(f"PAdES level: {report.pades_level}")
    for sig in report.to_dict()["signatures"]:
        lines.append("  - " + ", ".join(f"{k}: {v}" for k, v in sig.items() if v is not None))
    _out(args, report.to_dict(), "\n".join(lines))
    return 0 if report.bottom_line == "good" else 1


CLI = "cli"


def _cli_requester() -> Any:
    from telehealth.consents import Requester

    return Requester(CLI, "", "telehealth-cli")


async def cmd_consent_issue(args: argparse.Namespace, settings: Settings) -> int:
    """Issue a consent for a visit's patient (its clinician signs next)."""
    async def work(svc: Services) -> int:
        visit = _need(await svc.store.visit(args.visit_id), "no such visit")
        owner = _need(await svc.store.clinician(visit.clinician_id), NO_CLINICIAN)
        doc, created = await svc.consents.issue(visit, owner, _cli_requester(), args.template)
        summary = svc.consents.summary(doc, with_link=True)
        _out(args, {**summary, "created": created},
             f"consent_id: {doc.id}\nstatus: {doc.status}\n"
             f"consent_link: {summary.get('consent_link', '')}")
        return 0

    return await _with_services(settings, work)


async def cmd_consent_show(args: argparse.Namespace, settings: Settings) -> int:
    async def work(svc: Services) -> int:
        doc = await svc.consents.get(args.consent_id)
        summary = svc.consents.summary(doc, with_link=True)
        events = [{"at": e.at.isoformat(), "action": e.action, "actor": e.actor}
                  for e in await svc.store.audit_for(f"consent:{doc.id}")]
        text = [f"{doc.id}  {doc.template_id} v{doc.template_version}  {doc.status}",
                f"sha256: {doc.sha256}"]
        text += [f"  {f['role']:<21} {'signed ' + f['signed_at'] if f['signed_at'] else 'unsigned'}"
                 for f in summary["fields"]]
        text += [f"  {e['at']}  {e['action']}" for e in events]
        _out(args, {"consent": summary, "events": events}, "\n".join(text))
        return 0

    return await _with_services(settings, work)


async def cmd_consent_export(args: argparse.Namespace, settings: Settings) -> int:
    """Write a consent's signed PDF (or its certificate of completion) to a file."""
    async def work(svc: Services) -> int:
        doc = await svc.consents.get(args.consent_id)
        data = await svc.consents.certificate(doc) if args.certificate else doc.pdf
        out = _write(args.out, data)
        await svc.consents.viewed(doc, _cli_requester(),
                                  "certificate_exported" if args.certificate else "exported")
        _out(args, {"consent_id": doc.id, "out": str(out), "bytes": len(data),
                    "sha256": doc.sha256 if not args.certificate else None},
             f"Wrote {len(data)} bytes to {out}.")
        return 0

    return await _with_services(settings, work)


async def cmd_consent_renew(args: argparse.Namespace, settings: Settings) -> int:
    """Add an archive timestamp to every signed consent whose last one nears expiry."""
    days = args.within_days if args.within_days is not None else settings.archive_renew_days

    async def work(svc: Services) -> int:
        done = await svc.consents.renew_archives(margin=timedelta(days=days),
                                                 requester=_cli_requester())
        _out(args, {"renewed": done, "within_days": days},
             f"Renewed {len(done)} consent(s) whose archive timestamp expires within "
             f"{days} days." + "".join(f"\n  {d['id']}" for d in done))
        return 0

    return await _with_services(settings, work)


def _p12_key(args: argparse.Namespace) -> Any:
    """The clinician's own key and certificate from `--p12`, the password from the
    environment variable `--p12-password-env` names (never from a flag's value)."""
    from telehealth.sign_cli import Pkcs12Key

    password = None
    if args.p12_password_env:
        value = os.environ.get(args.p12_password_env)
        if value is None:
            raise CliError(f"--p12-password-env: {args.p12_password_env} is not set")
        password = value.encode()
    return Pkcs12Key.load(args.p12, password, args.crl or ())


async def cmd_sign(args: argparse.Namespace, settings: Settings) -> int:
    """Sign a consent over HTTP as the browser does, with a key made here (or, as the
    clinician, with their own from a PKCS#12: `--p12`)."""
    from telehealth.sign_cli import SignError, sign_as_clinician, sign_link

    try:
        if (args.p12 or args.crl or args.p12_password_env) and not args.consent:
            raise CliError("--p12, --p12-password-env and --crl are for the clinician "
                           "(--consent ID)")
        if args.crl and not args.p12:
            raise CliError("--crl comes with --p12")
        if args.consent:
            token = args.api_token or os.environ.get("TELEHEALTH_API_TOKEN", "")
            if not token:
                raise CliError("signing as the clinician needs --api-token (or "
                               "TELEHEALTH_API_TOKEN)")
            p12 = _p12_key(args) if args.p12 else None
            result = await sign_as_clinician(args.server or settings.base_url, args.consent,
                                             api_token=token, typed_name=args.name, p12=p12)
        elif args.link:
            result = await sign_link(args.link, dob=args.dob, name=args.name,
                                     typed_name=args.typed_name)
        else:
            raise CliError("give a consent or visit LINK, or --consent ID with --api-token")
    except SignError as exc:
        raise CliError(f"{exc.code}: {exc.message}") from None
    consent = result.get("consent", {})
    _out(args, result, f"Signed. The consent is {consent.get('status', 'on file')}."
         if consent else "A telehealth consent is already on file.")
    return 0


async def _note_of(svc: Services, visit_id: str) -> Any:
    visit = _need(await svc.store.visit(visit_id), "no such visit")
    author = _need(await svc.store.clinician(visit.clinician_id), NO_CLINICIAN)
    return await svc.notes.draft_for(visit, author)


async def cmd_note_show(args: argparse.Namespace, settings: Settings) -> int:
    """The visit's progress note: header, sections, signatures, addenda."""
    async def work(svc: Services) -> int:
        note = await _note_of(svc, args.visit_id)
        view = await svc.notes.view(note, _cli_requester())
        h = view["header"]
        lines = [f"note {view['id']}  {view['format']['title']}  {view['status']}",
                 f"{h['date']}  {h['start_text']}-{h['stop_text']}  {h['minutes']} min  "
                 f"{h['modality_text']}",
                 f"code {h['code'] or 'not billable'}  modifier {h['modifier'] or '-'}  "
                 f"POS {h['place_of_service'] or '-'}  ({h['code_reason']})",
                 f"consent: {h['consent']['id'] if h['consent'] else 'not on file'}"]
        lines += [f"[{s['title']}]\n{view['sections'].get(s['key'], '')}"
                  for s in view["format"]["sections"]]
        lines += [f"addendum {a['at']} by {a['author_name']}: {a['reason']}"
                  for a in view["addenda"]]
        _out(args, view, "\n".join(lines))
        return 0

    return await _with_services(settings, work)


async def cmd_note_export(args: argparse.Namespace, settings: Settings) -> int:
    """The signed note as PDF, or the visit's FHIR R4 bundle, to a file."""
    async def work(svc: Services) -> int:
        note = await _note_of(svc, args.visit_id)
        if args.format == "pdf":
            data = svc.notes.signed_pdf(note)
        else:
            data = json.dumps(await svc.notes.fhir_bundle(note), indent=2).encode()
        out = _write(args.out, data)
        await svc.notes.exported(note, _cli_requester(), args.format)
        _out(args, {"note_id": note.id, "format": args.format, "out": str(out),
                    "bytes": len(data)}, f"Wrote {len(data)} bytes to {out}.")
        return 0

    return await _with_services(settings, work)


async def cmd_clinician_supervisor(args: argparse.Namespace, settings: Settings) -> int:
    """Set (or with --none clear) whose co-signature a clinician's notes need."""
    async def work(svc: Services) -> int:
        found = _need(await svc.store.clinician_by_email(args.email), NO_CLINICIAN)
        supervisor = None
        if args.supervisor:
            supervisor = _need(await svc.store.clinician_by_email(args.supervisor),
                               "no clinician has the supervisor's email")
            if supervisor.id == found.id:
                raise CliError("a clinician cannot supervise themself")
        await svc.store.set_supervisor(found.id, supervisor.id if supervisor else None)
        _out(args, {"clinician": found.email, "supervisor": args.supervisor},
             f"{found.email}: " + (f"notes co-signed by {args.supervisor}" if supervisor
                                   else "no co-signature needed"))
        return 0

    return await _with_services(settings, work)


async def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check the audit log's hash chain; 0 when every entry is intact and in place."""
    from telehealth.audit import verify_chain

    async def work(svc: Services) -> int:
        report = verify_chain(await svc.store.audit_entries())
        text = (f"audit log intact: {report.entries} entries" if report.ok else
                f"audit log BROKEN at entry {report.first_bad_seq}: {report.reason}")
        _out(args, {"ok": report.ok, "entries": report.entries,
                    "first_bad_seq": report.first_bad_seq, "reason": report.reason}, text)
        return 0 if report.ok else 1

    return await _with_services(settings, work)


async def cmd_join(args: argparse.Namespace, settings: Settings) -> int:
    from telehealth.media.join_cli import run_join

    return await run_join(args)


# ---- parser ----------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="data directory (default ./var)")
    p.add_argument("--public-url", help="base URL put into links")
    p.add_argument("--json", action="store_true", help="print JSON")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="telehealth", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    _common(serve)
    serve.set_defaults(run=cmd_serve)

    clin = sub.add_parser("clinician", help="clinician accounts").add_subparsers(
        dest="action", required=True)
    create = clin.add_parser("create", help="create a clinician (password on stdin or prompt)")
    create.add_argument("email")
    create.add_argument("--name", required=True)
    create.add_argument("--credentials", help='e.g. "LCSW"')
    _common(create)
    create.set_defaults(run=cmd_clinician_create)
    tok = clin.add_parser("token", help="mint an API token for scripts and `telehealth join`")
    tok.add_argument("email")
    tok.add_argument("--label")
    _common(tok)
    tok.set_defaults(run=cmd_clinician_token)

    sup = clin.add_parser("supervisor", help="whose co-signature a clinician's notes need")
    sup.add_argument("email")
    sup.add_argument("--supervisor", help="the supervisor's email (omit to clear)")
    _common(sup)
    sup.set_defaults(run=cmd_clinician_supervisor)

    visit = sub.add_parser("visit", help="video visits").add_subparsers(
        dest="action", required=True)
    vc = visit.add_parser("create", help="create a visit and print its links")
    vc.add_argument("--clinician", required=True, help="the clinician's email")
    vc.add_argument("--patient-name", required=True)
    vc.add_argument("--patient-dob", required=True, help="YYYY-MM-DD")
    vc.add_argument("--contact", help="patient's email or phone")
    vc.add_argument("--start", help="scheduled start, ISO 8601 with zone (default now)")
    vc.add_argument("--type", default="psychotherapy",
                    choices=["intake", "psychotherapy", "family", "crisis"])
    vc.add_argument("--representative-name")
    vc.add_argument("--representative-relationship")
    vc.add_argument("--representative-authority", help='e.g. "parent of a minor"')
    _common(vc)
    vc.set_defaults(run=cmd_visit_create)
    vl = visit.add_parser("list", help="a clinician's visits")
    vl.add_argument("--clinician", required=True)
    _common(vl)
    vl.set_defaults(run=cmd_visit_list)
    for name, reason in (("cancel", "cancelled"), ("end", "ended")):
        vf = visit.add_parser(name, help=f"{name} a visit (its links stop working)")
        vf.add_argument("visit_id")
        _common(vf)
        vf.set_defaults(run=cmd_visit_finish, reason=reason)
    va = visit.add_parser("add-participant", help="add a guest or co-clinician and print the link")
    va.add_argument("visit_id")
    va.add_argument("--role", required=True,
                    choices=["legal_representative", "interpreter", "family_member",
                             "co_clinician"])
    va.add_argument("--name")
    va.add_argument("--email", help="a co-clinician's account email")
    _common(va)
    va.set_defaults(run=cmd_visit_add)

    consent = sub.add_parser("consent", help="signed consent documents").add_subparsers(
        dest="action", required=True)
    cv = consent.add_parser("verify", help="verify a signed PDF offline; exit 0 when good")
    cv.add_argument("file")
    cv.add_argument("--trust", help="a PEM trust root instead of the practice CA and the "
                                    "signer_trust_roots")
    _common(cv)
    cv.set_defaults(run=cmd_consent_verify)

    ci = consent.add_parser("issue", help="issue a consent for a visit's patient")
    ci.add_argument("visit_id")
    ci.add_argument("--template", default=DEFAULT_TEMPLATE)
    _common(ci)
    ci.set_defaults(run=cmd_consent_issue)
    cs = consent.add_parser("show", help="a consent's status, signers and audit events")
    cs.add_argument("consent_id")
    _common(cs)
    cs.set_defaults(run=cmd_consent_show)
    ce = consent.add_parser("export", help="write the signed PDF to a file")
    ce.add_argument("consent_id")
    ce.add_argument("--out", required=True)
    ce.add_argument("--certificate", action="store_true",
                    help="the certificate of completion instead of the consent")
    _common(ce)
    ce.set_defaults(run=cmd_consent_export)
    cr = consent.add_parser("renew-archive",
                            help="renew archive timestamps that near their TSA's expiry")
    cr.add_argument("--within-days", type=int,
                    help="renew those expiring within this many days (default 90)")
    _common(cr)
    cr.set_defaults(run=cmd_consent_renew)

    sign = sub.add_parser("sign", help="sign a consent as the browser does")
    sign.add_argument("link", nargs="?", help="a consent link /c/... or a visit link /v/...")
    sign.add_argument("--dob", help="the patient's date of birth, YYYY-MM-DD")
    sign.add_argument("--name", help="your full name (a representative's own name)")
    sign.add_argument("--typed-name", help="the name typed as the signature (default --name)")
    sign.add_argument("--consent", help="sign this consent id as its clinician")
    sign.add_argument("--api-token", help="the clinician's API token (or TELEHEALTH_API_TOKEN)")
    sign.add_argument("--server", help="the service's URL for --consent (default public URL)")
    sign.add_argument("--p12", metavar="FILE",
                      help="with --consent: sign with your own key and certificate from an "
                           "outside CA (PKCS#12); the key stays here")
    sign.add_argument("--p12-password-env", metavar="VAR",
                      help="the environment variable holding the PKCS#12's password")
    sign.add_argument("--crl", metavar="FILE", action="append",
                      help="a CRL (DER or PEM) of a CA on your certificate's chain; repeat "
                           "for each CA")
    _common(sign)
    sign.set_defaults(run=cmd_sign)

    note = sub.add_parser("note", help="progress notes").add_subparsers(
        dest="action", required=True)
    ns = note.add_parser("show", help="a visit's progress note (drafted if it has none)")
    ns.add_argument("visit_id")
    _common(ns)
    ns.set_defaults(run=cmd_note_show)
    ne = note.add_parser("export", help="the signed note as PDF, or a FHIR R4 bundle")
    ne.add_argument("visit_id")
    ne.add_argument("--format", choices=["pdf", "fhir"], required=True)
    ne.add_argument("--out", required=True)
    _common(ne)
    ne.set_defaults(run=cmd_note_export)

    audit = sub.add_parser("audit", help="the hash-chained audit log").add_subparsers(
        dest="action", required=True)
    av = audit.add_parser("verify", help="check the chain; exit 0 when intact")
    _common(av)
    av.set_defaults(run=cmd_audit_verify)

    join = sub.add_parser("join", help="join a visit as a headless participant")
    from telehealth.media.join_cli import add_join_arguments

    add_join_arguments(join)
    join.set_defaults(run=cmd_join)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = _settings(args)
        command: Command = args.run
        return asyncio.run(command(args, settings))
    except (CliError, ConfigError, StoreError, VisitError, AuthError, ConsentError,
            NotesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
