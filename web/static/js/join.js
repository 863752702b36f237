// The patient's (or guest's) way in: identity check -> device check -> location ->
// consent gate -> waiting room -> call -> ended. One step shows at a time; every
// refusal says why and what to do, and no state is a spinner forever.
import { runPrecall } from "/static/js/precall.js";
import { Call } from "/static/js/call.js";
import { mountCall } from "/static/js/callui.js";
import { explain, h, request, runSigning } from "/static/js/consentsign.js";

const data = JSON.parse(document.getElementById("page-data").textContent);
const token = decodeURIComponent(location.pathname.split("/v/")[1] || "");
const $ = (id) => document.getElementById(id);
const STEPS = ["identity", "precall", "location", "consent", "waiting", "call", "ended"];
const US_STATES = {
  AL: "Alabama", AK: "Alaska", AZ: "Arizona", AR: "Arkansas", CA: "California", CO: "Colorado",
  CT: "Connecticut", DE: "Delaware", DC: "District of Columbia", FL: "Florida", GA: "Georgia",
  HI: "Hawaii", ID: "Idaho", IL: "Illinois", IN: "Indiana", IA: "Iowa", KS: "Kansas",
  KY: "Kentucky", LA: "Louisiana", ME: "Maine", MD: "Maryland", MA: "Massachusetts",
  MI: "Michigan", MN: "Minnesota", MS: "Mississippi", MO: "Missouri", MT: "Montana",
  NE: "Nebraska", NV: "Nevada", NH: "New Hampshire", NJ: "New Jersey", NM: "New Mexico",
  NY: "New York", NC: "North Carolina", ND: "North Dakota", OH: "Ohio", OK: "Oklahoma",
  OR: "Oregon", PA: "Pennsylvania", PR: "Puerto Rico", RI: "Rhode Island",
  SC: "South Carolina", SD: "South Dakota", TN: "Tennessee", TX: "Texas", UT: "Utah",
  VT: "Vermont", VA: "Virginia", VI: "U.S. Virgin Islands", WA: "Washington",
  WV: "West Virginia", WI: "Wisconsin", WY: "Wyoming", GU: "Guam", AS: "American Samoa",
  MP: "Northern Mariana Islands", OUTSIDE_US: "I'm outside the United States",
};

function show(step) {
  for (const name of STEPS) $(`step-${name}`).hidden = name !== step;
  const index = Math.min(STEPS.indexOf(step), 4);
  [...$("steps").children].forEach((li, i) => {
    li.className = i < index ? "done" : i === index ? "current" : "";
  });
  $("steps").hidden = step === "call" || step === "ended";
  document.body.classList.toggle("in-call", step === "call");
  document.getElementById("main").className = step === "call" ? "full" : "narrow";
  const heading = $(`step-${step}`).querySelector("h1");
  if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: false }); }
}

function ended(title, message, action = "") {
  $("ended-title").textContent = title;
  $("ended-message").textContent = message;
  $("ended-action").textContent = action;
  show("ended");
}

const FINAL = {
  link_expired: "This link has expired", visit_cancelled: "This visit was cancelled",
  visit_ended: "This visit has ended", participant_removed: "This link was withdrawn",
  link_invalid: "This link does not work",
};

async function post(path, body) {
  const resp = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const answer = await resp.json().catch(() => ({ error: { code: "unavailable", message: "The service did not answer.", action: "Check your connection and try again." } }));
  if (!resp.ok) throw Object.assign(new Error(answer.error.message), answer.error);
  return answer;
}

// ---- identity ---------------------------------------------------------------

function dobValue() {
  const month = $("dob-month").value, day = $("dob-day").value.trim(), year = $("dob-year").value.trim();
  if (!month || !/^\d{1,2}$/.test(day) || !/^\d{4}$/.test(year)) return null;
  return `${year}-${month.padStart(2, "0")}-${day.padStart(2, "0")}`;
}

