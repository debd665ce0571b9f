#!/usr/bin/env bash
# Memory per idle WebSocket flow: Roundabout and Kamailio 5.6, same clients, same machine.
#
#   bench/idle.sh                              # both proxies, wss, 10000 flows
#   TRANSPORTS="wss ws" FLOWS=2000 bench/idle.sh roundabout
#   bench/idle.sh [roundabout] [kamailio]
#
# For each proxy and transport, on a freshly started proxy: examples/ws_load (`--mode idle`)
# samples the proxy's memory (VmRSS and Pss, summed over the proxy PID and its descendants),
# opens $FLOWS WS or WSS flows (subprotocol sip, $CONNECT_PARALLEL at a time, from the source
# addresses 127.0.1.1..127.0.1.$SOURCES), sends one REGISTER per flow (user idle<N>, Contact
# <sip:idle<N>@f<N>.ws-load.invalid;transport=ws>, Expires 3600, as JsSIP does) to
# sip:127.0.0.2:5080, where a SIPp UAS (scenarios/uas_register.xml) answers 200 OK echoing
# Contact and Expires; counts the 200s, samples again; holds every flow open and silent for
# $HOLD_SECS s, sampling after $SETTLE_SECS s ("after") and at the end. Per flow = (after −
# before) / registered flows, in KiB. The generator's own RSS per flow is reported too.
#
#   Roundabout: bench/lib.sh flags (ws 5066, wss 7443 with a throw-away CA made with openssl,
#               -strict-host, -rate-limit 0, -trusted-server 127.0.0.2::5080:udp:) plus
#               -max-connections/-max-connections-per-ip $MAX_CONN and -max-new-requests 0.
#               The REGISTER's R-URI names the trusted server, so no -default-sip-server is
#               needed; Roundabout rewrites the Contact, stores the binding from the 200 and
#               hands the client its own Contact back.
#   Kamailio:   bench/kamailio/ws.cfg -A WITH_TLS (ws 8080, wss 8443; every request from WS/WSS
#               is forwarded statelessly to the UAS), -m $KAM_SHM_MB shared memory. Its RSS
#               sum counts shared memory once per process (tcp_main and workers): read PSS.
#
# Environment (defaults): FLOWS=10000 TRANSPORTS=wss SOURCES=10 CONNECT_PARALLEL=64
#   SETTLE_SECS=10 HOLD_SECS=20 SETUP_TIMEOUT=180 (s for connecting and registering all flows)
#   MAX_CONN=30000 KAM_SHM_MB=2048 PROXY_CPUS=1 GEN_CPUS=0 (PIN=none: no taskset)
#   RESULTS=/tmp/bench-results BUILD=0 (1: cargo build --release --bins --examples first)
#   ROUNDABOUT_BIN, WS_LOAD_BIN (default target/release/roundabout, target/release/examples/ws_load)
# Results: $RESULTS/idle-<time>/ (results.tsv, table.md, per-run generator output, proxy and
# UAS logs, tls/). One run (10000 WSS flows) takes about 1-2 min.
# Every process started here is stopped by PID on exit (trap); every wait is bounded.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
FLOWS=${FLOWS:-10000}
TRANSPORTS=${TRANSPORTS:-wss}
SOURCES=${SOURCES:-10}
CONNECT_PARALLEL=${CONNECT_PARALLEL:-64}
SETTLE_SECS=${SETTLE_SECS:-10}
HOLD_SECS=${HOLD_SECS:-20}
SETUP_TIMEOUT=${SETUP_TIMEOUT:-180}
MAX_CONN=${MAX_CONN:-30000}
KAM_SHM_MB=${KAM_SHM_MB:-2048}
PROXY_CPUS=${PROXY_CPUS:-1}
GEN_CPUS=${GEN_CPUS:-0}
PIN=${PIN:-split}
RESULTS=${RESULTS:-/tmp/bench-results}
BUILD=${BUILD:-0}
PROXIES=("$@")
[ ${#PROXIES[@]} -gt 0 ] || PROXIES=(roundabout kamailio)
UAS_IP=127.0.0.2; UAS_PORT=5080
. "$HERE/lib.sh"

check_tools "${PROXIES[@]}"
for tr in $TRANSPORTS; do
  case $tr in ws|wss) ;; *) echo "unknown transport $tr (ws | wss)" >&2; exit 2 ;; esac
done
# one descriptor per flow in the proxy and in the generator (children inherit the limit)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((FLOWS + 1000)) ]; then
  echo "ulimit -n is $(ulimit -n): too low for $FLOWS flows (run as root, or raise the hard limit)" >&2
  exit 2
fi

begin_run idle
TSV=$RUN_DIR/results.tsv
printf 'proxy\ttransport\tflows\tregistered\tproxy_processes\trss_before_kib\trss_after_kib\tpss_before_kib\tpss_after_kib\tkib_per_flow_rss\tkib_per_flow_pss\trss_end_kib\tpss_end_kib\tsetup_s\tregister_p99_us\tgen_kib_per_flow\n' > "$TSV"

