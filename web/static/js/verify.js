// The /verify page: a signed consent PDF goes, as raw bytes, to POST /api/v1/consent/verify;
// the report (consent.verify.Report.to_dict()) comes back and is shown: the bottom line
// first and big, then every signature and document timestamp with what was checked.
import { h, localTime } from "/static/js/consentsign.js";

const $ = (id) => document.getElementById(id);
const node = document.getElementById("page-data");
const MAX_BYTES = (node && JSON.parse(node.textContent).max_bytes) || 20 * 1024 * 1024;

const VERDICT = {
  good: { tone: "ok", mark: "✓", word: "Valid",
    title: "This form is intact and every signature checks out",
    text: "Nothing was changed after it was signed, and each signature was made with a certificate from this practice and timestamped." },
  "not trusted": { tone: "warn", mark: "!", word: "Not verified",
    title: "The signatures are intact, but they can't be traced to this practice",
    text: "The file was not changed, but at least one signature could not be checked against this practice's certificate authority." },
  altered: { tone: "bad", mark: "✗", word: "Altered",
    title: "This file was changed after it was signed",
    text: "Do not rely on this copy. Ask the practice for the original signed form." },
  invalid: { tone: "bad", mark: "✗", word: "Invalid",
    title: "A signature in this file is not valid",
    text: "Do not rely on this copy. Ask the practice for the original signed form." },
  "no signatures": { tone: "warn", mark: "!", word: "No signatures",
    title: "This PDF carries no signatures",
    text: "It may be an unsigned copy. A signed consent form from this practice carries the signatures inside the file." },
};
const ROLES = { clinician: "Clinician", patient: "Patient", legal_representative: "Legal representative" };
const COVERAGE = {
  "entire file": "The whole file",
  "entire revision": "The file as it was then (later signatures were added after it)",
  partial: "Only part of the file",
};
const CHANGES = {
  none: "None", "lta updates": "Only long-term validation data", "form filling": "Later signatures (form filling)",
  annotations: "Annotations", other: "Other changes",
};
const LEVELS = {
  "B-LTA": "B-LTA (long-term archival: it can still be checked in years)",
  "B-LT": "B-LT (long-term: everything needed to check it is inside)",
  "B-T": "B-T (timestamped)", "B-B": "B-B (basic)",
};

const yesNo = (value, no = "No") => value === null || value === undefined ? h("span", { class: "muted", text: "—" })
  : value ? h("span", { class: "yes", text: "Yes ✓" }) : h("span", { class: "no", text: `${no} ✗` });

function fact(label, value) {
  return [h("dt", { text: label }), h("dd", {}, value)];
}

function signatureCard(s, index) {
  const stamp = s.kind !== "signature";
  const who = stamp ? "Archive timestamp"
    : `${s.signer_name || "Unknown signer"}${s.role ? ` — ${ROLES[s.role] || s.role}` : ""}`;
  const ok = s.intact && s.valid && s.trusted && s.docmdp_ok !== false && (stamp || s.timestamped);
  const facts = [
    ...fact(stamp ? "Time" : "Signed at", s.signed_at
      ? h("time", { datetime: s.signed_at, text: localTime(s.signed_at) }) : h("span", { class: "muted", text: "No timestamp" })),
    ...(stamp ? [] : fact("Kind", s.certification ? "Certifying signature (the first one)" : "Approval signature")),
    ...fact("Intact", yesNo(s.intact)),
    ...fact("Signature valid", yesNo(s.valid)),
    ...fact("Trusted", yesNo(s.trusted)),
    ...(stamp ? [] : fact("Timestamped", yesNo(s.timestamped))),
    ...fact("Covers", COVERAGE[s.coverage] || s.coverage || "—"),
    ...fact("Changed after it", CHANGES[s.modification_level] || s.modification_level || "—"),
    ...fact("Changes allowed", yesNo(s.docmdp_ok, "Not allowed")),
  ];
  if (s.problem) facts.push(...fact("Problem", h("span", { class: "no", text: s.problem })));
  return h("article", { class: `sig-card ${ok ? "ok" : "bad"}`, "aria-labelledby": `sig-${index}` },
    h("h3", { id: `sig-${index}` }, h("span", { class: "sig-mark", "aria-hidden": "true", text: ok ? "✓" : "✗" }), ` ${index + 1}. ${who}`),
    h("p", { class: "sr-only", text: ok ? "This one checks out." : "This one has a problem." }),
    h("dl", { class: "report-facts" }, facts));
}

