#!/usr/bin/env node
// A JsSIP user agent, as a browser runs it, for Roundabout's WebSocket end-to-end tests.
//
// It connects over WS or WSS (subprotocol `sip`, as every browser JsSIP does), registers
// (unless --register 0), sends one MESSAGE (or --messages of them) and one OPTIONS, then
// waits for incoming MESSAGEs until it is killed or its own deadline passes. Every event is
// one JSON line on stdout, so a test can wait on lines:
//   {"event":"started","contact":"sip:…"}        the Contact URI JsSIP will register
//   {"event":"connected"}                         the WebSocket is open
//   {"event":"registered","status":200,"contacts":[…],"call_id":…}   the 2xx's Contacts
//   {"event":"registration_failed","status":…,"cause":…}
//   {"event":"message_sent","status":200,"n":1}  /  {"event":"message_failed",…,"n":1}
//   {"event":"messages_done","sent":N,"ok":N,"failed":N,"unanswered":N,"statuses":{…}}
//       after every MESSAGE of --messages got its answer, or --answer-timeout passed
//   {"event":"options_sent","status":200}  /  {"event":"options_failed",…}
//   {"event":"incoming_message","body":…,"ruri":…,"from":…,"content_type":…}
//   {"event":"disconnected",…}, {"event":"error",…}, {"event":"timeout"}
// With --answer-invites (see below), also:
//   {"event":"incoming_invite","ruri":…,"from":…,"to":…,"call_id":…,"contact":…,"vias":[…]}
//   {"event":"answered","call_id":…,"contact":…}   the 200 went out
//   {"event":"ack","ruri":…,"call_id":…}  /  {"event":"bye","ruri":…,"call_id":…}
//   {"event":"cancel","call_id":…}
//   {"event":"unregistered","status":200,"contacts":[…]}  (see --unregister-…)
//
// Answering calls is done with raw SIP on the WebSocket, not by JsSIP: JsSIP in Node has no
// RTCPeerConnection, so it cannot answer an INVITE. With --answer-invites, every frame that
// arrives is looked at *before JsSIP sees it*; INVITE, ACK, BYE and CANCEL are taken out and
// answered by this script as a minimal UAS writing raw SIP replies on the same socket: 180 and
// 200 (a fixed SDP, and as Contact the very contact JsSIP registered, so the call is reached
// through the binding) to an INVITE (the same 200 again to a retransmission), 200 to BYE, and
// 200 to CANCEL (a 487 would follow only for an unanswered INVITE; this UAS answers at once).
// Every other frame (REGISTER answers, MESSAGE, …) goes on to JsSIP untouched.
//
// Options (all `--name value`):
//   --ws URL            ws://… or wss://… (required). For WSS, trust a test CA with
//                       NODE_EXTRA_CA_CERTS.
//   --uri SIP-URI       the user's address of record (required), e.g. sip:alice@registrar.test
//   --registrar URI     the REGISTER Request-URI (default: the domain of --uri)
//   --message-to URI    where the MESSAGE goes (default: skip the MESSAGE)
//   --message-body TXT  its body (default: "hello from jssip"; " N" is appended with --messages)
//   --messages N        send N MESSAGEs (default 1), started at --message-rate per second
//   --message-rate R    (default 50)
//   --answer-timeout S  give up on unanswered MESSAGEs this long after the last was sent
//                       (default 40: past JsSIP's own Timer F of 32 s)
//   --register 0        do not register: send at once when the WebSocket is open
//   --options-to URI    where the OPTIONS goes (default: skip the OPTIONS)
//   --contact-user U    the user part of the Contact (default: JsSIP's random one)
//   --expires S         registration expiry (default 600)
//   --deadline S        exit by itself after this many seconds (default 50)
//   --answer-invites 1  answer incoming calls with raw SIP (see above)
//   --unregister-after-calls N   un-REGISTER (ua.unregister()) once N calls have ended by BYE
//   --unregister-on-sigusr1 1    un-REGISTER when the process gets SIGUSR1
// Set DEBUG=JsSIP:* to get JsSIP's own log on stderr.

'use strict';

// Node has no WebSocket global before 22; JsSIP.WebSocketInterface needs one.
global.WebSocket = require('ws');
const JsSIP = require('jssip');
const {
  emit, parseArgs, COMPACT, SDP,
} = require('./peer');

