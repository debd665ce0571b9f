#!/usr/bin/env node
// A JsSIP user agent, as a browser runs it, for Roundabout's WebSocket end-to-end tests.
//
// It connects over WS or WSS (subprotocol `sip`, as every browser JsSIP does), registers,
// sends one MESSAGE and one OPTIONS, then waits for incoming MESSAGEs until it is killed or
// its own deadline passes. Every event is one JSON line on stdout, so a test can wait on lines:
//   {"event":"started","contact":"sip:…"}        the Contact URI JsSIP will register
//   {"event":"connected"}                         the WebSocket is open
//   {"event":"registered","status":200,"contacts":[…]}   the Contact headers of the 2xx
//   {"event":"registration_failed","status":…,"cause":…}
//   {"event":"message_sent","status":200}  /  {"event":"message_failed",…}
//   {"event":"options_sent","status":200}  /  {"event":"options_failed",…}
//   {"event":"incoming_message","body":…,"ruri":…,"from":…,"content_type":…}
//   {"event":"disconnected",…}, {"event":"error",…}, {"event":"timeout"}
//
// Options (all `--name value`):
//   --ws URL            ws://… or wss://… (required). For WSS, trust a test CA with
//                       NODE_EXTRA_CA_CERTS.
//   --uri SIP-URI       the user's address of record (required), e.g. sip:alice@registrar.test
//   --registrar URI     the REGISTER Request-URI (default: the domain of --uri)
//   --message-to URI    where the MESSAGE goes (default: skip the MESSAGE)
//   --message-body TXT  its body (default: "hello from jssip")
//   --options-to URI    where the OPTIONS goes (default: skip the OPTIONS)
//   --contact-user U    the user part of the Contact (default: JsSIP's random one)
//   --expires S         registration expiry (default 600)
//   --deadline S        exit by itself after this many seconds (default 50)
// Set DEBUG=JsSIP:* to get JsSIP's own log on stderr.

'use strict';

// Node has no WebSocket global before 22; JsSIP.WebSocketInterface needs one.
global.WebSocket = require('ws');
const JsSIP = require('jssip');

function emit(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 1) {
    const name = argv[i];
    if (!name.startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`bad argument ${name}: expected --name value`);
    }
    args[name.slice(2)] = argv[i + 1];
    i += 1;
  }
  return args;
}

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

  const socket = new JsSIP.WebSocketInterface(args.ws);
  const configuration = {
    sockets: [socket],
    uri: args.uri,
    register: true,
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
  const ua = new JsSIP.UA(configuration);
  emit('started', { contact: ua.contact.uri.toString() });

  ua.on('connected', () => emit('connected'));
  ua.on('disconnected', (e) => emit('disconnected', {
    error: Boolean(e && e.error),
    code: e && e.code !== undefined ? e.code : null,
    reason: e && e.reason ? String(e.reason) : null,
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
  ua.on('registered', (e) => {
    emit('registered', {
      status: status(e.response),
      contacts: e.response ? e.response.getHeaders('Contact') : [],
    });
    if (sent) {
      return; // a refresh
    }
    sent = true;
    sendMessage(ua, args, () => sendOptions(ua, args, () => emit('waiting')));
  });

  ua.start();
}

function sendMessage(ua, args, next) {
  if (!args['message-to']) {
    next();
    return;
  }
  ua.sendMessage(args['message-to'], args['message-body'] || 'hello from jssip', {
    contentType: 'text/plain',
    eventHandlers: {
      succeeded: (e) => {
        emit('message_sent', { status: status(e.response) });
        next();
      },
      failed: (e) => {
        emit('message_failed', { status: status(e.response), cause: e.cause || null });
        next();
      },
    },
  });
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
