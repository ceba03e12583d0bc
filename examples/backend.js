// A rollcall backend in one file (Node 18+, no dependencies):
//
//   POST /hooks  receives webhooks (presence, connection events, forwarded
//                client messages), checks their signature, prints each event
//   POST /rpc    answers clients' calls: `login` with password "secret"
//                returns a token, which logs a SocketCluster socket in
//
// ROLLCALL_JWT_SECRET and ROLLCALL_WEBHOOK_SECRET must be the server's;
// PORT (default 9000) is where it listens. Run the server with
//   rollcall serve --webhook-url http://127.0.0.1:9000/hooks \
//     --rpc-url http://127.0.0.1:9000/rpc --forward-channels 'room.*'
const http = require('http');
const crypto = require('crypto');

const jwtSecret = process.env.ROLLCALL_JWT_SECRET;
const hookSecret = process.env.ROLLCALL_WEBHOOK_SECRET;

// X-Rollcall-Signature: "sha256=" + hex HMAC-SHA256 of the exact body.
function signedByRollcall(body, header) {
  const expected = 'sha256=' + crypto.createHmac('sha256', hookSecret).update(body).digest('hex');
  const given = Buffer.from(header || '');
  return given.length === expected.length && crypto.timingSafeEqual(given, Buffer.from(expected));
}

// An HS256 JWT the server accepts like any other token.
function token(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ ...claims, exp })}`;
  return `${unsigned}.${crypto.createHmac('sha256', jwtSecret).update(unsigned).digest('base64url')}`;
}

function answer(call) {
  if (call.event === 'login') {
    return call.data && call.data.password === 'secret'
      ? { data: { welcome: call.data.user }, auth_token: token({ username: call.data.user }) }
      : { error: 'wrong user or password' };
  }
  return { error: `no call named ${call.event}` };
}

http
  .createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c)).on('end', () => {
      const body = Buffer.concat(chunks);
      if (!signedByRollcall(body, req.headers['x-rollcall-signature'])) {
        console.log('refused: bad signature');
        res.writeHead(401).end();
        return;
      }
      const json = JSON.parse(body);
      res.setHeader('Content-Type', 'application/json');
      if (req.url === '/rpc') {
        res.end(JSON.stringify(answer(json)));
        return;
      }
      for (const event of json.events) {
        console.log(`event ${event.name} ${JSON.stringify(event)}`);
      }
      res.end('{}');
    });
  })
  .listen(Number(process.env.PORT || 9000), '127.0.0.1', () => console.log('listening'));
