#!/usr/bin/env node
// The Node peer of the Hotsock benchmark: a small Hotsock-style server on
// `ws` 8.18, as a user would write one (Hotsock itself is a closed AWS
// service; there is no Node server to download). It speaks the subset the
// benchmark uses, with the frames of rollcall's Hotsock front end
// (adapters/hotsock, spec in shared/specs/hotsock.md):
//   GET /hotsock?token=JWT (HS256, scope "connect"; bad token: HTTP 401)
//     -> hotsock.connected
//   hotsock.subscribe -> hotsock.subscribed (presence.* channels: members;
//     the others get hotsock.memberAdded / memberUpdated), or hotsock.error
//   hotsock.unsubscribe / close -> hotsock.unsubscribed, and
//     hotsock.memberRemoved (or memberUpdated) to the rest
//   hotsock.ping -> hotsock.pong
//   POST /api/publish {channel, event, data} (Bearer API key)
//     -> {"id","event","channel","data"} to every subscriber, 202
// Subscribe permission comes from the token's channels claim (exact, *
// and #regex: keys; an explicit subscribe:false wins). Members are per uid.
//
//   node conformance/node/hotsock-reference-server.js --port 0 --secret SECRET --api-key KEY
//
// Prints "listening on 127.0.0.1:PORT" once it accepts connections; stops
// on SIGTERM or SIGINT.
'use strict';

const crypto = require('crypto');
const http = require('http');
const path = require('path');

const { WebSocketServer, WebSocket } = require(path.join(__dirname, '..', 'node_modules', 'ws'));

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const secret = arg('secret', process.env.ROLLCALL_JWT_SECRET);
const apiKey = arg('api-key', process.env.ROLLCALL_API_KEY);
if (!secret || !apiKey) {
  console.error('usage: node hotsock-reference-server.js --port PORT --secret JWT_SECRET --api-key KEY');
  process.exit(2);
}
const apiKeyBytes = Buffer.from(apiKey);

const LIFETIME_MS = 2 * 60 * 60 * 1000; // connectionExpiresAt: Hotsock's 2 h
const PING_INTERVAL_MS = 25000; // dead-peer detection, as rollcall's --ping-interval
const MAX_FRAME_BYTES = 128 * 1024; // as rollcall's --max-frame-bytes
const MAX_BODY_BYTES = 1024 * 1024;
const MAX_DATA_BYTES = 32 * 1024;
const PRESENCE_PREFIX = 'presence.';

// ---- names, ids ----------------------------------------------------------

