// The pre-call check: camera preview, microphone level, speaker tone, device pickers and a
// short call to the service's echo participant (round-trip time, loss, bitrate), plus TURN
// reachability when the practice configured one. Problems are said in plain words with
// how to fix them, and the patient can always go on audio-only.

const HELP = {
  NotAllowedError: {
    title: "Your browser is blocking the camera and microphone",
    steps: [
      "Look for the camera icon or the padlock next to the web address and choose Allow.",
      "On an iPhone: Settings → Safari → Camera and Microphone → Allow.",
      "On Android: tap the padlock → Permissions → allow Camera and Microphone.",
      "Then press Try again.",
    ],
  },
  NotFoundError: {
    title: "We could not find a camera",
    steps: ["If you have a camera, plug it in and press Try again.",
            "Or continue with audio only: your clinician will still hear you."],
  },
  NotReadableError: {
    title: "Your camera is being used by another app",
    steps: ["Close other apps that may use the camera (Zoom, Teams, FaceTime, another browser tab).",
            "Then press Try again, or continue with audio only."],
  },
  NoMicrophone: {
    title: "We could not use a microphone",
    steps: ["Check that a microphone or headset is connected and allowed for this site.",
            "You can still join: your clinician can call you by phone if they can't hear you."],
  },
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function errorName(err) {
  const name = err && err.name;
  if (name === "OverconstrainedError") return "NotFoundError";
  if (name === "TrackStartError" || name === "AbortError") return "NotReadableError";
  if (name === "SecurityError" || name === "PermissionDeniedError") return "NotAllowedError";
  return HELP[name] ? name : "NotReadableError";
}

async function openMedia({ camera, microphone, audioOnly }) {
  const audio = microphone ? { deviceId: { exact: microphone } } : true;
  if (audioOnly) return navigator.mediaDevices.getUserMedia({ audio });
  const video = camera ? { deviceId: { exact: camera } } : { width: { ideal: 640 }, height: { ideal: 480 } };
  return navigator.mediaDevices.getUserMedia({ audio, video });
}

function levelMeter(stream, bar) {
  const track = stream.getAudioTracks()[0];
  if (!track) return () => {};
  const ctx = new AudioContext();
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const samples = new Uint8Array(analyser.fftSize);
  let frame = 0;
  const draw = () => {
    analyser.getByteTimeDomainData(samples);
    let peak = 0;
    for (const s of samples) peak = Math.max(peak, Math.abs(s - 128));
    bar.style.width = `${Math.min(100, (peak / 128) * 160)}%`;
    frame = requestAnimationFrame(draw);
  };
  draw();
  return () => { cancelAnimationFrame(frame); ctx.close(); };
}

function playTone(sinkId) {
  const ctx = new AudioContext();
  const osc = ctx.createOscillator();
  const gain = ctx.createGain();
  osc.frequency.value = 523.25;
  gain.gain.setValueAtTime(0.0001, ctx.currentTime);
  gain.gain.exponentialRampToValueAtTime(0.25, ctx.currentTime + 0.05);
  gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 1.2);
  osc.connect(gain).connect(ctx.destination);
  if (sinkId && ctx.setSinkId) ctx.setSinkId(sinkId).catch(() => {});
  osc.start();
  osc.stop(ctx.currentTime + 1.25);
  osc.onended = () => ctx.close();
}

async function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function statsOf(pc) {
  let rtt = null, bytes = 0, lost = 0, received = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime != null) rtt = s.currentRoundTripTime;
    if (s.type === "inbound-rtp") { bytes += s.bytesReceived || 0; lost += s.packetsLost || 0; received += s.packetsReceived || 0; }
  });
  return { rtt, bytes, lost, received, at: performance.now() };
}

