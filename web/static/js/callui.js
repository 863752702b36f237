// The call screen: status line, reconnect banner, waiting-room alert (care team),
// video tiles, controls and the chat panel, all driven by a Call's events.
//
//   mountCall(root, call, {selfName, role, startedAt?}) -> {destroy()}
//
// Remote tiles carry data-peer-id, data-peer-state (connecting/connected/recovering)
// and data-frames-decoded (video frames decoded from that person, every second;
// it only grows) so tests can check media without reaching into the page's objects.
// Classes come from app.css ("the call" section, plus the `/* call.js */` rules).

const ROLE_WORDS = {
  clinician: "Clinician", co_clinician: "Co-clinician", patient: "Patient",
  legal_representative: "Legal representative", interpreter: "Interpreter",
  family_member: "Family member",
};
const CARE_TEAM = new Set(["clinician", "co_clinician"]);
const RECONNECTING_TEXT = "Reconnecting… your call will continue automatically";
// Errors worth telling the person about; the rest are for the console of a developer.
const SHOWN_ERRORS = {
  camera_unavailable: null, screen_share_failed: null,
  room_full: "The visit already has the most people it can hold.",
  rate_limited: "Slow down a little: some messages were not sent.",
  not_waiting: "That person is no longer waiting.",
};
const PROBLEM_SHOWN_MS = 8000;

// 24x24 stroke icons (no icon font, no files): decorative, the button has the name.
const ICONS = {
  mic: "M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3zM5 11a7 7 0 0 0 14 0M12 18v3",
  micOff: "M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3zM5 11a7 7 0 0 0 14 0M12 18v3M4 4l16 16",
  camera: "M3 7h12v10H3zM15 10l6-3v10l-6-3",
  cameraOff: "M3 7h12v10H3zM15 10l6-3v10l-6-3M3 3l18 18",
  audio: "M4 15v-3a8 8 0 0 1 16 0v3M4 15h3v5H4zM17 15h3v5h-3z",
  screen: "M3 4h18v12H3zM8 20h8M12 16v4",
  chat: "M4 5h16v11H9l-5 4z",
  leave: "M10 4H5v16h5M14 8l4 4-4 4M18 12H9",
  end: "M6 6l12 12M18 6L6 18",
};

export function roleWords(role) { return ROLE_WORDS[role] || "Guest"; }

export function initials(name) {
  const parts = String(name || "").trim().split(/\s+/).filter(Boolean);
  if (!parts.length) return "?";
  const first = parts[0][0];
  const last = parts.length > 1 ? parts[parts.length - 1][0] : "";
  return (first + last).toUpperCase();
}

export function formatElapsed(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
}

/** Render the call into `root` and start it. Returns {destroy()}. */
export function mountCall(root, call, { selfName, role, startedAt } = {}) {
  const view = new CallView(root, call, {
    selfName: selfName || call.self?.name || "You",
    role: role || call.self?.role,
    startedAt: startedAt ? new Date(startedAt).getTime() : null,
  });
  call.start();
  return { destroy: () => view.destroy() };
}

// ---- DOM helpers -------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

/** A control button whose accessible name survives the phone layout hiding its text. */
function controlButton(name, label, onclick, extra = {}) {
  const button = h("button", { type: "button", class: extra.class, "aria-label": label, onclick },
    icon(name), h("span", { class: "label-text", text: label }));
  return button;
}

function setControl(button, name, label, pressed) {
  button.replaceChildren(icon(name), h("span", { class: "label-text", text: label }));
  button.setAttribute("aria-label", label);
  if (pressed !== undefined) button.setAttribute("aria-pressed", String(Boolean(pressed)));
}

// ---- the view ------------------------------------------------------------------

class CallView {
  constructor(root, call, opts) {
    this.root = root;
    this.call = call;
    this.opts = opts;
    this.careTeam = CARE_TEAM.has(opts.role);
    this.tiles = new Map(); // id -> tile parts
    this.waitingSeen = new Set();
    this.unread = 0;
    this.chatOpen = false;
    this.soundLocked = false;
    this.audioCtx = null;
    this.baseTitle = document.title;
    this.timers = [];
    this.offline = !navigator.onLine;
    this.signalingState = call.signaling?.state || "connecting";
    this.build();
    this.listen();
    this.renderLocal(call.localMedia);
    this.renderPeople(call.participants);
    if (call.state !== "joining") this.onState({ state: call.state });
    this.timers.push(setInterval(() => this.tickTimer(), 1000));
    this.tickTimer();
  }

