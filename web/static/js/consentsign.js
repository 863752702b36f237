// Signing a consent form in the browser, for the consent page (/c/<link>), the visit
// page's consent step (/v/<link>) and the clinician's dashboard.
//
//   deviceSign({prepareUrl, finishUrl, headers, typedName})
//       a new ECDSA P-256 key made here (non-extractable: it never leaves this browser),
//       its public key to `prepareUrl`, a signature over the bytes the server prepared
//       to `finishUrl`; answers what `finishUrl` answers.
//   runSigning(host, options)
//       the signer's steps in `host`: read the form -> agree to sign electronically ->
//       type the name and sign -> a confirmation with the signed copy. Resolves with
//       {consent, signing, card, already} once the signer's signature is on the form;
//       rejects (an error with `code`) when the page must act: the consent session is
//       gone (no_consent_session), the consent was withdrawn, the link no longer works.
//   explain(err)   an API error in plain words for the person on the page.
//
// Everything is built with DOM calls and textContent, except the e-signature disclosure,
// which is the practice's own HTML from the API (and CSP allows no script in it).

export const SIGNER_API = "/api/v1/consent";
const POLL_MS = 5000;

// ---- small helpers -------------------------------------------------------------

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) if (child !== null && child !== undefined && child !== false) el.append(child);
  return el;
}

export class SignError extends Error {
  constructor(status, { code = "unavailable", message = "Something went wrong.", action = "", ...extra } = {}) {
    super(message);
    this.name = "SignError";
    this.status = status;
    this.code = code;
    this.action = action;
    Object.assign(this, extra);
  }
}

/** JSON to and from the API; an error body {error: {...}} is thrown as a SignError. */
export async function request(method, url, { body, headers = {} } = {}) {
  const all = { Accept: "application/json", ...headers };
  if (body !== undefined) all["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(url, {
      method, headers: all, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new SignError(0, { code: "network", message: "We could not reach the practice.", action: "Check your internet connection and try again." });
  }
  const answer = await resp.json().catch(() => null);
  if (!resp.ok) {
    throw new SignError(resp.status, answer && answer.error ? answer.error
      : { message: `The service answered ${resp.status}.`, action: "Please try again in a moment." });
  }
  return answer;
}

function toB64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function fromB64(text) {
  const plain = text.replace(/-/g, "+").replace(/_/g, "/").replace(/\s+/g, "");
  const binary = atob(plain + "=".repeat((4 - (plain.length % 4)) % 4));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const when = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "long", day: "numeric", hour: "numeric", minute: "2-digit", timeZoneName: "short",
});
/** "June 2, 2026 at 3:04 PM EDT" in this browser's zone, or "" for no time. */
export function localTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : when.format(d);
}

// ---- the device key and the signature ---------------------------------------------

/** Whether this browser can make a signing key (WebCrypto needs HTTPS, or localhost). */
export function canSign() {
  return Boolean(window.isSecureContext && window.crypto && window.crypto.subtle);
}

/** Sign with a key made here: prepare -> WebCrypto sign -> finish (prepared again once
 *  if the prepared signature expired in between). */
export async function deviceSign({ prepareUrl, finishUrl, headers = {}, typedName }) {
  if (!canSign()) throw new SignError(0, { code: "no_webcrypto" });
  for (let attempt = 0; ; attempt += 1) {
    let keys;
    try {
      keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
    } catch {
      throw new SignError(0, { code: "no_webcrypto" });
    }
    const spki = await crypto.subtle.exportKey("spki", keys.publicKey);
    const prepared = await request("POST", prepareUrl, {
      headers, body: { public_key: toB64(spki), typed_name: typedName },
    });
    const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, keys.privateKey,
      fromB64(prepared.to_sign));
    try {
      return await request("POST", finishUrl, {
        headers, body: { signing_id: prepared.signing_id, signature: toB64(signature) },
      });
    } catch (err) {
      if (err.code === "signing_expired" && attempt === 0) continue;
      throw err;
    }
  }
}

// ---- errors in plain words -----------------------------------------------------------