/** A short call to the echo participant; resolves with figures or throws with a reason. */
export async function echoTest({ ticket, iceServers, stream }) {
  const pc = new RTCPeerConnection({ iceServers });
  try {
    const video = stream && stream.getVideoTracks()[0];
    if (video) pc.addTrack(video, stream);
    else pc.addTransceiver("video", { direction: "recvonly" });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 3000);
    const resp = await fetch("/api/v1/echo", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ticket, sdp: pc.localDescription.sdp }),
    });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error ? body.error.message : "The test could not start.");
    await pc.setRemoteDescription(body);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("We could not connect to the practice.")), 10000);
      const check = () => {
        if (pc.connectionState === "connected") { clearTimeout(timer); resolve(); }
        if (pc.connectionState === "failed") { clearTimeout(timer); reject(new Error("We could not connect to the practice.")); }
      };
      pc.addEventListener("connectionstatechange", check);
      check();
    });
    // Let the sender ramp up first: the first second's bitrate says little about the line.
    await new Promise((r) => setTimeout(r, 1000));
    const first = await statsOf(pc);
    await new Promise((r) => setTimeout(r, 2000));
    const second = await statsOf(pc);
    const seconds = (second.at - first.at) / 1000;
    const packets = second.received - first.received + (second.lost - first.lost);
    return {
      rtt_ms: second.rtt == null ? null : Math.round(second.rtt * 1000),
      loss_pct: packets > 0 ? Math.round(((second.lost - first.lost) / packets) * 1000) / 10 : 0,
      kbps: Math.round(((second.bytes - first.bytes) * 8) / 1000 / seconds),
    };
  } finally {
    pc.close();
  }
}

/** Whether a TURN relay answers: a relay candidate gets gathered. */
async function turnReachable(iceServers) {
  const turn = iceServers.filter((s) => [].concat(s.urls).some((u) => u.startsWith("turn")));
  if (!turn.length) return null;
  const pc = new RTCPeerConnection({ iceServers: turn, iceTransportPolicy: "relay" });
  try {
    let relay = false;
    pc.addEventListener("icecandidate", (e) => { if (e.candidate && / relay /.test(e.candidate.candidate)) relay = true; });
    pc.createDataChannel("probe");
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 5000);
    return relay;
  } finally {
    pc.close();
  }
}

function judge(result) {
  if (result.rtt_ms != null && result.rtt_ms > 400) return ["bad", "Slow connection: the video may be choppy."];
  if (result.loss_pct > 8) return ["bad", "Unsteady connection: the video may freeze."];
  if ((result.rtt_ms != null && result.rtt_ms > 200) || result.loss_pct > 2) return ["wait", "Fair connection."];
  return ["ok", "Good connection."];
}

/**
 * Run the check inside `root`; resolves with {stream, audioOnly} when the person continues.
 */
