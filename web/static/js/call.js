// One participant's side of a video visit: a full mesh of RTCPeerConnections
// brokered by the signaling socket (docs/protocol.md, "Who offers").
//
//   new Call({...}) ── start() ── welcome ── waiting ── admitted ── in the room
//     newcomer (admitted, or back after a drop) offers to every `connected` one;
//     the others answer. One RTCPeerConnection per other participant.
//     ICE trouble on a connection: the side that offered on it builds a NEW
//     connection and offers again (aiortc peers take an offer with a new ICE
//     ufrag as a new connection and have no ICE restart); the other side waits.
//   until: ended / denied / left / removed / replaced / rejected / disconnected
//
// Events (CustomEvent, `detail` shapes):
//   state         {state, previous, reason?, by?}
//   waiting_room  {waiting: [{id, role, name, since}]}        (care team)
//   participants  Map id -> {id, role, name, audio, video, screen,
//                             state: "connected"|"reconnecting", link: "connecting"|"connected"|"recovering",
//                             stream: MediaStream|null}     (everyone but us)
//   peer_state    {id, state: "connecting"|"connected"|"recovering"|"closed"}
//   chat          {from, name, text, at, mine}
//   quality       {rtt_ms, loss_pct, kbps, level: "good"|"fair"|"poor", peers: {id: {...same}}}
//   stats         {peers: {id: {framesDecoded, connection}}}  every second; framesDecoded
//                 counts every connection ever made with that peer, so it only grows
//   local_media   {audio, video, screen, audioOnly, hasMic, canShare}
//   connection    as Signaling's: {state, code, reason?}
//   ended         {reason: "ended"|"cancelled"|"left"|"link_expired", by}
//   error         {code, message, ref?}  server error frames, and local failures
//                 (camera_unavailable, screen_share_failed, peer_failed)

import { Signaling } from "./signaling.js";

const CARE_TEAM = new Set(["clinician", "co_clinician"]);
const STATS_EVERY_MS = 1000;
const QUALITY_EVERY_TICKS = 2;
// ICE "disconnected" often heals by itself within a few seconds (a Wi-Fi blip).
const DISCONNECTED_GRACE_MS = 5000;
// The answering side steps in only if the offering side has not rebuilt the
// connection by then (an aiortc offerer never does).
const ANSWERER_TAKEOVER_MS = 12000;
const STALL_POOR_MS = 4000;
const MAX_CHAT_CHARS = 2000;
const SERVER_DEFAULT_MEDIA = Object.freeze({ audio: true, video: true, screen: false });
const UFRAG = /^a=ice-ufrag:(\S+)/m;

export class Call extends EventTarget {
  /**
   * @param {{ticket: string, wsUrl?: string, iceServers?: RTCIceServer[],
   *          self: {id: string, role: string, name: string}, stream?: MediaStream, graceS?: number}} options
   */
  constructor({ ticket, wsUrl = "/ws", iceServers = [], self, stream, graceS = 60 }) {
    super();
    this.self = { ...self };
    // Exactly as the service gave them: no public STUN server is ever added.
    this.iceServers = Array.isArray(iceServers) ? iceServers : [];
    this.stream = stream || new MediaStream();
    this.state = "joining";
    this.admittedAt = null; // ms since epoch of the first admission
    this.participants = new Map();
    this.waiting = [];
    this.signaling = new Signaling({ ticket, wsUrl, graceS });
    this._mic = this.stream.getAudioTracks()[0] || null;
    this._camera = this.stream.getVideoTracks()[0] || null;
    this._cameraDevice = this._camera?.getSettings?.().deviceId || null;
    this._screen = null;
    this._peers = new Map(); // id -> peer record (see _newPeer)
    this._retiredFrames = new Map(); // id -> frames decoded on closed connections
    this._serverMedia = { ...SERVER_DEFAULT_MEDIA };
    this._welcomes = 0;
    this._started = false;
    this._over = false;
    this._finalError = null; // the error frame before a final close, if any
    this._statsTimer = null;
    this._tick = 0;
    this._polling = false;
    // No `leave` on pagehide: a reload (what people try first when something looks
    // wrong) then resumes the same place without a new admission; a closed tab
    // times out after the grace period.
    this._wire();
  }

