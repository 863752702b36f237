// The progress-note editor (/visits/<id>/note), on the progress-note API (docs/notes-api.md).
//
// - The header (what the visit's timeline says: times, minutes, modality, who was there,
//   consent, codes) is shown read-only; only the 90785 add-on is a choice.
// - The draft autosaves about a second after typing stops, and when a field loses focus.
//   Saves go one at a time with the note's version; a save refused with `note_changed`
//   (another window saved first) pauses saving and keeps the text typed here on the page,
//   beside the other version, until the clinician picks. Nothing typed is dropped.
// - "Start from my last note" copies the last signed note; each carried section stays
//   marked until it is edited or marked reviewed.
// - Signing uses consentsign.js's deviceSign (a non-extractable WebCrypto P-256 key made
//   here) against the note's prepare/finish; the supervisor co-signs the same way.
// - After signing: read-only, the PDF, FHIR, addenda.
// - The private psychotherapy note is a separate panel with its own autosave.
//
// Note text stays in the page and the API's JSON bodies: never in a URL, never logged.
import { api, pageData, toLogin } from "/static/js/api.js";
import { canSign, deviceSign, h, localTime } from "/static/js/consentsign.js";

const $ = (id) => document.getElementById(id);
const NOTE = `/api/v1/visits/${encodeURIComponent(pageData.visit_id)}/note`;
const PRIVATE = `/api/v1/visits/${encodeURIComponent(pageData.visit_id)}/psychotherapy-note`;
const ROLE = pageData.role; // "author" | "colleague" | "supervisor"
const ME = pageData.me || { name: "" };
const SAVE_DELAY_MS = 1000;
const RETRY_MS = 5000;

const ROLE_WORDS = {
  clinician: "Clinician", co_clinician: "Co-clinician", patient: "Patient",
  legal_representative: "Legal representative", interpreter: "Interpreter", family_member: "Family member",
};
const OUTCOME_WORDS = {
  rejoined: "came back", did_not_return: "did not come back", visit_ended: "until the visit ended",
  ongoing: "still reconnecting",
};

const state = {
  note: null, // the Note as last loaded or saved (its sections: what the server has)
  version: null,
  dirty: new Set(), // section keys typed here and not yet saved
  reviewed: new Set(), // carried sections marked reviewed, not yet saved
  fields: new Set(), // "clinician_location" | "add_ons" changed, not yet saved
  timer: null,
  retry: null,
  saving: null, // the save in flight (a promise resolving to true when all is saved)
  again: false,
  paused: null, // "conflict" | "login" | "signing": no saving until resolved
  busy: false, // signing or switching format: fields locked
};

// ---- small helpers -------------------------------------------------------------------

const clock = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const clockZone = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit", timeZoneName: "short" });
const longDate = new Intl.DateTimeFormat(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" });

function dateOf(day) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day || "");
  return m ? longDate.format(new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : "—";
}

function timeOf(iso, withZone = false) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : (withZone ? clockZone : clock).format(d);
}

function seconds(s) {
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  return `${m} min`;
}

const editable = () => state.note && state.note.status === "draft" && ROLE !== "supervisor";
const sections = () => (state.note ? state.note.format.sections : []);
const field = (key) => $(`sec-${key}`);
const textOf = (key) => (field(key) ? field(key).value : (state.note.sections[key] || ""));
const hasChanges = () => state.dirty.size > 0 || state.reviewed.size > 0 || state.fields.size > 0;

function say(text) {
  const box = $("note-notice");
  box.textContent = text;
  box.hidden = !text;
}

function setSaveStatus(text, tone = "") {
  const box = $("save-status");
  if (box.textContent !== text) box.textContent = text;
  box.className = `save-status ${tone}`.trim();
}

function showProblem(text, { retry = null, login = false } = {}) {
  $("note-problem-text").textContent = text;
  $("note-problem-retry").hidden = !retry;
  $("note-problem-retry").onclick = retry;
  $("note-problem-login").hidden = !login;
  $("note-problem").hidden = false;
}

function hideProblem() { $("note-problem").hidden = true; }

function loggedOut() {
  state.paused = "login";
  setSaveStatus("Not saved", "bad");
  showProblem("You were logged out, so your latest changes are not saved yet. They are still on this page: "
    + "log in again in a new tab, then come back here and press Try again.", {
    login: true,
    retry: () => { hideProblem(); state.paused = null; save(); savePrivate(); },
  });
}

function confirmDialog({ title, text, yes, no }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = yes;
  $("confirm-no").textContent = no;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
}

// ---- the header -------------------------------------------------------------------------

function fact(label, value, cls = "") {
  return [h("div", { class: `fact ${cls}`.trim() }, h("dt", { text: label }), h("dd", {}, value))];
}

