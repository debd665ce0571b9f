#!/usr/bin/env bash
# WebSocket -> UDP forwarding benchmark: Roundabout and Kamailio 5.6, same load, same machine.
#
#   bench/ws.sh                       # defaults below: both proxies, ws and wss, 2000 and 5000 req/s
#   RATES="500 1000" DURATION=5 FLOWS=50 bench/ws.sh roundabout
#   bench/ws.sh [roundabout] [kamailio]
#
# examples/ws_load/ (pinned on CPU $GEN_CPUS) opens $FLOWS WS or WSS flows to the proxy (pinned
# on CPU $PROXY_CPUS) and sends $METHOD requests for sip:bench@127.0.0.2:5080 at a fixed total rate;
# the proxy forwards them over UDP to a SIPp UAS (bench/scenarios/uas_options.xml, CPU $GEN_CPUS too)
# that answers 200. 2 SIP messages cross the proxy per transaction. Per step: generator summary,
# proxy CPU % (the proxy process and its children, from /proc over the measured window; 100 % = one
# core), CPU us per forwarded message, latency send->200 p50/p99 (us), lost (no answer in 2 s).
#
#   Roundabout: -ws-port 5066, -wss-port 7443 (test CA + certificate made with openssl),
#               -udp-port 5060, -trusted-server 127.0.0.2::5080:udp:, -strict-host,
#               -rate-limit 0 and -max-connections-per-ip 20000 (all flows come from 127.0.0.1; the
#               defaults, 1000 msgs/s and 100 connections per source IP, would cap the test),
#               -drain-timeout 1 (stops within ~2 s of SIGTERM).
#   Kamailio:   bench/kamailio/ws.cfg, ws 127.0.0.1:8080, wss 127.0.0.1:8443 (-A WITH_TLS),
#               stateless forward(), children=2 tcp_children=2.
#
# Environment (defaults): RATES="2000 5000" DURATION=10 WARMUP=1 FLOWS=100 METHOD=OPTIONS
#   TRANSPORTS="ws wss" PROXY_CPUS=1 GEN_CPUS=0 (PIN=none: no taskset) SETTLE_SECS=2
#   RESULTS=/tmp/bench-results  BUILD=1 (0: use the existing release binaries)
#   ROUNDABOUT_BIN, WS_LOAD_BIN (default target/release/roundabout, target/release/examples/ws_load)
# Results: $RESULTS/ws-<time>/ (results.tsv, per-step generator output, proxy and UAS logs).
# Every process started here is stopped by PID on exit (trap); every wait is bounded.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RATES=${RATES:-"2000 5000"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
FLOWS=${FLOWS:-100}
METHOD=${METHOD:-OPTIONS}
TRANSPORTS=${TRANSPORTS:-"ws wss"}
PROXY_CPUS=${PROXY_CPUS:-1}
GEN_CPUS=${GEN_CPUS:-0}
PIN=${PIN:-split}
SETTLE_SECS=${SETTLE_SECS:-2}
RESULTS=${RESULTS:-/tmp/bench-results}
BUILD=${BUILD:-1}
PROXIES=("$@")
[ ${#PROXIES[@]} -gt 0 ] || PROXIES=(roundabout kamailio)
UAS_IP=127.0.0.2; UAS_PORT=5080
# shared with idle.sh: BIN/GEN (ROUNDABOUT_BIN, WS_LOAD_BIN), test CA, start/stop of the proxies
. "$HERE/lib.sh"

check_tools "${PROXIES[@]}"
begin_run ws
TSV=$RUN_DIR/results.tsv
printf 'proxy\ttransport\trate\tflows\tsent\tanswered\tfailed\tlost\tachieved_rps\tproxy_cpu_pct\tus_per_msg\tp50_us\tp90_us\tp99_us\tmax_us\tgen_cpu_pct\n' > "$TSV"

# 1000+ flows need as many descriptors in the generator and the proxy
ulimit -n "$(ulimit -Hn)" 2>/dev/null

echo "ws bench -> $RUN_DIR"
echo "proxies=${PROXIES[*]} transports=$TRANSPORTS rates=$RATES duration=${DURATION}s warmup=${WARMUP}s flows=$FLOWS method=$METHOD pin=$PIN (proxy CPU $PROXY_CPUS, generator+UAS CPU $GEN_CPUS)"
echo "host load at start: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"

# ---------------------------------------------------------------- one step
run_step() {  # run_step PROXY TRANSPORT RATE
  local kind=$1 tr=$2 rate=$3 d=$RUN_DIR/$1-$2-$3
  mkdir -p "$d"
  $GN_TS sipp -sf "$HERE/scenarios/uas_options.xml" -i $UAS_IP -p $UAS_PORT -t u1 -nostdin \
    -buff_size 4194304 -timeout $((WARMUP + DURATION + 40)) \
    -trace_err -error_file "$d/uas_err.log" >"$d/uas.out" 2>&1 &
  UAS_PID=$!
  sleep 0.5
  $GN_TS timeout $((WARMUP + DURATION + 30)) "$GEN" --url "$(url "$kind" "$tr")" --ca "$TLS/ca.pem" \
    --flows "$FLOWS" --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" --method "$METHOD" \
    --target $UAS_IP:$UAS_PORT --proxy-pid "$PROXY_PID" >"$d/gen.out" 2>&1 &
  GEN_PID=$!
  wait "$GEN_PID"; local rc=$?; GEN_PID=""
  stop_pid "$UAS_PID"; UAS_PID=""
  sed 's/^/    /' "$d/gen.out"
  local line; line=$(grep '^RESULT ' "$d/gen.out" | tail -1)
  if [ $rc -ne 0 ] || [ -z "$line" ]; then
    echo "    (generator exit $rc, no result)"
    printf '%s\t%s\t%s\t%s\t\t\t\t\t\t\t\t\t\t\t\t\n' "$kind" "$tr" "$rate" "$FLOWS" >> "$TSV"
  else
    python3 - "$kind" "$tr" "$rate" "$line" >> "$TSV" <<'PY'
import sys
kind, tr, rate, line = sys.argv[1:5]
kv = dict(f.split('=', 1) for f in line.split()[1:] if '=' in f)
keys = ['flows', 'sent', 'answered', 'failed', 'lost', 'achieved_rps', 'proxy_cpu_pct', 'us_per_msg',
        'p50_us', 'p90_us', 'p99_us', 'max_us', 'gen_cpu_pct']
print('\t'.join([kind, tr, rate] + [kv.get(k, '') for k in keys]))
PY
  fi
  kill -0 "$PROXY_PID" 2>/dev/null || { echo "$kind died during the step:"; tail -20 "$RUN_DIR/$kind.log"; exit 1; }
  sleep "$SETTLE_SECS"
}

for kind in "${PROXIES[@]}"; do
  echo "== $kind"
  start_proxy "$kind" "$TLS" -max-connections-per-ip 20000
  for tr in $TRANSPORTS; do
    for rate in $RATES; do
      echo "  $kind $tr $rate req/s, $FLOWS flows, ${DURATION}s"
      run_step "$kind" "$tr" "$rate"
    done
  done
  stop_proxy
done

# ---------------------------------------------------------------- table
echo
echo "host load at end: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min); proxy pinned alone on CPU $PROXY_CPUS, CPU % = share of one core"
python3 - "$TSV" <<'PY' | tee "$RUN_DIR/table.md"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter='\t'))
print('| proxy | transport | rate req/s | flows | achieved | lost | CPU % | us/msg | p50 us | p99 us |')
print('|---|---|---|---|---|---|---|---|---|---|')
for r in rows:
    g = lambda k: r.get(k) or 'n/a'
    lost = f"{int(r['lost'])}/{r['sent']}" if r.get('sent') else 'n/a'
    print(f"| {r['proxy']} | {r['transport']} | {r['rate']} | {r['flows']} | {g('achieved_rps')} | {lost} | "
          f"{g('proxy_cpu_pct')} | {g('us_per_msg')} | {g('p50_us')} | {g('p99_us')} |")
PY