  get careTeam() { return CARE_TEAM.has(this.self.role); }

  /** What we send now. */
  get localMedia() {
    return {
      audio: Boolean(this._mic && this._mic.enabled && this._mic.readyState === "live"),
      video: Boolean(this._camera && this._camera.enabled && this._camera.readyState === "live"),
      screen: Boolean(this._screen),
      audioOnly: !this._camera,
      hasMic: Boolean(this._mic),
      canShare: Boolean(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia),
    };
  }

  /** A muted-by-construction stream for the self view: the video we send (camera or screen). */
  get previewStream() {
    const track = this._outgoingVideo();
    if (!this._preview || this._preview.getVideoTracks()[0] !== track) {
      this._preview = new MediaStream(track ? [track] : []);
    }
    return this._preview;
  }

  /** Connect (once). Attach listeners first: the first events follow quickly. */
  start() {
    if (this._started) return;
    this._started = true;
    this._statsTimer = setInterval(() => this._pollStats(), STATS_EVERY_MS);
    this.signaling.connect();
  }

  // ---- controls ----------------------------------------------------------

  setAudio(on) {
    if (!this._mic) return false;
    this._mic.enabled = Boolean(on);
    this._mediaChanged();
    return true;
  }

  /** Camera on/off. Turning it on after audioOnly() opens the camera again. */
  async setVideo(on) {
    if (on && !this._camera) {
      if (!(await this._openCamera())) return false;
    } else if (this._camera) {
      this._camera.enabled = Boolean(on);
    }
    this._mediaChanged();
    return true;
  }

  /** Stop the camera altogether (bandwidth, privacy): the others get no video from us. */
  async audioOnly() {
    const camera = this._camera;
    if (camera) {
      this._camera = null;
      camera.stop();
      this.stream.removeTrack(camera);
    }
    if (!this._screen) await this._replaceVideo(null);
    this._mediaChanged();
  }

  /** Send the screen instead of the camera until the share ends (by us or the browser's bar). */
  async shareScreen() {
    if (!this.localMedia.canShare || this._screen) return false;
    let track;
    try {
      const shared = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      track = shared.getVideoTracks()[0];
    } catch (err) {
      // The person cancelled the picker: not an error worth showing.
      if (err && err.name !== "NotAllowedError" && err.name !== "AbortError") {
        this._emit("error", { code: "screen_share_failed", message: "Your screen could not be shared." });
      }
      return false;
    }
    if (!track || this._over) { track?.stop(); return false; }
    if ("contentHint" in track) track.contentHint = "detail"; // keep text sharp rather than smooth
    track.addEventListener("ended", () => { if (this._screen === track) this.stopSharing(); });
    this._screen = track;
    await this._replaceVideo(track);
    this._mediaChanged();
    return true;
  }

  async stopSharing() {
    const track = this._screen;
    if (!track) return;
    this._screen = null;
    track.stop();
    await this._replaceVideo(this._camera);
    this._mediaChanged();
  }

  admit(id) { return this.signaling.send({ type: "admit", participant_id: id }); }

  deny(id, reason) {
    const frame = { type: "deny", participant_id: id };
    if (reason) frame.reason = String(reason).slice(0, 200);
    return this.signaling.send(frame);
  }

  /** Returns false when the text is empty or too long, else what Signaling.send says. */
  sendChat(text) {
    const body = String(text ?? "").trim();
    if (!body || body.length > MAX_CHAT_CHARS) return false;
    return this.signaling.send({ type: "chat", text: body });
  }

  /** Waiting-room chat: a waiting guest to the care team, or the care team to guest `to`. */
  sendLobbyChat(text, to = null) {
    const body = String(text ?? "").trim();
    if (!body || body.length > MAX_CHAT_CHARS) return false;
    const frame = { type: "lobby_chat", text: body };
    if (to) frame.to = to;
    return this.signaling.send(frame);
  }

  leave() {
    if (this._over) return;
    this.signaling.send({ type: "leave" });
    this._finish("left", { reason: "left" });
    this._emit("ended", { reason: "left", by: null });
  }

  /** End the visit for everyone (care team). The server's `ended` finishes the call. */
  end() {
    if (this._over || !this.careTeam) return false;
    return this.signaling.send({ type: "end" });
  }