echo "idle bench -> $RUN_DIR"
echo "proxies=${PROXIES[*]} transports=$TRANSPORTS flows=$FLOWS sources=$SOURCES settle=${SETTLE_SECS}s hold=${HOLD_SECS}s pin=$PIN (proxy CPU $PROXY_CPUS, generator+UAS CPU $GEN_CPUS) ulimit -n $(ulimit -n)"
echo "roundabout: $BIN"
echo "host load at start: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min); $(grep MemAvailable /proc/meminfo)"

run_one() {  # run_one PROXY TRANSPORT: fresh proxy, fresh UAS, one idle run
  local kind=$1 tr=$2 d=$RUN_DIR/$1-$2
  mkdir -p "$d"
  local budget=$((SETUP_TIMEOUT + HOLD_SECS + 30))
  # The registrar: one UDP socket; every REGISTER is a new "call" that ends with its 200.
  $GN_TS sipp -sf "$HERE/scenarios/uas_register.xml" -i $UAS_IP -p $UAS_PORT -t u1 -nostdin \
    -buff_size 4194304 -max_socket $((FLOWS + 1000)) -l $((FLOWS * 2 + 1000)) \
    -timeout $((budget + 20)) -trace_err -error_file "$d/uas_err.log" >"$d/uas.out" 2>&1 &
  UAS_PID=$!
  start_proxy "$kind" "$TLS" -max-connections "$MAX_CONN" -max-connections-per-ip "$MAX_CONN" \
    -max-new-requests 0
  mv "$RUN_DIR/$kind.log" "$d/$kind.log" 2>/dev/null
  sleep 1
  kill -0 "$UAS_PID" 2>/dev/null || { echo "SIPp UAS did not start:"; tail -5 "$d/uas.out"; exit 1; }
  $GN_TS timeout --kill-after=5 "$budget" "$GEN" --mode idle --url "$(url "$kind" "$tr")" \
    --ca "$TLS/ca.pem" --target $UAS_IP:$UAS_PORT --flows "$FLOWS" --sources "$SOURCES" \
    --connect-parallel "$CONNECT_PARALLEL" --timeout-ms 10000 --setup-timeout "$SETUP_TIMEOUT" \
    --settle "$SETTLE_SECS" --hold "$HOLD_SECS" --proxy-pid "$PROXY_PID" >"$d/gen.out" 2>&1 &
  GEN_PID=$!
  wait "$GEN_PID"; local rc=$?; GEN_PID=""
  kill -0 "$PROXY_PID" 2>/dev/null || echo "    $kind died during the run (see $d/$kind.log)"
  stop_proxy
  stop_pid "$UAS_PID"; UAS_PID=""
  sed 's/^/    /' "$d/gen.out"
  local line; line=$(grep '^RESULT ' "$d/gen.out" | tail -1)
  [ $rc -eq 0 ] || echo "    (generator exit $rc)"
  if [ -z "$line" ]; then
    printf '%s\t%s\t%s\t\t\t\t\t\t\t\t\t\t\t\t\t\n' "$kind" "$tr" "$FLOWS" >> "$TSV"
  else
    python3 - "$kind" "$tr" "$line" >> "$TSV" <<'PY'
import sys
kind, tr, line = sys.argv[1:4]
kv = dict(f.split('=', 1) for f in line.split()[1:] if '=' in f)
keys = ['flows', 'registered', 'proxy_processes', 'proxy_rss_before_kib', 'proxy_rss_after_kib',
        'proxy_pss_before_kib', 'proxy_pss_after_kib', 'kib_per_flow_rss', 'kib_per_flow_pss',
        'proxy_rss_end_kib', 'proxy_pss_end_kib', 'setup_s', 'register_p99_us', 'gen_kib_per_flow']
print('\t'.join([kind, tr] + [kv.get(k, '') for k in keys]))
PY
  fi
  sleep 2
}

for kind in "${PROXIES[@]}"; do
  for tr in $TRANSPORTS; do
    echo "== $kind $tr: $FLOWS flows"
    run_one "$kind" "$tr"
  done
done

echo
echo "host load at end: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min); per flow = (after - before) / registered, after = ${SETTLE_SECS} s after the last REGISTER answer"
python3 - "$TSV" <<'PY' | tee "$RUN_DIR/table.md"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter='\t'))
mib = lambda v: f"{int(v) / 1024:.1f} MiB" if v else 'n/a'
print('| proxy | transport | flows | registered | RSS before | RSS after | KiB/flow (RSS) | KiB/flow (PSS) | generator KiB/flow |')
print('|---|---|---|---|---|---|---|---|---|')
for r in rows:
    g = lambda k: r.get(k) or 'n/a'
    n = r.get('proxy_processes') or ''
    died = n == '0'  # no process left at the "after" sample
    procs = ' (died)' if died else (f" ({n} proc.)" if n not in ('', '1') else '')
    after = 'n/a' if died else mib(r.get('rss_after_kib'))
    print(f"| {r['proxy']}{procs} | {r['transport']} | {r['flows']} | {g('registered')} | "
          f"{mib(r.get('rss_before_kib'))} | {after} | {g('kib_per_flow_rss')} | "
          f"{g('kib_per_flow_pss')} | {g('gen_kib_per_flow')} |")
PY
