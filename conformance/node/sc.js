#!/usr/bin/env node
// Real-client suite for a SocketCluster (protocol v1) server with
// sc-stateless-presence semantics, using the published packages
// socketcluster-client 14.3.2 and sc-stateless-presence 1.0.7 unchanged.
//
//   node conformance/node/sc.js --url http://127.0.0.1:4000 --secret S [--presence-interval 500] [--acceptance-only]
//   (or ROLLCALL_URL / ROLLCALL_JWT_SECRET / SC_PRESENCE_INTERVAL)
//
// The server runs with the settings in conformance/node/sc.toml (`rollcall
// serve --config conformance/node/sc.toml ...`): it opens the channels the
// anonymous sockets use. --presence-interval is the server's presence
// interval in ms (default 10000); the suite waits for pings based on it
// (timeout = interval x 1.3, or --presence-timeout). Prints one PASS/FAIL line per case; exits 1 on
// failure. The scenario is exported for the differential test
// (sc-differential.js), which runs it against socketcluster-server too.
'use strict';

const crypto = require('crypto');
const path = require('path');

const modules = path.join(__dirname, '..', 'node_modules');
const scClient = require(path.join(modules, 'socketcluster-client'));
const scPresence = require(path.join(modules, 'sc-stateless-presence', 'client.js'));

function arg(name, env, dflt) {
  const i = process.argv.indexOf('--' + name);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (env && process.env[env]) return process.env[env];
  return dflt;
}

const b64url = (buf) => Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');

/** An HS256 JWT, in jsonwebtoken's format. */
function mint(secret, payload) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(payload));
  const sig = b64url(crypto.createHmac('sha256', secret).update(header + '.' + body).digest());
  return header + '.' + body + '.' + sig;
}

// The channels only logged-in sockets use, granted in every user token
// (Hotsock `channels` claim, which socketcluster-server ignores). The ones
// anonymous sockets use too (sample, room5, news) are opened by the server
// instead: see conformance/node/sc.toml.
const CHANNELS = { room6: { subscribe: true }, room7: { subscribe: true } };

function userToken(secret, username, extra) {
  const iat = Math.floor(Date.now() / 1000);
  return mint(secret, Object.assign({ username, iat, exp: iat + 3600, channels: CHANNELS }, extra || {}));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until pred() is true; throws with `what` after `ms`. */
async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await sleep(20);
  }
  throw new Error('timed out waiting for ' + what);
}

/**
 * One client: a socketcluster-client socket with an in-memory auth engine
 * (so a handshake token can be given) and a presence client; every
 * join/leave its listener reports is recorded per channel.
 */
class Client {
  constructor(ctx, name, token) {
    this.name = name;
    this.events = {};
    this.errors = [];
    this.status = null;
    let stored = token || null;
    const authEngine = {
      saveToken(n, t, o, cb) { stored = t; cb && cb(null, t); },
      removeToken(n, cb) { const t = stored; stored = null; cb && cb(null, t); },
      loadToken(n, cb) { cb(null, stored); },
    };
    this.socket = scClient.create({
      hostname: ctx.host,
      port: ctx.port,
      path: '/socketcluster/',
      multiplex: false,
      autoReconnect: false,
      authEngine,
      ackTimeout: 5000,
    });
    this.socket.on('error', (e) => this.errors.push(e));
    // Every subscribe of the scenario (the presence client's own
    // presence>socket/<id> included) must succeed; see phase().
    this.subscribeFails = [];
    this.socket.on('subscribeFail', (e, channel) => this.subscribeFails.push(channel + ': ' + (e && e.message ? e.message : e)));
    this.socket.on('connect', (status) => { this.status = status; });
    this.presence = scPresence.create(this.socket);
    ctx.clients.push(this);
  }

  connected(ms) {
    return until(() => this.status !== null, ms || 5000, this.name + ' to connect');
  }

  track(channel) {
    this.events[channel] = this.events[channel] || [];
    this.presence.trackPresence(channel, (a) => this.events[channel].push(a.action + ' ' + a.username));
  }

  /** Tracks and subscribes, as an sc-stateless-presence app does. */
  join(channel) {
    this.track(channel);
    this.socket.subscribe(channel);
  }

  seen(channel) {
    return this.events[channel] || [];
  }

  has(channel, ev) {
    return this.seen(channel).includes(ev);
  }

  /** Destroys the TCP socket without a WebSocket close (a killed client). */
  kill() {
    this.socket.transport.socket._socket.destroy();
  }

  close() {
    try { this.socket.disconnect(); } catch (e) { /* already closed */ }
  }
}