  // ---- building ----

  build() {
    const side = "call-chat-" + Math.random().toString(36).slice(2, 8);
    this.el = h("section", { class: "call", "aria-label": "Video visit", "data-state": this.call.state });
    this.timer = h("span", { class: "timer", role: "timer", "aria-label": "Time in visit", text: "00:00" });
    this.quality = h("span", { class: "quality", hidden: true },
      h("span", { class: "bars", "aria-hidden": "true" }, h("i"), h("i"), h("i")),
      h("span", { class: "quality-text" }));
    this.people = h("span", { class: "call-people" });
    this.soundButton = h("button", {
      type: "button", class: "small secondary", hidden: true, text: "Turn on sound",
      onclick: () => this.unlockSound(),
    });
    this.status = h("div", { class: "call-status" }, this.timer, this.quality, this.people, this.soundButton);
    // Live regions exist from the start (and stay): only their content changes.
    this.bannerHost = h("div", { role: "status", "aria-live": "polite", class: "banner-host" });
    this.problemHost = h("div", { role: "alert", class: "banner-host" });
    this.announcer = h("div", { class: "sr-only", "aria-live": "assertive" });
    this.waitingHost = h("div", { class: "waiting-host" });
    const top = h("div", { class: "call-top" }, this.status, this.bannerHost, this.problemHost,
      this.announcer, this.waitingHost);
    this.grid = h("div", { class: "grid" });
    this.selfTile = this.buildSelfTile();
    this.grid.append(this.selfTile.el);
    this.controls = this.buildControls(side);
    this.side = this.buildChat(side);
    this.el.append(top, this.grid, this.controls, this.side);
    this.root.replaceChildren(this.el);
    if (this.careTeam) {
      // Made now so it can play if the page already had a click (sticky activation);
      // otherwise the first click or key press anywhere lets it start.
      this.audio();
      this.onGesture = () => this.audio();
      document.addEventListener("pointerdown", this.onGesture);
      document.addEventListener("keydown", this.onGesture);
    }
  }

  buildSelfTile() {
    const video = h("video", { autoplay: true, playsinline: true, muted: true });
    video.muted = true; // the attribute alone is not enough for the property
    const placeholder = h("div", { class: "placeholder", "aria-hidden": "true", text: initials(this.opts.selfName) });
    const note = h("p", { class: "tile-note", hidden: true });
    const muted = h("span", { class: "muted-mark", hidden: true }, "Muted");
    const label = h("figcaption", { class: "label" },
      h("span", { class: "name", text: `${this.opts.selfName} (you)` }),
      h("span", { class: "short", text: "You" }),
      h("span", { class: "role", text: `· ${roleWords(this.opts.role)}` }), muted);
    const el = h("figure", { class: "tile self" }, video, placeholder, note, label);
    return { el, video, placeholder, note, muted };
  }

  buildControls(sideId) {
    const c = this.call;
    this.micButton = controlButton("mic", "Mute", () => c.setAudio(!c.localMedia.audio));
    this.camButton = controlButton("camera", "Stop camera", () => this.toggleCamera());
    this.audioOnlyButton = controlButton("audio", "Audio only", () => this.toggleAudioOnly());
    this.shareButton = controlButton("screen", "Share screen", () => this.toggleShare());
    this.chatButton = controlButton("chat", "Chat", () => this.toggleChat());
    this.chatButton.setAttribute("aria-expanded", "false");
    this.chatButton.setAttribute("aria-controls", sideId);
    this.micButton.setAttribute("aria-pressed", "false");
    this.camButton.setAttribute("aria-pressed", "false");
    this.audioOnlyButton.setAttribute("aria-pressed", "false");
    this.shareButton.setAttribute("aria-pressed", "false");
    this.leaveButton = controlButton("leave", "Leave", () => c.leave(),
      { class: this.careTeam ? "" : "danger" });
    const buttons = [this.micButton, this.camButton, this.audioOnlyButton, this.shareButton,
      this.chatButton, this.leaveButton];
    if (this.careTeam) {
      this.endButton = controlButton("end", "End visit for everyone", () => this.askEnd(), { class: "danger" });
      buttons.push(this.endButton);
    }
    this.buttonRow = h("div", { class: "control-row" }, ...buttons);
    this.confirm = this.careTeam ? this.buildEndConfirm() : null;
    return h("div", { class: "controls", role: "group", "aria-label": "Call controls" },
      this.buttonRow, this.confirm);
  }