function status(response) {
  return response && response.status_code ? response.status_code : null;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!args.ws || !args.uri) {
    throw new Error('--ws and --uri are required');
  }
  const deadline = Number(args.deadline || 50) * 1000;
  setTimeout(() => {
    emit('timeout');
    process.exit(2);
  }, deadline).unref();

  let ua = null;
  let callsEnded = 0;
  const unregisterAfter = Number(args['unregister-after-calls'] || 0);
  const onCallEnded = () => {
    callsEnded += 1;
    if (unregisterAfter > 0 && callsEnded === unregisterAfter) {
      ua.unregister();
    }
  };
  const socket = args['answer-invites'] && args['answer-invites'] !== '0'
    ? new AnsweringSocket(args.ws, () => ua.contact.uri.toString(), onCallEnded)
    : new JsSIP.WebSocketInterface(args.ws);
  const configuration = {
    sockets: [socket],
    uri: args.uri,
    register: args.register !== '0',
    register_expires: Number(args.expires || 600),
    session_timers: false,
    user_agent: 'JsSIP roundabout-e2e',
    // One attempt is enough for a test: reconnecting would hide a refused connection.
    connection_recovery_min_interval: 30,
    connection_recovery_max_interval: 60,
  };
  if (args.registrar) {
    configuration.registrar_server = args.registrar;
  }
  if (args['contact-user']) {
    const host = `${Math.random().toString(36).slice(2, 12)}.invalid`;
    configuration.contact_uri = `sip:${args['contact-user']}@${host};transport=ws`;
  }
  ua = new JsSIP.UA(configuration);
  emit('started', { contact: ua.contact.uri.toString() });

  ua.on('connected', () => emit('connected'));
  ua.on('disconnected', (e) => emit('disconnected', {
    error: Boolean(e && e.error),
    code: e && e.code !== undefined ? e.code : null,
    reason: e && e.reason ? String(e.reason) : null,
  }));
  if (args['unregister-on-sigusr1'] && args['unregister-on-sigusr1'] !== '0') {
    process.on('SIGUSR1', () => ua.unregister());
  }
  ua.on('unregistered', (e) => emit('unregistered', {
    status: status(e && e.response),
    cause: (e && e.cause) || null,
    contacts: e && e.response ? e.response.getHeaders('Contact') : [],
  }));
  ua.on('registrationFailed', (e) => emit('registration_failed', {
    status: status(e.response),
    cause: e.cause || null,
  }));
  ua.on('newMessage', (e) => {
    if (e.originator !== 'remote') {
      return;
    }
    const request = e.request;
    emit('incoming_message', {
      body: request.body || '',
      ruri: request.ruri ? request.ruri.toString() : null,
      from: request.getHeader('From'),
      content_type: request.getHeader('Content-Type'),
      call_id: request.call_id,
    });
  });

  let sent = false;
  const sendAll = () => sendMessage(ua, args, () => sendOptions(ua, args, () => emit('waiting')));
  if (args.register === '0') {
    ua.on('connected', () => {
      if (!sent) {
        sent = true;
        sendAll();
      }
    });
  }
  ua.on('registered', (e) => {
    emit('registered', {
      status: status(e.response),
      contacts: e.response ? e.response.getHeaders('Contact') : [],
      call_id: e.response ? e.response.call_id : null,
    });
    if (sent) {
      return; // a refresh
    }
    sent = true;
    sendAll();
  });

  ua.start();
}

// ---- raw SIP answering of calls (--answer-invites) ----

// A SIP request as text → { method, ruri, headers: [[lowercase full name, raw line, value]] }.
function parseRequest(text) {
  const end = text.indexOf('\r\n\r\n');
  const head = end >= 0 ? text.slice(0, end) : text;
  const lines = head.split('\r\n');
  const start = /^([A-Z]+) (\S+) SIP\/2\.0$/.exec(lines[0]);
  if (!start) {
    return null; // a response: JsSIP's business
  }
  const headers = [];
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) {
      continue;
    }
    const raw = line.slice(0, colon).trim().toLowerCase();
    headers.push([COMPACT[raw] || raw, line, line.slice(colon + 1).trim()]);
  }
  return { method: start[1], ruri: start[2], headers };
}

function headerValue(request, name) {
  const found = request.headers.find(([n]) => n === name);
  return found ? found[2] : null;
}

// A response to `request`: every Via and Record-Route line as received (in order), From, To
// (with `toTag` added when it has none), Call-ID and CSeq copied.
function response(request, code, reason, { toTag, contact, sdp } = {}) {
  const out = [`SIP/2.0 ${code} ${reason}`];
  for (const [name, line, value] of request.headers) {
    if (name === 'via' || name === 'record-route' || name === 'from' || name === 'call-id'
        || name === 'cseq') {
      out.push(line);
    } else if (name === 'to') {
      out.push(toTag && !/;\s*tag=/i.test(value) ? `${line};tag=${toTag}` : line);
    }
  }
  if (contact) {
    out.push(`Contact: <${contact}>`);
  }
  out.push('Server: JsSIP roundabout-e2e raw answer');
  const body = sdp ? SDP : '';
  if (sdp) {
    out.push('Content-Type: application/sdp');
  }
  out.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return `${out.join('\r\n')}\r\n\r\n${body}`;
}

// JsSIP's WebSocket, with INVITE/ACK/BYE/CANCEL taken out of the incoming frames and answered
// here with raw SIP on the same socket.
class AnsweringSocket extends JsSIP.WebSocketInterface {
  constructor(url, contact, onCallEnded) {
    super(url);
    this._contact = contact;
    this._onCallEnded = onCallEnded;
    this._calls = new Map(); // Call-ID → { tag, invite, final }
  }

