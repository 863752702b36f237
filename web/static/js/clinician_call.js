// The clinician's call page: a ticket for their own place in the visit (no link needed),
// camera and microphone (or audio only, or neither), then the shared call screen, which
// has admit/deny and "End visit for everyone". When the call is over: the summary.
import { api, pageData, summaryUrl, toLogin } from "/static/js/api.js";

const $ = (id) => document.getElementById(id);
const KEEPALIVE_MS = 5 * 60 * 1000; // a call is activity: keep the web session alive

const DEVICE_HELP = {
  NotAllowedError: ["Your browser was not allowed to use the camera and microphone.",
    "Click the camera icon in the address bar, choose Allow, then press Try again."],
  NotFoundError: ["No camera or microphone was found.",
    "Plug in a headset or a webcam, then press Try again."],
  NotReadableError: ["Another app is using your camera or microphone.",
    "Close other video apps (for example Zoom, Teams or FaceTime), then press Try again."],
  OverconstrainedError: ["Your camera could not start with the settings we asked for.",
    "Press Try again, or join with audio only."],
  insecure: ["This page cannot use the camera here: it needs a secure (https) address.",
    "Ask your practice's IT contact; meanwhile you can join without camera or microphone."],
};

function status(text) { $("setup-status").textContent = text; }

function problem(message, action = "") {
  $("setup-problem-text").textContent = message;
  $("setup-problem-action").textContent = action;
  $("setup-problem").hidden = false;
  status("");
}

async function getMedia(kind) {
  if (kind === "none") return new MediaStream();
  if (!navigator.mediaDevices?.getUserMedia) throw Object.assign(new Error("insecure"), { name: "insecure" });
  return navigator.mediaDevices.getUserMedia(kind === "audio"
    ? { audio: true, video: false }
    : { audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
}

/** Camera and microphone, or what the clinician chooses after a failure. */
function devices() {
  return new Promise((resolve) => {
    const attempt = async (kind) => {
      $("device-help").hidden = true;
      status("Getting your camera and microphone ready…");
      try {
        resolve(await getMedia(kind));
      } catch (err) {
        const [what, tip] = DEVICE_HELP[err.name] || ["Your camera and microphone could not be started.",
          "Check that they are connected and not used by another app, then press Try again."];
        $("device-problem").textContent = what;
        $("device-tip").textContent = tip;
        $("device-help").hidden = false;
        status("");
        $("retry-devices").focus();
      }
    };
    $("retry-devices").onclick = () => attempt("full");
    $("audio-only").onclick = () => attempt("audio");
    $("no-devices").onclick = () => attempt("none");
    attempt("full");
  });
}

async function main() {
  let grant;
  try {
    grant = await api("POST", `/api/v1/visits/${encodeURIComponent(pageData.visit_id)}/ticket`, {});
  } catch (err) {
    if (err.status === 401) return toLogin();
    if (["visit_ended", "visit_cancelled"].includes(err.code)) return location.assign(summaryUrl(pageData.visit_id));
    const opens = err.opens_at ? ` It opens at ${new Date(err.opens_at).toLocaleString()}.` : "";
    return problem(`${err.message}${opens}`, err.action);
  }
  const stream = await devices();
  status("Connecting to the visit…");
  let modules;
  try {
    modules = await Promise.all([import("/static/js/call.js"), import("/static/js/callui.js")]);
  } catch {
    for (const track of stream.getTracks()) track.stop();
    return problem("The call screen could not load.", "Reload the page. If it keeps happening, tell your practice's IT contact.");
  }
  const [{ Call }, { mountCall }] = modules;
  const call = new Call({
    ticket: grant.ticket, wsUrl: grant.ws_url, iceServers: grant.ice_servers,
    self: grant.participant, stream, graceS: grant.reconnect_grace_s,
  });
  const keepalive = setInterval(() => api("GET", "/api/v1/me").catch(() => {}), KEEPALIVE_MS);
  call.addEventListener("ended", () => {
    clearInterval(keepalive);
    setTimeout(() => location.assign(summaryUrl(pageData.visit_id)), 1000);
  });
  mountCall($("call-root"), call, { selfName: grant.participant.name, role: grant.participant.role });
}

main();