  // ---- signaling frames --------------------------------------------------

  _wire() {
    const on = (type, fn) => this.signaling.addEventListener(type, (e) => {
      if (!this._over) fn.call(this, e.detail);
    });
    on("connection", this._onConnection);
    on("welcome", this._onWelcome);
    on("waiting_room", (f) => { this.waiting = f.waiting || []; this._emit("waiting_room", { waiting: this.waiting }); });
    on("admitted", this._onAdmitted);
    on("participant_joined", this._onJoined);
    on("participant_left", this._onLeft);
    on("reconnecting", (f) => this._updateParticipant(f.participant_id, { state: "reconnecting" }));
    on("rejoined", this._onRejoined);
    on("offer", (f) => this._onOffer(f.from, f.sdp));
    on("answer", (f) => this._onAnswer(f.from, f.sdp));
    on("ice", (f) => this._onRemoteIce(f.from, f.candidate ?? null));
    on("chat", (f) => this._emit("chat", {
      from: f.from, name: f.name, text: f.text, at: f.at, mine: f.from === this.self.id,
    }));
    on("lobby_chat", (f) => this._emit("lobby_chat", {
      from: f.from, name: f.name, text: f.text, at: f.at, with: f.with, mine: f.from === this.self.id,
    }));
    on("media_state", (f) => this._updateParticipant(f.participant_id, {
      audio: Boolean(f.audio), video: Boolean(f.video), screen: Boolean(f.screen),
    }));
    on("ended", (f) => {
      this._finish("ended", { reason: f.reason || "ended", by: f.by ?? null });
      this._emit("ended", { reason: f.reason || "ended", by: f.by ?? null });
    });
    on("denied", (f) => this._finish("denied", { reason: f.reason || "" }));
    on("error", (f) => {
      if (f.ref === "hello") this._finalError = f.code;
      this._emit("error", { code: f.code, message: f.message, ref: f.ref });
    });
  }

  _onConnection(detail) {
    this._emit("connection", detail);
    if (detail.state !== "closed" || detail.reason === "left") return;
    if (detail.reason === "gave_up") {
      this._finish("disconnected", { reason: "connection_lost" });
      return;
    }
    const why = this._finalError;
    switch (detail.code) {
      case 4403: this._finish("denied", { reason: "" }); break;
      case 4409: this._finish("replaced", { reason: "joined_elsewhere" }); break;
      case 4410:
        if (why === "participant_removed") { this._finish("removed", { reason: why }); break; }
        {
          const reason = why === "visit_cancelled" ? "cancelled" : why === "link_expired" ? why : "ended";
          this._finish("ended", { reason, by: null });
          this._emit("ended", { reason, by: null });
        }
        break;
      default: this._finish("rejected", { reason: why || "rejected" });
    }
  }

  _onWelcome(frame) {
    const again = this._welcomes > 0;
    this._welcomes += 1;
    if (frame.participant) this.self = { ...this.self, ...frame.participant };
    // A fresh place (not resumed) starts from the server's defaults again.
    if (!frame.resumed) this._serverMedia = { ...SERVER_DEFAULT_MEDIA };
    if (again) {
      // Back after a drop: the others drop their connections to us on `rejoined`;
      // we rebuild ours from the `admitted` list that follows.
      for (const id of [...this._peers.keys()]) this._closePeer(id);
    }
    if (frame.state === "waiting") {
      this.participants.clear();
      this._emitParticipants();
      this._setState("waiting");
    }
  }

  _onAdmitted(frame) {
    const list = Array.isArray(frame.participants) ? frame.participants : [];
    const next = new Map();
    for (const p of list) next.set(p.id, this._entry(p, this.participants.get(p.id)));
    for (const id of this.participants.keys()) if (!next.has(id)) this._closePeer(id);
    this.participants = next;
    if (this.admittedAt === null) this.admittedAt = Date.now();
    this._setState("admitted");
    this._syncMediaState();
    for (const p of list) {
      // One still reconnecting offers to us itself when it is back.
      if ((p.state || "connected") === "connected") this._offerTo(p.id);
    }
    this._emitParticipants();
  }

  _onJoined(frame) {
    const p = frame.participant;
    if (!p || !p.id) return;
    this._closePeer(p.id);
    this.participants.set(p.id, this._entry({ ...p, state: "connected" }, null));
    this._emitParticipants(); // it offers to us
  }