// Controls and bidirectional controls; channels also exclude * , # and spaces.
const BAD_CHANNEL = /[*,#\s\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
const BAD_EVENT = /[*\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

function channelProblem(name) {
  if (name.length === 0) return 'the channel name is empty';
  if (name.length > 256) return 'the channel name is longer than 256 characters';
  if (BAD_CHANNEL.test(name)) {
    return "channel names may not contain '*', ',', '#', whitespace, control or bidirectional-control characters";
  }
  return null;
}

function eventProblem(event) {
  if (event.length === 0) return 'the event name is empty';
  if (event.length > 128) return 'the event name is longer than 128 characters';
  if (event.startsWith('#') || event.startsWith('hotsock.')) {
    return 'the event name ' + JSON.stringify(event) + " is reserved for the server (names starting with '#' or 'hotsock.')";
  }
  if (BAD_EVENT.test(event)) return "event names may not contain '*', control or bidirectional-control characters";
  return null;
}

// 16 hex digits like rollcall's connection ids: a random prefix and a counter.
const connPrefix = crypto.randomBytes(4).toString('hex');
let nextConn = 0;

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
function connectionSecret() {
  const bytes = crypto.randomBytes(20);
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += ALNUM[bytes[i] % ALNUM.length];
  return s;
}

// Message ids: ULIDs, monotonic within the process (48-bit time, 80 random
// bits kept as two 40-bit halves and bumped within one millisecond).
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const TWO_40 = 2 ** 40;
const ulidRandom = Buffer.alloc(10);
let ulidMs = 0;
let ulidHi = 0;
let ulidLo = 0;

function base32(n, digits) {
  let s = '';
  for (let i = 0; i < digits; i++) {
    s = CROCKFORD[n % 32] + s;
    n = Math.floor(n / 32);
  }
  return s;
}

function ulid() {
  const now = Date.now();
  if (now > ulidMs) {
    ulidMs = now;
    crypto.randomFillSync(ulidRandom);
    ulidHi = ulidRandom.readUIntBE(0, 5);
    ulidLo = ulidRandom.readUIntBE(5, 5);
  } else if (++ulidLo === TWO_40) {
    ulidLo = 0;
    ulidHi = (ulidHi + 1) % TWO_40;
  }
  return base32(ulidMs, 10) + base32(ulidHi, 8) + base32(ulidLo, 8);
}

// ---- tokens --------------------------------------------------------------

function decodePart(part) {
  const value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object');
  return value;
}

// Compiled channels-claim keys: null for an exact name, else a RegExp.
const patterns = new Map();

function pattern(key) {
  let re = patterns.get(key);
  if (re !== undefined) return re;
  if (key.startsWith('#regex:')) {
    re = new RegExp(key.slice(7)); // unanchored, like Go's MatchString
  } else if (key.startsWith('#') || key === '') {
    throw new Error('bad channels key ' + JSON.stringify(key));
  } else if (key.includes('*')) {
    // * matches any run of characters, dots included.
    re = new RegExp('^' + key.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$');
  } else {
    re = null;
  }
  patterns.set(key, re);
  return re;
}

function keyMatches(key, channel) {
  const re = pattern(key);
  return re === null ? key === channel : re.test(channel);
}

// The claims of a valid connect token, or throws.
function verifyConnectToken(token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('not a JWT');
  const header = decodePart(parts[0]);
  if (header.alg !== 'HS256') throw new Error('alg must be HS256');
  if (header.typ != null && String(header.typ).toUpperCase() !== 'JWT') throw new Error('typ must be JWT');
  const expected = crypto.createHmac('sha256', secret).update(parts[0] + '.' + parts[1]).digest();
  const given = Buffer.from(parts[2], 'base64url');
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    throw new Error('bad signature');
  }
  const claims = decodePart(parts[1]);
  const now = Date.now() / 1000;
  if (typeof claims.exp !== 'number' || claims.exp < Math.floor(now)) throw new Error('expired or no exp');
  if (typeof claims.nbf === 'number' && claims.nbf > now) throw new Error('not yet valid (nbf)');
  if (typeof claims.scope !== 'string' || !claims.scope.split(' ').includes('connect')) {
    throw new Error('scope does not include "connect"');
  }
  if (claims.connectionId != null) throw new Error('a connectionId token cannot open a connection');
  if (claims.uid != null && typeof claims.uid !== 'string') throw new Error('uid must be a string');
  const channels = claims.channels == null ? {} : claims.channels;
  if (typeof channels !== 'object' || Array.isArray(channels)) throw new Error('channels must be an object');
  for (const key of Object.keys(channels)) pattern(key);
  return claims;
}

// Why the token may not subscribe to `channel`, or null if it may: some
// matching key says subscribe:true (or, for an auto-subscription, is this
// exact channel with autoSubscribe:true) and none says subscribe:false.
function subscribeRefusal(rules, channel, auto) {
  let granted = false;
  for (const key in rules) {
    const d = rules[key];
    if (d === null || typeof d !== 'object' || !keyMatches(key, channel)) continue;
    if (d.subscribe === false) return "the token's channels claim denies " + channel + ' (subscribe: false)';
    if (d.subscribe === true || (auto && d.autoSubscribe === true && key === channel)) granted = true;
  }
  return granted ? null
    : 'no grant for ' + channel + ': add "' + channel + '": {"subscribe": true} to the token\'s channels claim';
}

// ---- channels and presence -----------------------------------------------

// name -> { subs: Set<Conn>, members: Map<uid, Member> | null (not presence) }
// A member is one uid: { view: {uid, umd}, conns: [Conn] in join order };
// its umd is that of its latest connection, as in rollcall.
const channels = new Map();

function errorFrame(code, channel, message) {
  return JSON.stringify({ event: 'hotsock.error', channel, error: { code, message } });
}

function memberFrame(event, name, ch, member) {
  return JSON.stringify({
    event,
    channel: name,
    data: { member: member.view, members: Array.from(ch.members.values(), (m) => m.view) },
  });
}

function broadcast(ch, frame, except) {
  for (const c of ch.subs) if (c !== except) c.ws.send(frame);
}

function subscribe(conn, name, auto) {
  const problem = channelProblem(name);
  if (problem !== null) {
    conn.ws.send(errorFrame('INVALID_CHANNEL_NAME', name, 'invalid channel name: ' + problem));
    return;
  }
  if (conn.subs !== null && conn.subs.has(name)) {
    conn.ws.send(errorFrame('ALREADY_SUBSCRIBED', name, 'already subscribed to ' + name));
    return;
  }
  const presence = name.startsWith(PRESENCE_PREFIX);
  if (presence && conn.uid === null) {
    conn.ws.send(errorFrame('PRESENCE_CHANNEL_USER_ID_REQUIRED', name, 'presence channels need a uid claim in the token'));
    return;
  }
  const refusal = subscribeRefusal(conn.rules, name, auto);
  if (refusal !== null) {
    conn.ws.send(errorFrame('SUBSCRIBE_PERMISSION_DENIED', name, refusal));
    return;
  }
  let ch = channels.get(name);
  if (ch === undefined) {
    ch = { subs: new Set(), members: presence ? new Map() : null };
    channels.set(name, ch);
  }
  ch.subs.add(conn);
  if (conn.subs === null) conn.subs = new Set();
  conn.subs.add(name);

  const data = {};
  if (auto) data.autoSubscribed = true;
  let change = null;
  let member = null;
  if (presence) {
    member = ch.members.get(conn.uid);
    if (member === undefined) {
      member = { view: { uid: conn.uid, umd: conn.umd }, conns: [conn] };
      ch.members.set(conn.uid, member);
      change = 'hotsock.memberAdded';
    } else {
      member.conns.push(conn);
      if (JSON.stringify(member.view.umd) !== conn.umdJson) {
        member.view = { uid: conn.uid, umd: conn.umd };
        change = 'hotsock.memberUpdated';
      }
    }
    data.members = Array.from(ch.members.values(), (m) => m.view);
  }
  conn.ws.send(JSON.stringify({ event: 'hotsock.subscribed', channel: name, data, meta: conn.meta }));
  if (change === 'hotsock.memberAdded') {
    broadcast(ch, memberFrame(change, name, ch, member), conn);
  } else if (change !== null) {
    broadcast(ch, memberFrame(change, name, ch, member), null);
  }
}

// Takes conn out of channel `name` and tells the rest.
function leave(conn, name) {
  const ch = channels.get(name);
  if (ch === undefined) return;
  ch.subs.delete(conn);
  if (ch.subs.size === 0) {
    channels.delete(name);
    return;
  }
  if (ch.members === null) return;
  const member = ch.members.get(conn.uid);
  if (member === undefined) return;
  const i = member.conns.indexOf(conn);
  if (i >= 0) member.conns.splice(i, 1);
  if (member.conns.length === 0) {
    ch.members.delete(conn.uid);
    broadcast(ch, memberFrame('hotsock.memberRemoved', name, ch, member), null);
    return;
  }
  const latest = member.conns[member.conns.length - 1];
  if (latest.umdJson !== JSON.stringify(member.view.umd)) {
    member.view = { uid: latest.uid, umd: latest.umd };
    broadcast(ch, memberFrame('hotsock.memberUpdated', name, ch, member), null);
  }
}

function unsubscribe(conn, name) {
  if (conn.subs === null || !conn.subs.has(name)) {
    conn.ws.send(errorFrame('NOT_SUBSCRIBED', name, 'not subscribed to ' + name));
    return;
  }
  conn.subs.delete(name);
  // rollcall's unsubscribed frame has its keys in this (sorted) order.
  conn.ws.send(JSON.stringify({ channel: name, data: {}, event: 'hotsock.unsubscribed', meta: conn.meta }));
  leave(conn, name);
}

const PONG = '{"event":"hotsock.pong","data":{}}';

function onFrame(conn, text) {
  let frame;
  try {
    if (text.trimStart()[0] !== '{') throw new Error();
    frame = JSON.parse(text);
  } catch (e) {
    conn.ws.send(errorFrame('INVALID_MESSAGE', undefined, 'frame must be a JSON object; send e.g. {"event":"hotsock.ping"}'));
    return;
  }
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) {
    conn.ws.send(errorFrame('INVALID_MESSAGE', undefined, 'frame must be a JSON object; send e.g. {"event":"hotsock.ping"}'));
    return;
  }
  const { event, channel } = frame;
  if (event != null && typeof event !== 'string') {
    conn.ws.send(errorFrame('INVALID_MESSAGE', undefined, '"event" must be a string'));
    return;
  }
  if (channel != null && typeof channel !== 'string') {
    conn.ws.send(errorFrame('INVALID_MESSAGE', undefined, '"channel" must be a string'));
    return;
  }
  if (event == null) {
    conn.ws.send(errorFrame('INVALID_MESSAGE', channel == null ? undefined : channel,
      'frame has no "event"; every frame needs an event name'));
    return;
  }
  switch (event) {
    case 'hotsock.subscribe':
    case 'hotsock.unsubscribe':
      if (channel == null) {
        conn.ws.send(errorFrame('INVALID_MESSAGE', undefined, event + ' needs a "channel" string'));
      } else if (channelProblem(channel) !== null) {
        conn.ws.send(errorFrame('INVALID_CHANNEL_NAME', channel, 'invalid channel name: ' + channelProblem(channel)));
      } else if (event === 'hotsock.unsubscribe') {
        unsubscribe(conn, channel);
      } else if (frame.data != null && frame.data.token != null) {
        conn.ws.send(errorFrame('INVALID_SUBSCRIBE_TOKEN', channel, 'subscribe tokens are not supported by this server'));
      } else {
        subscribe(conn, channel, false);
      }
      return;
    case 'hotsock.ping':
      conn.ws.send(PONG);
      return;
    case 'hotsock.pong':
    case 'hotsock.heartbeat':
      return;
    default:
      if (event.startsWith('hotsock.')) {
        conn.ws.send(errorFrame('UNKNOWN_EVENT', channel == null ? undefined : channel,
          event + ' is not supported; supported: hotsock.subscribe, hotsock.unsubscribe, hotsock.ping, hotsock.pong, hotsock.heartbeat'));
      }
      // Client messages are fire-and-forget in Hotsock; not supported here.
  }
}

// ---- WebSocket -----------------------------------------------------------

const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });

