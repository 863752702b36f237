"""`telehealth consent verify`: offline, against the practice CA in the data directory."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from consent.pki import CA_DIR, PracticeCA
from consent.signing import ConsentSigner

from conftest import Running
from test_consent_signing import ADULT, Practice, sign_all


def verify_cli(data_dir: Path, pdf: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEHEALTH_")}
    return subprocess.run(
        [sys.executable, "-m", "telehealth.cli", "consent", "verify", str(pdf),
         "--data-dir", str(data_dir), *extra],
        capture_output=True, text=True, timeout=60, env=env, check=False)


async def test_verify_good_tampered_and_garbage(tmp_path: Path) -> None:
    data = tmp_path / "var"
    ca = PracticeCA(data / CA_DIR, practice_name="Riverside Counseling")
    _, signed = await sign_all(Practice(ca, ConsentSigner(ca)), ADULT)
    good = tmp_path / "consent.pdf"
    good.write_bytes(signed)

    result = verify_cli(data, good, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bottom_line"] == "good" and report["pades_level"] == "B-LTA"
    assert len(report["signatures"]) >= 3

    text = verify_cli(data, good)
    assert text.returncode == 0 and "bottom line: good" in text.stdout

    flipped = bytearray(signed)
    flipped[len(flipped) // 3] ^= 0x01
    bad = tmp_path / "tampered.pdf"
    bad.write_bytes(bytes(flipped))
    result = verify_cli(data, bad, "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["bottom_line"] != "good"

    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"not a pdf at all")
    result = verify_cli(data, garbage, "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["bottom_line"] == "invalid"

    other = PracticeCA(tmp_path / "other-ca", practice_name="Elsewhere")
    result = verify_cli(data, good, "--json", "--trust", str(other.directory / "ca-cert.pem"))
    assert result.returncode == 1
    assert json.loads(result.stdout)["bottom_line"] == "not trusted"

    missing = verify_cli(tmp_path / "empty", good)
    assert missing.returncode == 2 and "no trust root" in missing.stderr


async def cli(server: Running, *args: str) -> tuple[int, str, str]:
    """The command in a subprocess with the server's settings, while this event loop keeps
    serving the server."""
    settings = server.services.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEHEALTH_")}
    env["TELEHEALTH_SECRET_KEY"] = settings.secret_key.value
    env["TELEHEALTH_PUBLIC_URL"] = server.url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telehealth.cli", *args, "--data-dir", str(settings.data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_issue_sign_export_renew_from_the_command_line(server: Running,
                                                              tmp_path: Path) -> None:
    clinician, token = await server.clinician()
    created = await server.visit(clinician)

    code, out, err = await cli(server, "consent", "issue", created.visit.id, "--json")
    assert code == 0, err
    issued = json.loads(out)
    assert issued["status"] == "awaiting_clinician" and issued["created"] is True

    code, out, err = await cli(server, "sign", "--consent", issued["id"], "--api-token", token,
                               "--server", server.url, "--json")
    assert code == 0, err
    assert json.loads(out)["consent"]["status"] == "awaiting_patient"

    code, out, err = await cli(server, "sign", issued["consent_link"], "--dob", "1990-04-28",
                               "--name", "Alex Morgan")
    assert code == 2 and "identity_mismatch" in err
    code, out, err = await cli(server, "sign", issued["consent_link"], "--dob", "1990-04-27",
                               "--name", "Alex Morgan", "--json")
    assert code == 0, err
    assert json.loads(out)["consent"]["status"] == "complete"

    pdf = tmp_path / "signed.pdf"
    code, out, err = await cli(server, "consent", "export", issued["id"], "--out", str(pdf))
    assert code == 0, err
    doc = await server.services.consents.get(issued["id"])
    assert pdf.read_bytes() == doc.pdf
    code, out, err = await cli(server, "consent", "verify", str(pdf), "--json")
    assert code == 0 and json.loads(out)["bottom_line"] == "good", out

    cert = tmp_path / "certificate.pdf"
    code, out, err = await cli(server, "consent", "export", issued["id"], "--certificate",
                               "--out", str(cert))
    assert code == 0 and cert.read_bytes().startswith(b"%PDF"), err

    # Nothing nears expiry within a day; everything does within 100 years.
    code, out, err = await cli(server, "consent", "renew-archive", "--within-days", "1", "--json")
    assert code == 0 and json.loads(out)["renewed"] == [], err
    code, out, err = await cli(server, "consent", "renew-archive", "--within-days", "36500",
                               "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)["renewed"]] == [issued["id"]]
    renewed = await server.services.consents.get(issued["id"])
    assert renewed.pdf.startswith(doc.pdf) and len(renewed.pdf) > len(doc.pdf)
    report = await server.services.consents.verify(renewed.pdf)
    assert report.bottom_line == "good", report.to_dict()
    assert [s.kind for s in report.signatures].count("document timestamp") == 2

    code, out, err = await cli(server, "consent", "show", issued["id"], "--json")
    actions = [e["action"] for e in json.loads(out)["events"]]
    assert "consent.archive_renewed" in actions and "consent.exported" in actions
    code, out, err = await cli(server, "audit", "verify")
    assert code == 0 and "intact" in out, out
