#!/usr/bin/env node
// The reference server for the differential test: socketcluster-server
// 14.7.2 with the sc-stateless-presence 1.0.7 server plugin attached, as a
// SocketCluster 14 application would run them.
//
//   node conformance/node/sc-reference-server.js --port 0 --secret S [--presence-interval 500] [--presence-timeout MS]
//
// Prints "listening on PORT" once it accepts connections; stops on SIGTERM.
'use strict';

const http = require('http');
const path = require('path');

const modules = path.join(__dirname, '..', 'node_modules');
const scServerLib = require(path.join(modules, 'socketcluster-server'));
const scPresence = require(path.join(modules, 'sc-stateless-presence'));

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const secret = arg('secret', process.env.ROLLCALL_JWT_SECRET);
if (!secret) {
  console.error('usage: node sc-reference-server.js --port PORT --secret AUTH_KEY [--presence-interval MS]');
  process.exit(2);
}
const options = { presenceInterval: Number(arg('presence-interval', '10000')) };
const timeout = Number(arg('presence-timeout', '0'));
if (timeout) options.presenceTimeout = timeout;

const httpServer = http.createServer();
const scServer = scServerLib.attach(httpServer, { authKey: secret, path: '/socketcluster/' });
// The plugin wants an SCWorker; it only uses worker.scServer.
scPresence.attach({ scServer }, options);
scServer.on('error', (e) => console.error('server error:', e && e.message));
scServer.on('warning', () => {});
httpServer.listen(Number(arg('port', '0')), '127.0.0.1', () => {
  console.log('listening on ' + httpServer.address().port);
});
process.on('SIGTERM', () => process.exit(0));
