#!/usr/bin/env node
// Real-client suite for an Avaya-Spaces-style Socket.IO server, using the
// published clients unchanged, all in one run: socket.io-client 1.7.3,
// 2.0.4 and 4.8.4, each on namespace /chat with the token in the query
// and the websocket transport, as Avaya's own guide connects.
//
//   node conformance/node/socketio.js --url http://127.0.0.1:4000 --secret S
//   (or ROLLCALL_URL / ROLLCALL_JWT_SECRET)
//
// The server runs with conformance/node/socketio.toml (no channel rules:
// the tokens carry the grants). Prints one PASS/FAIL line per case; exits
// 1 on any failure; stops by itself within about 60 s.
'use strict';

const crypto = require('crypto');
const path = require('path');

const modules = path.join(__dirname, '..', 'node_modules');
const CLIENTS = {
  '1.7.3': require(path.join(modules, 'socket.io-client-1')),
  '2.0.4': require(path.join(modules, 'socket.io-client-2')),
  '4.8.4': require(path.join(modules, 'socket.io-client')),
};

function arg(name, env, dflt) {
  const i = process.argv.indexOf('--' + name);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (env && process.env[env]) return process.env[env];
  return dflt;
}

const URL_BASE = arg('url', 'ROLLCALL_URL', 'http://127.0.0.1:4000')
  .replace(/^ws(s?):/, 'http$1:')
  .replace(/\/+$/, '');
const SECRET = arg('secret', 'ROLLCALL_JWT_SECRET', null);
if (!SECRET) {
  console.error('usage: socketio.js --url http://HOST:PORT --secret JWT_SECRET');
  process.exit(2);
}
const WAIT = 5000;

const b64url = (buf) => Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');

/** An HS256 JWT signed with the server's secret. */
function mint(payload) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const iat = Math.floor(Date.now() / 1000);
  const body = b64url(JSON.stringify(Object.assign({ iat, exp: iat + 3600 }, payload)));
  const sig = b64url(crypto.createHmac('sha256', SECRET).update(header + '.' + body).digest());
  return header + '.' + body + '.' + sig;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(pred, what, ms = WAIT) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await sleep(20);
  }
  throw new Error('timed out waiting for ' + what);
}

const EVENTS = [
  'CHANNEL_SUBSCRIBED', 'SUBSCRIBE_CHANNEL_FAILED', 'CHANNEL_UNSUBSCRIBED',
  'MESSAGE_SENT', 'SEND_MESSAGE_FAILED', 'PRESENCE_EVENT_RESPONSE', 'error',
];

/** One client of one version; records every event it gets. */
class Client {
  constructor(version, opts) {
    this.version = version;
    this.got = [];
    this.errors = [];
    this.connectErrors = [];
    this.connected = false;
    this.disconnectReason = null;
    const io = CLIENTS[version];
    const options = Object.assign(
      { transports: ['websocket'], forceNew: true, reconnection: false, timeout: WAIT },
      opts.options || {},
    );
    if (opts.query !== undefined) options.query = opts.query;
    this.socket = io.connect(URL_BASE + (opts.nsp || '/chat'), options);
    this.socket.on('connect', () => { this.connected = true; });
    this.socket.on('connect_error', (e) => this.connectErrors.push(e && e.message ? e.message : String(e)));
    this.socket.on('disconnect', (r) => { this.disconnectReason = r; this.connected = false; });
    for (const ev of EVENTS) {
      this.socket.on(ev, (data) => {
        this.got.push({ ev, data });
        if (ev === 'error') this.errors.push(data);
      });
    }
  }

  emit(ev, data) { this.socket.emit(ev, data); }

  events(ev, pred = () => true) { return this.got.filter((g) => g.ev === ev && pred(g.data)).map((g) => g.data); }

  async waitFor(ev, pred = () => true, what) {
    await until(() => this.events(ev, pred).length > 0, `${this.version}: ${what || ev}`);
    return this.events(ev, pred)[0];
  }

  close() { this.socket.disconnect(); }
}

