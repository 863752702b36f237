// The clinician's dashboard: today's and upcoming visits, a new-visit form, links to copy,
// and the live waiting rooms (polled every 2.5 s) with a sound and a visible alert when
// someone arrives; admit or deny from here, cancel or end a visit.
//
// Everything is built with DOM calls and textContent (names come from people, not us).
// Polling refreshes the session on the server, so this page logs out by itself after
// `idle_s` without a key press or a pointer.
//
// Each visit shows its patient's telehealth consent (GET /api/v1/visits/{id}/consents):
// not issued -> "Prepare consent" (the clinician signs first, in a dialog, with a key made
// in this browser: consentsign.js) -> waiting for the patient (copy the consent link) ->
// signed (the PDF and the certificate of completion), or revoked.
import { api, browserZone, pageData, summaryUrl, toLogin } from "/static/js/api.js";
import { canSign, deviceSign, localTime } from "/static/js/consentsign.js";

const $ = (id) => document.getElementById(id);
const ROLE = pageData.role_labels;
const TYPE = pageData.visit_type_labels;
const POLL_MS = 2500;
const REFRESH_MS = 60000;
const TITLE = document.title;
const state = {
  visits: pageData.visits || [],
  live: {}, // visit id -> {waiting: [{id, role, name, since, waited_s}], in_room: [...]}
  liveAt: Date.now(), // when `live` arrived (waited_s counts from then)
  liveSig: null, // which visits have someone in the call: a change reloads the list
  open: {}, // visit id -> "add" | "links" | "consent": the panel shown under the visit
  consents: {}, // visit id -> [consent summary] of the visit's patient (absent: not loaded)
  waitingKeys: new Set(), // "visit:participant" waiting at the last poll
};

// ---- small helpers -------------------------------------------------------------

function h(tag, props = {}, ...children) {
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

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric" });
const roleText = (role) => (ROLE[role] || role).toLowerCase();
const personText = (p) => `${p.name} (${roleText(p.role)})`;

function when(iso, today) {
  const d = new Date(iso);
  return today ? timeFmt.format(d) : `${dayFmt.format(d)}, ${timeFmt.format(d)}`;
}

function say(text) { $("dash-status").textContent = text; }

function problem(err) {
  if (err.status === 401) { toLogin(); return; }
  const box = $("waiting-alerts");
  box.querySelector(".dash-error")?.remove();
  box.append(h("div", { class: "notice problem dash-error" },
    h("span", { text: `${err.message} ${err.action || ""}` }),
    h("button", { type: "button", class: "quiet small", onclick: (e) => e.target.closest(".dash-error").remove() }, "Dismiss")));
}

/** Copy `text`; if the clipboard refuses, select it in the box `findInput()` gives. */
async function copy(text, findInput, button) {
  let done = false;
  try { await navigator.clipboard.writeText(text); done = true; } catch { /* fall back below */ }
  const input = done ? null : findInput();
  if (input) {
    input.focus(); input.select();
    try { done = document.execCommand("copy"); } catch { done = false; }
  }
  if (!done) { say("Your browser would not copy. The link is selected: press Ctrl+C (or ⌘C) to copy it."); return; }
  say("Link copied.");
  const was = button.textContent;
  button.textContent = "Copied ✓";
  setTimeout(() => { button.textContent = was; }, 2000);
}

function confirmDialog({ title, text, yes, reason = false }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = yes;
  $("confirm-reason-field").hidden = !reason;
  $("confirm-reason").value = "";
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve({
      ok: dialog.returnValue === "yes", reason: $("confirm-reason").value.trim(),
    }), { once: true });
  });
}

// ---- the visit tables ------------------------------------------------------------

function groups() {
  const now = new Date();
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  const tomorrow = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1);
  const today = [], upcoming = [];
  for (const v of state.visits) {
    const start = new Date(v.scheduled_start);
    if (start >= tomorrow) upcoming.push(v);
    else if (start >= midnight || v.status === "in_progress") today.push(v);
  }
  return { today, upcoming };
}

function render() {
  const focused = document.activeElement && document.activeElement.dataset.key;
  const { today, upcoming } = groups();
  $("today").replaceChildren(table(today, true, "today-title", "No visits today."));
  $("upcoming").replaceChildren(table(upcoming, false, "upcoming-title", "Nothing scheduled after today."));
  for (const v of state.visits) renderLive(v.id);
  if (focused) document.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
}