  _onLeft(frame) {
    const id = frame.participant_id;
    this._closePeer(id);
    this._retiredFrames.delete(id);
    if (this.participants.delete(id)) this._emitParticipants();
  }

  _onRejoined(frame) {
    const id = frame.participant_id;
    this._closePeer(id); // a fresh offer from it follows
    this._updateParticipant(id, { state: "connected", link: "connecting", stream: null });
  }

  _entry(p, old) {
    return {
      id: p.id, role: p.role, name: p.name,
      audio: p.audio ?? true, video: p.video ?? true, screen: Boolean(p.screen),
      state: p.state || "connected",
      link: old?.link === "connected" && this._peers.has(p.id) ? "connected" : "connecting",
      stream: this._peers.get(p.id)?.stream || null,
    };
  }

  _updateParticipant(id, changes) {
    const p = this.participants.get(id);
    if (!p) return;
    Object.assign(p, changes);
    this._emitParticipants();
  }

  // ---- peer connections --------------------------------------------------

  _newPeer(id, offerer, link = "connecting") {
    this._closePeer(id);
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const peer = {
      id, pc, offerer,
      chain: Promise.resolve(), // negotiation steps of this connection, in order
      described: false, // our offer/answer has gone out: candidates may follow
      localCandidates: [], // ours, held until the description is out
      remoteCandidates: [], // theirs, held until their description is set
      reported: false, troubled: false, closed: false,
      stream: null, disconnectedTimer: null, takeoverTimer: null,
      framesDecoded: 0, sample: null, lastBytesAt: performance.now(), lastLevel: null,
    };
    this._peers.set(id, peer);
    pc.onicecandidate = (e) => this._onLocalCandidate(peer, e.candidate);
    pc.ontrack = (e) => this._onTrack(peer, e.track);
    pc.oniceconnectionstatechange = () => this._onIceState(peer);
    pc.onconnectionstatechange = () => this._onConnectionState(peer);
    this._setLink(id, link);
    return peer;
  }

  _closePeer(id) {
    const peer = this._peers.get(id);
    if (!peer) return;
    this._peers.delete(id);
    peer.closed = true;
    clearTimeout(peer.disconnectedTimer);
    clearTimeout(peer.takeoverTimer);
    this._retiredFrames.set(id, (this._retiredFrames.get(id) || 0) + peer.framesDecoded);
    const { pc } = peer;
    pc.onicecandidate = pc.ontrack = pc.oniceconnectionstatechange = pc.onconnectionstatechange = null;
    pc.close();
    const p = this.participants.get(id);
    if (p && p.stream === peer.stream) p.stream = null;
    this._emit("peer_state", { id, state: "closed" });
  }

  _run(peer, step) {
    peer.chain = peer.chain
      .then(() => (peer.closed ? undefined : step()))
      .catch((err) => {
        if (peer.closed) return; // a replaced connection: its failures do not matter
        this._emit("error", { code: "peer_failed", message: String(err?.message || err), ref: peer.id });
      });
    return peer.chain;
  }

  _offerTo(id, link = "connecting") {
    const peer = this._newPeer(id, true, link);
    const streams = [this.stream];
    // Both kinds always, so a camera (or screen) can be sent later with replaceTrack,
    // without renegotiating.
    peer.pc.addTransceiver(this._mic || "audio", { direction: "sendrecv", streams });
    peer.pc.addTransceiver(this._outgoingVideo() || "video", { direction: "sendrecv", streams });
    this._run(peer, async () => {
      await peer.pc.setLocalDescription(await peer.pc.createOffer());
      this._sendDescription(peer, "offer");
    });
  }

  _onOffer(from, sdp) {
    if (!this.participants.has(from) || typeof sdp !== "string") return;
    const current = this._peers.get(from);
    if (current && current.pc.signalingState === "have-local-offer" && this.self.id < from) {
      return; // glare (both recovering at once): the lower id's offer wins, theirs is dropped
    }
    const peer = current && sameIceSession(current.pc, sdp) ? current : this._newPeer(from, false);
    this._run(peer, async () => {
      await peer.pc.setRemoteDescription({ type: "offer", sdp });
      await this._attachLocalTracks(peer);
      await peer.pc.setLocalDescription(await peer.pc.createAnswer());
      this._sendDescription(peer, "answer");
      await this._flushRemoteCandidates(peer);
    });
  }

