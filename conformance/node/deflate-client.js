#!/usr/bin/env node
// Real permessage-deflate clients (Node's ws 8.18, which offers it by
// default, as browsers do) against a rollcall run with
// --websocket-compression, for tests/it/websocket.rs: two Hotsock clients
// negotiate the extension, join a presence channel with member data that
// makes the member lists large (sent compressed), and exchange a message
// large enough for ws to send it compressed too; a third client that
// declines the extension gets the same messages uncompressed. Prints a
// PASS or FAIL line per check and exits 1 on any FAIL.
//
// Then two socket.io-client 4.8 sockets (whose Node transport is ws, with
// perMessageDeflate on) do the same over Socket.IO: a large SEND_MESSAGE
// goes in compressed and comes back to both.
//
//   node conformance/node/deflate-client.js --url ws://127.0.0.1:4000 --ann JWT --bob JWT --cy JWT
'use strict';

const path = require('path');
const WebSocket = require(path.join(__dirname, '..', 'node_modules', 'ws'));
const { io } = require(path.join(__dirname, '..', 'node_modules', 'socket.io-client'));

function arg(name) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

let failed = false;
function check(ok, what) {
  console.log((ok ? 'PASS ' : 'FAIL ') + what);
  if (!ok) failed = true;
}

// A client and a queue of its JSON messages.
function open(token, perMessageDeflate) {
  const ws = new WebSocket(arg('url') + '/hotsock?token=' + token, { perMessageDeflate });
  const inbox = [];
  const waiting = [];
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    const i = waiting.findIndex((w) => w.event === msg.event);
    if (i >= 0) waiting.splice(i, 1)[0].resolve(msg);
    else inbox.push(msg);
  });
  const next = (event) => {
    const i = inbox.findIndex((m) => m.event === event);
    if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0]);
    return new Promise((resolve) => waiting.push({ event, resolve }));
  };
  const opened = new Promise((resolve, reject) => {
    ws.on('open', resolve);
    ws.on('error', reject);
  });
  return { ws, next, opened };
}

async function main() {
  const ann = open(arg('ann'), true);
  const bob = open(arg('bob'), true);
  const cy = open(arg('cy'), false);
  await Promise.all([ann.opened, bob.opened, cy.opened]);
  check(ann.ws.extensions.includes('permessage-deflate'), 'ws negotiated permessage-deflate: ' + ann.ws.extensions);
  check(cy.ws.extensions === '', 'a client that declines gets no extension');
  const connected = await ann.next('hotsock.connected');
  check(connected.meta.umd.bio.length > 1000, 'the compressed greeting carries the member data');

  const room = 'presence.room';
  for (const c of [ann, bob, cy]) {
    c.ws.send(JSON.stringify({ event: 'hotsock.subscribe', channel: room }));
    await c.next('hotsock.subscribed');
  }
  const added = await ann.next('hotsock.memberAdded');
  check(added.data.members.length >= 2, 'member lists arrive whole');

  // Over ws's 1 KiB threshold: ws sends it compressed.
  const text = 'a message ws compresses on its way to the server '.repeat(100);
  ann.ws.send(JSON.stringify({ channel: room, event: 'chat', data: { text } }));
  const [toBob, toCy] = await Promise.all([bob.next('chat'), cy.next('chat')]);
  check(toBob.data.text === text, 'a compressed message from ws arrives intact (compressed again)');
  check(toCy.data.text === text, 'and intact, uncompressed, to a client without the extension');
  for (const c of [ann, bob, cy]) c.ws.close(1000);
  await socketIo();
}

// A socket.io-client socket on /chat and its events, in order.
function sioClient(token) {
  const socket = io(arg('url').replace(/^ws/, 'http') + '/chat', {
    query: 'tokenType=jwt&token=' + token,
    transports: ['websocket'],
    reconnection: false,
  });
  const seen = [];
  const waiting = [];
  socket.onAny((event, data) => {
    const i = waiting.findIndex((w) => w.event === event && w.pred(data));
    if (i >= 0) waiting.splice(i, 1)[0].resolve(data);
    else seen.push({ event, data });
  });
  const next = (event, pred = () => true) => {
    const i = seen.findIndex((s) => s.event === event && pred(s.data));
    if (i >= 0) return Promise.resolve(seen.splice(i, 1)[0].data);
    return new Promise((resolve) => waiting.push({ event, pred, resolve }));
  };
  const connected = new Promise((resolve, reject) => {
    socket.on('connect', resolve);
    socket.on('connect_error', reject);
  });
  return { socket, next, connected };
}

async function socketIo() {
  const a = sioClient(arg('ann'));
  const b = sioClient(arg('bob'));
  await Promise.all([a.connected, b.connected]);
  const extensions = a.socket.io.engine.transport.ws.extensions;
  check(extensions.includes('permessage-deflate'), 'socket.io-client negotiated permessage-deflate: ' + extensions);
  const topic = 'presence.deflate-topic';
  for (const c of [a, b]) {
    c.socket.emit('SUBSCRIBE_CHANNEL', { channel: { type: 'topic', _id: topic } });
    await c.next('CHANNEL_SUBSCRIBED');
  }
  const bodyText = 'a socket.io message ws compresses on its way in '.repeat(60);
  a.socket.emit('SEND_MESSAGE', { category: 'chat', topicId: topic, content: { bodyText } });
  const [toA, toB] = await Promise.all([
    a.next('MESSAGE_SENT', (d) => d.content && d.content.bodyText === bodyText),
    b.next('MESSAGE_SENT', (d) => d.content && d.content.bodyText === bodyText),
  ]);
  check(toA.content.bodyText === bodyText && toB.content.bodyText === bodyText,
    'a large Socket.IO message, compressed both ways, reaches both sockets intact');
  a.socket.disconnect();
  b.socket.disconnect();
}

const timer = setTimeout(() => {
  console.log('FAIL timeout');
  process.exit(1);
}, 20000);
main().then(
  () => {
    clearTimeout(timer);
    process.exit(failed ? 1 : 0);
  },
  (e) => {
    console.log('FAIL ' + e.message);
    process.exit(1);
  },
);