function table(visits, today, labelledBy, empty) {
  if (!visits.length) return h("p", { class: "muted", text: empty });
  const heads = ["Time", "Patient", "Type", "Status", "Consent", "Participants", "Actions"];
  return h("div", { class: "card table-wrap" }, h("table", { class: "visits", "aria-labelledby": labelledBy },
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col", text: t })))),
    visits.map((v) => visitRows(v, today))));
}

const cell = (label, ...children) => h("td", { "data-label": label }, ...children);
const isLive = (v) => v.status === "scheduled" || v.status === "in_progress";

function visitRows(v, today) {
  const time = when(v.scheduled_start, today);
  const rep = v.legal_representative;
  return h("tbody", { "data-visit": v.id },
    h("tr", { class: "visit-row" },
      cell("Time", h("time", { datetime: v.scheduled_start, text: time })),
      cell("Patient", h("strong", { text: v.patient_name }),
        rep ? h("div", { class: "small muted", text: `Representative: ${rep.name}` }) : null),
      cell("Type", TYPE[v.visit_type] || v.visit_type),
      cell("Status", statusBadge(v)),
      cell("Consent", consentCell(v)),
      cell("Participants", people(v)),
      cell("Actions", actions(v, time))),
    h("tr", { class: "live-row", id: `live-${v.id}`, hidden: true },
      h("td", { colspan: 7 }, h("div", { class: "live-lines" },
        h("p", { class: "in-room small", hidden: true })))),
    panelRow(v));
}

function statusBadge(v) {
  const [text, tone] = {
    scheduled: ["Scheduled", ""], in_progress: ["In progress", "live"],
    ended: ["Ended", "ok"], cancelled: ["Cancelled", "bad"],
  }[v.status] || [v.status, ""];
  return h("span", { class: `badge ${tone}`, text });
}

function people(v) {
  const guests = v.participants.filter((p) => p.role !== "clinician");
  const list = h("ul", { class: "people" }, guests.map((p) => {
    const button = p.link ? h("button", {
      type: "button", class: "quiet small", "data-key": `${v.id}:copy:${p.id}`,
      "aria-label": `Copy link for ${personText(p)}`,
      onclick: (e) => copy(p.link, () => revealLink(v.id, p.id), e.currentTarget),
    }, "Copy link") : null;
    return h("li", {}, h("span", { text: p.name }), " ", h("span", { class: "muted small", text: ROLE[p.role] }), button);
  }));
  if (!isLive(v)) return list;
  const open = state.open[v.id] === "links";
  return h("div", {}, list, h("button", {
    type: "button", class: "quiet small", "aria-expanded": String(open), "data-key": `${v.id}:links`,
    "aria-controls": `panel-${v.id}`, onclick: () => toggle(v.id, "links"),
  }, open ? "Hide links" : "Show links"));
}

function actions(v, time) {
  const who = v.patient_name;
  const room = state.live[v.id];
  const started = v.status === "in_progress" || (room && room.in_room.length > 0);
  const list = [];
  if (isLive(v)) {
    list.push(h("a", { class: "button small", href: `/visits/${v.id}/call`, "aria-label": `${started ? "Join" : "Start"} visit with ${who}` },
      started ? "Join visit" : "Start visit"));
    list.push(h("button", {
      type: "button", class: "secondary small", "data-key": `${v.id}:add`,
      "aria-expanded": String(state.open[v.id] === "add"), "aria-controls": `panel-${v.id}`,
      "aria-label": `Add participant to the visit with ${who}`, onclick: () => toggle(v.id, "add"),
    }, "Add participant"));
    list.push(started
      ? h("button", { type: "button", class: "danger small", "data-key": `${v.id}:end`, "aria-label": `End the visit with ${who}`, onclick: () => finish(v, "end", time) }, "End visit")
      : h("button", { type: "button", class: "quiet small danger-text", "data-key": `${v.id}:cancel`, "aria-label": `Cancel the visit with ${who}`, onclick: () => finish(v, "cancel", time) }, "Cancel visit"));
  } else {
    list.push(h("a", { class: "button secondary small", href: summaryUrl(v.id), "aria-label": `Summary of the visit with ${who}` }, "Summary"));
    if (v.status === "ended") list.push(h("a", { class: "button secondary small", href: `/visits/${v.id}/note`, "aria-label": `Progress note for the visit with ${who}` }, "Note"));
  }
  return h("div", { class: "row-actions" }, list);
}

