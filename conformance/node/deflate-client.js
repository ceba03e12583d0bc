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
//   node conformance/node/deflate-client.js --url ws://127.0.0.1:4000 --ann JWT --bob JWT --cy JWT
'use strict';

const path = require('path');
const WebSocket = require(path.join(__dirname, '..', 'node_modules', 'ws'));

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