function showReport(report, fileName) {
  const v = VERDICT[report.bottom_line] || VERDICT.invalid;
  const unreadable = report.bottom_line === "invalid" && !report.signatures.length;
  const signatures = report.signatures.filter((s) => s.kind === "signature");
  const verdict = h("section", { class: `card verdict ${v.tone}`, "data-bottom-line": report.bottom_line, "aria-labelledby": "verdict-title" },
    h("p", { class: "verdict-word" }, h("span", { class: "verdict-mark", "aria-hidden": "true", text: v.mark }), ` ${v.word}`),
    h("h2", { id: "verdict-title", text: unreadable ? "This file can't be read as a signed PDF" : v.title }),
    h("p", { text: unreadable ? "Check that you chose the signed consent form (a PDF file)." : v.text }),
    h("dl", { class: "report-facts" },
      fact("File", fileName),
      fact("Bottom line", h("strong", { class: "bottom-line", text: report.bottom_line })),
      report.reason ? fact("Why", report.reason) : [],
      fact("Signatures", String(signatures.length)),
      fact("PAdES level", report.pades_level ? (LEVELS[report.pades_level] || report.pades_level) : "None reached")));
  const list = report.signatures.length
    ? h("section", { class: "card", "aria-labelledby": "sigs-title" },
      h("h2", { id: "sigs-title", text: "What was checked" }),
      report.signatures.map(signatureCard))
    : null;
  $("verify-result").replaceChildren(verdict, list || "");
  $("verify-status").textContent = `Result: ${v.word}. ${unreadable ? "This file can't be read as a signed PDF" : v.title}.`;
  $("verify-result").focus();
}

async function check(event) {
  event.preventDefault();
  const error = $("verify-error");
  const file = $("verify-file").files[0];
  error.hidden = true;
  if (!file) { error.textContent = "Please choose the PDF file first."; error.hidden = false; $("verify-file").focus(); return; }
  if (file.size > MAX_BYTES) { error.textContent = "This file is larger than 20 MB, so it can't be a consent form from this practice."; error.hidden = false; return; }
  $("verify-submit").disabled = true;
  $("verify-status").textContent = "Checking the file…";
  $("verify-result").replaceChildren(h("p", { class: "muted center-text", text: "Checking the file… this takes a few seconds." }));
  try {
    let resp;
    try {
      resp = await fetch("/api/v1/consent/verify", {
        method: "POST", headers: { "Content-Type": "application/pdf", Accept: "application/json" },
        body: file, credentials: "same-origin", cache: "no-store",
      });
    } catch {
      throw new Error("We couldn't reach the service. Check your internet connection and try again.");
    }
    const answer = await resp.json().catch(() => null);
    if (!resp.ok) {
      const e = answer && answer.error;
      throw new Error(resp.status === 413 ? "This file is too large to check (the limit is 20 MB)."
        : e ? `${e.message} ${e.action || ""}`.trim() : `The service answered ${resp.status}. Please try again.`);
    }
    showReport(answer, file.name);
  } catch (err) {
    $("verify-result").replaceChildren();
    $("verify-status").textContent = "";
    error.textContent = err.message;
    error.hidden = false;
  } finally {
    $("verify-submit").disabled = false;
  }
}

function setUpDrop() {
  const zone = $("verify-form");
  const input = $("verify-file");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    if (e.dataTransfer && e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      zone.requestSubmit();
    }
  });
  input.addEventListener("change", () => { $("verify-error").hidden = true; });
}

$("verify-form").addEventListener("submit", check);
setUpDrop();