  _onAnswer(from, sdp) {
    const peer = this._peers.get(from);
    if (!peer || typeof sdp !== "string") return;
    this._run(peer, async () => {
      if (peer.pc.signalingState !== "have-local-offer") return; // a late answer to a replaced offer
      await peer.pc.setRemoteDescription({ type: "answer", sdp });
      await this._flushRemoteCandidates(peer);
    });
  }

  _onRemoteIce(from, candidate) {
    const peer = this._peers.get(from);
    if (!peer) return; // no connection with them (yet): nothing to add it to
    this._run(peer, async () => {
      if (!peer.pc.remoteDescription) peer.remoteCandidates.push(candidate);
      else await addCandidate(peer.pc, candidate);
    });
  }

  async _flushRemoteCandidates(peer) {
    const held = peer.remoteCandidates;
    peer.remoteCandidates = [];
    for (const c of held) await addCandidate(peer.pc, c);
  }

  /** As answerer: send our tracks on the transceivers their offer created. */
  async _attachLocalTracks(peer) {
    const done = new Set();
    for (const t of peer.pc.getTransceivers()) {
      const kind = t.receiver.track.kind;
      if (done.has(kind) || t.stopped || t.currentDirection === "stopped") continue;
      done.add(kind);
      t.direction = "sendrecv";
      if (t.sender.setStreams) t.sender.setStreams(this.stream);
      await t.sender.replaceTrack(kind === "audio" ? this._mic : this._outgoingVideo());
    }
  }

  _sendDescription(peer, type) {
    this.signaling.send({ type, to: peer.id, sdp: peer.pc.localDescription.sdp });
    peer.described = true;
    const held = peer.localCandidates;
    peer.localCandidates = [];
    for (const c of held) this._sendCandidate(peer, c);
  }

  _onLocalCandidate(peer, candidate) {
    if (peer.closed) return;
    const wire = candidate ? candidate.toJSON() : null;
    if (wire && !wire.candidate) return; // a per-generation end marker: the null event follows
    if (!peer.described) peer.localCandidates.push(wire);
    else this._sendCandidate(peer, wire);
  }

  _sendCandidate(peer, wire) {
    this.signaling.send({ type: "ice", to: peer.id, candidate: wire });
  }

  _onTrack(peer, track) {
    if (peer.closed) return;
    // A new stream object each time, so a view bound to the old one notices.
    const others = peer.stream ? peer.stream.getTracks().filter((t) => t.kind !== track.kind) : [];
    peer.stream = new MediaStream([...others, track]);
    this._updateParticipant(peer.id, { stream: peer.stream });
  }

  _onIceState(peer) {
    if (peer.closed) return;
    const state = peer.pc.iceConnectionState;
    if (state === "connected" || state === "completed") {
      clearTimeout(peer.disconnectedTimer);
      clearTimeout(peer.takeoverTimer);
      peer.disconnectedTimer = peer.takeoverTimer = null;
      peer.troubled = false;
      if (peer.pc.connectionState === "connected") this._setLink(peer.id, "connected");
    } else if (state === "disconnected") {
      this._setLink(peer.id, "recovering");
      clearTimeout(peer.disconnectedTimer);
      peer.disconnectedTimer = setTimeout(() => this._iceTrouble(peer), DISCONNECTED_GRACE_MS);
    } else if (state === "failed") {
      this._iceTrouble(peer);
    }
  }

  _onConnectionState(peer) {
    if (peer.closed) return;
    const state = peer.pc.connectionState;
    if (state === "connected") {
      this._setLink(peer.id, "connected");
      if (!peer.reported) {
        peer.reported = true;
        this.signaling.send({
          type: "media_connected", peer: peer.id,
          audio: Boolean(this._mic), video: Boolean(this._outgoingVideo()),
        });
      }
    } else if (state === "failed") {
      this._iceTrouble(peer);
    }
  }

