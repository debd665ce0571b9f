#!/usr/bin/env node
// A raw SIP-over-WebSocket UAC (RFC 7118) that places calls, for Roundabout's end-to-end tests.
// JsSIP in Node cannot place a call (it has no RTCPeerConnection), so this speaks SIP itself:
// INVITE with an SDP offer; on a 2xx, ACK to the 2xx's Contact (with Route from its
// Record-Route), and the same ACK again for every retransmission of that 2xx (RFC 3261
// §13.2.2.4: a UDP UAS further on retransmits it until an ACK gets through); then, after the
// call's hold time, BYE to the same target, waiting for its final response. A non-2xx final
// response gets the ACK of its transaction (§17.1.1.3) and ends the call as failed.
//
// Being on a reliable transport, it never retransmits a request itself (§17.1.1.2): whether a
// transaction survives a lossy hop further on is up to the proxy.
//
// Calls start at --rate per second, spread over --sockets WebSockets (as that many browser
// tabs). Every event is one JSON line on stdout:
//   {"event":"connected","sockets":N,"local":["IP:PORT",…]}   every WebSocket is open, and
//       the local address of each (what a capture of Roundabout's side shows as the client's)
//   {"event":"call","n":…,"call_id":…,"invite":200|code|null,"reason":…,"answer_sdp":…,
//    "acks":N,"bye":200|code|null,"ms":…}
//       one per call: the INVITE's and BYE's final status (null: none within --timeout-ms),
//       the INVITE's final reason phrase and body, and how many times the ACK was sent
//   {"event":"calls_done","calls":N,"completed":N,"failed":[n,…],"stray":N}
//       completed: INVITE 2xx, ACK sent, BYE 2xx; stray: responses matching no call
//   {"event":"error",…}, {"event":"disconnected",…}, {"event":"timeout"}
//
// Options (all `--name value`):
//   --ws URL          ws://… or wss://… (required); for WSS trust a test CA with NODE_EXTRA_CA_CERTS
//   --target URI      the INVITE's Request-URI and To (required)
//   --sdp-file PATH   the INVITE's SDP offer (default: a fixed plain RTP/AVP one)
//   --calls N         how many calls (default 1)
//   --rate R          calls started per second (default 10)
//   --sockets N       WebSockets to spread the calls over (default 1)
//   --hold-ms MS      time between ACK and BYE (default 1000): long enough for a UDP UAS to
//                     retransmit its 2xx once (T1) if the first ACK was lost
//   --timeout-ms MS   how long to wait for each final response (default 20000)
//   --deadline S      exit by itself after this many seconds (default 80)

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const WebSocket = require('ws');
const {
  emit, parseArgs, COMPACT, SDP,
} = require('./peer');

const token = () => crypto.randomBytes(6).toString('hex');

// A SIP response as text → { code, headers: [[lowercase full name, value]] }; null for a request.
function parseResponse(text) {
  const end = text.indexOf('\r\n\r\n');
  const lines = (end >= 0 ? text.slice(0, end) : text).split('\r\n');
  const start = /^SIP\/2\.0 (\d{3}) (.*)$/.exec(lines[0]);
  if (!start) {
    return null;
  }
  const headers = [];
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) {
      const raw = line.slice(0, colon).trim().toLowerCase();
      headers.push([COMPACT[raw] || raw, line.slice(colon + 1).trim()]);
    }
  }
  const body = end >= 0 ? text.slice(end + 4) : '';
  return {
    code: Number(start[1]), reason: start[2], headers, body,
  };
}

const first = (msg, name) => (msg.headers.find(([n]) => n === name) || [])[1] || null;
// Every value of a header, comma-separated ones split (Record-Route may be either way).
const all = (msg, name) => msg.headers.filter(([n]) => n === name)
  .flatMap(([, v]) => v.split(/,(?=\s*<)/).map((s) => s.trim()));
const uriOf = (nameAddr) => {
  const m = /<([^>]*)>/.exec(nameAddr);
  return m ? m[1] : nameAddr.split(';')[0];
};