const BROWSERS = "an up-to-date browser such as Chrome, Safari, Edge or Firefox";
const WORDS = {
  link_invalid: ["This link doesn't work. Sometimes the end of a link gets cut off when it's copied.",
    "Open the whole link from your message again, or ask your practice to send it again."],
  link_expired: ["This link has expired.", "Please ask your practice to send you a new one."],
  dob_required: ["Please enter the date of birth.", ""],
  name_required: ["You're signing for someone else, so please also type your own full name.", ""],
  link_locked: ["For your safety, this link is locked for a while after several tries that didn't match.", ""],
  no_consent_session: ["For your privacy, the form closed after a while.",
    "Please confirm the date of birth again to continue."],
  consent_revoked: ["This consent was withdrawn, so this link no longer works.",
    "If you want to give consent again, please ask your practice for a new form."],
  disclosure_required: ["Please read the notice about electronic signatures and tick the box first.", ""],
  not_ready: ["Your clinician hasn't finished preparing this form yet. This page will update by itself.", ""],
  out_of_order: ["This form isn't ready for your signature yet. This page will update by itself.", ""],
  field_already_signed: ["This form has already been signed.", ""],
  already_complete: ["This form has already been signed.", ""],
  signing_expired: ["Signing took a little too long, so it did not go through.", "Please press Sign again."],
  signing_conflict: ["Someone else signed this form a moment ago.", "The page now shows where the form stands."],
  bad_signature: ["Your device couldn't sign the form.", `Please press Sign again. If it keeps happening, try ${BROWSERS}.`],
  bad_public_key: ["Your device couldn't sign the form.", `Please press Sign again. If it keeps happening, try ${BROWSERS}.`],
  no_webcrypto: ["This browser can't make an electronic signature.", `Please open the link in ${BROWSERS}.`],
  throttled: ["There were many tries in a short time.", "Please wait a minute, then try again."],
  network: ["We couldn't reach your practice.", "Please check your internet connection and try again."],
};

/** {message, action} for an error, in plain words. */
export function explain(err, { printedName = "" } = {}) {
  const code = err && err.code;
  if (code === "identity_mismatch") {
    const left = err.attempts_left;
    const tries = typeof left === "number" ? ` (${left} ${left === 1 ? "try" : "tries"} left)` : "";
    return { message: `That doesn't match what your practice has on file. Please check and try again${tries}.`, action: "" };
  }
  if (code === "name_mismatch") {
    return {
      message: "The name you typed doesn't match the name on the form.",
      action: printedName ? `Please type it as it appears on the form: ${printedName}.` : "Please type your full name as it appears on the form.",
    };
  }
  if (code === "link_locked") {
    return { message: WORDS.link_locked[0], action: err.action || "Please wait 15 minutes and try again, or call your practice." };
  }
  if (WORDS[code]) return { message: WORDS[code][0], action: WORDS[code][1] };
  return { message: (err && err.message) || "Something went wrong.", action: (err && err.action) || "Please try again in a moment." };
}

export const explainText = (err, extra) => {
  const { message, action } = explain(err, extra);
  return action ? `${message} ${action}` : message;
};

/** Errors the page itself must handle: runSigning hands these back. */
const PAGE_ERRORS = new Set([
  "no_consent_session", "consent_revoked", "link_invalid", "link_expired", "link_locked",
  "visit_cancelled", "visit_ended", "participant_removed",
]);

// ---- the signer's steps -----------------------------------------------------------------

/** The signer's field in the consent summary, with its signed_at. */
function ownField(signing) {
  return (signing.consent.fields || []).find((f) => f.name === signing.signer.field) || {};
}

function signerLine(signer) {
  return h("p", { class: "signing-as" },
    h("span", { class: "as-label", text: "You are signing as: " }),
    h("strong", { text: signer.role_label }),
    signer.meaning ? ` — ${signer.meaning}` : "");
}

/**
 * The signer's steps in `host`. Options:
 *   renewSession: async () => {}   called once on no_consent_session (the visit page can
 *                                  get a fresh consent cookie with its ticket); without it,
 *                                  no_consent_session is handed back to the page.
 *   doneTitle: heading of the confirmation.
 */