function identity() {
  return new Promise((resolve) => {
    const form = $("identity-form");
    const error = $("identity-error");
    $("dob-group").hidden = !data.needs_dob;
    $("name-group").hidden = !data.needs_name;
    if (data.needs_name) $("identity-why").textContent = "To keep the visit private, please confirm the patient's date of birth and your own full name.";
    if (!data.needs_dob && !data.needs_name) $("identity-why").textContent = "Press Continue to check your camera and join.";
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      const body = { token };
      if (data.needs_dob) {
        const dob = dobValue();
        if (!dob) { error.textContent = "Please enter the month, day and year of birth."; error.hidden = false; return; }
        body.dob = dob;
      }
      if (data.needs_name) {
        body.name = $("own-name").value.trim();
        if (!body.name) { error.textContent = "Please enter your full name."; error.hidden = false; return; }
      }
      $("identity-submit").disabled = true;
      try {
        resolve(await post("/api/v1/join", body));
      } catch (err) {
        if (FINAL[err.code]) { ended(FINAL[err.code], err.message, err.action); return; }
        let text = err.message;
        if (err.code === "identity_mismatch") text = `That doesn't match our records. Please check and try again (${err.attempts_left} ${err.attempts_left === 1 ? "try" : "tries"} left).`;
        if (err.code === "link_locked") text = `${err.message} ${err.action}`;
        error.textContent = text;
        error.hidden = false;
      } finally {
        $("identity-submit").disabled = false;
      }
    });
  });
}

// ---- location ---------------------------------------------------------------

function locationStep(grant) {
  return new Promise((resolve) => {
    const select = $("loc-state");
    for (const [code, name] of Object.entries(US_STATES)) select.append(new Option(name, code));
    $("location-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = $("location-error");
      const home = document.querySelector("input[name=at-home]:checked");
      if (!select.value || !home) { error.textContent = "Please choose your state and whether you are at home."; error.hidden = false; return; }
      try {
        await post("/api/v1/location", {
          ticket: grant.ticket, state: select.value, at_home: home.value === "yes",
          place: $("loc-place").value.trim(), callback_phone: $("loc-phone").value.trim(),
        });
        resolve();
      } catch (err) {
        if (FINAL[err.code]) { ended(FINAL[err.code], err.message, err.action); return; }
        error.textContent = err.message; error.hidden = false;
      }
    });
  });
}

// ---- the consent gate ---------------------------------------------------------------
// The practice needs a signed telehealth consent before this person may wait. With a form
// to sign (`signable`), the join answer set the consent cookie and the signing steps run
// here; without one yet, the page says so and asks again every 5 s (that answer sets the
// cookie once there is something to sign).

const CONSENT_POLL_MS = 5000;
const pause = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

function consentGate(grant) {
  return request("GET", "/api/v1/join/consent", { headers: { Authorization: `Bearer ${grant.ticket}` } });
}

/** Resolves true once the consent is on file (signed here or elsewhere); false if the page ended. */
async function consentStep(grant) {
  show("consent");
  const wait = $("consent-wait"), flow = $("consent-flow"), detail = $("consent-detail");
  const waitingText = detail.textContent;
  let gate = grant.consent;
  let withdrawn = null; // a consent withdrawn while this page had it: wait for a new one
  for (;;) {
    while (!gate.on_file && (!gate.signable || gate.consent_id === withdrawn)) {
      wait.hidden = false;
      flow.hidden = true;
      await pause(CONSENT_POLL_MS);
      try {
        gate = await consentGate(grant);
        detail.textContent = withdrawn ? detail.textContent : waitingText;
      } catch (err) {
        if (FINAL[err.code]) { ended(FINAL[err.code], err.message, err.action); return false; }
        detail.textContent = "We're having trouble reaching your practice. This page keeps trying, so please keep it open.";
      }
    }
    if (gate.on_file) return true;
    wait.hidden = true;
    flow.hidden = false;
    try {
      const { card } = await runSigning(flow, {
        renewSession: async () => { gate = await consentGate(grant); },
      });
      return await new Promise((resolve) => {
        const go = h("button", { type: "button", onclick: () => resolve(true) }, "Continue to the waiting room");
        card.querySelector("a.button")?.classList.add("secondary"); // the waiting room is next
        card.append(h("div", { class: "actions" }, go));
      });
    } catch (err) {
      if (FINAL[err.code]) { ended(FINAL[err.code], err.message, err.action); return false; }
      if (err.code === "consent_revoked") {
        withdrawn = gate.consent_id;
        gate = { ...gate, signable: false };
        detail.textContent = "The form you were sent was withdrawn. Your clinician will send a new one; this page will update by itself.";
        show("consent");
        continue;
      }
      if (err.code === "no_consent_session") { gate = { ...gate, signable: false }; continue; }
      const { message, action } = explain(err);
      ended("We couldn't open your consent form", message, action || "Please open your link again, or contact your practice.");
      return false;
    }
  }
}