  buildEndConfirm() {
    const question = h("p", { class: "confirm-text", id: "end-q-" + Math.random().toString(36).slice(2, 8),
      text: "End the visit for everyone? Everyone's link will stop working." });
    this.endYes = h("button", { type: "button", class: "danger", text: "Yes, end visit",
      onclick: () => { this.endYes.disabled = true; this.call.end(); } });
    this.endNo = h("button", { type: "button", class: "secondary", text: "Cancel", onclick: () => this.closeEnd() });
    return h("div", { class: "confirm", role: "alertdialog", "aria-labelledby": question.id, hidden: true,
      onkeydown: (e) => { if (e.key === "Escape") this.closeEnd(); } }, question, this.endYes, this.endNo);
  }

  buildChat(id) {
    const inputId = id + "-input";
    this.chatLog = h("ol", { class: "chat-log", role: "log", "aria-live": "polite", "aria-label": "Chat history" });
    this.chatInput = h("input", { type: "text", id: inputId, maxlength: 2000, autocomplete: "off" });
    this.chatNote = h("p", { class: "hint", hidden: true });
    const form = h("form", { class: "chat", onsubmit: (e) => this.sendChat(e) },
      h("label", { for: inputId, text: "Message" }),
      h("div", { class: "chat-form" }, this.chatInput, h("button", { type: "submit", text: "Send" })),
      this.chatNote);
    const close = h("button", { type: "button", class: "quiet small", text: "Close chat", onclick: () => this.toggleChat(false) });
    return h("aside", { class: "side", id, "aria-label": "Chat", hidden: true },
      h("div", { class: "side-head" }, h("h2", { text: "Chat" }), close), this.chatLog, form);
  }

  // ---- events ----

  listen() {
    const on = (type, fn) => this.call.addEventListener(type, (e) => fn.call(this, e.detail));
    on("state", this.onState);
    on("participants", this.renderPeople);
    on("local_media", this.renderLocal);
    on("waiting_room", this.renderWaiting);
    on("chat", this.addChat);
    on("lobby_chat", this.addLobbyChat);
    on("quality", this.renderQuality);
    on("stats", this.renderStats);
    on("connection", (d) => { this.signalingState = d.state; this.renderBanner(); });
    on("error", this.showError);
    this.onOnline = () => { this.offline = false; this.renderBanner(); };
    this.onOffline = () => { this.offline = true; this.renderBanner(); };
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
  }

  onState({ state, reason, by }) {
    this.el.dataset.state = state;
    if (state === "admitted" || state === "waiting") {
      this.renderPeople(this.call.participants);
      return;
    }
    if (state !== "joining") this.renderOver(state, reason, by);
  }

  // ---- status line ----

  tickTimer() {
    const since = this.opts.startedAt ?? this.call.admittedAt;
    this.timer.textContent = since ? formatElapsed(Date.now() - since) : "00:00";
  }

  renderQuality(q) {
    if (!this.call.participants.size) return;
    this.quality.hidden = false;
    this.quality.className = `quality ${q.level}`;
    this.quality.querySelector(".quality-text").textContent = `Connection: ${q.level}`;
    const parts = [];
    if (q.rtt_ms !== null) parts.push(`round trip ${q.rtt_ms} ms`);
    parts.push(`loss ${q.loss_pct}%`, `${q.kbps} kbps in`);
    this.quality.title = parts.join(" · ");
  }

  renderBanner() {
    const recovering = [...this.call.participants.values()].some((p) => p.link === "recovering");
    const down = this.signalingState === "reconnecting" || (this.offline && this.call.state === "admitted");
    const text = down || recovering
      ? (this.offline ? `You're offline. ${RECONNECTING_TEXT}` : RECONNECTING_TEXT)
      : "";
    const current = this.bannerHost.firstElementChild;
    if (!text) { current?.remove(); return; }
    if (current?.textContent === text) return;
    this.bannerHost.replaceChildren(h("p", { class: "banner", text }));
  }

  showError({ code, message }) {
    if (!(code in SHOWN_ERRORS)) return;
    const text = SHOWN_ERRORS[code] || message;
    this.problemHost.replaceChildren(h("p", { class: "banner problem", text }));
    clearTimeout(this.problemTimer);
    this.problemTimer = setTimeout(() => this.problemHost.replaceChildren(), PROBLEM_SHOWN_MS);
  }

  // ---- tiles ----