function onConnection(ws, claims) {
  const uid = typeof claims.uid === 'string' && claims.uid !== '' ? claims.uid : null;
  const umd = claims.umd === undefined ? null : claims.umd;
  const conn = {
    ws,
    uid,
    umd,
    umdJson: JSON.stringify(umd),
    meta: { uid, umd },
    rules: claims.channels || {},
    subs: null, // channel names, once subscribed to any
  };
  ws.alive = true;
  ws.on('pong', () => {
    ws.alive = true;
  });
  ws.on('error', () => {}); // a bad frame or reset; 'close' follows
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      ws.send(errorFrame('INVALID_MESSAGE', undefined, 'binary frames are not supported; send JSON in text frames'));
    } else {
      onFrame(conn, data.toString());
    }
  });
  ws.on('close', () => {
    if (conn.subs !== null) for (const name of conn.subs) leave(conn, name);
    conn.subs = null;
  });
  const id = connPrefix + (nextConn++ % 0x100000000).toString(16).padStart(8, '0');
  const expiresAt = new Date(Date.now() + LIFETIME_MS).toISOString().slice(0, 19) + 'Z';
  ws.send(JSON.stringify({
    event: 'hotsock.connected',
    data: { connectionId: id, connectionExpiresAt: expiresAt, connectionSecret: connectionSecret() },
    meta: conn.meta,
  }));
  for (const key in conn.rules) {
    const d = conn.rules[key];
    if (d !== null && typeof d === 'object' && d.autoSubscribe === true && pattern(key) === null) {
      subscribe(conn, key, true);
    }
  }
}

