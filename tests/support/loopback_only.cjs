// Preloaded with `node --require tests/support/loopback_only.cjs ...` by tests/support/everything.py.
//
// @modelcontextprotocol/server-everything (transports/streamableHttp.js) calls `app.listen(PORT, cb)` with no
// host, so Node binds the unspecified address (`::`, dual-stack: every interface). It has no HOST option or env
// var. This preload forces every TCP listen in the process onto 127.0.0.1, whatever host the caller asked for,
// and, once the socket is bound, prints one line on stdout:
//
//     LOOPBACK_LISTENING 127.0.0.1:<port>
//
// so a test can start the server with PORT=0 (a free port chosen by the kernel) and learn the real port without
// polling. Pipes (`listen(path)`) and inherited handles (`listen(handle)`, `{fd}`) are passed through untouched.
"use strict";

const net = require("node:net");

const HOST = "127.0.0.1";
const originalListen = net.Server.prototype.listen;

function isPort(value) {
  return typeof value === "number" || (typeof value === "string" && /^\d+$/.test(value));
}

function announce(server) {
  server.once("listening", () => {
    const addr = server.address();
    if (addr && typeof addr === "object") {
      process.stdout.write(`LOOPBACK_LISTENING ${addr.address}:${addr.port}\n`);
    }
  });
}

net.Server.prototype.listen = function listenOnLoopback(...args) {
  const callback = typeof args[args.length - 1] === "function" ? args.pop() : undefined;
  const first = args[0];
  let options;
  if (first === undefined || first === null || isPort(first)) {
    // listen([port[, host][, backlog]][, cb]): any host given is replaced.
    options = { port: first === undefined || first === null ? 0 : Number(first), host: HOST };
    const rest = args.slice(1).filter((a) => typeof a === "number");
    if (rest.length > 0) options.backlog = rest[0];
  } else if (typeof first === "object" && first.path === undefined && first.fd === undefined && !first._handle &&
             !first.handle) {
    // listen(options[, cb]) with a TCP port.
    options = { ...first, host: HOST, ipv6Only: false };
  } else {
    // A pipe path or an inherited handle: nothing to rebind.
    if (callback) args.push(callback);
    return originalListen.apply(this, args);
  }
  announce(this);
  return callback ? originalListen.call(this, options, callback) : originalListen.call(this, options);
};
