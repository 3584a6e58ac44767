// The load driver for every system of the workload benchmark, so that all of them are
// driven by the same code: the same rooms, the same ~200-byte messages, the same pacing,
// and latency read with one clock (sender and receiver live in this process).
//
//   node driver.mjs '<json config>'      prints one JSON result line on stdout
//
// config: {system: "roomwire" | "bare" | "socketio", urlsA: [...], urlsB: [...],
//          rooms, mode: "saturate" | "rate" | "idle", window, rate, warmupS, durationS,
//          idleTimeoutS, deflate}
// Peer "a" of room i connects to urlsA[i % len], peer "b" to urlsB[i % len].
//   saturate: every direction of every room keeps `window` messages in flight (closed
//             loop); throughput is what arrives per second after the warm-up.
//   rate:     `rate` messages/s in total, open loop, round robin over the directions;
//             latency at an offered load below every system's capacity.
//   idle:     connect and join (at most connectConcurrency = 25 at once), print {"ready": n}, wait for a line on stdin (or
//             idleTimeoutS), close everything.
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";
import WebSocket from "ws";

const cfg = JSON.parse(process.argv[2] ?? "{}");
const log = (...a) => console.error("[driver]", ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TARGET_FRAME_BYTES = 200;

// Pad `candidate` so that a Roomwire frame is about TARGET_FRAME_BYTES long.
const probe = { t: 12345678.123456, i: 123456, sdpMid: "0", candidate: "" };
const bare = JSON.stringify({ type: "candidate", to: "b", data: probe }).length;
const PAD = "candidate:842163049 1 udp 1677729535 192.0.2.1 50000 typ srflx raddr 0.0.0.0"
  .padEnd(Math.max(0, TARGET_FRAME_BYTES - bare), " x")
  .slice(0, Math.max(0, TARGET_FRAME_BYTES - bare));

function payload(i) {
  return { t: performance.now(), i, sdpMid: "0", candidate: PAD };
}

// One peer of a room on one server; onData gets every relayed payload it receives.
class RoomPeer {
  constructor(url, room, peer) {
    this.url = url;
    this.room = room;
    this.peer = peer;
    this.onData = null;
    this.errors = 0;
  }
}

class WsPeer extends RoomPeer {
  open(timeoutMs = 20000) {
    return new Promise((resolve, reject) => {
      // deflate: offer permessage-deflate as browsers do (off by default, see --deflate)
      const ws = new WebSocket(this.url, { perMessageDeflate: cfg.deflate === true });
      this.ws = ws;
      const timer = setTimeout(() => reject(new Error(`join timeout ${this.url}`)), timeoutMs);
      ws.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      ws.on("open", () => {
        ws.send(JSON.stringify({ type: "join", room: this.room, peer: this.peer, role: "participant" }));
      });
      ws.on("message", (raw) => {
        const f = JSON.parse(raw.toString());
        if (f.type === "joined") {
          clearTimeout(timer);
          resolve();
        } else if (f.type === "error") {
          this.errors += 1;
          if (this.errors <= 3) log("error frame", JSON.stringify(f));
        } else if (f.data && typeof f.data.t === "number" && this.onData) {
          this.onData(f.data);
        }
      });
    });
  }
  send(to, data) {
    this.ws.send(JSON.stringify({ type: "candidate", to, data }));
  }
  close() {
    try {
      this.ws.close();
    } catch {}
  }
}

class SioPeer extends RoomPeer {
  open(timeoutMs = 20000) {
    return new Promise((resolve, reject) => {
      const s = io(this.url, {
        transports: ["websocket"],
        reconnection: false,
        forceNew: true,
        perMessageDeflate: false,
        timeout: timeoutMs,
      });
      this.s = s;
      const timer = setTimeout(() => reject(new Error(`join timeout ${this.url}`)), timeoutMs);
      s.on("connect_error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      s.on("relay", (f) => {
        if (f && f.data && typeof f.data.t === "number" && this.onData) this.onData(f.data);
      });
      s.on("connect", () => {
        s.emit("join", { room: this.room, peer: this.peer }, () => {
          clearTimeout(timer);
          resolve();
        });
      });
    });
  }
  send(to, data) {
    this.s.emit("relay", { type: "candidate", to, data });
  }
  close() {
    try {
      this.s.close();
    } catch {}
  }
}

const Peer = cfg.system === "socketio" ? SioPeer : WsPeer;

// At most 25 connects/joins at once: a Roomwire pod's redis-py pool holds 100
// connections and refuses more (MaxConnectionsError) instead of waiting.
async function openAll(peers, concurrency = cfg.connectConcurrency ?? 25) {
  let next = 0;
  const worker = async () => {
    while (next < peers.length) {
      const p = peers[next++];
      await p.open();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, peers.length) }, worker));
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx];
}

