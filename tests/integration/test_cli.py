"""The `telehealth` command as an administrator runs it (real subprocesses, real SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jwt

from telehealth.config import Settings, with_generated_secrets


def run(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEHEALTH_")}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "telehealth.cli", *args, "--data-dir", str(data_dir)],
        input=stdin, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_clinician_then_visit_then_cancel(tmp_path: Path) -> None:
    data = tmp_path / "var"
    made = run(data, "clinician", "create", "dr.rivera@example.org", "--name", "Dana Rivera",
               "--credentials", "LCSW", "--json", stdin="a long enough password\n")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["email"] == "dr.rivera@example.org"

    again = run(data, "clinician", "create", "dr.rivera@example.org", "--name", "X",
                stdin="another long password\n")
    assert again.returncode == 2 and "already exists" in again.stderr

    short = run(data, "clinician", "create", "b@example.org", "--name", "B", stdin="short\n")
    assert short.returncode == 2 and "10 characters" in short.stderr

    created = run(data, "visit", "create", "--clinician", "dr.rivera@example.org",
                  "--patient-name", "Alex Morgan", "--patient-dob", "1990-04-27",
                  "--start", "2026-12-01T15:00:00+00:00", "--type", "intake", "--json")
    assert created.returncode == 0, created.stderr
    out = json.loads(created.stdout)
    assert set(out) == {"visit_id", "patient_link", "clinician_link"}
    assert out["patient_link"].startswith("http://127.0.0.1:8080/v/")

    # The link is signed with the generated secret and names the visit and the role.
    secret = with_generated_secrets(Settings(data_dir=data)).secret_key.value
    claims = jwt.decode(out["patient_link"].rsplit("/", 1)[1], secret, algorithms=["HS256"],
                        options={"verify_exp": False, "verify_nbf": False})
    assert claims["v"] == out["visit_id"] and claims["r"] == "patient"
    assert claims["exp"] - claims["nbf"] == 4 * 3600

    no_rep = run(data, "visit", "add-participant", out["visit_id"], "--role",
                 "legal_representative")
    assert no_rep.returncode == 2 and "no legal representative" in no_rep.stderr

    added = run(data, "visit", "add-participant", out["visit_id"], "--role", "interpreter",
                "--name", "Ana Ruiz", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["role"] == "interpreter"

    listed = run(data, "visit", "list", "--clinician", "dr.rivera@example.org", "--json")
    assert [v["status"] for v in json.loads(listed.stdout)["visits"]] == ["scheduled"]

    assert run(data, "visit", "cancel", out["visit_id"]).returncode == 0
    listed = run(data, "visit", "list", "--clinician", "dr.rivera@example.org", "--json")
    assert [v["status"] for v in json.loads(listed.stdout)["visits"]] == ["cancelled"]
    again = run(data, "visit", "cancel", out["visit_id"])
    assert again.returncode == 2 and "cannot be cancelled" in again.stderr

    token = run(data, "clinician", "token", "dr.rivera@example.org", "--json")
    assert len(json.loads(token.stdout)["api_token"]) >= 40


def test_audit_verify_sees_the_visit_and_a_break(tmp_path: Path) -> None:
    import sqlite3

    data = tmp_path / "var"
    assert run(data, "clinician", "create", "a@example.org", "--name", "A",
               stdin="a long enough password\n").returncode == 0
    made = run(data, "visit", "create", "--clinician", "a@example.org", "--patient-name", "P",
               "--patient-dob", "1990-04-27", "--json")
    visit_id = json.loads(made.stdout)["visit_id"]
    assert run(data, "visit", "end", visit_id).returncode == 0
    checked = run(data, "audit", "verify", "--json")
    assert checked.returncode == 0, checked.stderr
    # visit created, visit ended, and the note drafted when it ended
    assert json.loads(checked.stdout) == {"ok": True, "entries": 3, "first_bad_seq": None,
                                          "reason": ""}
    with sqlite3.connect(data / "telehealth.db") as db:
        db.execute("UPDATE audit_log SET actor = 'someone' WHERE seq = 1")
    broken = run(data, "audit", "verify")
    assert broken.returncode == 1 and "BROKEN at entry 1" in broken.stdout


def test_note_of_an_ended_visit_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "var"
    for email, name in (("dr.rivera@example.org", "Dana Rivera"),
                        ("sup@example.org", "Sam Supervisor")):
        assert run(data, "clinician", "create", email, "--name", name,
                   stdin="a long enough password\n").returncode == 0
    made = run(data, "clinician", "supervisor", "dr.rivera@example.org", "--supervisor",
               "sup@example.org", "--json")
    assert made.returncode == 0, made.stderr
    assert run(data, "clinician", "supervisor", "sup@example.org", "--supervisor",
               "sup@example.org").returncode == 2
    created = json.loads(run(data, "visit", "create", "--clinician", "dr.rivera@example.org",
                             "--patient-name", "Alex Morgan", "--patient-dob", "1990-04-27",
                             "--json").stdout)
    early = run(data, "note", "show", created["visit_id"])
    assert early.returncode == 2 and "has not taken place" in early.stderr
    assert run(data, "visit", "end", created["visit_id"]).returncode == 0

    shown = run(data, "note", "show", created["visit_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    note = json.loads(shown.stdout)
    assert note["status"] == "draft" and note["header"]["code"] is None
    assert note["header"]["patient_present"] is False

    pdf = run(data, "note", "export", created["visit_id"], "--format", "pdf",
              "--out", str(tmp_path / "n.pdf"))
    assert pdf.returncode == 2 and "signed" in pdf.stderr
    out = tmp_path / "bundle.json"
    fhir = run(data, "note", "export", created["visit_id"], "--format", "fhir", "--out", str(out))
    assert fhir.returncode == 0, fhir.stderr
    bundle = json.loads(out.read_text())
    assert bundle["resourceType"] == "Bundle"
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"Patient", "Encounter", "DocumentReference"} <= kinds
