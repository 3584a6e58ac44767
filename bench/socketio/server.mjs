// The baseline: a socket.io 4 server with @socket.io/redis-adapter, relaying the same
// 1:1 pattern as Roomwire. One process is one "pod"; two of them share one Redis.
//
//   node server.mjs PORT REDIS_URL
//
// A client emits "join" {room, peer} (acknowledged) and then "relay" {type, to, data};
// the server stamps `from` and emits "relay" to the room "<room>:<to>", which the
// adapter publishes on Redis so that the node holding that peer delivers it.
import { createServer } from "node:http";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { Server } from "socket.io";

const port = Number(process.argv[2]);
const redisUrl = process.argv[3];
if (!port || !redisUrl) {
  console.error("usage: node server.mjs PORT REDIS_URL");
  process.exit(2);
}

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
pub.on("error", (e) => console.error("redis pub:", e.message));
sub.on("error", (e) => console.error("redis sub:", e.message));
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer((req, res) => {
  res.writeHead(req.url === "/healthz" ? 200 : 404).end("ok\n");
});
const io = new Server(http, {
  adapter: createAdapter(pub, sub),
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
});

io.on("connection", (socket) => {
  socket.on("join", (msg, ack) => {
    if (!msg || typeof msg.room !== "string" || typeof msg.peer !== "string") return;
    socket.data.room = msg.room;
    socket.data.peer = msg.peer;
    socket.join(`${msg.room}:${msg.peer}`);
    if (typeof ack === "function") ack({ type: "joined", room: msg.room, peer: msg.peer });
  });
  socket.on("relay", (msg) => {
    if (!socket.data.room || !msg || typeof msg.to !== "string") return;
    io.to(`${socket.data.room}:${msg.to}`).emit("relay", {
      type: msg.type,
      from: socket.data.peer,
      data: msg.data,
    });
  });
});

const shutdown = () => {
  io.close();
  Promise.allSettled([pub.quit(), sub.quit()]).finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

http.listen(port, "127.0.0.1", () => console.log(`ready ${port}`));
