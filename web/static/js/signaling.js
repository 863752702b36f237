// The signaling socket of one participant (docs/protocol.md, version 1).
//
// One CustomEvent per server frame, named after its `type` (detail = the frame),
// plus `connection` events: {state: "connecting" | "open" | "reconnecting" | "closed", code, reason?}.
// "open" means the server has said `welcome` on this socket (the hello was accepted),
// not merely that the TCP/WebSocket handshake finished.
//
// The socket comes back by itself after an unexpected close, with the same ticket,
// for up to `graceS` seconds (the server keeps our place that long), backing off
// from 0.5 s to 5 s, and at once when the browser says it is `online` again.
// A socket that has said nothing for a while (no pong to our pings) is treated as
// dead: half-open TCP after a network change never fires `close` by itself.
//
// send() while the socket is not open: room-level frames (chat, media_state,
// admit, deny, end, leave) are kept and sent right after the next `welcome`;
// negotiation frames (offer, answer, ice, media_connected) and pings are dropped,
// because every peer connection is rebuilt after coming back (protocol "Who offers")
// and stale SDP or candidates would only confuse the new ones.

const PROTOCOL_VERSION = 1;
// Close codes after which the same ticket cannot help: do not come back.
const FINAL_CLOSE_CODES = new Set([4400, 4401, 4403, 4409, 4410, 4412]);
const KEEP_WHILE_DOWN = new Set(["chat", "lobby_chat", "media_state", "admit", "deny", "end", "leave"]);
const MAX_KEPT = 50;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5000;
const PING_EVERY_MS = 15000;
// Two missed pongs and a margin: the server answers every ping at once.
const SILENCE_LIMIT_MS = 2 * PING_EVERY_MS + 5000;
// After the browser comes back online, an "open" socket must prove itself this fast.
const ONLINE_PROBE_MS = 4000;
// A connect attempt that has not reached `welcome` by then is abandoned and retried
// (a SYN into a dead network can hang for minutes).
const CONNECT_TIMEOUT_MS = 10000;