export function runPrecall(root, { ticket, iceServers }) {
  return new Promise((resolve) => {
    let stream = null;
    let stopMeter = () => {};
    let audioOnly = false;
    const video = el("video", { autoplay: "", playsinline: "", "aria-label": "Your camera preview" });
    video.muted = true;
    const preview = el("div", { class: "preview" }, video);
    const meterBar = el("span");
    const meter = el("div", { class: "meter", role: "meter", "aria-label": "Microphone level", "aria-valuemin": "0", "aria-valuemax": "100" }, meterBar);
    const cameraSel = el("select", { id: "pick-camera" });
    const micSel = el("select", { id: "pick-microphone" });
    const speakerSel = el("select", { id: "pick-speaker" });
    const pickers = el("div", { class: "device-pickers" },
      el("div", {}, el("label", { for: "pick-camera", text: "Camera" }), cameraSel),
      el("div", {}, el("label", { for: "pick-microphone", text: "Microphone" }), micSel));
    const speakerBox = el("div", {}, el("label", { for: "pick-speaker", text: "Speaker" }), speakerSel);
    if ("setSinkId" in HTMLMediaElement.prototype) pickers.append(speakerBox);
    const toneBtn = el("button", { type: "button", class: "secondary", text: "Play test sound" });
    const help = el("div", { class: "help", role: "alert", hidden: "" });
    const checks = el("ul", { class: "checklist", "aria-live": "polite" });
    const row = (label) => {
      const state = el("span", { class: "state wait", text: "Checking…" });
      const item = el("li", {}, el("span", { text: label }), state);
      checks.append(item);
      return (cls, text) => { state.className = `state ${cls}`; state.textContent = text; };
    };
    const cameraRow = row("Camera");
    const micRow = row("Microphone");
    const netRow = row("Connection to the practice");
    const turnRow = iceServers.some((s) => [].concat(s.urls).some((u) => u.startsWith("turn"))) ? row("Relay server") : null;
    const retryBtn = el("button", { type: "button", text: "Try again", hidden: "" });
    const audioBtn = el("button", { type: "button", class: "secondary", text: "Continue with audio only", hidden: "" });
    const continueBtn = el("button", { type: "button", text: "Continue" });
    const meterLabel = el("p", { class: "small muted", text: "Say something: the bar should move." });
    root.replaceChildren(preview, el("p", {}), meter, meterLabel, pickers,
      el("div", { class: "actions" }, toneBtn), help, checks,
      el("div", { class: "actions" }, retryBtn, audioBtn, continueBtn));

    const showHelp = (key) => {
      continueBtn.className = "secondary";
      if (key === "NotAllowedError") continueBtn.textContent = "Continue without camera or microphone";
      const info = HELP[key];
      help.replaceChildren(el("h2", { text: info.title }), el("ol", {}, ...info.steps.map((s) => el("li", { text: s }))));
      help.hidden = false;
      retryBtn.hidden = false;
      audioBtn.hidden = key === "NoMicrophone";
    };

    const fillPickers = async () => {
      const devices = await navigator.mediaDevices.enumerateDevices();
      const fill = (select, kind, current) => {
        const list = devices.filter((d) => d.kind === kind);
        select.replaceChildren(...list.map((d, i) => {
          const option = el("option", { value: d.deviceId, text: d.label || `${kind === "videoinput" ? "Camera" : kind === "audioinput" ? "Microphone" : "Speaker"} ${i + 1}` });
          if (d.deviceId === current) option.selected = true;
          return option;
        }));
      };
      fill(cameraSel, "videoinput", stream && stream.getVideoTracks()[0]?.getSettings().deviceId);
      fill(micSel, "audioinput", stream && stream.getAudioTracks()[0]?.getSettings().deviceId);
      fill(speakerSel, "audiooutput", "default");
    };

    const network = async () => {
      netRow("wait", "Checking…");
      try {
        const result = await echoTest({ ticket, iceServers, stream });
        const [cls, text] = judge(result);
        const figures = `${result.rtt_ms ?? "?"} ms, ${result.loss_pct}% loss, ${result.kbps} kbps`;
        netRow(cls, `${text} (${figures})`);
        checks.dataset.rttMs = String(result.rtt_ms ?? "");
        checks.dataset.kbps = String(result.kbps);
      } catch (err) {
        netRow("bad", `${err.message} You can still try to join.`);
      }
      if (turnRow) {
        const ok = await turnReachable(iceServers).catch(() => false);
        turnRow(ok ? "ok" : "bad", ok ? "Reachable." : "Not reachable: the call may not connect on some networks.");
      }
    };

    const start = async (choice = {}) => {
      stopMeter();
      if (stream) stream.getTracks().forEach((t) => t.stop());
      stream = null;
      help.hidden = true; retryBtn.hidden = true; audioBtn.hidden = true;
      continueBtn.className = "";
      continueBtn.textContent = "Continue";
      try {
        stream = await openMedia({ ...choice, audioOnly });
      } catch (err) {
        const key = errorName(err);
        cameraRow("bad", key === "NotAllowedError" ? "Blocked." : key === "NotFoundError" ? "Not found." : "In use.");
        micRow("wait", "Not checked.");
        for (const part of [preview, meter, meterLabel, pickers]) part.hidden = true;
        showHelp(key);
        await network();  // the line can be tested without a camera
        return;
      }
      for (const part of [meter, meterLabel, pickers]) part.hidden = false;
      video.srcObject = stream;
      preview.hidden = !stream.getVideoTracks().length;
      cameraRow(stream.getVideoTracks().length ? "ok" : "wait", stream.getVideoTracks().length ? "Working." : "Audio only.");
      micRow(stream.getAudioTracks().length ? "ok" : "bad", stream.getAudioTracks().length ? "Working." : "Not found.");
      if (!stream.getAudioTracks().length) showHelp("NoMicrophone");
      stopMeter = levelMeter(stream, meterBar);
      await fillPickers().catch(() => {});
      await network();
    };

    toneBtn.addEventListener("click", () => playTone(speakerSel.value));
    cameraSel.addEventListener("change", () => start({ camera: cameraSel.value, microphone: micSel.value }));
    micSel.addEventListener("change", () => start({ camera: cameraSel.value, microphone: micSel.value }));
    retryBtn.addEventListener("click", () => start());
    audioBtn.addEventListener("click", () => { audioOnly = true; start(); });
    continueBtn.addEventListener("click", () => {
      stopMeter();
      video.srcObject = null;
      resolve({ stream: stream || new MediaStream(), audioOnly: audioOnly || !(stream && stream.getVideoTracks().length) });
    });
    start();
  });
}