  /** The connection is failed (or disconnected too long): rebuild it, from the side that offered. */
  _iceTrouble(peer) {
    if (peer.closed || this._peers.get(peer.id) !== peer || peer.troubled) return;
    peer.troubled = true;
    clearTimeout(peer.disconnectedTimer);
    this._setLink(peer.id, "recovering");
    if (peer.offerer) {
      this._recover(peer.id);
      return;
    }
    peer.takeoverTimer = setTimeout(() => {
      if (!peer.closed && this._peers.get(peer.id) === peer && peer.pc.connectionState !== "connected") {
        this._recover(peer.id);
      }
    }, ANSWERER_TAKEOVER_MS);
  }

  _recover(id) {
    // Signaling down: coming back rebuilds every connection anyway. Peer reconnecting:
    // it offers to us when it is back.
    const p = this.participants.get(id);
    if (!this.signaling.isOpen || !p || p.state !== "connected") return;
    this._offerTo(id, "recovering");
  }

  _setLink(id, link) {
    const p = this.participants.get(id);
    if (p && p.link !== link) {
      p.link = link;
      this._emitParticipants();
    }
    this._emit("peer_state", { id, state: link });
  }

  // ---- local media -------------------------------------------------------

  _outgoingVideo() { return this._screen || this._camera || null; }

  async _replaceVideo(track) {
    const jobs = [];
    for (const peer of this._peers.values()) {
      const t = peer.pc.getTransceivers().find((x) => x.receiver.track.kind === "video" && !x.stopped);
      if (t) jobs.push(t.sender.replaceTrack(track).catch(() => {}));
    }
    await Promise.all(jobs);
  }

  async _openCamera() {
    try {
      const video = this._cameraDevice ? { deviceId: { ideal: this._cameraDevice } } : true;
      const got = await navigator.mediaDevices.getUserMedia({ video });
      const track = got.getVideoTracks()[0];
      if (!track || this._over) { track?.stop(); return false; }
      this._camera = track;
      this._cameraDevice = track.getSettings?.().deviceId || this._cameraDevice;
      this.stream.addTrack(track);
      if (!this._screen) await this._replaceVideo(track);
      return true;
    } catch (err) {
      const busy = err && (err.name === "NotReadableError" || err.name === "TrackStartError");
      this._emit("error", {
        code: "camera_unavailable",
        message: busy ? "Your camera is in use by another app." : "Your camera could not be started.",
      });
      return false;
    }
  }

  _mediaChanged() {
    this._syncMediaState();
    this._emit("local_media", this.localMedia);
  }

  /** Tell the room what we send, when it differs from what the room knows. */
  _syncMediaState() {
    if (this.state !== "admitted") return;
    const { audio, video, screen } = this.localMedia;
    const known = this._serverMedia;
    if (known.audio === audio && known.video === video && known.screen === screen) return;
    if (this.signaling.send({ type: "media_state", audio, video, screen })) {
      this._serverMedia = { audio, video, screen };
    }
  }

  // ---- quality -----------------------------------------------------------

  async _pollStats() {
    if (this._polling || this._over) return;
    this._polling = true;
    try {
      this._tick += 1;
      const now = performance.now();
      const withQuality = this._tick % QUALITY_EVERY_TICKS === 0;
      const peers = [...this._peers.values()];
      const results = await Promise.all(peers.map((peer) => this._peerStats(peer, now, withQuality)));
      const stats = {};
      const quality = {};
      peers.forEach((peer, i) => {
        stats[peer.id] = {
          framesDecoded: (this._retiredFrames.get(peer.id) || 0) + peer.framesDecoded,
          connection: peer.pc.connectionState,
        };
        if (results[i]) quality[peer.id] = results[i];
      });
      this._emit("stats", { peers: stats });
      if (withQuality && Object.keys(quality).length) this._emit("quality", overall(quality));
    } finally {
      this._polling = false;
    }
  }