function toggle(visitId, panel) {
  state.open[visitId] = state.open[visitId] === panel ? null : panel;
  render();
  const target = state.open[visitId] === "add" ? $(`add-${visitId}-role`) : null;
  if (target) target.focus();
}

function panelRow(v) {
  const panel = isLive(v) ? state.open[v.id] : null;
  const content = panel === "add" ? addForm(v) : panel === "links" ? links(v)
    : panel === "consent" ? consentLinkPanel(v) : null;
  return h("tr", { class: "panel-row", hidden: !content },
    h("td", { colspan: 7, id: `panel-${v.id}` }, content));
}

function linkField(id, label, value) {
  return h("div", { class: "link-field" },
    h("label", { for: id, text: label }),
    h("div", { class: "link-row" },
      h("input", { id, type: "text", readonly: true, value, onfocus: (e) => e.target.select() }),
      h("button", { type: "button", class: "secondary small", "aria-label": `Copy: ${label}`, onclick: (e) => copy(value, () => $(id), e.currentTarget) }, "Copy")));
}

/** The box with a participant's link, opening the visit's links panel if need be. */
function revealLink(visitId, participantId) {
  if (!$(`link-${participantId}`)) { state.open[visitId] = "links"; render(); }
  return $(`link-${participantId}`);
}

function links(v) {
  return h("div", { class: "panel" },
    h("h3", { text: `Links for the visit with ${v.patient_name}` }),
    h("p", { class: "muted small", text: "Each person has their own link. Send it by your practice's usual secure message." }),
    v.participants.filter((p) => p.link).map((p) => linkField(`link-${p.id}`,
      p.role === "clinician" ? "Your link" : `Link for ${personText(p)}`, p.link)));
}

function addForm(v) {
  const id = (name) => `add-${v.id}-${name}`;
  const rep = v.legal_representative;
  const role = h("select", { id: id("role") },
    h("option", { value: "interpreter" }, "Interpreter"),
    h("option", { value: "family_member" }, "Family member"),
    rep ? h("option", { value: "legal_representative" }, `Legal representative (${rep.name}, on record)`) : null,
    h("option", { value: "co_clinician" }, "Co-clinician"));
  const name = h("div", {}, h("label", { for: id("name"), text: "Their full name" }),
    h("input", { id: id("name"), type: "text", maxlength: 200, autocomplete: "off" }));
  const email = h("div", { hidden: true },
    h("label", { for: id("email") }, "Colleague's email ", h("span", { class: "hint", text: "They need a clinician account here" })),
    h("input", { id: id("email"), type: "email", maxlength: 320, autocomplete: "off" }));
  const error = h("p", { class: "notice problem", role: "alert", hidden: true });
  role.addEventListener("change", () => {
    name.hidden = role.value === "legal_representative" || role.value === "co_clinician";
    email.hidden = role.value !== "co_clinician";
  });
  const form = h("form", { class: "panel", novalidate: true },
    h("h3", { text: `Add someone to the visit with ${v.patient_name}` }),
    h("div", { class: "form-grid" },
      h("div", {}, h("label", { for: id("role"), text: "Role" }), role), name, email),
    rep ? null : h("p", { class: "muted small", text: "A legal representative can be added only when the visit has one on record." }),
    error,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Add participant"),
      h("button", { type: "button", class: "secondary", onclick: () => toggle(v.id, "add") }, "Close")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { role: role.value };
    if (!name.hidden) body.name = $(id("name")).value.trim();
    if (!email.hidden) body.email = $(id("email")).value.trim();
    if ((!name.hidden && !body.name) || (!email.hidden && !body.email)) {
      error.textContent = email.hidden ? "Enter their full name." : "Enter your colleague's email.";
      error.hidden = false;
      return;
    }
    try {
      const person = await api("POST", `/api/v1/visits/${v.id}/participants`, body);
      state.open[v.id] = "links";
      await refreshVisits();
      $(`link-${person.id}`)?.focus();
      say(`${personText(person)} was added. Copy their link and send it to them.`);
    } catch (err) {
      if (err.status === 401) return toLogin();
      error.textContent = `${err.message} ${err.action || ""}`;
      error.hidden = false;
    }
  });
  return form;
}

