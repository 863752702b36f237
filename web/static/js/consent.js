// The consent link page (/c/<link>): identity check (date of birth; a representative
// also types their own name when the API asks for it) -> the signing steps of
// consentsign.js -> a confirmation with the signed copy, and a way to withdraw.
// The link stays in the path: it is sent in a JSON body, never in a query string.
import { explain, explainText, h, request, runSigning, SIGNER_API } from "/static/js/consentsign.js";

const $ = (id) => document.getElementById(id);
const token = decodeURIComponent(location.pathname.split("/c/")[1] || "");
const FINAL = {
  link_invalid: "This link does not work",
  link_expired: "This link has expired",
  consent_revoked: "This consent was withdrawn",
  no_webcrypto: "This browser can't sign the form",
  link_not_yet_valid: "This link is not open yet",
  visit_cancelled: "This link no longer works",
  participant_removed: "This link was withdrawn",
};
let askName = false;

function only(id) {
  for (const name of ["step-identity", "consent-flow", "withdraw", "final"]) $(name).hidden = name !== id;
}

function final(title, message, action = "", tone = "problem") {
  window.scrollTo(0, 0);
  $("final-title").textContent = title;
  $("final-message").textContent = message;
  $("final-action").textContent = action;
  $("final").className = `card message ${tone}`;
  $("final").setAttribute("role", tone === "problem" ? "alert" : "status");
  only("final");
  $("final-title").focus();
}

function finalFor(err) {
  const { message, action } = explain(err);
  final(FINAL[err.code] || "This form can't be opened", message, action,
    err.code === "consent_revoked" ? "info" : "problem");
}

// ---- identity -------------------------------------------------------------------------

/** "YYYY-MM-DD", "" when something is missing, null for a day that does not exist. */
function dobValue() {
  const month = $("dob-month").value, day = $("dob-day").value.trim(), year = $("dob-year").value.trim();
  if (!month || !/^\d{1,2}$/.test(day) || !/^\d{4}$/.test(year)) return "";
  const d = new Date(Date.UTC(Number(year), Number(month) - 1, Number(day)));
  if (d.getUTCMonth() !== Number(month) - 1 || d.getUTCDate() !== Number(day)) return null;
  return `${year}-${month.padStart(2, "0")}-${day.padStart(2, "0")}`;
}

function showError(text) {
  const error = $("identity-error");
  error.textContent = text;
  error.hidden = !text;
}

function revealName() {
  askName = true;
  $("name-group").hidden = false;
  $("identity-why").textContent = "To keep it private, please confirm the patient's date of birth and your own full name.";
}

async function openLink(event) {
  event.preventDefault();
  showError("");
  const dob = dobValue();
  if (dob === null) { showError("That date doesn't exist. Please check the day and the month."); $("dob-day").focus(); return; }
  if (!dob) { showError("Please enter the month, day and year of birth."); $("dob-month").focus(); return; }
  const body = { token, dob };
  if (askName) {
    body.name = $("own-name").value.trim().replace(/\s+/g, " ");
    if (!body.name) { showError("Please type your own full name."); $("own-name").focus(); return; }
  }
  $("identity-submit").disabled = true;
  try {
    await request("POST", `${SIGNER_API}/open`, { body });
    sign();
  } catch (err) {
    if (FINAL[err.code]) { finalFor(err); return; }
    if (err.code === "name_required") {
      const first = !askName;
      revealName();
      if (!first) showError("Please type your own full name.");
      $("own-name").focus();
      return;
    }
    showError(explainText(err));
  } finally {
    $("identity-submit").disabled = false;
  }
}

// ---- signing -----------------------------------------------------------------------------

async function sign() {
  only("consent-flow");
  let result;
  try {
    result = await runSigning($("consent-flow"));
  } catch (err) {
    if (err.code === "no_consent_session") {
      only("step-identity");
      showError(explainText(err));
      $("identity-title").focus();
      return;
    }
    finalFor(err);
    return;
  }
  offerWithdrawal(result);
}

// ---- withdrawing ---------------------------------------------------------------------------

function offerWithdrawal({ card }) {
  const open = h("button", { type: "button", class: "quiet danger-text", "aria-controls": "withdraw", "aria-expanded": "false" },
    "I want to withdraw this consent");
  open.addEventListener("click", () => {
    $("withdraw").hidden = false;
    open.setAttribute("aria-expanded", "true");
    $("withdraw-title").focus();
    $("withdraw").scrollIntoView({ block: "start" });
  });
  card.append(h("div", { class: "withdraw-offer" },
    h("p", { class: "small muted", text: "You can withdraw your consent at any time." }), open));
  $("withdraw-no").onclick = () => {
    $("withdraw").hidden = true;
    open.setAttribute("aria-expanded", "false");
    open.focus();
  };
  $("withdraw-form").onsubmit = async (event) => {
    event.preventDefault();
    const error = $("withdraw-error");
    error.hidden = true;
    $("withdraw-yes").disabled = true;
    try {
      const reason = $("withdraw-reason").value.trim();
      await request("POST", `${SIGNER_API}/revoke`, { body: reason ? { reason } : {} });
      final("Your consent has been withdrawn",
        "Your practice has been told. It does not change anything that happened before.",
        "Please contact your practice to talk about your next visit.", "info");
    } catch (err) {
      if (err.code === "consent_revoked") {
        final("This consent was already withdrawn", "Your practice has been told.", "", "info");
        return;
      }
      if (err.code === "no_consent_session") {
        only("step-identity");
        showError("For your privacy, the form closed after a while. Please confirm the date of birth again, then withdraw.");
        $("identity-title").focus();
        return;
      }
      error.textContent = explainText(err);
      error.hidden = false;
    } finally {
      $("withdraw-yes").disabled = false;
    }
  };
}

$("identity-form").addEventListener("submit", openLink);
only("step-identity");