function isHotsockPath(url) {
  const q = url.indexOf('?');
  const p = q < 0 ? url : url.slice(0, q);
  return p === '/hotsock' || p.startsWith('/hotsock/');
}

function refuseUpgrade(socket, status, reason, body) {
  socket.on('error', () => {});
  socket.end(
    'HTTP/1.1 ' + status + ' ' + reason + '\r\nConnection: close\r\n' +
    'Content-Type: text/plain; charset=utf-8\r\nContent-Length: ' + Buffer.byteLength(body) + '\r\n\r\n' + body,
  );
}

// ---- HTTP ----------------------------------------------------------------

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function apiError(res, status, code, message) {
  sendJson(res, status, { error: { code, message } });
}

function publish(res, body, size) {
  let msg;
  try {
    msg = JSON.parse(body);
  } catch (e) {
    apiError(res, 400, 'INVALID_BODY', 'the body is not JSON; send {"channel","event","data"}');
    return;
  }
  if (msg === null || typeof msg !== 'object' || typeof msg.channel !== 'string' || typeof msg.event !== 'string') {
    apiError(res, 400, 'INVALID_BODY', 'send a JSON object {"channel","event","data"} with string channel and event');
    return;
  }
  const { channel, event } = msg;
  const data = msg.data === undefined ? null : msg.data;
  let problem = channelProblem(channel);
  if (problem !== null) return apiError(res, 400, 'INVALID_CHANNEL_NAME', problem);
  problem = eventProblem(event);
  if (problem !== null) return apiError(res, 400, 'INVALID_EVENT_NAME', problem);
  // Only a body over the limit can hold data over it.
  if (size > MAX_DATA_BYTES) {
    const bytes = Buffer.byteLength(JSON.stringify(data));
    if (bytes > MAX_DATA_BYTES) {
      return apiError(res, 400, 'MESSAGE_TOO_LARGE', 'data is ' + bytes + ' bytes; the limit is ' + MAX_DATA_BYTES);
    }
  }
  const id = ulid();
  const ch = channels.get(channel);
  if (ch !== undefined) {
    const frame = JSON.stringify({ id, event, channel, data });
    for (const c of ch.subs) c.ws.send(frame);
  }
  sendJson(res, 202, { channel, event, id });
}