  async _peerStats(peer, now, withQuality) {
    let report;
    try { report = await peer.pc.getStats(); } catch { return null; }
    if (peer.closed) return null;
    const s = summarize(report);
    peer.framesDecoded = s.framesDecoded;
    if (!withQuality) return null;
    const prev = peer.sample;
    peer.sample = { ...s, at: now };
    if (prev && s.bytes > prev.bytes) peer.lastBytesAt = now;
    if (!prev) return null;
    const lost = Math.max(0, s.lost - prev.lost);
    const received = Math.max(0, s.received - prev.received);
    const seconds = Math.max(0.001, (now - prev.at) / 1000);
    const result = {
      rtt_ms: s.rtt === null ? null : Math.round(s.rtt * 1000),
      loss_pct: lost + received ? Math.round((1000 * lost) / (lost + received)) / 10 : 0,
      kbps: Math.round((Math.max(0, s.bytes - prev.bytes) * 8) / 1000 / seconds),
      stalled: now - peer.lastBytesAt >= STALL_POOR_MS,
    };
    // A level must hold for two samples (4 s) before it shows: one slow STUN answer on
    // a busy machine should not flash "poor". A stall is already 4 s old when seen.
    const raw = level(result);
    result.level = result.stalled ? raw : better(raw, peer.lastLevel ?? raw);
    peer.lastLevel = raw;
    return result;
  }

  // ---- lifecycle ---------------------------------------------------------

  _finish(state, extra = {}) {
    if (this._over) return;
    this._over = true;
    clearInterval(this._statsTimer);
    for (const id of [...this._peers.keys()]) this._closePeer(id);
    // The visit is over for us: the camera light goes off.
    for (const track of this.stream.getTracks()) track.stop();
    this._screen?.stop();
    this._screen = null;
    this.signaling.close(1000, "left");
    this._setState(state, extra);
  }

  _setState(state, extra = {}) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous, ...extra });
  }

  _emitParticipants() { this._emit("participants", this.participants); }

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}

// ---- helpers (pure) --------------------------------------------------------

function sameIceSession(pc, sdp) {
  const current = pc.remoteDescription;
  if (!current) return false;
  const old = UFRAG.exec(current.sdp);
  const next = UFRAG.exec(sdp);
  return Boolean(old && next && old[1] === next[1]);
}

async function addCandidate(pc, candidate) {
  try {
    // null = end of candidates (aiortc sends it after its complete SDP).
    if (candidate === null) await pc.addIceCandidate();
    else await pc.addIceCandidate(candidate);
  } catch {
    // A candidate of an older ICE generation, or an end marker the browser does not
    // want: harmless, the connection goes on with the others.
  }
}

/** The numbers we need out of one getStats() report. */
export function summarize(report) {
  let pairId = null;
  report.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
  let rtt = null;
  let remoteRtt = null;
  let lost = 0; let received = 0; let bytes = 0; let framesDecoded = 0;
  report.forEach((s) => {
    if (s.type === "candidate-pair" && typeof s.currentRoundTripTime === "number"
        && (s.id === pairId || (!pairId && s.nominated && s.state === "succeeded"))) {
      rtt = s.currentRoundTripTime;
    } else if (s.type === "remote-inbound-rtp" && typeof s.roundTripTime === "number") {
      remoteRtt = Math.max(remoteRtt ?? 0, s.roundTripTime);
    } else if (s.type === "inbound-rtp") {
      lost += s.packetsLost || 0;
      received += s.packetsReceived || 0;
      bytes += s.bytesReceived || 0;
      if (s.kind === "video") framesDecoded += s.framesDecoded || 0;
    }
  });
  return { rtt: rtt ?? remoteRtt, lost, received, bytes, framesDecoded };
}

export function level({ rtt_ms: rtt, loss_pct: loss, stalled }) {
  if (stalled || (rtt !== null && rtt > 400) || loss > 8) return "poor";
  if ((rtt === null || rtt < 200) && loss < 2) return "good";
  return "fair";
}

const RANK = { good: 0, fair: 1, poor: 2 };

function better(a, b) { return RANK[a] <= RANK[b] ? a : b; }

/** The call's quality: the worst link decides (one bad link is what people notice). */
function overall(peers) {
  const list = Object.values(peers);
  const rtts = list.map((q) => q.rtt_ms).filter((v) => v !== null);
  return {
    rtt_ms: rtts.length ? Math.max(...rtts) : null,
    loss_pct: Math.max(...list.map((q) => q.loss_pct)),
    kbps: list.reduce((sum, q) => sum + q.kbps, 0),
    level: list.reduce((worst, q) => (RANK[q.level] > RANK[worst] ? q.level : worst), "good"),
    peers,
  };
}