async function finish(v, kind, time) {
  const ending = kind === "end";
  const answer = await confirmDialog(ending
    ? { title: "End the visit for everyone?", yes: "End visit for everyone",
        text: `Everyone in the visit with ${v.patient_name} is disconnected, and the links stop working.` }
    : { title: `Cancel the visit with ${v.patient_name} at ${time}?`, yes: "Cancel visit",
        text: "The links stop working at once, and anyone waiting is told the visit was cancelled." });
  if (!answer.ok) return;
  try {
    await api("POST", `/api/v1/visits/${v.id}/${kind}`, {});
    say(ending ? `The visit with ${v.patient_name} has ended.` : `The visit with ${v.patient_name} was cancelled.`);
  } catch (err) {
    problem(err);
  }
  await refreshVisits();
}

async function refreshVisits() {
  try {
    state.visits = (await api("GET", "/api/v1/dashboard")).visits;
    render();
  } catch (err) {
    problem(err);
  }
  await refreshConsents();
}

// ---- consents ---------------------------------------------------------------------------

const CONSENT_STATUS = {
  none: ["Not issued", ""], awaiting_clinician: ["Needs your signature", "warn"],
  awaiting_patient: ["Waiting for patient", "warn"], complete: ["Signed", "ok"], revoked: ["Revoked", "bad"],
};
const consentApi = (id, tail = "") => `/api/v1/consents/${encodeURIComponent(id)}${tail}`;

/** The patient's telehealth consent that counts: the newest one not revoked, else the newest. */
function telehealthConsent(visitId) {
  const list = state.consents[visitId];
  if (!list) return undefined;
  const mine = list.filter((c) => !c.template || !c.template.kind || c.template.kind === "telehealth")
    .sort((a, b) => String(b.issued_at || "").localeCompare(String(a.issued_at || "")));
  return mine.find((c) => c.status !== "revoked") || mine[0] || null;
}

async function refreshConsents() {
  const shown = state.visits.filter((v) => v.status !== "cancelled");
  const answers = await Promise.all(shown.map(async (v) => {
    try {
      return [v.id, (await api("GET", `/api/v1/visits/${encodeURIComponent(v.id)}/consents`)).consents];
    } catch (err) {
      if (err.status === 401) toLogin();
      return [v.id, state.consents[v.id]];
    }
  }));
  let changed = false;
  for (const [id, list] of answers) {
    if (list === undefined) continue;
    if (JSON.stringify(list) !== JSON.stringify(state.consents[id])) changed = true;
    state.consents[id] = list;
  }
  if (changed) render();
}

function consentCell(v) {
  const c = telehealthConsent(v.id);
  const onFile = c === undefined ? v.consent_on_file : Boolean(c && c.status === "complete");
  const badge = onFile ? h("span", { class: "badge ok", text: "Consent: on file" })
    : h("span", { class: "badge warn", text: "Consent: not on file" });
  if (c === undefined) return h("div", { class: "consent-cell" }, badge);
  const status = c ? c.status : "none";
  const [text] = CONSENT_STATUS[status] || [status];
  const who = v.patient_name;
  const key = (what) => `${v.id}:consent:${what}`;
  const parts = [];
  let line = text;
  if (status === "complete" && c.completed_at) line = `Signed ${localTime(c.completed_at)}`;
  if (status === "revoked" && c.revoked_at) line = `Revoked ${localTime(c.revoked_at)}`;
  parts.push(h("p", { class: `consent-state small ${status}`, "data-consent-status": status, text: line }));
  const live = isLive(v);
  if (live && (status === "none" || status === "revoked")) {
    parts.push(h("button", {
      type: "button", class: "secondary small", "data-key": key("prepare"),
      "aria-label": `${status === "revoked" ? "Prepare a new consent" : "Prepare consent"} for ${who}`,
      onclick: (e) => prepareConsent(v, e.currentTarget),
    }, status === "revoked" ? "Prepare a new consent" : "Prepare consent"));
  }
  if (status === "awaiting_clinician") {
    parts.push(h("button", {
      type: "button", class: "small", "data-key": key("sign"), "aria-label": `Sign the consent for ${who}`,
      onclick: () => signConsent(v, c),
    }, "Sign consent"));
  }
  if (status === "awaiting_patient" && c.consent_link) {
    parts.push(h("button", {
      type: "button", class: "secondary small", "data-key": key("copy"), "aria-label": `Copy consent link for ${who}`,
      onclick: (e) => copy(c.consent_link, () => revealConsentLink(v.id), e.currentTarget),
    }, "Copy consent link"));
  }
  if (status === "complete") {
    parts.push(h("span", { class: "consent-links small" },
      h("a", { href: consentApi(c.id, "/pdf"), download: "signed-consent.pdf", "aria-label": `Signed consent PDF for ${who}` }, "Signed PDF"),
      h("a", { href: consentApi(c.id, "/certificate"), download: "certificate-of-completion.pdf", "aria-label": `Certificate of completion for ${who}` }, "Certificate")));
  }
  return h("div", { class: "consent-cell" }, badge, parts);
}