function authorized(req, res) {
  const auth = req.headers.authorization;
  if (auth === undefined) {
    apiError(res, 401, 'MISSING_API_KEY', "send the server's API key as 'Authorization: Bearer <key>'");
    return false;
  }
  const given = Buffer.from(auth.startsWith('Bearer ') ? auth.slice(7).trim() : '');
  if (given.length !== apiKeyBytes.length || !crypto.timingSafeEqual(given, apiKeyBytes)) {
    apiError(res, 401, 'INVALID_API_KEY', "the bearer key does not match the server's --api-key");
    return false;
  }
  return true;
}

const httpServer = http.createServer((req, res) => {
  if (req.url !== '/api/publish') {
    if (isHotsockPath(req.url)) {
      res.writeHead(400, { 'Content-Type': 'text/plain; charset=utf-8' }).end("Connection header did not include 'upgrade'");
    } else {
      apiError(res, 404, 'NOT_FOUND', 'no route ' + req.method + ' ' + req.url);
    }
    return;
  }
  if (req.method !== 'POST') {
    apiError(res, 405, 'METHOD_NOT_ALLOWED', 'use POST /api/publish');
    return;
  }
  if (!authorized(req, res)) return; // node drains the unread body
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size <= MAX_BODY_BYTES) chunks.push(c);
  });
  req.on('end', () => {
    if (size > MAX_BODY_BYTES) {
      apiError(res, 413, 'BODY_TOO_LARGE', 'the body is larger than ' + MAX_BODY_BYTES + ' bytes');
      return;
    }
    publish(res, (chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)).toString('utf8'), size);
  });
});
// One publisher keeps one keep-alive connection across pauses of any length
// (rollcall does not time idle API connections out either).
httpServer.keepAliveTimeout = 0;

httpServer.on('upgrade', (req, socket, head) => {
  if (!isHotsockPath(req.url)) {
    refuseUpgrade(socket, 404, 'Not Found', 'no WebSocket here; connect to /hotsock?token=<JWT>');
    return;
  }
  const q = req.url.indexOf('?');
  const token = q < 0 ? null : new URLSearchParams(req.url.slice(q + 1)).get('token');
  if (!token) {
    refuseUpgrade(socket, 401, 'Unauthorized', 'missing token: connect to /hotsock?token=<JWT with scope "connect">');
    return;
  }
  let claims;
  try {
    claims = verifyConnectToken(token.trim());
  } catch (e) {
    refuseUpgrade(socket, 401, 'Unauthorized', 'invalid token: ' + e.message);
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, claims));
});

// Dead-peer detection, the `ws` README way: ping, and drop a peer that did
// not answer the previous ping.
const pinger = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.alive) {
      ws.terminate();
      continue;
    }
    ws.alive = false;
    if (ws.readyState === WebSocket.OPEN) ws.ping();
  }
}, PING_INTERVAL_MS);
pinger.unref();

httpServer.listen(Number(arg('port', '0')), '127.0.0.1', () => {
  console.log('listening on 127.0.0.1:' + httpServer.address().port);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