  renderPeople(participants) {
    for (const [id, tile] of this.tiles) {
      if (!participants.has(id)) { tile.el.remove(); this.tiles.delete(id); }
    }
    for (const p of participants.values()) this.renderTile(p);
    // The layout picks columns and rows from these (app.css, `/* call.js */`).
    this.grid.dataset.count = String(this.tiles.size + 1);
    this.grid.dataset.remote = String(this.tiles.size);
    const names = [...participants.values()].map((p) => `${p.name} (${roleWords(p.role)})`);
    if (this.call.state === "waiting") this.people.textContent = "In the waiting room: you'll be let in shortly.";
    else this.people.textContent = names.length ? `With ${names.join(", ")}` : "Only you so far";
    if (!participants.size) this.quality.hidden = true;
    this.renderBanner();
  }

  renderTile(p) {
    let tile = this.tiles.get(p.id);
    if (!tile) {
      tile = this.buildRemoteTile(p);
      this.tiles.set(p.id, tile);
      this.grid.insertBefore(tile.el, this.selfTile.el);
    }
    const connecting = !p.stream || p.link === "connecting";
    tile.el.dataset.peerState = p.link;
    tile.el.classList.toggle("screen", p.screen);
    tile.muted.hidden = p.audio;
    const cameraOff = !p.video && !p.screen;
    tile.placeholder.hidden = Boolean(p.stream) && !cameraOff;
    const note = p.state === "reconnecting" || p.link === "recovering" ? "Reconnecting…"
      : connecting ? "Connecting…"
        : p.screen ? "Sharing screen" : cameraOff ? "Camera off" : "";
    tile.note.textContent = note;
    tile.note.hidden = !note;
    this.attach(tile.video, p.stream);
  }

  buildRemoteTile(p) {
    const video = h("video", { autoplay: true, playsinline: true });
    const placeholder = h("div", { class: "placeholder", "aria-hidden": "true", text: initials(p.name) });
    const note = h("p", { class: "tile-note", hidden: true });
    const muted = h("span", { class: "muted-mark", hidden: true }, "Muted");
    const label = h("figcaption", { class: "label" },
      h("span", { class: "name", text: p.name }),
      h("span", { class: "role", text: `· ${roleWords(p.role)}` }), muted);
    const el = h("figure", { class: "tile", "data-peer-id": p.id, "data-frames-decoded": "0",
      "data-peer-state": p.link }, video, placeholder, note, label);
    return { el, video, placeholder, note, muted };
  }

  /** Show `stream` in `video`; when the browser refuses sound without a click, play muted and offer a button. */
  attach(video, stream) {
    if (video.srcObject === stream) return;
    video.srcObject = stream;
    if (!stream) return;
    if (this.soundLocked && video !== this.selfTile.video) video.muted = true;
    video.play().catch((err) => {
      // Only a refusal to play sound locks it: an AbortError is this play() cut short by
      // the next stream (audio and video tracks arrive one after the other).
      if (err?.name !== "NotAllowedError" || video.srcObject !== stream) return;
      if (video === this.selfTile.video || video.muted) return;
      this.soundLocked = true;
      this.soundButton.hidden = false;
      video.muted = true;
      video.play().catch(() => {});
    });
  }

  unlockSound() {
    this.soundLocked = false;
    this.soundButton.hidden = true;
    for (const tile of this.tiles.values()) {
      tile.video.muted = false;
      tile.video.play().catch(() => {});
    }
  }

  renderStats({ peers }) {
    for (const [id, s] of Object.entries(peers)) {
      const tile = this.tiles.get(id);
      if (tile) tile.el.dataset.framesDecoded = String(s.framesDecoded);
    }
  }

  renderLocal(m) {
    const self = this.selfTile;
    this.attach(self.video, this.call.previewStream);
    self.el.classList.toggle("sharing", m.screen);
    self.placeholder.hidden = m.video || m.screen;
    self.muted.hidden = m.audio;
    self.note.textContent = m.screen ? "You're sharing your screen" : m.audioOnly ? "Audio only" : "";
    self.note.hidden = !self.note.textContent;
    this.micButton.disabled = !m.hasMic;
    setControl(this.micButton, m.audio ? "mic" : "micOff", !m.hasMic ? "No microphone" : m.audio ? "Mute" : "Unmute", m.hasMic && !m.audio);
    setControl(this.camButton, m.video ? "camera" : "cameraOff", m.video ? "Stop camera" : "Start camera", !m.video);
    setControl(this.audioOnlyButton, "audio", "Audio only", m.audioOnly);
    this.shareButton.hidden = !m.canShare;
    setControl(this.shareButton, "screen", m.screen ? "Stop sharing" : "Share screen", m.screen);
  }

