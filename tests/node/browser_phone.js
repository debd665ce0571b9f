#!/usr/bin/env node
// A WebRTC phone in a real browser, for Roundabout's end-to-end tests: Debian's chromium,
// headless, driven by playwright-core, running JsSIP over WS or WSS with audio from
// chromium's fake capture device. It registers, then calls or answers one call; when that
// call has ended or failed it stops the UA (un-REGISTER when registered), closes the browser
// and exits 0. Every event is one JSON line on stdout (see peer.js):
//   {"event":"started","browser":"156.0…","browser_pid":N}   chromium is up; its process
//       group is browser_pid's own (playwright starts it detached)
//   {"event":"connected"}  /  {"event":"disconnected","error":…,"code":…,"reason":…}
//   {"event":"registered","status":200,"contacts":[…]}  the 2xx's Contacts
//   {"event":"registration_failed","status":…,"cause":…}
//   {"event":"incoming","from":…,"ruri":…,"call_id":…}   with --answer, before answering
//   {"event":"calling","target":…,"call_id":…}           with --call, the INVITE is under way
//   {"event":"local_sdp","type":"offer"|"answer","sdp":…}  the SDP this phone sends
//   {"event":"remote_sdp","type":"offer"|"answer","sdp":…} the SDP it got
//   {"event":"progress","originator":"remote"|"local","status":180|null}  a provisional
//       answer got (the caller: originator remote, its status) or sent (the callee: JsSIP
//       rings at once, originator local, status null: JsSIP hands over no response it sent)
//   {"event":"accepted","originator":…,"status":200|null}  the 2xx got or sent (likewise)
//   {"event":"confirmed","originator":…}   the ACK sent or got: the call is up
//   {"event":"stats","packets_received":N,"packets_sent":N,"bytes_received":N,
//       "bytes_sent":N,"connection":"connected","ice":"connected","local":"ip:port",
//       "local_type":"host","remote":"ip:port","remote_type":"host"}
//       every 500 ms from confirmed until the call ends: RTCPeerConnection.getStats() summed
//       over the audio inbound-rtp and outbound-rtp entries, the peer connection's
//       connectionState and iceConnectionState, and the selected candidate pair: each side's
//       "ip:port" and candidate type (null before a pair is selected; a peer-reflexive
//       address is hidden from the page, so it reads ":port")
//   {"event":"hangup"}      this phone sends its BYE (or CANCEL) now
//   {"event":"ended","originator":"local"|"remote","cause":"Terminated",…}
//   {"event":"failed","originator":…,"cause":…,"status":…}   the call did not come up
//   {"event":"error","message":…}, {"event":"timeout"}   then it exits 1 or 2
//
// Options (all `--name value`):
//   --ws-url URL        ws://… or wss://… (required)
//   --uri SIP-URI       the user's address of record (required)
//   --server-cert PEM   the WSS server's own certificate (a test CA's leaf): chromium takes
//                       a certificate with that key despite its unknown issuer, and no other
//   --register 0        do not register (a call starts once the WebSocket is open)
//   --registrar URI     the REGISTER Request-URI (default: the domain of --uri)
//   --call TARGET       call TARGET (audio only) once registered
//   --answer 1          answer the first incoming call (later ones get 486)
//   --hangup-after-ms N hang up N ms after the call is confirmed; a `hangup` line on stdin
//                       hangs up at once (both: whichever comes first)
//   --ice-timeout-ms N  send the SDP at most N ms after the first ICE candidate even if
//                       gathering has not completed (default 2000)
//   --deadline S        exit by itself after S seconds (default 50)
// Only host candidates on 127.0.0.1 are offered (the others are taken out of the SDP before
// it is sent): the tests' media stays on loopback. Set DEBUG=JsSIP:* for JsSIP's log; the
// page's console goes to stderr.

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { chromium } = require('playwright-core');
const { emit, parseArgs } = require('./peer');

// Debian's chromium; playwright-core brings no browser of its own.
const CHROMIUM = '/usr/bin/chromium';

// The page: a file, because getUserMedia needs a secure context (about:blank is not one, and
// a file: page may open ws:// as well as wss://).
const PAGE = path.join(__dirname, 'browser_phone.html');

