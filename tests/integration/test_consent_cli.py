"""`telehealth consent verify`: offline, against the practice CA in the data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from consent.pki import CA_DIR, PracticeCA
from consent.signing import ConsentSigner

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