/** The WebSocket URL for `wsUrl` ("/ws" or a full ws(s):// URL), relative to this page. */
export function socketUrl(wsUrl, loc = window.location) {
  if (/^wss?:\/\//i.test(wsUrl)) return wsUrl;
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const path = wsUrl.startsWith("/") ? wsUrl : `/${wsUrl}`;
  return `${scheme}//${loc.host}${path}`;
}

export class Signaling extends EventTarget {
  /**
   * @param {{ticket: string, wsUrl?: string, graceS?: number}} options
   */
  constructor({ ticket, wsUrl = "/ws", graceS = 60 }) {
    super();
    this._ticket = ticket;
    this._url = socketUrl(wsUrl || "/ws");
    this._graceMs = Math.max(0, Number(graceS ?? 60)) * 1000 || 60000;
    this._ws = null;
    this._state = "idle";
    this._welcomed = false; // this socket got its welcome
    this._everWelcomed = false;
    this._stopped = false; // leave() / final close: never come back
    this._attempt = 0;
    this._dropDeadline = null; // while down: when to give up (ms since epoch)
    this._retryTimer = null;
    this._pingTimer = null;
    this._probeTimer = null;
    this._connectTimer = null;
    this._lastHeard = 0;
    this._pingId = 0;
    this._kept = [];
    this._lastCode = null;
    this._onOnline = () => this._online();
  }

  /** "idle" | "connecting" | "open" | "reconnecting" | "closed" */
  get state() { return this._state; }

  get isOpen() { return this._state === "open"; }

  /** Open the socket (once; later calls do nothing). */
  connect() {
    if (this._state !== "idle") return;
    window.addEventListener("online", this._onOnline);
    this._setState("connecting", null);
    this._open();
  }

  /**
   * Send one client frame. Returns true if it went out now, "kept" if it will go
   * out after the next welcome, false if it was dropped (see the module comment).
   */
  send(obj) {
    if (this._state === "open" && this._ws && this._ws.readyState === WebSocket.OPEN) {
      this._ws.send(JSON.stringify(obj));
      return true;
    }
    if (this._stopped || !KEEP_WHILE_DOWN.has(obj.type)) return false;
    // Only the latest media state matters.
    if (obj.type === "media_state") this._kept = this._kept.filter((f) => f.type !== "media_state");
    if (this._kept.length >= MAX_KEPT) this._kept.shift();
    this._kept.push(obj);
    return "kept";
  }

  /**
   * Stop for good: no reconnecting. Frames already sent (e.g. `leave`) still go out:
   * the browser flushes them before the close frame.
   */
  close(code = 1000, reason = "left") {
    if (this._stopped && this._state === "closed") return;
    this._stopped = true;
    this._kept = [];
    const ws = this._ws;
    this._detach();
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try { ws.close(code, reason); } catch { /* already closing */ }
    }
    this._finish(code, reason);
  }

  // ---- internals ---------------------------------------------------------

  _open() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    let ws;
    try {
      ws = new WebSocket(this._url);
    } catch {
      this._dropped(1006);
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    clearTimeout(this._connectTimer);
    this._connectTimer = setTimeout(() => { if (!this._welcomed) this._abandon(ws); }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      this._heard();
      ws.send(JSON.stringify({ type: "hello", v: PROTOCOL_VERSION, ticket: this._ticket }));
      this._startPings();
    };
    ws.onmessage = (event) => this._message(event.data);
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._detach();
      this._dropped(event.code);
    };
    // An error is always followed by close; nothing to do here.
    ws.onerror = () => {};
  }

  _message(data) {
    this._heard();
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (!frame || typeof frame !== "object" || typeof frame.type !== "string") return;
    if (frame.type === "welcome") this._welcome();
    this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
  }

  _welcome() {
    clearTimeout(this._connectTimer);
    this._welcomed = true;
    this._everWelcomed = true;
    this._attempt = 0;
    this._dropDeadline = null;
    this._setState("open", null);
    // Listeners of `welcome` run after this; the kept frames go out before them,
    // which is what the server needs (they are room-level, not per connection).
    const kept = this._kept;
    this._kept = [];
    for (const frame of kept) this.send(frame);
  }

  _dropped(code) {
    this._lastCode = code;
    this._stopPings();
    if (this._stopped) return;
    if (FINAL_CLOSE_CODES.has(code)) {
      this._stopped = true;
      this._finish(code, "final");
      return;
    }
    const now = Date.now();
    if (this._dropDeadline === null) this._dropDeadline = now + this._graceMs;
    if (now >= this._dropDeadline) {
      this._stopped = true;
      this._finish(code, "gave_up");
      return;
    }
    this._setState(this._everWelcomed ? "reconnecting" : "connecting", code);
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this._attempt);
    this._attempt += 1;
    this._retryTimer = setTimeout(() => this._retry(), Math.min(delay, this._dropDeadline - now));
  }

  /** A backoff ran out. While the browser knows it is offline, wait for `online` instead. */
  _retry() {
    this._retryTimer = null;
    if (this._stopped) return;
    if (navigator.onLine === false) {
      const now = Date.now();
      if (now >= this._dropDeadline) {
        this._stopped = true;
        this._finish(this._lastCode, "gave_up");
        return;
      }
      this._retryTimer = setTimeout(() => this._retry(), Math.min(BACKOFF_MAX_MS, this._dropDeadline - now));
      return;
    }
    this._open();
  }

  _online() {
    if (this._stopped) return;
    if (this._retryTimer !== null) {
      // Waiting out a backoff: the network is back, try now.
      this._attempt = 0;
      this._open();
      return;
    }
    if (this._state === "open") this._probe();
    else if (this._ws) {
      // An attempt started while offline may hang: start a fresh one now.
      this._attempt = 0;
      this._abandon(this._ws);
    }
  }

  /** The socket looks open, but may have died while we were offline: ping it. */
  _probe() {
    const ws = this._ws;
    const asked = Date.now();
    this._sendPing();
    clearTimeout(this._probeTimer);
    this._probeTimer = setTimeout(() => {
      if (this._ws === ws && this._lastHeard < asked) this._abandon(ws);
    }, ONLINE_PROBE_MS);
  }

  /** Give up on a silent socket without waiting for a closing handshake that may never come. */
  _abandon(ws) {
    if (this._ws !== ws) return;
    this._detach();
    try { ws.close(4000, "silent"); } catch { /* ignore */ }
    this._dropped(1006);
  }

  _heard() { this._lastHeard = Date.now(); }

  _sendPing() {
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      this._pingId = (this._pingId + 1) % 1_000_000;
      ws.send(JSON.stringify({ type: "ping", id: this._pingId }));
    }
  }

  _startPings() {
    this._stopPings();
    const ws = this._ws;
    this._pingTimer = setInterval(() => {
      if (Date.now() - this._lastHeard > SILENCE_LIMIT_MS) {
        this._abandon(ws);
        return;
      }
      this._sendPing();
    }, PING_EVERY_MS);
  }

  _stopPings() {
    clearInterval(this._pingTimer);
    clearTimeout(this._probeTimer);
    this._pingTimer = null;
    this._probeTimer = null;
  }

  _detach() {
    const ws = this._ws;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    clearTimeout(this._connectTimer);
    this._ws = null;
    this._welcomed = false;
    this._stopPings();
  }

  _finish(code, reason) {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    window.removeEventListener("online", this._onOnline);
    this._setState("closed", code, reason);
  }

  _setState(state, code, reason) {
    if (this._state === state && state !== "reconnecting") return;
    this._state = state;
    const detail = { state, code: code ?? null };
    if (reason) detail.reason = reason;
    this.dispatchEvent(new CustomEvent("connection", { detail }));
  }
}
