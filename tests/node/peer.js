// What every test peer script in this directory shares: one JSON event per line on stdout
// (what tests/common/node.rs waits on), `--name value` arguments, and the bits of SIP text the
// raw-SIP peers write and read.

'use strict';

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

// Compact header names (RFC 3261 §7.3.3) → full lowercase names.
const COMPACT = {
  v: 'via', f: 'from', t: 'to', i: 'call-id', m: 'contact', l: 'content-length',
  c: 'content-type', k: 'supported', s: 'subject', e: 'content-encoding',
};

// A fixed audio SDP (offer or answer alike: the tests carry no media).
const SDP = [
  'v=0',
  'o=roundabout-e2e 1 1 IN IP4 127.0.0.1',
  's=-',
  'c=IN IP4 127.0.0.1',
  't=0 0',
  'm=audio 9 RTP/AVP 0',
  'a=rtpmap:0 PCMU/8000',
  '',
].join('\r\n');

module.exports = {
  emit, parseArgs, COMPACT, SDP,
};