function revealConsentLink(visitId) {
  const id = `consent-link-${visitId}`;
  if (!$(id)) { state.open[visitId] = "consent"; render(); }
  return $(id);
}

function consentLinkPanel(v) {
  const c = telehealthConsent(v.id);
  if (!c || !c.consent_link || c.status !== "awaiting_patient") return null;
  return h("div", { class: "panel" },
    h("h3", { text: `Consent form for ${v.patient_name}` }),
    h("p", { class: "muted small", text: "Send this link by your practice's usual secure message. They confirm the date of birth, read the form and sign it on their own device." }),
    linkField(`consent-link-${v.id}`, `Consent link for ${v.patient_name}`, c.consent_link),
    h("div", { class: "actions" }, h("button", { type: "button", class: "quiet small", onclick: () => toggle(v.id, "consent") }, "Close")));
}

async function prepareConsent(v, button) {
  button.disabled = true;
  try {
    const { consent } = await api("POST", `/api/v1/visits/${encodeURIComponent(v.id)}/consents`, {});
    state.consents[v.id] = [consent, ...(state.consents[v.id] || []).filter((c) => c.id !== consent.id)];
    render();
    if (consent.status === "awaiting_clinician") await signConsent(v, consent);
  } catch (err) {
    button.disabled = false;
    problem(err);
  }
  await refreshConsents();
}

/** The clinician's certification signature, in a dialog, with a key made in this browser. */
function signConsent(v, consent) {
  const dialog = $("consent-dialog");
  const field = (consent.fields || []).find((f) => f.role === "clinician") || {};
  const error = $("cd-error"), status = $("cd-status"), name = $("cd-name"), sign = $("cd-sign");
  $("cd-what").textContent = `${consent.template ? consent.template.title : "Consent form"}, for ${v.patient_name}. You sign first; then the patient signs from their consent link.`;
  $("cd-doc").src = consentApi(consent.id, "/document");
  $("cd-pdf").href = consentApi(consent.id, "/pdf");
  $("cd-role").textContent = field.role_label || "Clinician";
  $("cd-meaning").textContent = field.meaning;
  $("cd-name-hint").textContent = field.printed_name ? `As the practice has it: ${field.printed_name}` : "";
  name.value = "";
  error.hidden = true;
  status.textContent = "";
  let busy = false;
  dialog.returnValue = "";
  dialog.showModal();
  name.focus();
  return new Promise((resolve) => {
    const onCancel = (event) => { if (busy) event.preventDefault(); };
    const onSubmit = async (event) => {
      event.preventDefault();
      error.hidden = true;
      const typed = name.value.trim().replace(/\s+/g, " ");
      if (!typed) { error.textContent = "Type your full name to sign."; error.hidden = false; name.focus(); return; }
      if (!canSign()) { error.textContent = "This browser cannot make a signing key here (it needs HTTPS and a current browser)."; error.hidden = false; return; }
      busy = true;
      sign.disabled = true; $("cd-cancel").disabled = true;
      status.textContent = "Signing… this takes a few seconds.";
      try {
        const { consent: signed } = await deviceSign({
          prepareUrl: consentApi(consent.id, "/prepare"), finishUrl: consentApi(consent.id, "/finish"),
          headers: { "X-CSRF-Token": pageData.csrf_token || "" }, typedName: typed,
        });
        state.consents[v.id] = [signed, ...(state.consents[v.id] || []).filter((c) => c.id !== signed.id)];
        if (signed.status === "awaiting_patient") state.open[v.id] = "consent";
        busy = false;
        dialog.close("signed");
        render();
        $(`consent-link-${v.id}`)?.focus();
        say(`You signed the consent for ${v.patient_name}. Copy the consent link and send it to them.`);
      } catch (err) {
        busy = false;
        status.textContent = "";
        if (err.status === 401) { toLogin(); return; }
        if (["field_already_signed", "out_of_order", "already_complete", "signing_conflict", "consent_revoked"].includes(err.code)) {
          dialog.close("stale");
          problem({ message: "This consent changed in the meantime.", action: "The dashboard now shows where it stands." });
          return;
        }
        error.textContent = err.code === "name_mismatch"
          ? `That name doesn't match yours as the practice has it${field.printed_name ? `: ${field.printed_name}` : ""}.`
          : `${err.message} ${err.action || ""}`.trim();
        error.hidden = false;
      } finally {
        sign.disabled = false; $("cd-cancel").disabled = false;
      }
    };
    const onCancelButton = () => dialog.close("cancel");
    $("cd-form").addEventListener("submit", onSubmit);
    $("cd-cancel").addEventListener("click", onCancelButton);
    dialog.addEventListener("cancel", onCancel);
    dialog.addEventListener("close", () => {
      $("cd-form").removeEventListener("submit", onSubmit);
      $("cd-cancel").removeEventListener("click", onCancelButton);
      dialog.removeEventListener("cancel", onCancel);
      $("cd-doc").removeAttribute("src");
      refreshConsents().then(resolve);
    }, { once: true });
  });
}