export function runSigning(host, options = {}) {
  return new Promise((resolve, reject) => {
    let signing = null;
    let stage = null;
    let pollTimer = null;
    let stopped = false;

    const stop = () => { stopped = true; clearTimeout(pollTimer); };
    const fail = (err) => { stop(); reject(err); };

    async function api(method, path, body) {
      try {
        return await request(method, `${SIGNER_API}${path}`, { body });
      } catch (err) {
        if (err.code === "no_consent_session" && options.renewSession) {
          await options.renewSession(); // then once more; a second refusal goes to the page
          return request(method, `${SIGNER_API}${path}`, { body });
        }
        throw err;
      }
    }

    /** An error: the page's own (handed back), or said in `line` for the person to retry. */
    function handle(err, line) {
      if (PAGE_ERRORS.has(err.code)) { fail(err); return true; }
      if (["field_already_signed", "already_complete", "signing_conflict", "not_ready", "out_of_order"].includes(err.code)) {
        refresh(explainText(err));
        return true;
      }
      if (line) {
        line.textContent = explainText(err, { printedName: signing && signing.signer.printed_name });
        line.hidden = false;
      }
      return false;
    }

    /** A step's card: "Step n of 3" (if `step`), the heading (focused), then `children`. */
    function card(name, step, title, ...children) {
      stage = name;
      const heading = h("h1", { tabindex: "-1", text: title });
      const section = h("section", { class: "card consent-step", "data-stage": name },
        step ? h("p", { class: "step-count muted small", text: `Step ${step} of 3` }) : null, heading, ...children);
      host.replaceChildren(section);
      heading.focus({ preventScroll: false });
      window.scrollTo(0, 0);
      return section;
    }

    // 1. read the form ------------------------------------------------------------------
    function readStep(note = "") {
      const ready = signing.ready;
      const waitNote = h("p", { class: "notice info", role: "status", "aria-live": "polite", hidden: ready },
        explain({ code: "not_ready" }).message);
      const status = h("p", { class: note ? "notice info" : "sr-only", role: "status", "aria-live": "polite", text: note });
      const next = h("button", { type: "button", disabled: !ready, onclick: () => disclosureStep() }, "Continue");
      const section = card("read", 1, "Please read your consent form",
        h("p", { class: "muted", text: "Take your time and read it all the way through. You can also download it to keep or print." }),
        waitNote, status,
        h("iframe", { class: "consent-doc", src: `${SIGNER_API}/document`, title: "Your consent form", loading: "eager" }),
        h("p", { class: "doc-links" }, h("a", { href: `${SIGNER_API}/pdf`, download: "consent-form.pdf" }, "Download the form (PDF)")),
        h("div", { class: "actions" }, next));
      if (!ready) poll(section, waitNote, next, status);
    }

    function poll(section, waitNote, next, status) {
      clearTimeout(pollTimer);
      pollTimer = setTimeout(async () => {
        if (stopped || stage !== "read" || !section.isConnected) return;
        try {
          const fresh = await api("GET", "/current");
          if (settled(fresh)) return;
          signing = fresh;
          if (fresh.ready) {
            waitNote.hidden = true;
            next.disabled = false;
            status.className = "notice ok";
            status.textContent = "Your form is ready. Press Continue when you have read it.";
            return;
          }
        } catch (err) {
          if (PAGE_ERRORS.has(err.code)) { fail(err); return; }
          // A dropped connection: keep trying quietly.
        }
        poll(section, waitNote, next, status);
      }, POLL_MS);
    }

    // 2. agree to sign electronically -------------------------------------------------------
    function disclosureStep() {
      const d = signing.disclosure;
      const box = h("input", { type: "checkbox", id: "esign-agree", checked: d.accepted });
      const error = h("p", { class: "error", role: "alert", hidden: true });
      const text = h("div", { class: "disclosure-text", tabindex: "0", role: "region", "aria-label": d.title });
      text.innerHTML = d.html; // the practice's own notice (CSP runs no script in it)
      const go = h("button", { type: "submit" }, "Continue");
      const form = h("form", { novalidate: true },
        h("label", { class: "choice agree", for: "esign-agree" }, box, "I agree to use electronic records and signatures"),
        error,
        h("div", { class: "actions" }, go,
          h("button", { type: "button", class: "secondary", onclick: () => readStep() }, "Back")));
      box.addEventListener("change", () => { error.hidden = true; });
      card("disclosure", 2, "Signing electronically",
        h("p", { class: "muted", text: "The law asks us to explain electronic signatures before you sign. You can always ask for paper instead." }),
        text, form);
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        error.hidden = true;
        if (!box.checked) {
          error.textContent = "Please tick the box to agree. If you would rather sign on paper, please contact your practice.";
          error.hidden = false;
          box.focus();
          return;
        }
        go.disabled = true;
        try {
          if (!signing.disclosure.accepted) {
            await api("POST", "/disclosure", { accepted: true, version: d.version });
            signing.disclosure.accepted = true;
          }
          signStep();
        } catch (err) {
          handle(err, error);
        } finally {
          go.disabled = false;
        }
      });
    }

    // 3. type the name and sign ----------------------------------------------------------------
    function signStep() {
      const s = signing.signer;
      const name = h("input", { id: "typed-name", type: "text", autocomplete: "name", autocapitalize: "words", spellcheck: "false", "aria-describedby": "typed-name-hint" });
      const error = h("p", { class: "error", role: "alert", hidden: true });
      const status = h("p", { class: "signing-status", role: "status", "aria-live": "polite" });
      const go = h("button", { type: "submit" }, "Sign");
      const back = h("button", { type: "button", class: "secondary", onclick: () => disclosureStep() }, "Back");
      const form = h("form", { novalidate: true },
        h("label", { for: "typed-name" }, "Type your full name",
          h("span", { class: "hint", id: "typed-name-hint", text: `As it appears on the form: ${s.printed_name}` })),
        name, error,
        h("p", { class: "small muted", text: "By pressing Sign, you sign this form electronically. It means the same as signing it by hand." }),
        status,
        h("div", { class: "actions" }, go, back));
      name.addEventListener("input", () => { error.hidden = true; });
      card("sign", 3, "Sign the form", signerLine(s),
        h("p", { class: "doc-links small" }, h("a", { href: `${SIGNER_API}/pdf`, download: "consent-form.pdf" }, "Download the form to read it again (PDF)")),
        form);
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        error.hidden = true;
        const typed = name.value.trim().replace(/\s+/g, " ");
        if (!typed) {
          error.textContent = "Please type your full name.";
          error.hidden = false;
          name.focus();
          return;
        }
        go.disabled = true; back.disabled = true; name.readOnly = true;
        status.textContent = "Signing… this takes a few seconds. Please keep this page open.";
        try {
          const finished = await signWithRenewal(typed);
          signing.consent = finished.consent;
          stop();
          done(false);
        } catch (err) {
          status.textContent = "";
          if (err.code === "disclosure_required") { signing.disclosure.accepted = false; disclosureStep(); return; }
          if (!handle(err, error) && err.code === "name_mismatch") name.focus();
        } finally {
          go.disabled = false; back.disabled = false; name.readOnly = false;
        }
      });
      name.focus();
    }

    async function signWithRenewal(typedName) {
      const args = { prepareUrl: `${SIGNER_API}/prepare`, finishUrl: `${SIGNER_API}/finish`, typedName };
      try {
        return await deviceSign(args);
      } catch (err) {
        if (err.code === "no_consent_session" && options.renewSession) {
          await options.renewSession();
          return deviceSign(args);
        }
        throw err;
      }
    }

    // 4. the confirmation ----------------------------------------------------------------------
    function done(already) {
      const field = ownField(signing);
      const at = localTime(field.signed_at || signing.consent.completed_at);
      const section = card("done", 0, already ? "This form is already signed" : (options.doneTitle || "Thank you — your form is signed"),
        h("p", { class: "lead", text: at ? `Signed by ${field.printed_name || signing.signer.printed_name} on ${at}.` : "Your signature is on the form." }),
        h("p", { class: "muted", text: "Your practice has the signed form. Please keep a copy for yourself." }),
        h("p", {}, h("a", { class: "button", href: `${SIGNER_API}/pdf`, download: "signed-consent.pdf" }, "Download your signed copy")));
      section.classList.add("message", "done");
      stop();
      resolve({ consent: signing.consent, signing, card: section, already });
    }

    /** A consent that is over (signed, or withdrawn): true if it was handled. */
    function settled(fresh) {
      if (fresh.consent.status === "revoked") {
        fail(new SignError(410, { code: "consent_revoked", message: "This consent was withdrawn." }));
        return true;
      }
      if (ownField(fresh).signed_at || fresh.consent.status === "complete") {
        signing = fresh;
        done(true);
        return true;
      }
      return false;
    }

    async function refresh(note = "") {
      try {
        const fresh = await api("GET", "/current");
        if (settled(fresh)) return;
        signing = fresh;
        readStep(note);
      } catch (err) {
        if (PAGE_ERRORS.has(err.code)) { fail(err); return; }
        host.replaceChildren(h("section", { class: "card message problem", role: "alert" },
          h("h1", { tabindex: "-1", text: "We couldn't load your form" }),
          h("p", { class: "lead", text: explainText(err) }),
          h("div", { class: "actions" }, h("button", { type: "button", onclick: () => refresh() }, "Try again"))));
        host.querySelector("h1").focus();
      }
    }

    if (!canSign()) {
      fail(new SignError(0, { code: "no_webcrypto", ...explain({ code: "no_webcrypto" }) }));
      return;
    }
    refresh();
  });
}