// The suite's channels carry this run's id, so runs against a long-lived
// server never collide.
const run = crypto.randomBytes(4).toString('hex');
// Every user's token grants the suite's two channels (Hotsock `channels`
// claim: subscribe, and send any message category); the server needs no
// channel rule (conformance/node/socketio.toml).
const GRANT = { subscribe: true, messages: { '*': { publish: true } } };
const CHANNELS = { [`presence.node-${run}`]: GRANT, [`presence.poll-${run}`]: GRANT };
const user = (name, channels = CHANNELS) =>
  mint({ sub: name, name: name.toUpperCase(), picture_url: `https://example.test/${name}.png`, channels });
const errorText = (e) => (e && typeof e === 'object' ? e.message : String(e));

const results = [];
async function test(name, body) {
  try {
    await body();
    results.push(true);
    console.log('PASS ' + name);
  } catch (e) {
    results.push(false);
    console.log('FAIL ' + name + ': ' + (e && e.message ? e.message : e));
  }
}

function assert(cond, what) { if (!cond) throw new Error(what); }

async function main() {
  const room = `presence.node-${run}`;
  const versions = Object.keys(CLIENTS);
  const names = { '1.7.3': `alice-${run}`, '2.0.4': `bob-${run}`, '4.8.4': `carol-${run}` };
  const clients = {};

  await test('each client connects to /chat with tokenType=jwt&token=… in the query (websocket)', async () => {
    for (const v of versions) {
      // Avaya's two documented parameter orders.
      const q = v === '2.0.4' ? `token=${user(names[v])}&tokenType=jwt` : `tokenType=jwt&token=${user(names[v])}`;
      clients[v] = new Client(v, { query: q });
    }
    for (const v of versions) await until(() => clients[v].connected, `${v} connect`);
  });

  await test('SUBSCRIBE_CHANNEL → CHANNEL_SUBSCRIBED, and earlier parties see party.online', async () => {
    for (const [i, v] of versions.entries()) {
      clients[v].emit('SUBSCRIBE_CHANNEL', { channel: { type: 'topic', _id: room } });
      const sub = await clients[v].waitFor('CHANNEL_SUBSCRIBED', (d) => d.channel && d.channel._id === room);
      assert(sub.channel.type === 'topic', 'channel.type echoed');
      assert(typeof sub.sessionId === 'string' && sub.sessionId.length > 0, 'sessionId set');
      for (const earlier of versions.slice(0, i)) {
        const online = await clients[earlier].waitFor('PRESENCE_EVENT_RESPONSE',
          (d) => d.category === 'app.event.presence.party.online' && d.sender && d.sender._id === names[v],
          `party.online of ${names[v]}`);
        assert(online.topicId === room, 'topicId is the channel');
        assert(online.sender.displayname === names[v].toUpperCase(), 'displayname from the token');
      }
    }
  });

  await test('request.parties is answered with every other party', async () => {
    const c = clients['1.7.3'];
    c.emit('SEND_PRESENCE_EVENT', { category: 'app.event.presence.request.parties', topicId: room });
    for (const v of ['2.0.4', '4.8.4']) {
      await c.waitFor('PRESENCE_EVENT_RESPONSE',
        (d) => d.category === 'app.event.presence.party.online' && d.sender._id === names[v], `party ${names[v]}`);
    }
  });

  await test('party.online with content reaches the others', async () => {
    clients['4.8.4'].emit('SEND_PRESENCE_EVENT', {
      category: 'app.event.presence.party.online', topicId: room,
      content: { desktop: false, idle: true, offline: false, role: 'member', mediaSession: { audio: true } },
    });
    for (const v of ['1.7.3', '2.0.4']) {
      await clients[v].waitFor('PRESENCE_EVENT_RESPONSE',
        (d) => d.sender._id === names['4.8.4'] && d.content && d.content.idle === true, 'idle=true update');
    }
  });

  await test('SEND_MESSAGE → MESSAGE_SENT to everyone; sender from the token; loopbackMetadata only to the sender', async () => {
    for (const v of versions) {
      clients[v].emit('SEND_MESSAGE', {
        category: 'chat', topicId: room, content: { bodyText: `hello from ${v}`, data: [] },
        sender: { _id: 'mallory', type: 'user' }, loopbackMetadata: { tag: v },
      });
    }
    for (const to of versions) {
      for (const from of versions) {
        const m = await clients[to].waitFor('MESSAGE_SENT',
          (d) => d.content && d.content.bodyText === `hello from ${from}`, `message from ${from}`);
        assert(m.sender._id === names[from], `sender._id is ${names[from]}, not ${m.sender._id}`);
        assert(m.topicId === room && m.category === 'chat' && typeof m._id === 'string', 'message fields');
        if (to === from) assert(m.loopbackMetadata && m.loopbackMetadata.tag === from, 'own loopbackMetadata');
        else assert(m.loopbackMetadata === undefined, 'no loopbackMetadata for others');
      }
    }
  });

  await test('each client also works with its default transports (polling, then upgrade) and with polling only', async () => {
    const pollRoom = `presence.poll-${run}`;
    for (const transports of [undefined, ['polling']]) {
      const label = transports ? 'polling only' : 'default transports';
      for (const v of versions) {
        const options = { transports };
        const c = new Client(v, { query: `tokenType=jwt&token=${user(`p${v}-${run}`)}`, options });
        await until(() => c.connected, `${v} connects (${label})`);
        c.emit('SUBSCRIBE_CHANNEL', { channel: { type: 'topic', _id: pollRoom } });
        await c.waitFor('CHANNEL_SUBSCRIBED', (d) => d.channel && d.channel._id === pollRoom, `${v} subscribed (${label})`);
        c.emit('SEND_MESSAGE', { category: 'chat', topicId: pollRoom, content: { bodyText: `poll ${v} ${label}` } });
        await c.waitFor('MESSAGE_SENT', (d) => d.content && d.content.bodyText === `poll ${v} ${label}`, `${v} own message (${label})`);
        c.close();
      }
    }
  });

  await test('bad input gets the event\'s error with a reason, and the socket stays usable', async () => {
    const c = clients['2.0.4'];
    c.emit('SUBSCRIBE_CHANNEL', {});
    const f = await c.waitFor('SUBSCRIBE_CHANNEL_FAILED');
    assert(f.error && f.error.code === 'invalid.parameters' && /channel/.test(f.error.message), JSON.stringify(f));
    c.emit('SEND_MESSAGE', { topicId: 'not-subscribed-' + run, content: { bodyText: 'x' } });
    const s = await c.waitFor('SEND_MESSAGE_FAILED');
    assert(s.error.code === 'app.event.channel.subscription.required', JSON.stringify(s));
    c.emit('NO_SUCH_EVENT', { a: 1 });
    const e = await c.waitFor('error', (d) => d && d.code === 'unknown.event');
    assert(/NO_SUCH_EVENT/.test(e.message), e.message);
    c.emit('SEND_MESSAGE', { topicId: room, content: { bodyText: 'still here' } });
    await clients['1.7.3'].waitFor('MESSAGE_SENT', (d) => d.content.bodyText === 'still here');
  });

  await test('a channel the token does not grant is refused, with error code channel.forbidden', async () => {
    for (const v of versions) {
      const c = new Client(v, { query: `tokenType=jwt&token=${user(`n${v}-${run}`, {})}` });
      await until(() => c.connected, `${v} connects`);
      c.emit('SUBSCRIBE_CHANNEL', { channel: { type: 'topic', _id: room } });
      const f = await c.waitFor('SUBSCRIBE_CHANNEL_FAILED', (d) => d.channel && d.channel._id === room, `${v} refused`);
      assert(f.error && f.error.code === 'channel.forbidden' && f.error.message, JSON.stringify(f));
      c.close();
    }
    await sleep(200);
    const refused = versions.map((v) => `n${v}-${run}`);
    const seen = clients['1.7.3'].events('PRESENCE_EVENT_RESPONSE', (d) => d.sender && refused.includes(d.sender._id));
    assert(seen.length === 0, 'a refused subscriber showed up as a party: ' + JSON.stringify(seen));
  });

  await test('a bad token is refused: error (1.x, 2.x) / connect_error (4.x) with the reason', async () => {
    const bad = {};
    for (const v of versions) bad[v] = new Client(v, { query: 'tokenType=jwt&token=not.a.jwt' });
    for (const v of ['1.7.3', '2.0.4']) {
      await until(() => bad[v].errors.length > 0, `${v} error event`);
      assert(/not authorized/.test(errorText(bad[v].errors[0])), errorText(bad[v].errors[0]));
      assert(!bad[v].connected, `${v} must not be connected`);
    }
    await until(() => bad['4.8.4'].connectErrors.length > 0, '4.8.4 connect_error');
    assert(/not authorized/.test(bad['4.8.4'].connectErrors[0]), bad['4.8.4'].connectErrors[0]);
    const expired = new Client('4.8.4', { query: 'tokenType=jwt&token=' + mint({ sub: 'x', exp: 1000 }) });
    await until(() => expired.connectErrors.length > 0, 'expired token refused');
    assert(/expired/i.test(expired.connectErrors[0]), expired.connectErrors[0]);
    for (const c of [...Object.values(bad), expired]) c.close();
  });

  await test('4.x auth payload {token, tokenType} is accepted', async () => {
    const c = new Client('4.8.4', { options: { auth: { token: user(`dave-${run}`), tokenType: 'jwt' } } });
    await until(() => c.connected, 'connect with auth');
    c.emit('SUBSCRIBE_CHANNEL', { channel: { type: 'topic', _id: room } });
    await c.waitFor('CHANNEL_SUBSCRIBED');
    await clients['1.7.3'].waitFor('PRESENCE_EVENT_RESPONSE',
      (d) => d.category === 'app.event.presence.party.online' && d.sender._id === `dave-${run}`, 'party.online of dave');
    c.close();
    await clients['1.7.3'].waitFor('PRESENCE_EVENT_RESPONSE',
      (d) => d.category === 'app.event.presence.party.leaves' && d.sender._id === `dave-${run}`, 'party.leaves of dave');
  });

  await test('two sockets of one user are one party: leaves only after the last one', async () => {
    const extra = new Client('2.0.4', { query: `tokenType=jwt&token=${user(names['4.8.4'])}` });
    await until(() => extra.connected, 'second socket connect');
    extra.emit('SUBSCRIBE_CHANNEL', { channel: { type: 'topic', _id: room } });
    await extra.waitFor('CHANNEL_SUBSCRIBED');
    extra.close();
    await sleep(300);
    const leaves = clients['1.7.3'].events('PRESENCE_EVENT_RESPONSE',
      (d) => d.category === 'app.event.presence.party.leaves' && d.sender._id === names['4.8.4']);
    assert(leaves.length === 0, 'no party.leaves while another socket of the user is there');
  });

  await test('UNSUBSCRIBE_CHANNEL → CHANNEL_UNSUBSCRIBED and party.leaves for the others', async () => {
    const c = clients['2.0.4'];
    c.emit('UNSUBSCRIBE_CHANNEL', { channel: { type: 'topic', _id: room } });
    await c.waitFor('CHANNEL_UNSUBSCRIBED', (d) => d.channel._id === room);
    for (const v of ['1.7.3', '4.8.4']) {
      await clients[v].waitFor('PRESENCE_EVENT_RESPONSE',
        (d) => d.category === 'app.event.presence.party.leaves' && d.sender._id === names['2.0.4'], `${v} sees bob leave`);
    }
  });

  await test('a client that disconnects is seen leaving by the others (no ghosts)', async () => {
    clients['4.8.4'].close();
    await clients['1.7.3'].waitFor('PRESENCE_EVENT_RESPONSE',
      (d) => d.category === 'app.event.presence.party.leaves' && d.sender._id === names['4.8.4'], 'party.leaves of carol');
    clients['1.7.3'].close();
    clients['2.0.4'].close();
  });

  const passed = results.filter(Boolean).length;
  const failed = results.length - passed;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

setTimeout(() => {
  console.log('FAIL suite did not finish within 60 s');
  process.exit(1);
}, 60000).unref();

main().catch((e) => {
  console.log('FAIL suite crashed: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