// ---- the live waiting rooms ----------------------------------------------------------

function waited(w) {
  const s = w.waited_s + (Date.now() - state.liveAt) / 1000;
  return s < 60 ? "(just now)" : `(${Math.floor(s / 60)} min)`;
}

function waitingLine(visitId, w) {
  const who = w.role === "patient" ? w.name : personText(w);
  return h("div", { class: "waiting-alert", "data-waiting": w.id },
    h("span", {}, h("span", { class: "who", text: who }), " is waiting ", h("span", { class: "waited" })),
    h("span", { class: "row-actions" },
      h("button", { type: "button", class: "small", "data-key": `${visitId}:admit:${w.id}`, "aria-label": `Admit ${w.name}`, onclick: (e) => admit(visitId, w, e.currentTarget) }, "Admit"),
      h("button", { type: "button", class: "secondary small", "data-key": `${visitId}:deny:${w.id}`, "aria-label": `Deny ${w.name}`, onclick: () => deny(visitId, w) }, "Deny")));
}

function renderLive(visitId) {
  const row = $(`live-${visitId}`);
  if (!row) return;
  const info = state.live[visitId] || { waiting: [], in_room: [] };
  const box = row.querySelector(".live-lines");
  const ids = new Set(info.waiting.map((w) => w.id));
  for (const line of box.querySelectorAll("[data-waiting]")) if (!ids.has(line.dataset.waiting)) line.remove();
  for (const w of info.waiting) {
    let line = box.querySelector(`[data-waiting="${CSS.escape(w.id)}"]`);
    if (!line) line = box.insertBefore(waitingLine(visitId, w), box.querySelector(".in-room"));
    line.querySelector(".waited").textContent = waited(w);
  }
  const inRoom = box.querySelector(".in-room");
  inRoom.hidden = info.in_room.length === 0;
  inRoom.textContent = `In the call now: ${info.in_room.map(personText).join(", ")}`;
  row.hidden = info.waiting.length === 0 && info.in_room.length === 0;
}

function visitTime(visitId) {
  const v = state.visits.find((x) => x.id === visitId);
  return v ? timeFmt.format(new Date(v.scheduled_start)) : "";
}

function renderAlerts(arrivals) {
  const box = $("waiting-alerts");
  for (const note of box.querySelectorAll("[data-arrival]")) if (!state.waitingKeys.has(note.dataset.arrival)) note.remove();
  for (const [visitId, w] of arrivals) {
    const at = visitTime(visitId);
    const note = h("div", { class: "notice warn arrival", "data-arrival": `${visitId}:${w.id}` },
      h("span", {}, h("strong", { text: `${personText(w)} is waiting` }), at ? ` for the visit at ${at}.` : "."),
      h("span", { class: "row-actions" },
        h("button", { type: "button", class: "secondary small", "aria-label": `Show the visit ${w.name} is waiting for`, onclick: () => showWaiting(visitId, w) }, "Show"),
        h("button", { type: "button", class: "quiet small", "aria-label": `Dismiss the alert about ${w.name}`, onclick: () => note.remove() }, "Dismiss")));
    box.append(note);
  }
  const count = state.waitingKeys.size;
  document.title = `${count ? `(${count} waiting) ` : ""}${TITLE}`;
}

