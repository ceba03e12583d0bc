#!/usr/bin/env node
// A real socket.io-client 4 on the websocket transport, for the drain test
// (tests/it/drain.rs): connects to /chat with the token given, subscribes
// to a topic, prints "subscribed", then prints how the server ended the
// connection ("disconnect <reason>") and exits. socket.io-client reconnects
// after "transport close", not after "io server disconnect".
//
//   node conformance/node/drain-client.js --url http://127.0.0.1:4000 --token JWT
'use strict';

const path = require('path');
const { io } = require(path.join(__dirname, '..', 'node_modules', 'socket.io-client'));

function arg(name) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const socket = io(arg('url') + '/chat', {
  query: 'tokenType=jwt&token=' + arg('token'),
  transports: ['websocket'],
  reconnection: false,
});
socket.on('connect', () => {
  socket.emit('SUBSCRIBE_CHANNEL', { channel: { _id: 'drain.room', type: 'topic' } });
});
socket.on('CHANNEL_SUBSCRIBED', () => console.log('subscribed'));
socket.on('disconnect', (reason) => {
  console.log('disconnect ' + reason);
  process.exit(0);
});
socket.on('connect_error', (e) => {
  console.log('connect_error ' + e.message);
  process.exit(1);
});
// Bounded: the test drains within seconds.
setTimeout(() => {
  console.log('timeout');
  process.exit(1);
}, 30000);
