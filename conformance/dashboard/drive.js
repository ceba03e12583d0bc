'use strict';
// Drives rollcall's dashboard (web/dashboard.html) in headless Chromium
// for tests/it/dashboard.rs, with playwright-core and the system's
// Chromium (no browser download).
//
//   node conformance/dashboard/drive.js --url http://127.0.0.1:4000 \
//     --api-key KEY --chromium /usr/bin/chromium [--failure-screenshot PATH]
//
// Reads one JSON command per line on stdin ({"cmd": "open"}, ...) and
// answers each with one JSON line on stdout: {"ok": true, ...} or
// {"ok": false, "error": "..."}. The test runs the clients and the
// server; this script only looks at and clicks the page.

const readline = require('node:readline');
const { chromium } = require('playwright-core');

const TIMEOUT_MS = 10000;

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) throw new Error('usage: drive.js --url URL --api-key KEY --chromium PATH');
    args[argv[i].slice(2)] = argv[i + 1];
  }
  for (const name of ['url', 'api-key', 'chromium']) {
    if (!args[name]) throw new Error('missing --' + name);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
let browser = null;
let page = null;
// Every URL the page loaded or requested, and what went wrong in it.
const urlsSeen = [];
const pageErrors = [];

// The cell of the table `tableId` whose text is exactly `text`.
const cell = (tableId, text) => page.locator('#' + tableId).getByRole('cell', { name: text, exact: true });
// The row of the members table for `uid`.
const memberRow = (uid) => page.locator('#members tbody tr')
  .filter({ has: page.getByRole('cell', { name: uid, exact: true }) });

const commands = {
  // Opens the page and logs in with the API key (typed into the form).
  async open() {
    browser = await chromium.launch({ executablePath: args.chromium });
    const context = await browser.newContext({ viewport: { width: 1440, height: 720 } });
    page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT_MS);
    page.on('request', (request) => urlsSeen.push(request.url()));
    page.on('framenavigated', (frame) => urlsSeen.push(frame.url()));
    page.on('pageerror', (error) => pageErrors.push(error.message));
    // The page asks before a disconnect or removal: the operator agrees.
    page.on('dialog', (dialog) => dialog.accept());
    await page.goto(args.url + '/dashboard');
    await page.locator('#login').waitFor({ state: 'visible' });
    await page.fill('#key', args['api-key']);
    await page.click('#login button[type=submit]');
    await page.locator('#board').waitFor({ state: 'visible' });
    await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('updated'));
    return {};
  },

  async select({ channel }) {
    await cell('channels', channel).click();
    await page.waitForFunction((name) => document.getElementById('selected').textContent === name, channel);
    return {};
  },

  async filter({ text }) {
    await page.fill('#filter', text);
    return {};
  },

  // Waits until `uid` is (present) or is not (!present) in the member list.
  async member({ uid, present }) {
    await memberRow(uid).waitFor({ state: present ? 'visible' : 'detached' });
    return {};
  },

  // Clicks one of a member's buttons (Connections, Remove, Disconnect),
  // with `reason` typed into the reason box first; answers the notice.
  async member_action({ uid, action, reason }) {
    await page.fill('#reason', reason || '');
    const before = await page.locator('#notice').textContent();
    await memberRow(uid).getByRole('button', { name: action, exact: true }).click();
    if (action === 'Connections') {
      await page.waitForFunction((u) => document.getElementById('user-summary').textContent.startsWith(u + ':'), uid);
      return {};
    }
    await page.waitForFunction((old) => {
      const notice = document.getElementById('notice');
      return !notice.hidden && notice.textContent !== old;
    }, before);
    const notice = page.locator('#notice');
    return { notice: await notice.textContent(), error: (await notice.getAttribute('class')) === 'error' };
  },

  // Waits until the chart shows traffic (messages/s above zero).
  async traffic() {
    await page.waitForFunction(() => Number(document.getElementById('messages-rate').textContent) > 0);
    return { messages: await page.locator('#messages-rate').textContent(), deliveries: await page.locator('#deliveries-rate').textContent() };
  },

  async wait({ ms }) {
    await page.waitForTimeout(ms);
    return {};
  },

  // The front ends' open connections as the page shows them.
  async protocols() {
    const rows = await page.locator('#protocols tbody tr').evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
    return { rows };
  },

  async screenshot({ path }) {
    await page.screenshot({ path, fullPage: true });
    return {};
  },

  // What a leak of the key would show: the URLs, and where it is stored.
  async storage() {
    const stored = await page.evaluate(() => ({
      session: Object.keys(sessionStorage),
      local: Object.keys(localStorage),
      url: location.href,
    }));
    return { urls: [...new Set(urlsSeen)], ...stored, pageErrors };
  },

  async close() {
    if (browser) await browser.close();
    browser = null;
    return {};
  },
};

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  queue = queue.then(async () => {
    let answer;
    try {
      const command = JSON.parse(line);
      const run = commands[command.cmd];
      if (!run) throw new Error('unknown command ' + command.cmd);
      answer = { ok: true, ...(await run(command)) };
    } catch (error) {
      answer = { ok: false, error: String(error && error.message || error) };
      // What the page looked like when it went wrong.
      if (page && args['failure-screenshot']) {
        await page.screenshot({ path: args['failure-screenshot'], fullPage: true }).catch(() => {});
        answer.screenshot = args['failure-screenshot'];
      }
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  });
});
lines.on('close', () => queue.then(() => commands.close()).then(() => process.exit(0)));