function showWaiting(visitId, w) {
  const admit = document.querySelector(`[data-key="${CSS.escape(`${visitId}:admit:${w.id}`)}"]`);
  if (!admit) return;
  admit.scrollIntoView({ block: "center" });
  admit.focus({ preventScroll: true });
}

function applyLive(live) {
  state.live = live;
  state.liveAt = Date.now();
  const keys = new Set();
  const arrivals = [];
  for (const [visitId, info] of Object.entries(live)) {
    for (const w of info.waiting) {
      const key = `${visitId}:${w.id}`;
      keys.add(key);
      if (!state.waitingKeys.has(key)) arrivals.push([visitId, w]);
    }
  }
  state.waitingKeys = keys;
  const sig = JSON.stringify(Object.entries(live).filter(([, info]) => info.in_room.length).map(([id]) => id).sort());
  const unknown = Object.keys(live).some((id) => !state.visits.some((v) => v.id === id));
  const changed = state.liveSig !== null && sig !== state.liveSig;
  state.liveSig = sig;
  if (changed || unknown) refreshVisits().then(() => renderAlerts([]));
  for (const v of state.visits) renderLive(v.id);
  renderAlerts(arrivals);
  if (arrivals.length) sound.chime();
}

async function poll() {
  try {
    applyLive(await api("GET", "/api/v1/live"));
    $("live-problem").hidden = true;
  } catch (err) {
    if (err.status === 401) return toLogin();
    $("live-problem").hidden = false;
  }
  setTimeout(poll, POLL_MS);
}

async function admit(visitId, w, button) {
  button.disabled = true;
  try {
    await api("POST", `/api/v1/visits/${visitId}/admit`, { participant_id: w.id });
    say(`${w.name} was let into the visit.`);
  } catch (err) {
    button.disabled = false;
    problem(err);
  }
  await refreshVisits();
}

async function deny(visitId, w) {
  const answer = await confirmDialog({
    title: `Don't let ${w.name} in?`, yes: `Deny ${w.name}`, reason: true,
    text: "They leave the waiting room and are told they were not let in.",
  });
  if (!answer.ok) return;
  try {
    await api("POST", `/api/v1/visits/${visitId}/deny`, { participant_id: w.id, reason: answer.reason });
    say(`${w.name} was not let in.`);
  } catch (err) {
    problem(err);
  }
}

// ---- sound: a short two-note chime (WebAudio), on by default ---------------------------

const sound = {
  ctx: null,
  on: localStorage.getItem("th_sound_alerts") !== "off",
  unlock() {
    try {
      sound.ctx = sound.ctx || new AudioContext();
      if (sound.ctx.state === "suspended") sound.ctx.resume();
    } catch { sound.ctx = null; }
  },
  chime() {
    if (!sound.on) return;
    sound.unlock();
    const ctx = sound.ctx;
    if (!ctx) return;
    const start = ctx.currentTime + 0.02;
    [[660, 0], [880, 0.2]].forEach(([freq, delay]) => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, start + delay);
      gain.gain.exponentialRampToValueAtTime(0.3, start + delay + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + delay + 0.18);
      osc.connect(gain).connect(ctx.destination);
      osc.start(start + delay);
      osc.stop(start + delay + 0.2);
    });
    const box = $("waiting-alerts");
    box.dataset.chimes = String(Number(box.dataset.chimes || 0) + 1);
  },
};

// ---- the new-visit form --------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

/** "2026-12-01T15:00" (the browser's own zone) -> "2026-12-01T15:00:00-05:00". */
function localToIso(value) {
  const d = new Date(value);
  if (!value || Number.isNaN(d.getTime())) return null;
  const offset = -d.getTimezoneOffset();
  const sign = offset >= 0 ? "+" : "-";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:00`
    + `${sign}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
}

