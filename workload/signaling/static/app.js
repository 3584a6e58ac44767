// Roomwire demo page: join a room over the signaling WebSocket, project a screen and chat
// peer to peer over WebRTC. Plain JS, no build step, no external resources.
//
// Wire contract: PROTOCOL.md v1. Offers, answers and candidates travel as
//   {"type": "offer" | "answer" | "candidate", "to": peer, "data": {...}}
// and arrive with "from" stamped by the server. Glare is resolved with the "perfect
// negotiation" pattern: of two peers, the one with the smaller id is the polite one.
//
// For tests, window.roomwire exposes the page state and a few actions; see the bottom.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);

  const PING_EVERY_MS = 15000;
  const MAX_BACKOFF_MS = 5000;
  const MAX_QUEUED = 256;
  const MAX_KEPT = 500; // entries kept in received / errors / gaps
  const RETIRE_MS = 5000; // a replaced socket is closed by then at the latest

  /** Everything a test may want to look at; plain data only. */
  const state = {
    wantJoined: false, // the user asked to be in the room (false after leave or a refusal)
    connected: false, // WebSocket open
    joined: false, // `joined` received on the current connection
    room: "",
    peer: "",
    role: "participant",
    session: null,
    peers: [], // [{peer, role}] without ourselves
    dataChannelOpen: false,
    openChannels: [], // peer ids with an open data channel
    connections: {}, // peer id -> RTCPeerConnection.connectionState
    remoteVideos: [], // peer ids whose screen is shown
    sharing: false,
    received: [], // [{from, text, via: "datachannel" | "server"}]
    errors: [], // [{code, message, id}] from `error` frames, and local failures
    status: "not connected",
    url: "",
    reconnects: 0,
    seqGaps: 0, // relayed frames whose seq was not the last one + 1 (gaps or repeats)
    gaps: [], // [{expected, got, type}]
    repeats: 0, // relayed frames received again (seq already seen), dropped
    rttMs: null,
    closed: null, // {code, reason} of the last close
  };

  // ---------------------------------------------------------------- signaling socket

  let ws = null;
  let token = "";
  let resumeToken = null;
  let lastRn = 0; // highest cross-pod route number received (see docs/protocol.md)
  let sentResume = false; // the join on the current socket carried a resume token
  let wantConnected = false; // the user asked to be in the room
  let retryTimer = null;
  let pingTimer = null;
  let pingSentAt = 0;
  let attempt = 0;
  let lastSeq = null;
  const outbox = []; // frames held while not joined (bounded)

  function defaultWsUrl() {
    if (params.get("ws")) return params.get("ws");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}/ws`;
  }

  function toWsUrl(url) {
    const u = new URL(url, defaultWsUrl().replace(/^ws/, "http"));
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    return u.toString();
  }

  function connect(url) {
    clearTimeout(retryTimer);
    retryTimer = null;
    retire(ws);
    ws = null;
    state.url = url;
    setStatus(`connecting to ${url}`);
    let sock;
    try {
      sock = new WebSocket(url);
    } catch (err) {
      localError("connect", String(err));
      scheduleRetry();
      return;
    }
    ws = sock;
    sock.onopen = () => {
      if (ws !== sock) return;
      state.connected = true;
      sendJoin();
    };
    sock.onmessage = (ev) => {
      if (ws === sock) onFrame(ev.data);
    };
    sock.onclose = (ev) => {
      if (ws === sock) onClose(ev);
    };
  }

  function sendJoin() {
    const join = { type: "join", room: state.room, peer: state.peer, role: state.role };
    if (token) join.token = token;
    sentResume = Boolean(resumeToken);
    if (resumeToken) {
      join.resume = resumeToken;
      // What this page already has: the server re-sends only what came after.
      if (lastSeq !== null) join.last_seq = lastSeq;
      join.last_rn = lastRn;
    }
    rawSend(join);
  }

  function rawSend(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  /** Send once joined; hold (bounded) while reconnecting so no candidate is lost. */
  function send(frame) {
    if (state.joined && rawSend(frame)) return;
    if (outbox.length >= MAX_QUEUED) outbox.shift();
    outbox.push(frame);
  }

  function onClose(ev) {
    ws = null;
    state.connected = false;
    state.joined = false;
    state.closed = { code: ev.code, reason: ev.reason };
    clearInterval(pingTimer);
    if (!wantConnected) {
      setStatus(`left (close ${ev.code})`);
      return render();
    }
    if (ev.code === 4001 || ev.code === 4003) {
      // 4001: this peer joined again on another connection (another tab); 4003: abuse.
      wantConnected = false;
      setStatus(`closed by the server (${ev.code} ${ev.reason || ""}); not reconnecting`);
      return render();
    }
    if (ev.code === 1008) {
      if (sentResume) {
        // The resume token was refused: join afresh as a new session.
        resumeToken = null;
        lastSeq = null;
      } else {
        wantConnected = false;
        setStatus(`refused by the server (close 1008 ${ev.reason || "policy"})`);
        return render();
      }
    }
    scheduleRetry(ev.code);
  }

  function scheduleRetry(code) {
    const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
    attempt += 1;
    setStatus(`connection lost${code ? ` (close ${code})` : ""}; retrying in ${Math.round(delay)} ms`);
    retryTimer = setTimeout(() => {
      state.reconnects += 1;
      connect(defaultWsUrl());
    }, delay);
    render();
  }

  function onFrame(text, retired = false) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return localError("bad-json", "the server sent a frame that is not JSON");
    }
    if (!msg || typeof msg.type !== "string") return;
    if (retired && ["joined", "error", "ping", "pong", "reconnect", "migrate"].includes(msg.type)) {
      return; // about the old connection only
    }
    if (typeof msg.seq === "number") {
      if (lastSeq !== null && msg.seq <= lastSeq) {
        state.repeats += 1; // delivered twice (old and new connection): handled once
        return;
      }
      if (lastSeq !== null && msg.seq !== lastSeq + 1) {
        state.seqGaps += 1;
        state.gaps.push({ expected: lastSeq + 1, got: msg.seq, type: msg.type });
        trim(state.gaps);
      }
      lastSeq = msg.seq;
    }
    if (typeof msg.rn === "number" && msg.rn > lastRn) lastRn = msg.rn;
    switch (msg.type) {
      case "joined":
        return onJoined(msg);
      case "peer-joined":
        return onPeerJoined(msg);
      case "peer-left":
        return onPeerLeft(msg);
      case "offer":
      case "answer":
        return withPeer(msg.from, (e) => onDescription(e, msg.type, msg.data));
      case "candidate":
        return withPeer(msg.from, (e) => onCandidate(e, msg.data));
      case "broadcast":
        if (msg.topic === "chat" && msg.data && typeof msg.data.text === "string") {
          addReceived(msg.from, msg.data.text, "server");
        }
        return;
      case "control":
        return addChatLine(`control from ${msg.from}: ${JSON.stringify(msg.data)}`, "system");
      case "ack":
        return;
      case "error":
        return onError(msg);
      case "ping":
        return rawSend({ type: "pong" });
      case "pong":
        if (pingSentAt) state.rttMs = Math.round(performance.now() - pingSentAt);
        pingSentAt = 0;
        return render();
      case "reconnect":
        return onReconnect(msg);
      case "migrate":
        return onMigrate(msg);
      default:
        return; // newer protocol versions may add types
    }
  }

  function onJoined(msg) {
    const resumed = typeof msg.resumed === "boolean" ? msg.resumed : sentResume;
    state.joined = true;
    state.session = msg.session ?? null;
    if (typeof msg.resume === "string") resumeToken = msg.resume;
    if (!resumed) {
      lastSeq = null;
      lastRn = 0;
    }
    attempt = 0;
    const list = Array.isArray(msg.peers) ? msg.peers : [];
    state.peers = list.filter((p) => p && p.peer !== state.peer).map((p) => ({ peer: p.peer, role: p.role }));
    for (const id of [...rtc.keys()]) {
      if (!state.peers.some((p) => p.peer === id)) closePeer(id);
    }
    if (localStream) for (const p of state.peers) ensurePeer(p.peer);
    clearInterval(pingTimer);
    pingTimer = setInterval(() => {
      pingSentAt = performance.now();
      rawSend({ type: "ping" });
    }, PING_EVERY_MS);
    while (outbox.length && state.joined) rawSend(outbox.shift());
    setStatus(`${resumed ? "resumed" : "joined"} room ${state.room} as ${state.peer}`);
    render();
  }

  function onPeerJoined(msg) {
    if (!msg.peer || msg.peer === state.peer) return;
    const known = state.peers.find((p) => p.peer === msg.peer);
    if (known) known.role = msg.role;
    else state.peers.push({ peer: msg.peer, role: msg.role });
    if (localStream) ensurePeer(msg.peer); // project our screen to newcomers too
    render();
  }

  function onPeerLeft(msg) {
    state.peers = state.peers.filter((p) => p.peer !== msg.peer);
    closePeer(msg.peer);
    chains.delete(msg.peer);
    render();
  }

  function onError(msg) {
    state.errors.push({ code: msg.code, message: msg.message, id: msg.id ?? null });
    trim(state.errors);
    if (!state.joined && msg.code === "rate-limited") {
      const sock = ws;
      setTimeout(() => {
        if (ws === sock && !state.joined) sendJoin();
      }, 1000);
    } else if (!state.joined && sentResume) {
      // The resume was refused: join afresh as a new session. After `unauthorized` the
      // server closes (1008) and onClose reconnects; otherwise the socket stays open.
      resumeToken = null;
      lastSeq = null;
      if (msg.code !== "unauthorized") sendJoin();
    }
    render();
  }

  function onReconnect(msg) {
    if (typeof msg.resume === "string") resumeToken = msg.resume;
    const after = Math.max(0, Number(msg.after_ms) || 0);
    setStatus(`server asked to reconnect in ${after} ms`);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => {
      state.reconnects += 1;
      connect(defaultWsUrl());
    }, after);
    detach();
  }

  function onMigrate(msg) {
    if (typeof msg.resume === "string") resumeToken = msg.resume;
    if (typeof msg.url !== "string") return localError("migrate", "migrate frame without url");
    state.reconnects += 1;
    connect(toWsUrl(msg.url));
    render();
  }

  /**
   * A socket being replaced (migrate, reconnect) may still carry frames the server sent
   * before it handed the session over: keep reading them, drop repeats by `seq`, and close
   * it if the server has not done so after a while. No close code: leaving is the `leave`
   * frame, so the server keeps the session for its resume.
   */
  function retire(sock) {
    if (!sock || sock.readyState > WebSocket.OPEN) return;
    sock.onmessage = (ev) => onFrame(ev.data, true);
    sock.onclose = null;
    setTimeout(() => {
      if (sock.readyState <= WebSocket.OPEN) sock.close();
    }, RETIRE_MS);
  }

  /** Stop treating the current socket's close as a failure: a planned reconnect follows. */
  function detach() {
    const sock = ws;
    if (!sock) return;
    sock.onclose = () => {
      if (ws === sock) {
        ws = null;
        state.connected = false;
        state.joined = false;
        render();
      }
    };
  }

  function join(opts = {}) {
    state.room = String(opts.room ?? $("room").value).trim();
    state.peer = String(opts.peer ?? $("peer").value).trim();
    state.role = String(opts.role ?? $("role").value);
    token = String(opts.token ?? $("token").value).trim();
    if (!state.room || !state.peer) return localError("join", "room and peer are required");
    $("room").value = state.room;
    $("peer").value = state.peer;
    $("role").value = state.role;
    wantConnected = true;
    resumeToken = null;
    lastSeq = null;
    attempt = 0;
    const q = new URLSearchParams(location.search);
    q.set("room", state.room);
    q.set("peer", state.peer);
    q.set("role", state.role);
    q.delete("autostart");
    q.delete("token"); // keep credentials out of the address bar and history
    history.replaceState(null, "", `${location.pathname}?${q}`);
    connect(defaultWsUrl());
    render();
  }

  function leave() {
    wantConnected = false;
    clearTimeout(retryTimer);
    stopShare();
    for (const id of [...rtc.keys()]) closePeer(id);
    state.peers = [];
    if (!rawSend({ type: "leave" }) && ws) ws.close(1000);
    resumeToken = null;
    render();
  }

  // ---------------------------------------------------------------- WebRTC

  /** peer id -> {peer, pc, dc, polite, makingOffer, ignoreOffer, senders} */
  const rtc = new Map();
  /** peer id -> the promise of the last signaling frame handled for it */
  const chains = new Map();
  let localStream = null;

  function ensurePeer(id) {
    let e = rtc.get(id);
    if (e) return e;
    const pc = new RTCPeerConnection({ iceServers: [] });
    e = { peer: id, pc, dc: null, polite: state.peer < id, makingOffer: false, ignoreOffer: false, senders: [] };
    rtc.set(id, e);
    const entry = e;

    // Both sides create the same negotiated channel: no glare over who opens it.
    const dc = pc.createDataChannel("chat", { negotiated: true, id: 0 });
    entry.dc = dc;
    dc.onopen = () => render();
    dc.onclose = () => render();
    dc.onmessage = (ev) => addReceived(id, String(ev.data), "datachannel");

    pc.onicecandidate = ({ candidate }) => {
      if (candidate && rtc.get(id) === entry) send({ type: "candidate", to: id, data: candidate.toJSON() });
    };
    pc.onnegotiationneeded = async () => {
      try {
        entry.makingOffer = true;
        await pc.setLocalDescription();
        send({ type: pc.localDescription.type, to: id, data: pc.localDescription.toJSON() });
      } catch (err) {
        localError("webrtc", `offer to ${id}: ${err}`);
      } finally {
        entry.makingOffer = false;
      }
    };
    pc.ontrack = ({ track, streams }) => showRemote(id, track, streams[0]);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") pc.restartIce();
      render();
    };
    if (localStream) addLocalTracks(entry);
    render();
    return entry;
  }

  /** Run signaling for one peer strictly in arrival order. */
  function withPeer(id, fn) {
    if (typeof id !== "string" || !id) return;
    ensurePeer(id);
    const next = (chains.get(id) || Promise.resolve())
      .then(() => fn(ensurePeer(id)))
      .catch((err) => localError("webrtc", `${id}: ${err}`));
    chains.set(id, next);
  }

  async function onDescription(e, type, data) {
    const description = { type, sdp: data && data.sdp };
    if (typeof description.sdp !== "string") throw new Error(`${type} without sdp`);
    const pc = e.pc;
    const collision = type === "offer" && (e.makingOffer || pc.signalingState !== "stable");
    e.ignoreOffer = !e.polite && collision;
    if (e.ignoreOffer) return;
    try {
      await pc.setRemoteDescription(description);
    } catch (err) {
      if (type !== "offer") throw err;
      // An offer from a fresh page of the same peer id (reload): start over.
      closePeer(e.peer);
      e = ensurePeer(e.peer);
      await e.pc.setRemoteDescription(description);
    }
    if (type === "offer") {
      await e.pc.setLocalDescription();
      send({ type: "answer", to: e.peer, data: e.pc.localDescription.toJSON() });
    }
  }

  async function onCandidate(e, data) {
    if (!data) return;
    try {
      await e.pc.addIceCandidate(data);
    } catch (err) {
      if (!e.ignoreOffer) throw err;
    }
  }

  function closePeer(id) {
    const e = rtc.get(id);
    if (!e) return;
    rtc.delete(id);
    e.pc.close();
    const fig = document.getElementById(`remote-${cssId(id)}`);
    if (fig) fig.remove();
    render();
  }

  /** Open a data channel (chat) with `id`, or with every peer; no media needed. */
  function call(id) {
    const targets = id ? [id] : state.peers.map((p) => p.peer);
    for (const t of targets) ensurePeer(t);
    render();
    return targets;
  }

  async function shareScreen() {
    if (localStream) return;
    try {
      localStream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (err) {
      return localError("share", `screen capture refused: ${err.message || err}`);
    }
    for (const track of localStream.getTracks()) track.onended = () => stopShare();
    $("local-video").srcObject = localStream;
    state.sharing = true;
    for (const e of rtc.values()) addLocalTracks(e);
    for (const p of state.peers) ensurePeer(p.peer);
    render();
  }

  function addLocalTracks(e) {
    for (const track of localStream.getTracks()) e.senders.push(e.pc.addTrack(track, localStream));
  }

  function stopShare() {
    if (!localStream) return;
    for (const track of localStream.getTracks()) track.stop();
    for (const e of rtc.values()) {
      for (const s of e.senders) {
        if (e.pc.signalingState !== "closed") e.pc.removeTrack(s);
      }
      e.senders = [];
    }
    localStream = null;
    $("local-video").srcObject = null;
    state.sharing = false;
    render();
  }

  function showRemote(id, track, stream) {
    const key = `remote-${cssId(id)}`;
    let fig = document.getElementById(key);
    if (!fig) {
      fig = document.createElement("figure");
      fig.id = key;
      fig.className = "video";
      fig.dataset.peer = id;
      const video = document.createElement("video");
      video.autoplay = true;
      video.muted = true;
      video.playsInline = true;
      const cap = document.createElement("figcaption");
      cap.textContent = `${id}'s screen`;
      fig.append(video, cap);
      $("videos").append(fig);
    }
    const video = fig.querySelector("video");
    const s = stream || new MediaStream([track]);
    video.srcObject = s;
    const drop = () => {
      if (s.getTracks().every((t) => t.readyState === "ended" || t.muted)) {
        fig.remove();
        render();
      }
    };
    s.onremovetrack = drop;
    track.onmute = drop;
    track.onunmute = () => {
      if (!fig.isConnected) $("videos").append(fig);
      render();
    };
    render();
  }

  function cssId(id) {
    return String(id).replace(/[^A-Za-z0-9_-]/g, (c) => `_${c.charCodeAt(0)}`);
  }

  // ---------------------------------------------------------------- chat

  /**
   * Send over every open data channel; without one (or with via "server"), through the
   * server as a `broadcast` with topic "chat". Returns the number of data channels used.
   */
  function sendChat(text, via = "auto") {
    text = String(text);
    if (!text) return 0;
    let n = 0;
    for (const e of via === "server" ? [] : rtc.values()) {
      if (e.dc && e.dc.readyState === "open") {
        e.dc.send(text);
        n += 1;
      }
    }
    if (n === 0 && state.joined) send({ type: "broadcast", topic: "chat", data: { text } });
    addChatLine(`${state.peer}: ${text}${n ? "" : " (via server)"}`, "me");
    return n;
  }

  function addReceived(from, text, via) {
    state.received.push({ from, text, via });
    trim(state.received);
    addChatLine(`${from}: ${text}${via === "server" ? " (via server)" : ""}`, "them");
    render();
  }

  function addChatLine(text, cls) {
    const li = document.createElement("li");
    li.className = cls;
    li.textContent = text;
    const log = $("chat-log");
    log.append(li);
    while (log.children.length > MAX_KEPT) log.firstChild.remove();
    log.scrollTop = log.scrollHeight;
  }

  // ---------------------------------------------------------------- rendering

  function localError(code, message) {
    state.errors.push({ code, message, id: null });
    trim(state.errors);
    render();
  }

  function trim(list) {
    while (list.length > MAX_KEPT) list.shift();
  }

  function setStatus(text) {
    state.status = text;
  }

  function render() {
    state.wantJoined = wantConnected;
    state.openChannels = [...rtc.values()].filter((e) => e.dc && e.dc.readyState === "open").map((e) => e.peer);
    state.dataChannelOpen = state.openChannels.length > 0;
    state.connections = Object.fromEntries([...rtc.values()].map((e) => [e.peer, e.pc.connectionState]));
    state.remoteVideos = [...document.querySelectorAll("#videos figure[id^=remote-]")].map((f) => f.dataset.peer);

    const bits = [state.status];
    if (state.joined && state.session) bits.push(`session ${state.session}`);
    if (state.joined) bits.push(`${state.peers.length} other peer${state.peers.length === 1 ? "" : "s"}`);
    if (state.openChannels.length) bits.push(`data channel open with ${state.openChannels.join(", ")}`);
    if (state.rttMs !== null && state.joined) bits.push(`rtt ${state.rttMs} ms`);
    const status = $("status");
    status.textContent = bits.join(" · ");
    status.className = `status ${state.joined ? "ok" : wantConnected ? "warn" : ""}`;

    const peers = $("peers");
    peers.replaceChildren();
    if (!state.peers.length) peers.append(item("nobody yet", "empty"));
    for (const p of state.peers) {
      const li = item("", "");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = p.peer;
      const role = document.createElement("span");
      role.className = "role";
      role.textContent = p.role || "";
      const conn = document.createElement("span");
      conn.className = "conn";
      conn.textContent = state.connections[p.peer] || "";
      const btn = document.createElement("button");
      btn.type = "button";
      btn.textContent = rtc.has(p.peer) ? "Redial" : "Connect";
      btn.title = "open a peer-to-peer data channel (chat) with this peer";
      btn.onclick = () => {
        if (rtc.has(p.peer)) closePeer(p.peer);
        call(p.peer);
      };
      li.append(name, role, conn, btn);
      peers.append(li);
    }

    const errors = $("errors");
    errors.replaceChildren();
    if (!state.errors.length) errors.append(item("none", "empty"));
    // The same error in a row (an offer and its candidates to a gone peer) shows once.
    const shown = [];
    for (const err of state.errors) {
      const text = `${err.code}: ${err.message}`;
      const last = shown[shown.length - 1];
      if (last && last.text === text) last.count += 1;
      else shown.push({ text, count: 1 });
    }
    for (const e of shown.slice(-8)) errors.append(item(e.count > 1 ? `${e.text} (×${e.count})` : e.text, ""));

    $("join").disabled = wantConnected;
    $("leave").disabled = !wantConnected;
    for (const id of ["room", "peer", "role", "token"]) $(id).disabled = wantConnected;
    $("share").disabled = !state.joined || state.sharing;
    $("stop-share").disabled = !state.sharing;
    $("local-fig").classList.toggle("hidden", !state.sharing);
    $("no-video").classList.toggle("hidden", state.sharing || state.remoteVideos.length > 0);
    $("chat-input").disabled = !state.joined;
    $("chat-send").disabled = !state.joined;
    $("chat-path").textContent = state.dataChannelOpen ? "(peer to peer, data channel)" : "(through the server until a data channel opens)";
  }

  function item(text, cls) {
    const li = document.createElement("li");
    if (cls) li.className = cls;
    li.textContent = text;
    return li;
  }

  // ---------------------------------------------------------------- wiring

  $("room").value = params.get("room") || "demo";
  $("peer").value = params.get("peer") || `peer-${Math.random().toString(36).slice(2, 7)}`;
  $("role").value = ["participant", "screen", "controller"].includes(params.get("role")) ? params.get("role") : "participant";
  $("token").value = params.get("token") || "";

  $("join-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    join();
  });
  $("leave").addEventListener("click", leave);
  $("share").addEventListener("click", shareScreen);
  $("stop-share").addEventListener("click", stopShare);
  $("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("chat-input");
    if (input.value) sendChat(input.value);
    input.value = "";
  });
  window.addEventListener("pagehide", () => {
    if (wantConnected) rawSend({ type: "leave" });
  });

  const api = {
    state,
    /** A JSON-safe copy of the state. */
    snapshot: () => JSON.parse(JSON.stringify(state)),
    join,
    leave,
    call,
    shareScreen,
    stopShare,
    sendChat,
  };
  for (const key of ["joined", "peers", "dataChannelOpen", "received", "errors", "status"]) {
    Object.defineProperty(api, key, { get: () => state[key], enumerable: true });
  }
  window.roomwire = api;

  render();
  if (params.get("autostart") === "1") join();
})();