/** "-05:00" of an ISO time as minutes east of UTC, or null. */
function offsetOf(iso) {
  const m = /([+-])(\d{2}):(\d{2})$/.exec(iso || "");
  if (!m) return /Z$/.test(iso || "") ? 0 : null;
  return (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
}

/** The times as the signed record prints them, when this browser's zone is another. */
function recordTimes(hd) {
  const offset = offsetOf(hd.start);
  if (offset === null || offset === -new Date(hd.start).getTimezoneOffset() || !hd.start_text) return null;
  return h("span", { class: "hint", text: `On the signed note: ${hd.start_text} to ${hd.stop_text}` });
}

function renderHeader() {
  const hd = state.note.header;
  const list = $("facts");
  const start = timeOf(hd.start);
  const stop = timeOf(hd.stop, true);
  const location = hd.patient_location;
  const people = h("ul", { class: "plain-list" }, (hd.present || []).map((p) =>
    h("li", {}, h("span", { class: "who", text: p.name }), ` · ${p.role_label || ROLE_WORDS[p.role] || p.role}`,
      typeof p.minutes === "number" ? h("span", { class: "muted", text: ` · ${p.minutes} min` }) : null)));
  const interruptions = (hd.interruptions || []).length
    ? h("ul", { class: "plain-list" }, hd.interruptions.map((i) => h("li", {
      text: `${ROLE_WORDS[i.role] || i.role} lost the connection${i.started ? ` at ${timeOf(i.started)}` : ""} `
        + `for ${seconds(i.seconds)}, ${OUTCOME_WORDS[i.outcome] || i.outcome}`,
    })))
    : "None";
  const consent = hd.consent
    ? h("span", {}, h("span", { class: "yes", text: "On file" }),
      hd.consent.signed_at ? `, signed ${localTime(hd.consent.signed_at)}` : "",
      h("span", { class: "hint mono", text: `Document ${hd.consent.id.slice(0, 8)} · SHA-256 ${(hd.consent.sha256 || "").slice(0, 12)}…` }))
    : h("span", { class: "warn-text", text: "Not on file" });
  const pos = hd.place_of_service
    ? `${hd.place_of_service} · ${hd.place_of_service === "10" ? "patient at home" : "patient not at home"}`
    : h("span", { class: "warn-text", text: "Not known" });
  list.replaceChildren(
    ...fact("Date", dateOf(hd.date)),
    ...fact("Time", start && stop ? h("span", {}, `${start} – ${stop}`, recordTimes(hd)) : "Not recorded"),
    ...fact("Synchronous contact", `${hd.minutes ?? 0} minutes`, "strong-fact"),
    ...fact("Modality", hd.modality_text || hd.modality || ""),
    ...fact("Patient location", location ? hd.location_text : h("span", { class: "warn-text", text: "Not given" })),
    ...fact("Telehealth consent", consent),
    ...fact("Place of service", pos),
    ...fact("Modifier", hd.modifier || "None"),
    ...fact("Present", people, "wide-fact"),
    ...fact("Interruptions", interruptions, "wide-fact"),
  );

  const code = $("billing-code");
  code.replaceChildren(hd.billable && hd.code
    ? h("span", {}, h("span", { class: "code", text: hd.code }),
      hd.modifier ? h("span", { class: "muted", text: ` · modifier ${hd.modifier}` }) : null)
    : h("span", { class: "badge bad big-badge", text: "Not billable" }));
  $("billing-reason").textContent = hd.code_reason || "";
  const offered = (hd.optional_add_ons || []).includes("90785");
  const chosen = (state.note.add_ons || []).includes("90785");
  const lines = (hd.add_ons || []).map((a) => `Add-on ${a.code}${a.units > 1 ? ` × ${a.units}` : ""}`);
  if (chosen && !editable()) lines.push("Add-on 90785, interactive complexity");
  const extra = $("billing-extra");
  extra.replaceChildren(...lines.map((text) => h("li", { text })));
  extra.hidden = !lines.length;
  $("billing").classList.toggle("not-billable", !(hd.billable && hd.code));

  $("addon-box").hidden = !offered || !editable();
  $("addon-90785").checked = chosen;
  $("addon-90785").disabled = !editable() || state.busy;

  const warnings = hd.warnings || [];
  $("warnings").hidden = !warnings.length;
  $("warnings-list").replaceChildren(...warnings.map((w) => h("li", { text: w })));
}

// ---- the draft ----------------------------------------------------------------------------

function describe(key) {
  const ids = [`sec-${key}-hint`];
  if (!$(`sec-${key}-carried`).hidden) ids.push(`sec-${key}-carried`);
  if (!$(`sec-${key}-error`).hidden) ids.push(`sec-${key}-error`);
  field(key).setAttribute("aria-describedby", ids.join(" "));
}

function setCarried(key, carried) {
  const mark = $(`sec-${key}-carried`);
  if (!mark) return;
  mark.hidden = !carried;
  mark.closest(".note-section").classList.toggle("carried", carried);
  describe(key);
}

function setSectionError(key, text) {
  const box = $(`sec-${key}-error`);
  if (!box) return;
  const had = !box.hidden;
  box.textContent = text;
  box.hidden = !text;
  box.closest(".note-section").classList.toggle("has-error", Boolean(text));
  describe(key);
  // The summary by the Sign button goes once every section it named is dealt with.
  if (had && !text && !$("sections").querySelector(".section-error:not([hidden])")) $("sign-error").hidden = true;
}

function sectionBlock(s) {
  const id = `sec-${s.key}`;
  const area = h("textarea", { id, class: "section-text", maxlength: "20000", spellcheck: "true", "data-key": s.key });
  area.value = state.note.sections[s.key] || "";
  area.addEventListener("input", () => onSectionInput(s.key));
  area.addEventListener("blur", () => { if (hasChanges()) save(); });
  const block = h("div", { class: "note-section", "data-section": s.key },
    h("label", { for: id, text: s.title }),
    h("span", { class: "hint", id: `${id}-hint`, text: s.prompt || "" }),
    h("div", { class: "carried-mark", id: `${id}-carried`, hidden: true },
      h("span", { text: "Carried over from your last note — review it" }),
      h("button", { type: "button", class: "secondary small", "aria-label": `Mark ${s.title} reviewed`, onclick: () => markReviewed(s.key) }, "Mark reviewed")),
    area,
    h("p", { class: "error section-error", id: `${id}-error`, hidden: true }),
    h("div", { class: "mine", id: `${id}-mine`, hidden: true }));
  return block;
}

function renderEditor() {
  const note = state.note;
  const host = $("sections");
  host.replaceChildren(...sections().map(sectionBlock));
  for (const s of sections()) setCarried(s.key, note.carried.includes(s.key));
  const select = $("note-format");
  select.replaceChildren(...note.formats.map((f) => h("option", { value: f.id, text: f.title })));
  select.value = note.format.id;
  $("clinician-location").value = note.clinician_location || "";
  $("modality-reason-tool").hidden = note.header.modality !== "audio-only";
  $("modality-reason").value = note.modality_reason || "";
  lockFields(state.busy);
  updateCarryOffer();
  locationReminder();
}

function locationReminder() {
  $("sign-location").hidden = Boolean($("clinician-location").value.trim());
}

function lockFields(locked) {
  const off = locked || !editable();
  for (const s of sections()) if (field(s.key)) field(s.key).readOnly = off;
  $("clinician-location").readOnly = off;
  $("modality-reason").readOnly = off;
  $("note-format").disabled = off;
  $("addon-90785").disabled = off;
  $("carry-forward").disabled = off;
  for (const b of $("sections").querySelectorAll("button")) b.disabled = off;
}

function updateCarryOffer() {
  const empty = sections().every((s) => !textOf(s.key).trim());
  $("carry-offer").hidden = !(editable() && empty);
}

function onSectionInput(key) {
  state.dirty.add(key);
  if (!$(`sec-${key}-carried`).hidden) setCarried(key, false);
  setSectionError(key, "");
  updateCarryOffer();
  changed();
}

function changed() {
  if (state.paused === "conflict" || state.paused === "login") return;
  setSaveStatus("Saving…");
  clearTimeout(state.timer);
  state.timer = setTimeout(save, SAVE_DELAY_MS);
}

function markReviewed(key) {
  state.reviewed.add(key);
  setCarried(key, false);
  setSectionError(key, "");
  changed();
  save();
}

function saveBody() {
  const body = { version: state.version };
  const sent = { sections: {}, reviewed: [...state.reviewed], fields: [...state.fields] };
  if (state.dirty.size) {
    for (const key of state.dirty) sent.sections[key] = textOf(key);
    body.sections = sent.sections;
  }
  if (sent.reviewed.length) body.reviewed = sent.reviewed;
  if (state.fields.has("clinician_location")) body.clinician_location = $("clinician-location").value;
  if (state.fields.has("add_ons")) body.add_ons = $("addon-90785").checked ? ["90785"] : [];
  if (state.fields.has("modality_reason")) body.modality_reason = $("modality-reason").value;
  sent.reason = body.modality_reason;
  sent.location = body.clinician_location;
  sent.addOns = body.add_ons;
  state.dirty.clear();
  state.reviewed.clear();
  state.fields.clear();
  return { body, sent };
}

/** One PUT with whatever is unsaved; true if it went through. */
async function saveOnce() {
  const { body, sent } = saveBody();
  try {
    const answer = await api("PUT", NOTE, body);
    state.version = answer.version;
    Object.assign(state.note.sections, sent.sections);
    if (sent.location !== undefined) state.note.clinician_location = sent.location;
    if (sent.reason !== undefined) state.note.modality_reason = sent.reason;
    if (sent.addOns !== undefined) state.note.add_ons = sent.addOns;
    state.note.carried = answer.carried || [];
    for (const s of sections()) {
      if (!state.dirty.has(s.key)) setCarried(s.key, state.note.carried.includes(s.key));
    }
    return true;
  } catch (err) {
    for (const key of Object.keys(sent.sections)) state.dirty.add(key);
    for (const key of sent.reviewed) state.reviewed.add(key);
    for (const name of sent.fields) state.fields.add(name);
    if (err.status === 401) { loggedOut(); return false; }
    if (err.code === "note_changed") {
      state.paused = "conflict";
      setSaveStatus("Not saved: changed in another window", "bad");
      $("note-conflict").hidden = false;
      return false;
    }
    if (err.code === "note_signed") {
      state.paused = "conflict";
      setSaveStatus("Not saved", "bad");
      await reloadKeepingMine("This note was signed in another window, so it can no longer change.");
      return false;
    }
    if (err.code === "unknown_section" || err.code === "invalid_field" || err.code === "add_on_not_offered") {
      setSaveStatus("Not saved", "bad");
      showProblem(`${err.message} ${err.action || ""}`.trim());
      return false;
    }
    setSaveStatus("Not saved yet — trying again…", "bad");
    clearTimeout(state.retry);
    state.retry = setTimeout(save, RETRY_MS);
    return false;
  }
}

/** Save everything unsaved, one PUT at a time; resolves to true once all is saved. */
function save() {
  clearTimeout(state.timer);
  if (state.saving) { state.again = true; return state.saving; }
  if (!state.note || !hasChanges()) return Promise.resolve(!hasChanges());
  if (state.paused) return Promise.resolve(false);
  state.saving = (async () => {
    let ok = true;
    setSaveStatus("Saving…");
    while (ok && !state.paused && hasChanges()) {
      state.again = false;
      ok = await saveOnce();
    }
    if (ok && !hasChanges()) {
      setSaveStatus(`Saved ${clock.format(new Date())}`, "ok");
      if ($("note-problem-retry").hidden) hideProblem();
    }
    return ok && !hasChanges();
  })();
  const running = state.saving;
  running.finally(() => { if (state.saving === running) state.saving = null; });
  return running;
}

/** After a change from another window: the latest note, and this window's unsaved text
 *  kept beside each section it differs in (or listed, when the note is signed now). */
async function reloadKeepingMine(reason = "") {
  const mine = [];
  if (state.note) {
    for (const s of sections()) {
      const text = textOf(s.key);
      if (text !== (state.note.sections[s.key] || "")) mine.push({ key: s.key, title: s.title, text });
    }
  }
  let fresh;
  try {
    fresh = await api("GET", NOTE);
  } catch (err) {
    if (err.status === 401) { loggedOut(); return; }
    showProblem(`We could not load the latest version. ${err.message}`, { retry: () => { hideProblem(); reloadKeepingMine(reason); } });
    return;
  }
  state.paused = null;
  $("note-conflict").hidden = true;
  state.dirty.clear(); state.reviewed.clear(); state.fields.clear();
  load(fresh);
  const differing = mine.filter((m) => m.text.trim() && m.text !== (fresh.sections[m.key] || ""));
  if (!differing.length) {
    say(reason ? `${reason} Nothing you typed here was lost.` : "This is the latest version. Nothing you typed here was lost.");
    return;
  }
  if (editable() && differing.every((m) => field(m.key))) {
    for (const m of differing) keepMineBeside(m);
    say(`${reason ? `${reason} ` : ""}This is the latest version. Where your text from this window differs, it is shown under the section: choose "Use my text" to keep it.`);
  } else {
    showUnsaved(differing, reason);
  }
}

function keepMineBeside(m) {
  const box = $(`sec-${m.key}-mine`);
  const copy = h("textarea", { class: "section-text", readonly: true, "aria-label": `Your unsaved text for ${m.title}` });
  copy.value = m.text;
  box.replaceChildren(
    h("p", { class: "small", text: "Your text from this window (not saved):" }), copy,
    h("div", { class: "row-actions" },
      h("button", {
        type: "button", class: "small", onclick: () => {
          field(m.key).value = m.text;
          box.hidden = true;
          box.replaceChildren();
          onSectionInput(m.key);
          field(m.key).focus();
        },
      }, "Use my text"),
      h("button", { type: "button", class: "secondary small", onclick: () => { box.hidden = true; box.replaceChildren(); } }, "Keep the other version")));
  box.hidden = false;
}

function showUnsaved(items, reason) {
  const old = $("unsaved-card");
  if (old) old.remove();
  const card = h("section", { class: "card unsaved-card", id: "unsaved-card", "aria-labelledby": "unsaved-title" },
    h("h2", { id: "unsaved-title", text: "Text you typed that was not saved" }),
    h("p", { text: `${reason ? `${reason} ` : ""}Here is what you typed in this window. If something in it belongs in the record, add it as an addendum.` }),
    items.map((m) => {
      const copy = h("textarea", { class: "section-text", readonly: true, "aria-label": `Your unsaved text for ${m.title}` });
      copy.value = m.text;
      return h("div", { class: "note-section" }, h("h3", { text: m.title }), copy);
    }),
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary small", onclick: () => card.remove() }, "Dismiss")));
  $("signed").before(card);
}

// ---- format and carry-forward ---------------------------------------------------------------

async function switchFormat(to) {
  const select = $("note-format");
  const from = state.note.format;
  if (to === from.id) return;
  const written = sections().some((s) => textOf(s.key).trim());
  const title = (state.note.formats.find((f) => f.id === to) || {}).title || to;
  if (written) {
    const ok = await confirmDialog({
      title: `Switch this note to ${title}?`,
      text: `Sections with the same name keep their text. Text in any other ${from.title} section is moved into the first ${title} section, so nothing is lost.`,
      yes: `Switch to ${title}`, no: `Keep ${from.title}`,
    });
    if (!ok) { select.value = from.id; return; }
  }
  state.busy = true;
  lockFields(true);
  try {
    if (!(await save())) { select.value = from.id; return; }
    const before = Object.fromEntries(from.sections.map((s) => [s.key, { title: s.title, text: textOf(s.key) }]));
    const answer = await api("PUT", NOTE, { version: state.version, format: to });
    state.version = answer.version;
    const fresh = await api("GET", NOTE);
    const keys = new Set(fresh.format.sections.map((s) => s.key));
    const moved = Object.entries(before).filter(([key, v]) => !keys.has(key) && v.text.trim());
    state.busy = false;
    load(fresh);
    if (moved.length) {
      const first = fresh.format.sections[0].key;
      const parts = [textOf(first).trim(), ...moved.map(([, v]) => `${v.title}:\n${v.text.trim()}`)].filter(Boolean);
      field(first).value = parts.join("\n\n");
      onSectionInput(first);
      await save();
      say(`This note is now ${title}. Text from ${moved.map(([, v]) => v.title).join(", ")} was moved into ${fresh.format.sections[0].title}; tidy it up as you like.`);
    } else {
      say(`This note is now ${title}.`);
    }
  } catch (err) {
    select.value = state.note.format.id;
    if (err.status === 401) loggedOut();
    else if (err.code === "note_changed") { state.paused = "conflict"; $("note-conflict").hidden = false; }
    else showProblem(`The format was not changed. ${err.message}`);
  } finally {
    state.busy = false;
    lockFields(false);
  }
}

async function carryForward() {
  const button = $("carry-forward");
  button.disabled = true;
  try {
    if (!(await save())) return;
    const fresh = await api("POST", `${NOTE}/carry-forward`);
    load(fresh);
    const first = sections().find((s) => fresh.carried.includes(s.key));
    say("Your last note's text is in the sections marked \"Carried over\". Review each one: edit it, or press Mark reviewed.");
    if (first) field(first.key).focus();
  } catch (err) {
    if (err.status === 401) { loggedOut(); return; }
    if (err.code === "no_last_note") {
      say(`You have no earlier signed ${state.note.format.title} note for ${pageData.patient_name || "this patient"} to start from.`);
    } else showProblem(`${err.message} ${err.action || ""}`.trim());
  } finally {
    button.disabled = !editable();
  }
}

// ---- signing and co-signing -------------------------------------------------------------------

function cosigning() { return state.note.status === "awaiting_cosign" && ROLE === "supervisor"; }

function signError(text, keys = []) {
  const box = $("sign-error");
  box.replaceChildren(h("p", { text }));
  if (keys.length) {
    box.append(h("div", { class: "row-actions" }, keys.map((key) => {
      const s = sections().find((x) => x.key === key);
      return h("button", { type: "button", class: "secondary small", onclick: () => { field(key).scrollIntoView({ block: "center" }); field(key).focus(); } }, `Go to ${s ? s.title : key}`);
    })));
  }
  box.hidden = false;
}

function sectionKeys(list) {
  return (list || []).map((name) => {
    const s = sections().find((x) => x.key === name || x.title === name);
    return s ? s.key : null;
  }).filter(Boolean);
}

async function onSign(event) {
  event.preventDefault();
  const name = $("sign-name");
  const button = $("sign-button");
  const status = $("sign-status");
  $("sign-error").hidden = true;
  const typed = name.value.trim().replace(/\s+/g, " ");
  if (!typed) { signError("Type your full name to sign."); name.focus(); return; }
  if (!canSign()) { signError("This browser cannot make a signing key here. It needs a secure (HTTPS) page and an up-to-date browser."); return; }
  if (state.paused === "conflict") { signError("First load the latest version of the note (see the message at the top)."); return; }
  const cosign = cosigning();
  button.disabled = true;
  name.readOnly = true;
  state.busy = true;
  lockFields(true);
  status.textContent = cosign ? "Co-signing… this takes a few seconds." : "Saving and signing… this takes a few seconds.";
  try {
    if (!cosign && !(await save())) {
      status.textContent = "";
      signError("Your latest changes could not be saved, so the note was not signed. See the message at the top.");
      return;
    }
    state.paused = "signing";
    const signed = await deviceSign({
      prepareUrl: `${NOTE}/prepare`, finishUrl: `${NOTE}/finish`,
      headers: { "X-CSRF-Token": pageData.csrf_token || "" }, typedName: typed,
    });
    state.paused = null;
    state.busy = false;
    status.textContent = "";
    name.value = "";
    load(signed);
    say(signed.status === "awaiting_cosign"
      ? "You signed the note. It now waits for your supervisor's co-signature."
      : cosign ? "You co-signed the note. It is now locked." : "You signed the note. It is now locked; corrections go in an addendum.");
    $("signed-title").focus();
  } catch (err) {
    state.paused = null;
    status.textContent = "";
    if (err.status === 401) { loggedOut(); return; }
    if (err.code === "sections_empty" || err.code === "carried_unreviewed") {
      const keys = sectionKeys(err.sections);
      const empty = err.code === "sections_empty";
      for (const key of keys) {
        setSectionError(key, empty ? "Write this section before signing." : "Review this carried-over text: edit it, or press Mark reviewed.");
      }
      signError(empty ? "Some sections are still empty. Write them, then sign." : "Some text carried over from your last note is not reviewed yet.", keys);
      return;
    }
    if (err.code === "name_mismatch") { signError(`That name doesn't match your account. Type it as: ${ME.name}.`); name.focus(); return; }
    if (err.code === "note_changed") { signError("The note changed while you were signing. Check it, then press Sign again."); await reloadKeepingMine(); return; }
    if (err.code === "note_signed") { await reloadKeepingMine("This note was already signed."); return; }
    if (err.code === "no_webcrypto") { signError("This browser cannot make a signing key. Use an up-to-date Chrome, Edge, Safari or Firefox."); return; }
    signError(`The note was not signed. ${err.message} ${err.action || ""}`.trim());
  } finally {
    state.busy = false;
    button.disabled = false;
    name.readOnly = false;
    lockFields(false);
  }
}

// ---- the signed note, addenda -----------------------------------------------------------------

function renderSigned() {
  const note = state.note;
  $("pdf-link").href = `${NOTE}/pdf`;
  $("fhir-link").href = `${NOTE}/fhir`;
  $("signatures").replaceChildren(...(note.signatures || []).map((s) => h("li", { class: s.signed_at ? "signed" : "pending" },
    h("span", { class: "sig-mark", "aria-hidden": "true", text: s.signed_at ? "✓" : "…" }),
    h("span", {}, h("strong", { text: s.printed_name }), `, ${s.role_label}`,
      h("span", { class: "muted", text: s.signed_at ? ` · signed ${localTime(s.signed_at)}` : " · not signed yet" })))));
  const waiting = note.status === "awaiting_cosign" && ROLE !== "supervisor";
  $("cosign-wait").hidden = !waiting;
  $("cosign-wait").textContent = ROLE === "author" ? "Waiting for your supervisor's co-signature."
    : "Waiting for the supervisor's co-signature.";
  $("signed-title").textContent = note.status === "signed" ? "Signed note" : "Signed, waiting for co-signature";
  $("signed-extra").replaceChildren(
    ...fact("Note format", note.format.title),
    ...fact("Clinician location", note.clinician_location || "Not given"),
    ...fact("Add-on codes", (note.add_ons || []).length ? note.add_ons.join(", ") : "None"),
  );
  $("signed-sections").replaceChildren(...sections().map((s) => h("section", { class: "signed-section" },
    h("h3", { text: s.title }), h("div", { class: "note-text", text: note.sections[s.key] || "" }))));
  renderAddenda();
}

function renderAddenda() {
  const list = state.note.addenda || [];
  $("addenda-empty").hidden = list.length > 0;
  $("addenda").replaceChildren(...list.map((a) => h("li", { class: "addendum" },
    h("p", { class: "addendum-meta" },
      h("strong", { text: `${a.author_name}${a.author_credentials ? `, ${a.author_credentials}` : ""}` }),
      h("span", { class: "muted", text: ` · ${localTime(a.at)}` })),
    h("p", { class: "addendum-reason" }, h("span", { class: "muted", text: "Reason: " }), a.reason),
    h("div", { class: "note-text", text: a.text }))));
  $("addendum-open").hidden = ROLE === "supervisor";
}

function openAddendum(open) {
  $("addendum-form").hidden = !open;
  $("addendum-open").setAttribute("aria-expanded", String(open));
  $("addendum-error").hidden = true;
  if (open) $("addendum-reason").focus();
}

async function onAddendum(event) {
  event.preventDefault();
  const reason = $("addendum-reason").value.trim();
  const text = $("addendum-text").value.trim();
  const error = $("addendum-error");
  error.hidden = true;
  if (!reason || !text) {
    error.textContent = !reason ? "Give a reason for the addendum." : "Write the addendum itself.";
    error.hidden = false;
    $(!reason ? "addendum-reason" : "addendum-text").focus();
    return;
  }
  const button = $("addendum-save");
  button.disabled = true;
  try {
    const fresh = await api("POST", `${NOTE}/addenda`, { reason, text });
    $("addendum-reason").value = "";
    $("addendum-text").value = "";
    openAddendum(false);
    load(fresh);
    say("Your addendum was added. The signed note stays as it was.");
    $("addendum-open").focus();
  } catch (err) {
    if (err.status === 401) { loggedOut(); return; }
    error.textContent = `The addendum was not added. ${err.message} ${err.action || ""}`.trim();
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

// ---- the whole page ----------------------------------------------------------------------------

const STATES = {
  draft: ["Draft", "warn"], awaiting_cosign: ["Waiting for co-signature", "warn"], signed: ["Signed", "ok"],
};

function load(note) {
  state.note = note;
  state.version = note.version;
  const [word, tone] = STATES[note.status] || [note.status, ""];
  $("note-state").textContent = word;
  $("note-state").className = `badge ${tone}`;
  $("note-body").hidden = false;
  const draft = note.status === "draft";
  const author = pageData.author_name || "the note's author";
  renderHeader();

  $("editor").hidden = !draft;
  if (draft) {
    renderEditor();
    const readonly = $("readonly-draft");
    readonly.hidden = ROLE !== "supervisor";
    readonly.textContent = `${author} has not signed this note yet. You can co-sign it once they have.`;
    $("editor-title").textContent = ROLE === "supervisor" ? "The draft" : "Your note";
    if (!hasChanges() && !state.saving) setSaveStatus(ROLE === "supervisor" ? "" : "All changes saved", "ok");
  } else {
    $("sections").replaceChildren();
    setSaveStatus("");
  }

  const signHere = (draft && ROLE === "author") || cosigning();
  $("sign-card").hidden = !signHere;
  if (signHere) {
    const cosign = cosigning();
    $("sign-title").textContent = cosign ? "Co-sign the note" : "Sign the note";
    $("sign-meaning").textContent = cosign
      ? `You reviewed ${author}'s note as the supervising clinician. Your co-signature locks it.`
      : "Signing locks the note: afterwards it cannot be changed, only added to with an addendum.";
    $("sign-name-hint").textContent = `As on your account: ${ME.name}`;
    $("sign-button").textContent = cosign ? "Co-sign" : "Sign note";
  }
  const elsewhere = $("sign-elsewhere");
  elsewhere.hidden = !(draft && ROLE === "colleague");
  elsewhere.textContent = `Only ${author}, who wrote this note, signs it. You can edit the draft; it saves by itself.`;

  $("signed").hidden = draft;
  $("addenda-card").hidden = draft;
  if (!draft) renderSigned();
}

function setUp() {
  $("note-format").addEventListener("change", (e) => switchFormat(e.target.value));
  $("carry-forward").addEventListener("click", carryForward);
  const loc = $("clinician-location");
  loc.addEventListener("input", () => { state.fields.add("clinician_location"); changed(); locationReminder(); });
  loc.addEventListener("blur", () => { if (hasChanges()) save(); });
  const reason = $("modality-reason");
  reason.addEventListener("input", () => { state.fields.add("modality_reason"); changed(); });
  reason.addEventListener("blur", () => { if (hasChanges()) save(); });
  $("addon-90785").addEventListener("change", () => { state.fields.add("add_ons"); save(); });
  $("sign-form").addEventListener("submit", onSign);
  $("sign-name").addEventListener("input", () => { $("sign-error").hidden = true; });
  $("conflict-reload").addEventListener("click", () => reloadKeepingMine());
  $("addendum-open").addEventListener("click", () => openAddendum($("addendum-form").hidden));
  $("addendum-cancel").addEventListener("click", () => { openAddendum(false); $("addendum-open").focus(); });
  $("addendum-form").addEventListener("submit", onAddendum);
  window.addEventListener("beforeunload", (event) => {
    if (hasChanges() || state.saving || priv.dirty || priv.saving) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
  setUpPrivate();
  setUpIdleLogout();
}

async function start() {
  try {
    load(await api("GET", NOTE));
  } catch (err) {
    if (err.status === 401) { toLogin(); return; }
    const box = $("note-load-error");
    box.textContent = `We could not load this note. ${err.message} ${err.action || ""}`.trim();
    box.hidden = false;
    $("note-state").textContent = "Not loaded";
  }
}

// ---- the private psychotherapy note ---------------------------------------------------------------

const priv = { loaded: false, loading: null, dirty: false, saving: null, again: false, timer: null };

function privateStatus(text, tone = "") {
  const box = $("private-status");
  if (box.textContent !== text) box.textContent = text;
  box.className = `save-status ${tone}`.trim();
}

function loadPrivate() {
  if (priv.loaded) return Promise.resolve();
  if (priv.loading) return priv.loading;
  privateStatus("Loading…");
  priv.loading = (async () => {
    try {
      const { text } = await api("GET", PRIVATE);
      $("private-text").value = text || "";
      $("private-text").disabled = false;
      priv.loaded = true;
      privateStatus(text ? "Saved" : "", "ok");
    } catch (err) {
      if (err.status === 401) { loggedOut(); return; }
      privateStatus(`Could not load your private note. ${err.message}`, "bad");
    } finally {
      priv.loading = null;
    }
  })();
  return priv.loading;
}

function savePrivate() {
  clearTimeout(priv.timer);
  if (!priv.loaded || !priv.dirty) return Promise.resolve(true);
  if (priv.saving) { priv.again = true; return priv.saving; }
  if (state.paused === "login") return Promise.resolve(false);
  priv.saving = (async () => {
    let ok = true;
    do {
      priv.again = false;
      priv.dirty = false;
      privateStatus("Saving…");
      try {
        await api("PUT", PRIVATE, { text: $("private-text").value });
      } catch (err) {
        priv.dirty = true;
        ok = false;
        if (err.status === 401) loggedOut();
        else {
          privateStatus("Not saved yet — trying again…", "bad");
          priv.timer = setTimeout(savePrivate, RETRY_MS);
        }
      }
    } while (ok && (priv.again || priv.dirty));
    if (ok) privateStatus(`Saved ${clock.format(new Date())}`, "ok");
    priv.saving = null;
    return ok;
  })();
  return priv.saving;
}

function setUpPrivate() {
  const panel = $("private-note");
  const area = $("private-text");
  if (ROLE === "supervisor") { // a supervisor reads and co-signs; the private note is the visit's clinicians'
    panel.hidden = true;
    $("private-jump").hidden = true;
    return;
  }
  panel.addEventListener("toggle", () => { if (panel.open) loadPrivate(); });
  area.addEventListener("input", () => {
    priv.dirty = true;
    privateStatus("Saving…");
    clearTimeout(priv.timer);
    priv.timer = setTimeout(savePrivate, SAVE_DELAY_MS);
  });
  area.addEventListener("blur", () => { if (priv.dirty) savePrivate(); });
  $("private-jump").addEventListener("click", async () => {
    panel.open = true;
    panel.scrollIntoView({ block: "start" });
    await loadPrivate();
    if (!area.disabled) area.focus({ preventScroll: true });
  });
}

// ---- logging out after a time without activity (as the dashboard does) ----------------------------

function setUpIdleLogout() {
  const idleMs = (pageData.idle_s || 1800) * 1000;
  let last = Date.now();
  for (const type of ["pointerdown", "keydown", "wheel", "touchstart", "mousemove"]) {
    document.addEventListener(type, () => { last = Date.now(); }, { passive: true });
  }
  setInterval(() => {
    const unsaved = hasChanges() || state.saving || priv.dirty || priv.saving;
    if (Date.now() - last >= idleMs && !unsaved) {
      $("logout-reason").value = "idle";
      $("logout-form").submit();
    }
  }, 5000);
}

setUp();
start();