/**
 * The scenario. Each phase returns, per client, the join/leave events it
 * observed during the phase (sorted, so timing-dependent order does not
 * matter); `trace` collects them for the differential test. Cases listed
 * in `fixes` are where rollcall deliberately differs from the JS server.
 */
async function scenario(opts) {
  const url = new URL(opts.url);
  const ctx = {
    host: url.hostname,
    port: Number(url.port) || 80,
    clients: [],
  };
  const secret = opts.secret;
  const interval = opts.presenceInterval;
  const timeout = opts.presenceTimeout || Math.round(interval * 1.3);
  // Long enough for a leave to show up, a ping to arrive, or a missing ping
  // to expire a user on the client (1 s sweep).
  const settle = timeout + 1500;
  const step = Math.max(5000, settle + 2000);
  const trace = {};
  const results = [];
  const log = opts.quiet ? () => {} : (line) => console.log(line);

  async function phase(name, fn) {
    // Event counts before the phase; clients created during it start at 0.
    const before = new Map(ctx.clients.map((c) => [c, Object.fromEntries(Object.entries(c.events).map(([k, v]) => [k, v.length]))]));
    const failsBefore = new Map(ctx.clients.map((c) => [c, c.subscribeFails.length]));
    let ok = true;
    let why = '';
    try {
      await fn();
    } catch (e) {
      ok = false;
      why = e && e.message ? e.message : String(e);
    }
    for (const c of ctx.clients) {
      const fails = c.subscribeFails.slice(failsBefore.get(c) || 0);
      if (ok && fails.length) {
        ok = false;
        why = c.name + ' had a subscribe refused: ' + fails.join('; ');
      }
    }
    const seen = {};
    for (const c of ctx.clients) {
      const n = before.get(c) || {};
      for (const [ch, evs] of Object.entries(c.events)) {
        const fresh = evs.slice(n[ch] || 0).sort();
        if (fresh.length) seen[c.name + ' ' + ch] = fresh;
      }
    }
    trace[name] = seen;
    results.push({ name, ok, why });
    log((ok ? 'PASS ' : 'FAIL ') + name + (ok ? '' : ': ' + why));
    return ok;
  }

  const expectEvents = (c, ch, evs) => {
    for (const ev of evs) {
      if (!c.has(ch, ev)) throw new Error(c.name + ' did not see "' + ev + '" on ' + ch + ' (saw: ' + JSON.stringify(c.seen(ch)) + ')');
    }
  };
  const expectNo = (c, ch, ev) => {
    if (c.has(ch, ev)) throw new Error(c.name + ' saw an unexpected "' + ev + '" on ' + ch + ' (saw: ' + JSON.stringify(c.seen(ch)) + ')');
  };
  const count = (c, ch, ev) => c.seen(ch).filter((e) => e === ev).length;

  let alice, bob;
  try {
    // Spec §5: alice has her token in #handshake, bob authenticates later.
    await phase('two clients see each other join', async () => {
      alice = new Client(ctx, 'alice', userToken(secret, 'alice'));
      alice.join('sample');
      await alice.connected();
      if (!alice.status.isAuthenticated) throw new Error('alice: handshake reply has isAuthenticated false');
      await until(() => alice.has('sample', 'join alice'), step, 'alice to see her own join');
      bob = new Client(ctx, 'bob');
      bob.join('sample');
      await bob.connected();
      if (bob.status.isAuthenticated) throw new Error('bob connected without a token but isAuthenticated is true');
      await new Promise((resolve, reject) => bob.socket.authenticate(userToken(secret, 'bob'), (err) => (err ? reject(err) : resolve())));
      await until(() => alice.has('sample', 'join bob') && bob.has('sample', 'join alice') && bob.has('sample', 'join bob'), step, 'alice and bob to see each other');
      const la = alice.presence.getPresenceList('sample').sort().join();
      const lb = bob.presence.getPresenceList('sample').sort().join();
      if (la !== 'alice,bob' || lb !== 'alice,bob') throw new Error('presence lists are ' + la + ' / ' + lb);
    });

    await phase('no leave while pings keep users present', async () => {
      await sleep(settle + 1000);
      expectNo(alice, 'sample', 'leave bob');
      expectNo(bob, 'sample', 'leave alice');
    });

    await phase('deauthenticate is a leave, authenticate again a join', async () => {
      bob.socket.deauthenticate();
      await until(() => alice.has('sample', 'leave bob'), step, 'alice to see leave bob');
      await new Promise((resolve, reject) => bob.socket.authenticate(userToken(secret, 'bob'), (err) => (err ? reject(err) : resolve())));
      await until(() => count(alice, 'sample', 'join bob') >= 2, step, 'alice to see bob join again');
    });

    await phase('clean disconnect is a leave', async () => {
      bob.close();
      await until(() => alice.has('sample', 'leave bob'), step, 'alice to see leave bob');
      await sleep(settle);
      if (alice.presence.getPresenceList('sample').includes('bob')) throw new Error('bob is back in alice\'s list: a later ping listed him');
    });

    await phase('unsubscribe is a leave for the unsubscriber too', async () => {
      alice.socket.unsubscribe('sample');
      await until(() => alice.has('sample', 'leave alice'), step, 'alice to see leave alice');
    });
    alice.close();
    // The spec §5 acceptance scenario ends here; --acceptance-only stops
    // (used for the run at default timings, which waits 13 s per check).
    if (opts.acceptanceOnly) return { results, trace };

    const names = ['u1', 'u2', 'u3', 'u4', 'u5'];
    const five = [];
    await phase('five clients see each other join', async () => {
      for (const n of names) {
        const c = new Client(ctx, n, userToken(secret, n));
        c.join('room5');
        five.push(c);
        await c.connected();
      }
      await until(() => five.every((c) => names.every((n) => c.has('room5', 'join ' + n))), step, 'every client to see all five joins');
    });
    const [u1, u2, u3, u4, u5] = five;

    await phase('unsubscribe: every remaining client sees the leave', async () => {
      u2.socket.unsubscribe('room5');
      await until(() => [u1, u3, u4, u5].every((c) => c.has('room5', 'leave u2')), step, 'leave u2 everywhere');
    });

    await phase('clean disconnect: every remaining client sees the leave', async () => {
      u3.close();
      // u2 left room5 but still tracks presence>room5, so it sees the leave
      // too; wait for it, or the phase can end before its copy arrives.
      await until(() => [u1, u2, u4, u5].every((c) => c.has('room5', 'leave u3')), step, 'leave u3 everywhere');
    });

    await phase('killed socket: every remaining client sees the leave', async () => {
      u4.kill();
      await until(() => [u1, u2, u5].every((c) => c.has('room5', 'leave u4')), step, 'leave u4 everywhere');
    });

    await phase('remaining clients stay present', async () => {
      await sleep(settle);
      for (const c of [u1, u5]) for (const n of ['u1', 'u5']) expectNo(c, 'room5', 'leave ' + n);
      const list = u1.presence.getPresenceList('room5').sort().join();
      if (list !== 'u1,u5') throw new Error('u1 sees ' + list + ', expected u1,u5');
    });

    await phase('an unauthenticated subscriber makes anonymous joins only', async () => {
      const anon = new Client(ctx, 'anon');
      anon.join('room5');
      await anon.connected();
      await until(() => anon.has('room5', 'join u1') && anon.has('room5', 'join u5'), step, 'anon to see u1 and u5');
      await sleep(settle);
      const fresh = u1.seen('room5').filter((e) => e.startsWith('join ') && !['join u1', 'join u2', 'join u3', 'join u4', 'join u5'].includes(e));
      if (fresh.length) throw new Error('u1 saw a join for the anonymous client: ' + fresh.join());
      anon.close();
    });
    for (const c of five) c.close();

    await phase('a bad token is refused with authError', async () => {
      const forged = new Client(ctx, 'forged', userToken(secret + '-wrong', 'mallory'));
      await forged.connected();
      const s = forged.status;
      if (s.isAuthenticated) throw new Error('a token signed with another key was accepted');
      if (!s.authError || s.authError.name !== 'AuthTokenInvalidError') throw new Error('authError is ' + JSON.stringify(s.authError));
      const iat = Math.floor(Date.now() / 1000) - 100;
      const expired = new Client(ctx, 'expired', mint(secret, { username: 'old', iat, exp: iat + 10 }));
      await expired.connected();
      if (expired.status.isAuthenticated || !expired.status.authError || expired.status.authError.name !== 'AuthTokenExpiredError') {
        throw new Error('expired token: ' + JSON.stringify(expired.status));
      }
      let refused = null;
      await new Promise((resolve) => forged.socket.authenticate('not-a-jwt', (err) => { refused = err; resolve(); }));
      if (!refused) throw new Error('#authenticate with garbage succeeded');
      forged.close();
      expired.close();
    });

    // Deliberate fix 1 (spec §2.7 item 4): a user with two sockets in a
    // channel; one leaving must not make trackers drop the user.
    await phase('two sockets of one user: no leave until the last one goes', async () => {
      const watcher = new Client(ctx, 'w6', userToken(secret, 'w6'));
      watcher.join('room6');
      await watcher.connected();
      const a = new Client(ctx, 'carol-a', userToken(secret, 'carol'));
      a.join('room6');
      const b = new Client(ctx, 'carol-b', userToken(secret, 'carol'));
      b.join('room6');
      await until(() => watcher.has('room6', 'join carol'), step, 'w6 to see carol');
      await Promise.all([a.connected(), b.connected()]);
      await sleep(300);
      b.close();
      await sleep(settle);
      expectNo(watcher, 'room6', 'leave carol');
      a.close();
      await until(() => watcher.has('room6', 'leave carol'), step, 'w6 to see carol leave');
      watcher.close();
    });

    // Deliberate fix 2 (spec §2.7 item 5): a failed #authenticate while
    // authenticated logs the socket out; the JS server keeps a ghost.
    await phase('failed re-authenticate is a leave, no ghost', async () => {
      const watcher = new Client(ctx, 'w7', userToken(secret, 'w7'));
      watcher.join('room7');
      const dave = new Client(ctx, 'dave', userToken(secret, 'dave'));
      dave.join('room7');
      await until(() => watcher.has('room7', 'join dave'), step, 'w7 to see dave');
      await new Promise((resolve) => dave.socket.authenticate('garbage', () => resolve()));
      dave.close();
      await until(() => watcher.has('room7', 'leave dave'), step, 'w7 to see dave leave');
      await sleep(settle);
      if (watcher.presence.getPresenceList('room7').includes('dave')) throw new Error('dave is still pinged: ghost user');
      watcher.close();
    });

    await phase('publish reaches every subscriber including the publisher, with ack', async () => {
      const p = new Client(ctx, 'pub', userToken(secret, 'pub'));
      const q = new Client(ctx, 'sub');
      const got = { pub: [], sub: [] };
      await Promise.all([p.connected(), q.connected()]);
      for (const [c, key] of [[p, 'pub'], [q, 'sub']]) {
        const ch = c.socket.subscribe('news');
        ch.watch((d) => got[key].push(d));
        await until(() => ch.state === 'subscribed', step, key + ' to subscribe');
      }
      await new Promise((resolve, reject) => p.socket.publish('news', { n: 1 }, (err) => (err ? reject(err) : resolve())));
      await until(() => got.pub.length === 1 && got.sub.length === 1, step, 'both to receive the message');
      if (JSON.stringify(got.sub[0]) !== '{"n":1}') throw new Error('got ' + JSON.stringify(got.sub[0]));
      p.close();
      q.close();
    });
  } finally {
    for (const c of ctx.clients) c.close();
  }
  return { results, trace };
}

