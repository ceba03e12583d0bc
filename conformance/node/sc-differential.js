#!/usr/bin/env node
// Differential test: runs the sc.js scenario against the reference server
// (socketcluster-server 14.7.2 + sc-stateless-presence 1.0.7, started here
// from sc-reference-server.js) and against rollcall, and compares the
// join/leave events every client observes in every phase. They must match,
// except in the phases listed in sc.js FIXES, where rollcall deliberately
// fixes a bug of the JS server (those must differ, or the fix is not
// exercised).
//
//   node conformance/node/sc-differential.js --url http://127.0.0.1:4000 --secret S --presence-interval 500
//
// rollcall must run with the same secret and presence interval.
'use strict';

const { spawn } = require('child_process');
const path = require('path');
const { scenario, FIXES } = require('./sc.js');

function arg(name, env, dflt) {
  const i = process.argv.indexOf('--' + name);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (env && process.env[env]) return process.env[env];
  return dflt;
}

function startReference(secret, interval, timeout) {
  const args = [path.join(__dirname, 'sc-reference-server.js'), '--port', '0', '--secret', secret, '--presence-interval', String(interval)];
  if (timeout) args.push('--presence-timeout', String(timeout));
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('reference server did not start within 10 s')), 10000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: 'http://127.0.0.1:' + m[1] });
      }
    });
    child.on('exit', (code) => reject(new Error('reference server exited with ' + code)));
  });
}

async function main() {
  const url = arg('url', 'ROLLCALL_URL', 'http://127.0.0.1:4000');
  const secret = arg('secret', 'ROLLCALL_JWT_SECRET', null);
  if (!secret) {
    console.error('usage: node sc-differential.js --url http://HOST:PORT --secret JWT_SECRET [--presence-interval MS]');
    process.exit(2);
  }
  const presenceInterval = Number(arg('presence-interval', 'SC_PRESENCE_INTERVAL', '10000'));
  const presenceTimeout = Number(arg('presence-timeout', 'SC_PRESENCE_TIMEOUT', '0')) || undefined;
  const ref = await startReference(secret, presenceInterval, presenceTimeout);
  let reference;
  let ours;
  try {
    reference = await scenario({ url: ref.url, secret, presenceInterval, presenceTimeout, quiet: true });
  } finally {
    ref.child.kill('SIGTERM');
  }
  ours = await scenario({ url, secret, presenceInterval, presenceTimeout, quiet: true });

  let failed = 0;
  for (const r of reference.results) {
    const name = r.name;
    const a = JSON.stringify(reference.trace[name] || {});
    const b = JSON.stringify(ours.trace[name] || {});
    const mine = ours.results.find((x) => x.name === name);
    if (FIXES[name]) {
      if (a === b) {
        failed++;
        console.log('FAIL ' + name + ': expected rollcall to differ (deliberate fix: ' + FIXES[name] + '), both saw ' + a);
      } else if (!mine || !mine.ok) {
        failed++;
        console.log('FAIL ' + name + ': rollcall failed the phase: ' + (mine && mine.why));
      } else {
        console.log('PASS ' + name + ' (differs on purpose: ' + FIXES[name] + ')\n       reference: ' + a + '\n       rollcall:  ' + b);
      }
    } else if (!r.ok) {
      failed++;
      console.log('FAIL ' + name + ': the reference server itself failed the phase: ' + r.why);
    } else if (a !== b) {
      failed++;
      console.log('FAIL ' + name + ': observations differ\n       reference: ' + a + '\n       rollcall:  ' + b);
    } else {
      console.log('PASS ' + name + ' (same observations)');
    }
  }
  console.log(failed ? failed + ' differences' : 'rollcall matches the reference in all ' + reference.results.length + ' phases (deliberate fixes excepted)');
  process.exit(failed ? 1 : 0);
}

const guard = setTimeout(() => {
  console.log('FAIL differential test did not finish within its time limit');
  process.exit(1);
}, 240000);
guard.unref();
main().catch((e) => {
  console.log('FAIL ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