function request({ method, ruri, via, routes = [], from, to, callId, cseq, contact, body = '' }) {
  const lines = [
    `${method} ${ruri} SIP/2.0`,
    `Via: ${via}`,
    ...routes.map((r) => `Route: ${r}`),
    'Max-Forwards: 70',
    `From: ${from}`,
    `To: ${to}`,
    `Call-ID: ${callId}`,
    `CSeq: ${cseq} ${method}`,
  ];
  if (contact) {
    lines.push(`Contact: ${contact}`);
  }
  if (body) {
    lines.push('Content-Type: application/sdp');
  }
  lines.push('User-Agent: roundabout-e2e ws-uac', `Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

// One WebSocket and the calls on it, by Call-ID.
class Line {
  constructor(url, onStray) {
    this.ws = new WebSocket(url, 'sip');
    this.host = `${token()}.invalid`;
    this.transport = url.startsWith('wss:') ? 'WSS' : 'WS';
    this.calls = new Map();
    this.local = null;
    this.ws.once('upgrade', (response) => {
      this.local = `${response.socket.localAddress}:${response.socket.localPort}`;
    });
    this.ws.on('message', (data) => this.onMessage(data.toString('utf8'), onStray));
    this.ws.on('close', (code, reason) => emit('disconnected', { code, reason: String(reason) }));
    this.ws.on('error', (error) => emit('error', { message: String(error.message || error) }));
  }

  open() {
    return new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
  }

  send(text) {
    this.ws.send(text);
  }

  via() {
    return `SIP/2.0/${this.transport} ${this.host};branch=z9hG4bK${token()}`;
  }

  onMessage(text, onStray) {
    const msg = parseResponse(text);
    if (!msg) {
      return; // no requests are expected on this UAC's dialogs
    }
    const call = this.calls.get(first(msg, 'call-id'));
    const method = (first(msg, 'cseq') || '').split(/\s+/)[1];
    if (!call || !call.onResponse(method, msg)) {
      onStray();
    }
  }
}

// One call: INVITE, ACK, hold, BYE. Resolves with its outcome; never rejects.
function placeCall(n, line, args) {
  const started = Date.now();
  const callId = `ws-uac-${n}-${token()}@test`;
  const from = `<sip:ws-uac@${line.host}>;tag=${token()}`;
  const contact = `<sip:ws-uac@${line.host};transport=ws>`;
  const outcome = { n, call_id: callId, invite: null, acks: 0, bye: null };
  let waiting = null; // { method, resolve }: the final response being waited for
  let ack = null; // the ACK of the 2xx, sent again for each retransmission of it

  const call = {
    onResponse(method, msg) {
      if (method === 'INVITE' && msg.code >= 200 && msg.code < 300 && ack) {
        line.send(ack);
        outcome.acks += 1;
        return true;
      }
      if (waiting && waiting.method === method && msg.code >= 200) {
        const w = waiting;
        waiting = null;
        w.resolve(msg);
        return true;
      }
      return method === 'INVITE' || method === 'BYE'; // provisionals, late finals
    },
  };
  line.calls.set(callId, call);

  const finalResponse = (method) => new Promise((resolve) => {
    const timer = setTimeout(() => {
      waiting = null;
      resolve(null);
    }, args.timeoutMs);
    waiting = {
      method,
      resolve: (msg) => {
        clearTimeout(timer);
        resolve(msg);
      },
    };
  });
  const done = () => {
    outcome.ms = Date.now() - started;
    emit('call', outcome);
    return outcome;
  };

  return (async () => {
    const inviteVia = line.via();
    const invited = finalResponse('INVITE');
    line.send(request({
      method: 'INVITE',
      ruri: args.target,
      via: inviteVia,
      from,
      to: `<${args.target}>`,
      callId,
      cseq: 1,
      contact,
      body: args.sdp,
    }));
    const answer = await invited;
    if (!answer) {
      return done();
    }
    outcome.invite = answer.code;
    outcome.reason = answer.reason;
    outcome.answer_sdp = answer.body;
    const to = first(answer, 'to');
    if (answer.code >= 300) {
      // Hop-by-hop ACK of a failure: same branch and Request-URI as the INVITE.
      line.send(request({
        method: 'ACK', ruri: args.target, via: inviteVia, from, to, callId, cseq: 1,
      }));
      return done();
    }
    // The dialog's remote target and route set (RFC 3261 §12.1.2: Record-Route reversed).
    const target = uriOf(first(answer, 'contact') || `<${args.target}>`);
    const routes = all(answer, 'record-route').reverse();
    ack = request({
      method: 'ACK', ruri: target, via: line.via(), routes, from, to, callId, cseq: 1,
    });
    line.send(ack);
    outcome.acks += 1;
    await new Promise((resolve) => { setTimeout(resolve, args.holdMs); });
    const byed = finalResponse('BYE');
    line.send(request({
      method: 'BYE', ruri: target, via: line.via(), routes, from, to, callId, cseq: 2,
    }));
    const bye = await byed;
    outcome.bye = bye ? bye.code : null;
    return done();
  })();
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!args.ws || !args.target) {
    throw new Error('--ws and --target are required');
  }
  const calls = Number(args.calls || 1);
  const rate = Number(args.rate || 10);
  const opts = {
    target: args.target,
    holdMs: Number(args['hold-ms'] || 1000),
    timeoutMs: Number(args['timeout-ms'] || 20000),
    sdp: args['sdp-file'] ? fs.readFileSync(args['sdp-file'], 'utf8') : SDP,
  };
  setTimeout(() => {
    emit('timeout');
    process.exit(2);
  }, Number(args.deadline || 80) * 1000).unref();

  let stray = 0;
  const lines = Array.from({ length: Number(args.sockets || 1) }, () => new Line(args.ws, () => {
    stray += 1;
  }));
  await Promise.all(lines.map((l) => l.open()));
  emit('connected', { sockets: lines.length, local: lines.map((l) => l.local) });

  const running = [];
  for (let n = 1; n <= calls; n += 1) {
    running.push(placeCall(n, lines[n % lines.length], opts));
    if (n < calls) {
      // Pacing the starts, as SIPp's -r does; not a wait for anything.
      await new Promise((resolve) => { setTimeout(resolve, 1000 / rate); });
    }
  }
  const outcomes = await Promise.all(running);
  const ok = (o) => o.invite >= 200 && o.invite < 300 && o.acks > 0 && o.bye >= 200 && o.bye < 300;
  emit('calls_done', {
    calls,
    completed: outcomes.filter(ok).length,
    failed: outcomes.filter((o) => !ok(o)).map((o) => o.n),
    stray,
  });
  for (const l of lines) {
    l.ws.close(1000);
  }
  process.exit(0);
}

main().catch((error) => {
  emit('error', { message: String(error && error.message ? error.message : error) });
  process.exit(1);
});