// ---- waiting room and call -----------------------------------------------------

function enter(grant, media) {
  const call = new Call({
    ticket: grant.ticket, wsUrl: grant.ws_url, iceServers: grant.ice_servers,
    self: grant.participant, stream: media.stream, graceS: grant.reconnect_grace_s,
  });
  let mounted = false;
  call.addEventListener("state", (event) => {
    const state = event.detail.state ?? event.detail;
    if (state === "waiting") show("waiting");
    if (state === "admitted" && !mounted) {
      mounted = true;
      show("call");
      mountCall($("step-call"), call, { selfName: grant.participant.name, role: grant.participant.role });
    }
    if (state === "denied") ended("You were not let in", "Your clinician could not let you into this visit.", "Please contact your practice.");
  });
  call.addEventListener("ended", (event) => {
    const reason = event.detail && event.detail.reason;
    if (reason === "cancelled") ended("This visit was cancelled", "Your clinician cancelled this visit.", "Contact your practice to book a new time.");
    else if (reason === "left") ended("You left the visit", "You can open your link again to rejoin while the visit is still going on.");
    else ended("Your visit has ended", "Thank you. You can close this page now.");
  });
  call.addEventListener("connection", (event) => {
    const { state } = event.detail;
    const line = $("waiting-state");
    if (state === "reconnecting") line.textContent = "Reconnecting… please keep this page open.";
    if (state === "open") line.textContent = "You're in the waiting room.";
    if (state === "closed" && !mounted && $("step-ended").hidden) {
      ended("We lost the connection", "We could not reach the practice.", "Check your internet connection, then open your link again.");
    }
  });
  call.addEventListener("error", (event) => {
    const code = event.detail && event.detail.code;
    if (FINAL[code]) ended(FINAL[code], event.detail.message);
  });
  $("waiting-leave").addEventListener("click", () => { call.leave(); ended("You left the waiting room", "You can open your link again to come back."); });
  lobbyChat(call);
  call.start();
  show("waiting");
}

// ---- waiting-room chat with the care team ------------------------------------------

function lobbyChat(call) {
  const log = $("lobby-log");
  const status = $("lobby-status");
  call.addEventListener("lobby_chat", (event) => {
    const m = event.detail;
    const item = document.createElement("li");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = m.mine ? "You" : m.name;
    item.append(who, document.createTextNode(m.text));
    log.append(item);
    status.textContent = m.mine ? "Sent." : "";
  });
  call.addEventListener("error", (event) => {
    if (event.detail && event.detail.code === "no_care_team") {
      status.textContent = "Your clinician isn't connected yet, so the message was not sent. Please try again in a moment.";
    }
  });
  $("lobby-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("lobby-text");
    if (call.sendLobbyChat(input.value)) input.value = "";
  });
}

async function main() {
  const start = new Date(data.scheduled_start);
  $("visit-time").textContent = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" }).format(start);
  show("identity");
  const grant = await identity();
  show("precall");
  const media = await runPrecall($("precall"), { ticket: grant.ticket, iceServers: grant.ice_servers });
  if (data.asks_location) {
    show("location");
    await locationStep(grant);
  }
  if (grant.consent && grant.consent.required && !grant.consent.on_file) {
    if (!(await consentStep(grant))) return;
  }
  enter(grant, media);
}

main();