  async toggleCamera() {
    this.camButton.disabled = true;
    try { await this.call.setVideo(!this.call.localMedia.video); } finally { this.camButton.disabled = false; }
  }

  async toggleAudioOnly() {
    this.audioOnlyButton.disabled = true;
    try {
      if (this.call.localMedia.audioOnly) await this.call.setVideo(true);
      else await this.call.audioOnly();
    } finally { this.audioOnlyButton.disabled = false; }
  }

  async toggleShare() {
    if (this.call.localMedia.screen) await this.call.stopSharing();
    else await this.call.shareScreen();
  }

  // ---- ending ----

  askEnd() {
    this.buttonRow.hidden = true;
    this.confirm.hidden = false;
    this.endNo.focus();
  }

  closeEnd() {
    this.confirm.hidden = true;
    this.buttonRow.hidden = false;
    this.endButton.focus();
  }

  renderOver(state, reason, by) {
    const [title, text, retry] = overText(state, reason, by);
    const heading = h("h1", { tabindex: "-1", text: title });
    const card = h("div", { class: "card message call-over " + (state === "ended" || state === "left" ? "done" : "info") },
      heading, h("p", { class: "lead", text }),
      retry ? h("div", { class: "actions" }, h("button", { type: "button", text: "Try again", onclick: () => location.reload() })) : null);
    this.destroy();
    this.root.replaceChildren(card);
    heading.focus();
  }

  destroy() {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    clearTimeout(this.problemTimer);
    clearTimeout(this.announceTimer);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    if (this.onGesture) {
      document.removeEventListener("pointerdown", this.onGesture);
      document.removeEventListener("keydown", this.onGesture);
    }
    document.title = this.baseTitle;
    for (const video of this.el.querySelectorAll("video")) video.srcObject = null;
    this.audioCtx?.close().catch(() => {});
    this.audioCtx = null;
  }

  // ---- waiting room (care team) ----

  renderWaiting({ waiting }) {
    if (!this.careTeam) return;
    const ids = new Set(waiting.map((w) => w.id));
    const arrived = waiting.filter((w) => !this.waitingSeen.has(w.id));
    this.waitingSeen = ids;
    const keep = new Map([...this.waitingHost.children].map((el) => [el.dataset.waitingId, el]));
    const items = waiting.map((w) => keep.get(w.id) || this.waitingItem(w));
    const hadFocus = this.waitingHost.contains(document.activeElement);
    this.waitingHost.replaceChildren(...items);
    if (hadFocus && !this.waitingHost.contains(document.activeElement)) {
      // The person just admitted or denied is gone from the list: keep the keyboard nearby.
      (this.waitingHost.querySelector("button") || this.micButton).focus();
    }
    document.title = waiting.length ? `(${waiting.length}) waiting · ${this.baseTitle}` : this.baseTitle;
    if (arrived.length) {
      this.announcer.textContent = arrived.map((w) => `${w.name} (${roleWords(w.role)}) is waiting to be let in.`).join(" ");
      // Said once; left in place it would be read again by someone browsing the page.
      clearTimeout(this.announceTimer);
      this.announceTimer = setTimeout(() => { this.announcer.textContent = ""; }, 5000);
      this.chime();
    }
  }

  waitingItem(w) {
    const who = `${w.name}`;
    const el = h("div", { class: "waiting-alert", "data-waiting-id": w.id });
    const ask = () => {
      el.replaceChildren(
        h("span", { text: `Deny ${who}? They will have to open their link again.` }),
        h("button", { type: "button", class: "small danger", text: "Yes, deny", "aria-label": `Yes, deny ${who}`,
          onclick: () => this.call.deny(w.id) }),
        h("button", { type: "button", class: "small secondary", text: "Cancel", onclick: () => fill() }));
      el.querySelector("button.secondary").focus();
    };
    // Messages with this waiting guest (lobby chat) and a one-line reply box.
    const log = h("ul", { class: "lobby-log", role: "log", "aria-live": "polite", "aria-label": `Messages with ${who}` });
    const input = h("input", { type: "text", maxlength: "2000", "aria-label": `Message to ${who}`, placeholder: "Write a short note…" });
    const reply = h("form", { class: "lobby-form" }, input,
      h("button", { type: "submit", class: "small secondary", text: "Send", "aria-label": `Send to ${who}` }));
    reply.addEventListener("submit", (event) => {
      event.preventDefault();
      if (this.call.sendLobbyChat(input.value, w.id)) input.value = "";
    });
    el.lobbyLog = log;
    const fill = () => {
      el.replaceChildren(
        h("span", {}, h("span", { class: "who", text: who }), ` (${roleWords(w.role)}) is waiting`),
        h("button", { type: "button", class: "small", text: "Admit", "aria-label": `Admit ${who}`,
          onclick: () => this.call.admit(w.id) }),
        h("button", { type: "button", class: "small secondary", text: "Deny", "aria-label": `Deny ${who}`,
          onclick: ask }),
        log, reply);
    };
    fill();
    return el;
  }