/** Phases whose observations differ on purpose between rollcall and the JS server. */
const FIXES = {
  'two sockets of one user: no leave until the last one goes':
    'JS publishes leave when any socket of the user leaves (spec §2.7 item 4): trackers drop the user until the next ping',
  'failed re-authenticate is a leave, no ghost':
    'JS keeps the user in its ping list forever after a failed #authenticate (spec §2.7 item 5): no leave, ever',
};

module.exports = { scenario, FIXES, mint, userToken };

if (require.main === module) {
  const url = arg('url', 'ROLLCALL_URL', 'http://127.0.0.1:4000');
  const secret = arg('secret', 'ROLLCALL_JWT_SECRET', null);
  if (!secret) {
    console.error('usage: node sc.js --url http://HOST:PORT --secret JWT_SECRET [--presence-interval MS]');
    process.exit(2);
  }
  const presenceInterval = Number(arg('presence-interval', 'SC_PRESENCE_INTERVAL', '10000'));
  const presenceTimeout = Number(arg('presence-timeout', 'SC_PRESENCE_TIMEOUT', '0')) || undefined;
  const guard = setTimeout(() => {
    console.log('FAIL suite did not finish within its time limit');
    process.exit(1);
  }, 30000 + presenceInterval * 12);
  const acceptanceOnly = process.argv.includes('--acceptance-only');
  scenario({ url, secret, presenceInterval, presenceTimeout, acceptanceOnly })
    .then(({ results }) => {
      clearTimeout(guard);
      const failed = results.filter((r) => !r.ok).length;
      console.log(failed ? failed + ' of ' + results.length + ' cases failed' : 'all ' + results.length + ' cases passed');
      process.exit(failed ? 1 : 0);
    })
    .catch((e) => {
      console.log('FAIL ' + (e && e.stack ? e.stack : e));
      process.exit(1);
    });
}
