#!/usr/bin/env node
// A SIP server peer on WebSocket (RFC 7118), as a WS/WSS PBX would be, for Roundabout's
// end-to-end tests of Roundabout as a WebSocket client.
//
// It requires the `sip` subprotocol (a handshake without it gets HTTP 400), answers every SIP
// request with 200 OK (Via, From, To with a tag, Call-ID and CSeq copied) and prints one JSON
// line per event on stdout:
//   {"event":"listening","port":N,"secure":bool}
//   {"event":"connection","offered":[…],"protocol":"sip","path":"/","host":…,"servername":…}
//   {"event":"refused","offered":[…],"path":…}
//   {"event":"frame","type":"text"|"binary","sip":"…"}   every data frame, as received
//   {"event":"closed","code":N,"reason":"…"}
//
// Options (all `--name value`):
//   --host IP      address to listen on (default 127.0.0.1)
//   --port N       port (default 0: an ephemeral one, reported in `listening`)
//   --cert PATH    with --key: listen for WSS with this certificate chain, else plain WS
//   --key PATH
//   --deadline S   exit by itself after this many seconds (default 50)

'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');
const { emit, parseArgs } = require('./peer');

function offeredProtocols(req) {
  const header = req.headers['sec-websocket-protocol'];
  if (!header) {
    return [];
  }
  return header.split(',').map((p) => p.trim()).filter((p) => p.length > 0);
}

// The 200 OK for a request: its Via headers in order, From, To (tagged), Call-ID, CSeq.
function answer(request) {
  const head = request.split('\r\n\r\n')[0];
  const lines = head.split('\r\n');
  if (lines.length === 0 || lines[0].startsWith('SIP/2.0 ')) {
    return null; // a response, or nothing: no answer
  }
  const copied = [];
  let hasToTag = true;
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon < 0) {
      continue;
    }
    const name = line.slice(0, colon).trim().toLowerCase();
    if (['via', 'v', 'from', 'f', 'call-id', 'i', 'cseq'].includes(name)) {
      copied.push(line);
    } else if (name === 'to' || name === 't') {
      hasToTag = /;\s*tag=/i.test(line);
      copied.push(hasToTag ? line : `${line};tag=wspeer${process.pid}`);
    }
  }
  return ['SIP/2.0 200 OK', ...copied, 'Server: roundabout-e2e ws peer', 'Content-Length: 0', '', '']
    .join('\r\n');
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const deadline = Number(args.deadline || 50) * 1000;
  setTimeout(() => {
    emit('timeout');
    process.exit(2);
  }, deadline).unref();

  const secure = Boolean(args.cert && args.key);
  const server = secure
    ? https.createServer({ cert: fs.readFileSync(args.cert), key: fs.readFileSync(args.key) })
    : http.createServer();
  server.on('request', (req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain' });
    res.end('WebSocket only\n');
  });

  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (protocols) => (protocols.has('sip') ? 'sip' : false),
  });
  server.on('upgrade', (req, socket, head) => {
    const offered = offeredProtocols(req);
    if (!offered.includes('sip')) {
      emit('refused', { offered, path: req.url });
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      emit('connection', {
        offered,
        protocol: ws.protocol,
        path: req.url,
        host: req.headers.host || null,
        servername: socket.servername || null,
      });
      ws.on('message', (data, isBinary) => {
        const text = data.toString('utf8');
        emit('frame', { type: isBinary ? 'binary' : 'text', sip: text });
        const reply = answer(text);
        if (reply) {
          ws.send(reply);
        }
      });
      ws.on('close', (code, reason) => emit('closed', { code, reason: reason.toString() }));
    });
  });

  server.listen(Number(args.port || 0), args.host || '127.0.0.1', () => {
    emit('listening', { port: server.address().port, secure });
  });
}

try {
  main();
} catch (error) {
  emit('error', { message: String(error && error.message ? error.message : error) });
  process.exit(1);
}