async function main() {
  const rooms = cfg.rooms ?? 50;
  const prefix = cfg.prefix ?? "bench";
  const pairs = [];
  for (let i = 0; i < rooms; i++) {
    const a = new Peer(cfg.urlsA[i % cfg.urlsA.length], `${prefix}-r${i}`, "a");
    const b = new Peer(cfg.urlsB[i % cfg.urlsB.length], `${prefix}-r${i}`, "b");
    pairs.push([a, b]);
  }
  const t0 = performance.now();
  // Peer a first, then b: b's join finds a in the room.
  await openAll(pairs.map((p) => p[0]));
  await openAll(pairs.map((p) => p[1]));
  const connectS = (performance.now() - t0) / 1000;
  log(`${cfg.system}: ${rooms * 2} connections joined in ${connectS.toFixed(1)} s`);

  if (cfg.mode === "idle") {
    process.stdout.write(JSON.stringify({ ready: rooms * 2, connectS }) + "\n");
    const rl = createInterface({ input: process.stdin });
    await Promise.race([
      new Promise((r) => rl.once("line", r)),
      new Promise((r) => rl.once("close", r)),
      sleep((cfg.idleTimeoutS ?? 60) * 1000),
    ]);
    rl.close();
    for (const [a, b] of pairs) {
      a.close();
      b.close();
    }
    await sleep(200);
    process.exit(0);
  }

  // Directions: [sender, receiver, receiver's peer id].
  const dirs = [];
  for (const [a, b] of pairs) {
    dirs.push({ from: a, to: b, toId: "b", inflight: 0 });
    dirs.push({ from: b, to: a, toId: "a", inflight: 0 });
  }
  const warmupMs = (cfg.warmupS ?? 2) * 1000;
  const durationMs = (cfg.durationS ?? 8) * 1000;
  const maxSamples = 4_000_000;
  const lat = new Float64Array(maxSamples);
  let nLat = 0;
  let received = 0;
  let receivedTotal = 0;
  let sent = 0;
  let running = true;
  const start = performance.now();
  const measureFrom = start + warmupMs;
  const measureTo = measureFrom + durationMs;
  // Tell the orchestrator when the measured window opens and closes: it reads the
  // servers' CPU time at those two moments.
  setTimeout(() => process.stdout.write("mark start\n"), warmupMs);
  setTimeout(() => process.stdout.write("mark end\n"), warmupMs + durationMs);
  const window = cfg.window ?? 8;
  const saturate = cfg.mode === "saturate";

  const sendOne = (d) => {
    d.inflight += 1;
    sent += 1;
    d.from.send(d.toId, payload(sent));
  };
  for (const d of dirs) {
    d.to.onData = (data) => {
      const now = performance.now();
      receivedTotal += 1;
      d.inflight -= 1;
      if (now >= measureFrom && now < measureTo) {
        received += 1;
        if (nLat < maxSamples) lat[nLat++] = now - data.t;
      }
      if (saturate && running) sendOne(d);
    };
  }

  if (saturate) {
    for (const d of dirs) for (let k = 0; k < window; k++) sendOne(d);
    await sleep(warmupMs + durationMs);
  } else {
    const rate = cfg.rate ?? 1000;
    let rr = 0;
    while (performance.now() < measureTo) {
      const due = Math.floor((rate * (performance.now() - start)) / 1000);
      // Open loop, but never more than 50 in flight per direction (a bounded queue).
      let guard = 0;
      while (sent < due && guard < dirs.length) {
        const d = dirs[rr++ % dirs.length];
        if (d.inflight < 50) sendOne(d);
        else guard += 1;
      }
      await sleep(2);
    }
  }
  running = false;
  const drainUntil = performance.now() + 3000;
  while (receivedTotal < sent && performance.now() < drainUntil) await sleep(20);
  const sorted = lat.subarray(0, nLat).sort();
  let errors = 0;
  for (const [a, b] of pairs) errors += a.errors + b.errors;
  const result = {
    system: cfg.system,
    mode: cfg.mode,
    rooms,
    connections: rooms * 2,
    frameBytes: TARGET_FRAME_BYTES,
    sent,
    receivedTotal,
    lost: sent - receivedTotal,
    received,
    throughput: received / (durationMs / 1000),
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    max: nLat ? sorted[nLat - 1] : null,
    errors,
    connectS,
    // this driver's own CPU over the whole run, to tell whether the load generator
    // itself was the limit
    driverCpuS: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
  };
  process.stdout.write(JSON.stringify(result) + "\n");
  for (const [a, b] of pairs) {
    a.close();
    b.close();
  }
  await sleep(200);
  process.exit(0);
}

setTimeout(() => {
  log("hard deadline reached");
  process.exit(3);
}, (cfg.hardTimeoutS ?? 120) * 1000).unref();

main().catch((e) => {
  log("failed:", e?.stack ?? e);
  process.exit(1);
});