  _onMessage(event) {
    const text = typeof event.data === 'string'
      ? event.data : Buffer.from(event.data).toString('utf8');
    const request = parseRequest(text);
    if (request && ['INVITE', 'ACK', 'BYE', 'CANCEL'].includes(request.method)) {
      this._answer(request);
      return;
    }
    super._onMessage(event);
  }

  _reply(text) {
    this._ws.send(text);
  }

  _answer(request) {
    const callId = headerValue(request, 'call-id');
    const known = this._calls.get(callId);
    switch (request.method) {
      case 'INVITE': {
        if (known) { // a retransmission: the same final answer again
          this._reply(known.final);
          return;
        }
        const call = { tag: `rawans${Math.random().toString(36).slice(2, 10)}`, invite: request };
        this._calls.set(callId, call);
        emit('incoming_invite', {
          ruri: request.ruri,
          from: headerValue(request, 'from'),
          to: headerValue(request, 'to'),
          call_id: callId,
          contact: headerValue(request, 'contact'),
          vias: request.headers.filter(([n]) => n === 'via').map(([, , v]) => v),
        });
        this._reply(response(request, 180, 'Ringing', { toTag: call.tag, contact: this._contact() }));
        call.final = response(request, 200, 'OK', {
          toTag: call.tag, contact: this._contact(), sdp: true,
        });
        this._reply(call.final);
        emit('answered', { call_id: callId, contact: this._contact() });
        return;
      }
      case 'ACK':
        emit('ack', { ruri: request.ruri, call_id: callId });
        return;
      case 'BYE':
        this._reply(response(request, 200, 'OK', { toTag: known ? known.tag : 'rawbye' }));
        emit('bye', { ruri: request.ruri, call_id: callId });
        if (known && !known.ended) {
          known.ended = true;
          this._onCallEnded();
        }
        return;
      case 'CANCEL':
        this._reply(response(request, 200, 'OK', { toTag: known ? known.tag : 'rawcancel' }));
        if (known && known.final && known.final.startsWith('SIP/2.0 200')) {
          return; // too late: the call was answered already
        }
        if (known) {
          known.final = response(known.invite, 487, 'Request Terminated', { toTag: known.tag });
          this._reply(known.final);
        }
        emit('cancel', { call_id: callId });
        return;
      default:
    }
  }
}

// Each MESSAGE is its own transaction; on a WebSocket JsSIP never retransmits it, so one that
// is lost further on is answered only by a timeout.
function sendMessage(ua, args, next) {
  if (!args['message-to']) {
    next();
    return;
  }
  const count = Number(args.messages || 1);
  const body = args['message-body'] || 'hello from jssip';
  const gap = 1000 / Number(args['message-rate'] || 50);
  const tally = { sent: 0, ok: 0, failed: 0, statuses: {} };
  let finished = false;
  let giveUp = null;
  const finish = () => {
    if (finished) {
      return;
    }
    finished = true;
    clearTimeout(giveUp);
    emit('messages_done', {
      sent: tally.sent,
      ok: tally.ok,
      failed: tally.failed,
      unanswered: tally.sent - tally.ok - tally.failed,
      statuses: tally.statuses,
    });
    next();
  };
  const settle = (n, event, response, cause) => {
    const code = status(response);
    tally.statuses[code] = (tally.statuses[code] || 0) + 1;
    if (event === 'message_sent') {
      tally.ok += 1;
    } else {
      tally.failed += 1;
    }
    emit(event, { status: code, cause: cause || null, n });
    if (tally.ok + tally.failed === count) {
      finish();
    }
  };
  const send = (n) => {
    tally.sent += 1;
    ua.sendMessage(args['message-to'], count === 1 ? body : `${body} ${n}`, {
      contentType: 'text/plain',
      eventHandlers: {
        succeeded: (e) => settle(n, 'message_sent', e.response),
        failed: (e) => settle(n, 'message_failed', e.response, e.cause),
      },
    });
    if (n < count) {
      // Pacing the sends, as SIPp's -r does; not a wait for anything.
      setTimeout(() => send(n + 1), gap);
    } else {
      giveUp = setTimeout(finish, Number(args['answer-timeout'] || 40) * 1000);
    }
  };
  send(1);
}

// JsSIP 3.13 has UA.sendOptions (no raw WebSocket needed for OPTIONS).
function sendOptions(ua, args, next) {
  if (!args['options-to']) {
    next();
    return;
  }
  // A string target must have a user part (JsSIP's normalizeTarget would add one); a parsed
  // URI is taken as it is, so `sip:registrar.test` stays user-less.
  const target = JsSIP.URI.parse(args['options-to']) || args['options-to'];
  ua.sendOptions(target, null, {
    eventHandlers: {
      succeeded: (e) => {
        emit('options_sent', { status: status(e.response) });
        next();
      },
      failed: (e) => {
        emit('options_failed', { status: status(e.response), cause: e.cause || null });
        next();
      },
    },
  });
}

try {
  main();
} catch (error) {
  emit('error', { message: String(error && error.message ? error.message : error) });
  process.exit(1);
}