  addLobbyChat(message) {
    const item = [...this.waitingHost.children].find((el) => el.dataset.waitingId === message.with);
    if (!item || !item.lobbyLog) return;
    item.lobbyLog.append(h("li", {}, h("span", { class: "who", text: message.mine ? "You" : message.name }),
      h("span", { text: message.text })));
    if (!message.mine) this.chime();
  }

  audio() {
    if (!this.careTeam) return null;
    if (!this.audioCtx && window.AudioContext) {
      try { this.audioCtx = new AudioContext(); } catch { this.audioCtx = null; }
    }
    if (this.audioCtx?.state === "suspended") this.audioCtx.resume().catch(() => {});
    return this.audioCtx;
  }

  /** Two short soft notes: enough to be noticed from across the room, not alarming. */
  chime() {
    const ctx = this.audio();
    if (!ctx) return;
    const start = ctx.currentTime + 0.02;
    [660, 880].forEach((freq, i) => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      const t = start + i * 0.18;
      osc.type = "sine";
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.15, t + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.16);
      osc.connect(gain).connect(ctx.destination);
      osc.start(t);
      osc.stop(t + 0.18);
    });
  }

  // ---- chat ----

  toggleChat(open = !this.chatOpen) {
    this.chatOpen = open;
    this.side.hidden = !open;
    this.el.classList.toggle("with-side", open);
    this.chatButton.setAttribute("aria-expanded", String(open));
    if (open) {
      this.unread = 0;
      this.chatInput.focus();
    } else {
      this.chatButton.focus();
    }
    this.renderUnread();
  }

  renderUnread() {
    const label = this.unread ? `Chat, ${this.unread} new` : "Chat";
    setControl(this.chatButton, "chat", label);
  }

  sendChat(event) {
    event.preventDefault();
    const text = this.chatInput.value;
    const sent = this.call.sendChat(text);
    if (sent === false) {
      this.chatNote.textContent = text.trim() ? "That message is too long (2,000 characters at most)." : "";
      this.chatNote.hidden = !this.chatNote.textContent;
      return;
    }
    this.chatNote.textContent = sent === "kept" ? "You're reconnecting: your message will be sent when you're back." : "";
    this.chatNote.hidden = !this.chatNote.textContent;
    this.chatInput.value = "";
  }

  addChat(m) {
    const at = m.at ? new Date(m.at) : new Date();
    const time = h("time", { datetime: at.toISOString(),
      text: at.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" }) });
    const li = h("li", { class: m.mine ? "mine" : "" }, h("span", { class: "who", text: m.mine ? "You" : m.name }), time,
      h("span", { class: "text", text: m.text }));
    this.chatLog.append(li);
    li.scrollIntoView({ block: "nearest" });
    if (m.mine) { this.chatNote.hidden = true; return; }
    if (!this.chatOpen) { this.unread += 1; this.renderUnread(); }
  }
}

function overText(state, reason, by) {
  switch (state) {
    case "ended":
      if (reason === "cancelled") return ["This visit was cancelled", "Contact your practice to book a new time."];
      if (reason === "link_expired") return ["This link has expired", "Ask your practice for a new link."];
      return ["The visit has ended", by ? `${by} ended the visit. You can close this page.` : "You can close this page."];
    case "left": return ["You left the visit", "You can open your link again to rejoin while the visit is still going on."];
    case "denied": return ["You were not let in", reason || "Please contact your practice."];
    case "removed": return ["You were removed from this visit", "Please contact your practice if this is a mistake."];
    case "replaced": return ["You joined from another window", "This window is no longer in the visit. Carry on in the other one."];
    case "disconnected": return ["We lost the connection", "Check your internet connection, then try again.", true];
    default: return ["This link does not work", "Open the link from your invitation again, or ask your practice for a new one."];
  }
}