// JsSIP ships CommonJS only, with no build for browsers. Its modules and their dependencies
// are put into one script here: each file a function of (module, exports, require), its
// require()s resolved ahead of time as Node would, a package's `browser` entry preferred.
function bundle(entry) {
  const ids = new Map();
  const modules = [];
  const add = (file) => {
    if (ids.has(file)) {
      return ids.get(file);
    }
    const id = modules.length;
    ids.set(file, id);
    modules.push(null);
    const source = fs.readFileSync(file, 'utf8');
    if (file.endsWith('.json')) {
      modules[id] = `[function (module) { module.exports = ${source}; }, {}]`;
      return id;
    }
    const requires = {};
    for (const [, spec] of source.matchAll(/\brequire\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      requires[spec] = add(resolve(spec, path.dirname(file)));
    }
    modules[id] = `[function (module, exports, require) {\n${source}\n}, ${JSON.stringify(requires)}]`;
    return id;
  };
  const root = add(entry);
  return `(() => {
  const modules = [${modules.join(',\n')}];
  const loaded = [];
  const load = (id) => {
    if (!loaded[id]) {
      const module = { exports: {} };
      loaded[id] = module;
      modules[id][0](module, module.exports, (spec) => load(modules[id][1][spec]));
    }
    return loaded[id].exports;
  };
  window.JsSIP = load(${root});
})();`;
}

// A bare name through its package.json (so `events` is the package, not Node's own module).
function resolve(spec, from) {
  if (spec.startsWith('.')) {
    return require.resolve(spec, { paths: [from] });
  }
  const manifest = require.resolve(`${spec}/package.json`, { paths: [from] });
  const pkg = JSON.parse(fs.readFileSync(manifest, 'utf8'));
  const main = typeof pkg.browser === 'string' ? pkg.browser : pkg.main || 'index.js';
  return require.resolve(path.join(path.dirname(manifest), main));
}

// base64(SHA-256(SubjectPublicKeyInfo)) of the certificate in `pem`, as chromium's
// --ignore-certificate-errors-spki-list takes it. The flag matches only certificates the server
// sends, and a server sends its leaf, not always the CA; so the leaf's key is what is pinned.
function spkiHash(pem) {
  const spki = new crypto.X509Certificate(fs.readFileSync(pem)).publicKey
    .export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(spki).digest('base64');
}

// Runs in the page: the JsSIP UA and its one call. `report` hands an event to Node.
function phone(options) {
  const report = (event, fields) => window.reportEvent(event, fields || {});
  const status = (message) => (message && message.status_code ? message.status_code : null);
  const media = {
    mediaConstraints: { audio: true, video: false },
    // No STUN or TURN: host candidates only, gathered at once.
    pcConfig: { iceServers: [] },
  };
  const ua = new JsSIP.UA({
    sockets: [new JsSIP.WebSocketInterface(options.wsUrl)],
    uri: options.uri,
    register: options.register,
    ...(options.registrar ? { registrar_server: options.registrar } : {}),
    session_timers: false,
    user_agent: 'JsSIP roundabout-e2e browser',
    // One attempt is enough for a test: reconnecting would hide a refused connection.
    connection_recovery_min_interval: 30,
    connection_recovery_max_interval: 60,
  });
  let session = null;
  let sampler = null;
  let finished = false;

  const loopbackOnly = (sdp) => sdp
    .split('\r\n')
    .filter((line) => !line.startsWith('a=candidate:') || line.split(' ')[4] === '127.0.0.1')
    .join('\r\n');

  const sample = async (pc) => {
    const totals = {
      packets_received: 0, packets_sent: 0, bytes_received: 0, bytes_sent: 0,
    };
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((entry) => {
      if (entry.kind === 'audio' && entry.type === 'inbound-rtp') {
        totals.packets_received += entry.packetsReceived || 0;
        totals.bytes_received += entry.bytesReceived || 0;
      } else if (entry.kind === 'audio' && entry.type === 'outbound-rtp') {
        totals.packets_sent += entry.packetsSent || 0;
        totals.bytes_sent += entry.bytesSent || 0;
      } else if (entry.type === 'transport' && entry.selectedCandidatePairId) {
        pair = stats.get(entry.selectedCandidatePairId);
      }
    });
    // A peer-reflexive candidate's address is hidden from the page: only its port shows.
    const candidate = (id) => stats.get(id) || {};
    const local = candidate(pair && pair.localCandidateId);
    const remote = candidate(pair && pair.remoteCandidateId);
    return {
      ...totals,
      connection: pc.connectionState,
      ice: pc.iceConnectionState,
      local: pair ? `${local.address || ''}:${local.port}` : null,
      local_type: local.candidateType || null,
      remote: pair ? `${remote.address || ''}:${remote.port}` : null,
      remote_type: remote.candidateType || null,
    };
  };

  const finish = () => {
    finished = true;
    clearInterval(sampler);
    window.callDone();
  };

  const hangup = () => {
    if (session && !session.isEnded()) {
      report('hangup');
      session.terminate();
    }
  };
  window.hangup = hangup;

  const watch = (s) => {
    session = s;
    s.on('sdp', (e) => {
      if (e.originator === 'local') {
        e.sdp = loopbackOnly(e.sdp);
      }
      report(e.originator === 'local' ? 'local_sdp' : 'remote_sdp', { type: e.type, sdp: e.sdp });
    });
    let iceTimer = null;
    s.on('icecandidate', (e) => {
      if (!iceTimer) {
        iceTimer = setTimeout(e.ready, options.iceTimeoutMs);
      }
    });
    s.on('progress', (e) => report('progress', {
      originator: e.originator, status: status(e.response),
    }));
    s.on('accepted', (e) => report('accepted', {
      originator: e.originator, status: status(e.response),
    }));
    s.on('confirmed', (e) => {
      report('confirmed', { originator: e.originator });
      sampler = setInterval(() => {
        sample(s.connection).then((fields) => {
          if (!finished) {
            report('stats', fields);
          }
        });
      }, 500);
      if (options.hangupAfterMs !== null) {
        setTimeout(hangup, options.hangupAfterMs);
      }
    });
    s.on('ended', (e) => {
      report('ended', { originator: e.originator, cause: e.cause, status: status(e.message) });
      finish();
    });
    s.on('failed', (e) => {
      report('failed', { originator: e.originator, cause: e.cause, status: status(e.message) });
      finish();
    });
  };

  ua.on('connected', () => report('connected'));
  ua.on('disconnected', (e) => report('disconnected', {
    error: Boolean(e && e.error),
    code: e && e.code !== undefined ? e.code : null,
    reason: e && e.reason ? String(e.reason) : null,
  }));
  ua.on('registered', (e) => report('registered', {
    status: status(e.response),
    contacts: e.response ? e.response.getHeaders('Contact') : [],
  }));
  ua.on('registrationFailed', (e) => report('registration_failed', {
    status: status(e.response), cause: e.cause || null,
  }));
  ua.on('newRTCSession', (e) => {
    if (e.originator === 'local') {
      watch(e.session);
      report('calling', { target: options.call, call_id: e.request.call_id });
      return;
    }
    if (!options.answer || session) {
      e.session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
      return;
    }
    report('incoming', {
      from: e.request.from.uri.toString(),
      ruri: e.request.ruri.toString(),
      call_id: e.request.call_id,
    });
    watch(e.session);
    e.session.answer(media);
  });
  if (options.call) {
    let called = false;
    ua.on(options.register ? 'registered' : 'connected', () => {
      if (!called) { // not again on a refresh or a reconnection
        called = true;
        ua.call(options.call, media);
      }
    });
  }
  // JsSIP's own graceful stop: the un-REGISTER, and the socket closed once the last
  // transaction (the BYE's) is over or 2 s have passed; bounded here in case it never is.
  window.stopPhone = () => new Promise((done) => {
    ua.on('disconnected', done);
    setTimeout(done, 5000);
    ua.stop();
  });
  ua.start();
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!args['ws-url'] || !args.uri) {
    throw new Error('--ws-url and --uri are required');
  }
  setTimeout(() => {
    emit('timeout');
    process.exit(2);
  }, Number(args.deadline || 50) * 1000).unref();

  const flags = [
    // As root in a container chromium's own sandbox cannot start.
    '--no-sandbox',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
  ];
  if (args['server-cert']) {
    flags.push(`--ignore-certificate-errors-spki-list=${spkiHash(args['server-cert'])}`);
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: flags });
  // playwright talks to chromium over a pipe: when this process dies, even by SIGKILL, the
  // pipe closes and chromium exits. The PID lets a test check that it did.
  const cdp = await browser.newBrowserCDPSession();
  const { processInfo } = await cdp.send('SystemInfo.getProcessInfo');
  const browserProcess = processInfo.find((p) => p.type === 'browser');
  emit('started', {
    browser: browser.version(),
    browser_pid: browserProcess ? browserProcess.id : null,
  });

  let closing = null;
  const close = (code) => {
    closing = closing || browser.close().finally(() => process.exit(code));
    return closing;
  };
  process.on('SIGTERM', () => close(143));
  process.on('SIGINT', () => close(130));

  const page = await browser.newPage();
  page.on('console', (message) => {
    process.stderr.write(`[page ${message.type()}] ${message.text()}\n`);
  });
  page.on('pageerror', (error) => emit('error', { message: `page: ${error.message}` }));
  await page.exposeFunction('reportEvent', (event, fields) => emit(event, fields));
  let callDone;
  const ended = new Promise((resolve) => {
    callDone = resolve;
  });
  await page.exposeFunction('callDone', () => callDone());
  await page.goto(`file://${PAGE}`);
  if (process.env.DEBUG) {
    await page.evaluate((debug) => localStorage.setItem('debug', debug), process.env.DEBUG);
  }
  await page.addScriptTag({ content: bundle(require.resolve('jssip')) });
  await page.evaluate(phone, {
    wsUrl: args['ws-url'],
    uri: args.uri,
    register: args.register !== '0',
    registrar: args.registrar || null,
    call: args.call || null,
    answer: Boolean(args.answer && args.answer !== '0'),
    hangupAfterMs: args['hangup-after-ms'] !== undefined ? Number(args['hangup-after-ms']) : null,
    iceTimeoutMs: Number(args['ice-timeout-ms'] || 2000),
  });

  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'hangup') {
      page.evaluate(() => window.hangup()).catch(() => {});
    }
  });

  await ended;
  await page.evaluate(() => window.stopPhone());
  await close(0);
}

main().catch((error) => {
  emit('error', { message: String(error && error.message ? error.message : error) });
  process.exit(1);
});
