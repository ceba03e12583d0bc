#!/usr/bin/env node
// The Node peer of the Socket.IO benchmark: socket.io 4.8 with one room per
// topic, as an application on socket.io would serve Avaya-style clients.
// It speaks the subset the benchmark uses: namespace /chat,
// SUBSCRIBE_CHANNEL -> join the room and CHANNEL_SUBSCRIBED, and
// POST /api/publish {channel, event, data} -> MESSAGE_SENT to the room.
// No tokens, no presence: the cheapest server a user could write.
//
//   node conformance/node/socketio-reference-server.js --port 0
//
// Prints "listening on 127.0.0.1:PORT" once it accepts connections.
'use strict';

const http = require('http');
const path = require('path');

const { Server } = require(path.join(__dirname, '..', 'node_modules', 'socket.io'));

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

let next = 0;
const httpServer = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/publish') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let msg;
    try {
      msg = JSON.parse(Buffer.concat(chunks).toString());
    } catch (e) {
      res.writeHead(400, { 'Content-Type': 'application/json' }).end('{"error":"bad json"}');
      return;
    }
    const id = String(++next);
    chat.to(msg.channel).emit('MESSAGE_SENT', {
      _id: id,
      category: msg.event,
      topicId: msg.channel,
      content: msg.data,
      sender: { _id: 'system', type: 'system' },
      created: new Date().toISOString(),
    });
    const body = JSON.stringify({ id });
    res.writeHead(202, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});

const io = new Server(httpServer, { transports: ['websocket', 'polling'] });
const chat = io.of('/chat');
chat.on('connection', (socket) => {
  socket.on('SUBSCRIBE_CHANNEL', (payload) => {
    const channel = payload && payload.channel;
    if (!channel || typeof channel._id !== 'string') {
      socket.emit('SUBSCRIBE_CHANNEL_FAILED', { channel, error: { code: 'invalid.parameters' } });
      return;
    }
    socket.join(channel._id);
    socket.emit('CHANNEL_SUBSCRIBED', { channel: { _id: channel._id, type: 'topic' }, sessionId: socket.id });
  });
});

httpServer.listen(Number(arg('port', '0')), '127.0.0.1', () => {
  console.log('rollcall-peer socket.io listening on 127.0.0.1:' + httpServer.address().port);
});