function nextQuarterHour() {
  const d = new Date(Date.now() + 15 * 60000);
  d.setMinutes(Math.floor(d.getMinutes() / 15) * 15, 0, 0);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function openNewVisit(open) {
  $("new-visit").hidden = !open;
  $("new-visit-toggle").setAttribute("aria-expanded", String(open));
  if (open) {
    if (!$("nv-start").value) $("nv-start").value = nextQuarterHour();
    $("nv-name").focus();
  }
}

function newVisitBody() {
  const value = (id) => $(id).value.trim();
  const missing = [["nv-name", "the patient's name"], ["nv-dob", "the date of birth"], ["nv-start", "the start time"]]
    .filter(([id]) => !value(id)).map(([, what]) => what);
  if (missing.length) return { error: `Enter ${missing.join(", ")}.` };
  const body = {
    patient_name: value("nv-name"), patient_dob: value("nv-dob"),
    scheduled_start: localToIso(value("nv-start")), visit_type: value("nv-type"),
    patient_contact: value("nv-contact"),
  };
  const rep = { name: value("nv-rep-name"), relationship: value("nv-rep-relationship"), authority: value("nv-rep-authority") };
  if (rep.name || rep.relationship || rep.authority) {
    if (!(rep.name && rep.relationship && rep.authority)) {
      return { error: "A legal representative needs a name, a relationship and an authority." };
    }
    body.legal_representative = rep;
  }
  return { body };
}

function setUpNewVisit() {
  const zone = browserZone();
  $("nv-zone").textContent = zone ? `Your time zone: ${zone.replaceAll("_", " ")}` : "";
  $("new-visit-toggle").addEventListener("click", () => openNewVisit($("new-visit").hidden));
  $("nv-close").addEventListener("click", () => { openNewVisit(false); $("new-visit-toggle").focus(); });
  $("created-close").addEventListener("click", () => { $("created").hidden = true; $("new-visit-toggle").focus(); });
  $("new-visit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("nv-error");
    const { body, error: message } = newVisitBody();
    error.hidden = !message;
    if (message) { error.textContent = message; return; }
    try {
      const created = await api("POST", "/api/v1/visits", body);
      const v = created.visit;
      $("created-text").textContent = `${v.patient_name}, ${TYPE[v.visit_type] || v.visit_type}, ${dayFmt.format(new Date(v.scheduled_start))} at ${timeFmt.format(new Date(v.scheduled_start))}.`;
      $("created-patient-link").value = created.patient_link;
      $("created-clinician-link").value = created.clinician_link;
      $("new-visit-form").reset();
      openNewVisit(false);
      $("created").hidden = false;
      $("created").focus();
      await refreshVisits();
    } catch (err) {
      if (err.status === 401) return toLogin();
      error.textContent = `${err.message} ${err.action || ""}`;
      error.hidden = false;
    }
  });
  for (const button of document.querySelectorAll("[data-copy]")) {
    const input = $(button.dataset.copy);
    button.addEventListener("click", () => copy(input.value, () => input, button));
  }
}

// ---- logging out after a time without activity ---------------------------------------

function setUpIdleLogout() {
  const idleMs = (pageData.idle_s || 1800) * 1000;
  let last = Date.now();
  const active = () => { last = Date.now(); $("idle-warning").hidden = true; };
  for (const type of ["pointerdown", "keydown", "wheel", "touchstart", "mousemove"]) {
    document.addEventListener(type, active, { passive: true });
  }
  setInterval(() => {
    const idle = Date.now() - last;
    if (idle >= idleMs) {
      $("logout-reason").value = "idle";
      $("logout-form").submit();
    } else {
      $("idle-warning").hidden = idle < idleMs - 60000;
    }
  }, 5000);
}

function setUpSound() {
  const box = $("sound-toggle");
  box.checked = sound.on;
  box.addEventListener("change", () => {
    sound.on = box.checked;
    localStorage.setItem("th_sound_alerts", sound.on ? "on" : "off");
    if (sound.on) sound.chime();
  });
  // Browsers play sound only on a page someone has clicked or typed on.
  const hint = $("sound-hint");
  hint.hidden = !sound.on || navigator.userActivation?.hasBeenActive !== false;
  for (const type of ["pointerdown", "keydown"]) {
    document.addEventListener(type, () => { sound.unlock(); }, { passive: true });
  }
  // Hidden only once the click is over: hiding it on pointerdown moved everything below it
  // up under the pointer, so that first click landed on nothing.
  for (const type of ["click", "keydown"]) {
    document.addEventListener(type, () => { hint.hidden = true; }, { passive: true });
  }
}

setUpNewVisit();
setUpIdleLogout();
setUpSound();
render();
poll();
refreshConsents();
setInterval(refreshVisits, REFRESH_MS);
