#!/usr/bin/env bash
# What the optional features cost: Roundabout with nothing optional, with -metrics-addr, with
# -hep-addr (to a UDP sink pinned to the load generator's core), and with both, interleaved with
# Kamailio stateless, udp-udp at FIXED_RATES (default 4000) calls/s, ROUNDS rounds (default 3).
#
#   bench/optional.sh            results in /tmp/bench-results/optional-<time>/<variant>/
#
# ROUNDABOUT_BIN measures another build (default: this tree's release build, built first).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${OUT:-/tmp/bench-results/optional-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
if [ -z "${ROUNDABOUT_BIN:-}" ]; then (cd "$ROOT" && cargo build --release --quiet); fi
export ROUNDABOUT_BIN=${ROUNDABOUT_BIN:-$ROOT/target/release/roundabout}
export FIXED_ONLY=1 REPEATS=1 FIXED_RATES=${FIXED_RATES:-4000}
METRICS=127.0.0.1:9464 HEP_PORT=9060
# The capture server: a socket that reads and forgets, for at most an hour.
timeout 3600 python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    s.recv(65536)
' "$HEP_PORT" &
SINK=$!
trap 'kill "$SINK" 2>/dev/null || true' EXIT
taskset -pc 0 "$SINK" >/dev/null
for round in $(seq 1 "${ROUNDS:-3}"); do
  RESULTS=$OUT/kamailio PROXIES=kamailio "$HERE/compare.sh" udp-udp >"$OUT/kamailio-$round.log" 2>&1
  for variant in off metrics hep both; do
    case $variant in
      off) flags="" ;;
      metrics) flags="-metrics-addr $METRICS" ;;
      hep) flags="-hep-addr 127.0.0.1:$HEP_PORT" ;;
      both) flags="-metrics-addr $METRICS -hep-addr 127.0.0.1:$HEP_PORT" ;;
    esac
    RESULTS=$OUT/$variant PROXIES=roundabout ROUNDABOUT_FLAGS="$flags" \
      "$HERE/compare.sh" udp-udp >"$OUT/$variant-$round.log" 2>&1
  done
done
for variant in kamailio off metrics hep both; do
  printf '%-9s µs/msg:' "$variant"
  cat "$OUT/$variant"-*.log | grep -o 'proxy_cpu_us_per_msg=[0-9.]*' | cut -d= -f2 | paste -sd' '
done
