# Shared by bench/ws.sh and bench/idle.sh (sourced, not run): the tools they need, binaries, the throw-away test CA,
# starting and stopping the WS/WSS proxies under test by PID.
#
# The sourcing script sets HERE (bench/), ROOT (project root), RESULTS, BUILD, PIN, PROXY_CPUS,
# GEN_CPUS, UAS_IP and UAS_PORT (the SIPp UAS behind the proxy), and may set KAM_SHM_MB (Kamailio
# shared memory, MB; default 256), then calls begin_run.
#
# Environment: ROUNDABOUT_BIN (default $ROOT/target/release/roundabout) and WS_LOAD_BIN (default
# $ROOT/target/release/examples/ws_load) point at the binaries under test.

BIN=${ROUNDABOUT_BIN:-$ROOT/target/release/roundabout}
GEN=${WS_LOAD_BIN:-$ROOT/target/release/examples/ws_load}
KAM_SHM_MB=${KAM_SHM_MB:-256}
PROXY_PID=""; PROXY_TREE=""

# begin_run NAME: what every run starts with — PX_TS and GN_TS (taskset prefixes for the proxy and
# for the generator and UAS, empty with PIN=none), RUN_DIR ($RESULTS/NAME-<time>), the trap that
# stops the generator (GEN_PID), the UAS (UAS_PID) and the proxy on exit, the binaries (built when
# BUILD=1) and the test certificates in TLS ($RUN_DIR/tls).
begin_run() {
  if [ "$PIN" = none ]; then PX_TS=""; GN_TS=""; else PX_TS="taskset -c $PROXY_CPUS"; GN_TS="taskset -c $GEN_CPUS"; fi
  RUN_DIR=$RESULTS/$1-$(date +%Y%m%d-%H%M%S)
  mkdir -p "$RUN_DIR"
  UAS_PID=""; GEN_PID=""
  trap 'run_cleanup' EXIT
  trap 'exit 130' INT TERM
  if [ "$BUILD" = 1 ]; then build_release || exit 2; fi
  check_binaries || exit 2
  TLS=$RUN_DIR/tls
  make_test_cert "$TLS" || exit 2
}

run_cleanup() {
  [ -n "$GEN_PID" ] && stop_pid "$GEN_PID"
  [ -n "$UAS_PID" ] && stop_pid "$UAS_PID"
  stop_proxy
}

# build_release: the release binary and the examples (ws_load), in $ROOT's target directory
build_release() {
  (cd "$ROOT" && cargo build --release --quiet --bins --examples) || { echo "build failed" >&2; return 1; }
}

# check_tools PROXY...: SIPp, openssl and each named proxy (roundabout | kamailio) are there;
# exits 2 naming what is missing or unknown
check_tools() {
  local p
  command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 2; }
  command -v openssl >/dev/null || { echo "openssl missing" >&2; exit 2; }
  for p in "$@"; do
    case $p in
      roundabout) ;;
      kamailio|kamailio-stateful) command -v kamailio >/dev/null || { echo "kamailio missing: apt-get install -y kamailio kamailio-websocket-modules kamailio-tls-modules" >&2; exit 2; } ;;
      *) echo "unknown proxy $p (roundabout | kamailio | kamailio-stateful)" >&2; exit 2 ;;
    esac
  done
}

# check_binaries: both binaries exist
check_binaries() {
  [ -x "$BIN" ] && [ -x "$GEN" ] && return 0
  echo "missing $BIN or $GEN (build with BUILD=1, or set ROUNDABOUT_BIN / WS_LOAD_BIN)" >&2
  return 1
}

# tree PID...: the PIDs and all their descendants (Kamailio forks its workers)
tree() { local all=$1 p c; for p in $1; do for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do all="$all $(tree "$c")"; done; done; echo "$all"; }

# stop_pid PID...: TERM, wait <= 6 s, then KILL whatever is left
stop_pid() {
  local p i
  for p in "$@"; do kill "$p" 2>/dev/null; done
  for i in $(seq 1 30); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "$@"; do kill -9 "$p" 2>/dev/null; done
  for p in "$@"; do wait "$p" 2>/dev/null; done
  return 0
}

# stop_proxy: the proxy started by start_proxy, and any of its processes left over
stop_proxy() {
  [ -n "$PROXY_PID" ] || return 0
  PROXY_TREE="$PROXY_TREE $(tree "$PROXY_PID")"
  # the main process first (Kamailio stops its workers itself), then any straggler
  stop_pid "$PROXY_PID"
  local left="" p
  for p in $PROXY_TREE; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
  [ -n "$left" ] && stop_pid $left
  PROXY_PID=""; PROXY_TREE=""
}

# make_test_cert DIR: a throw-away CA (DIR/ca.pem) and a server certificate for 127.0.0.1 and
# localhost signed by it (DIR/cert.pem, DIR/key.pem), P-256, valid 2 days; log in DIR/openssl.log
make_test_cert() {
  local dir=$1
  mkdir -p "$dir"
  (
    cd "$dir" || exit 1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
      -days 2 -subj "/CN=Roundabout bench test CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out server.csr -subj /CN=127.0.0.1
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' > ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem
  ) >"$dir/openssl.log" 2>&1 || { echo "openssl failed, see $dir/openssl.log" >&2; return 1; }
}

# wait_listen PORT...: until each TCP port listens (<= 10 s each); true if the proxy still runs
wait_listen() {
  local port i
  for port in "$@"; do
    for i in $(seq 1 50); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.2; done
  done
  sleep 0.5
  kill -0 "$PROXY_PID" 2>/dev/null
}

# start_proxy KIND TLS_DIR [ROUNDABOUT FLAG...]: starts roundabout (ws 5066, wss 7443) or
# kamailio (bench/kamailio/ws.cfg: ws 8080, wss 8443) in the background, logging to
# $RUN_DIR/KIND.log; sets PROXY_PID and PROXY_TREE; exits the script if it does not come up.
# The extra flags go to Roundabout only (connection limits differ between the benches).
start_proxy() {
  local kind=$1 tls=$2 log=$RUN_DIR/$1.log
  shift 2
  case $kind in
    roundabout)
      $PX_TS "$BIN" -local-ip 127.0.0.1 -strict-host -log-level warn \
        -udp-port 5060 -tcp-port off -tls-port off -ws-port 5066 -wss-port 7443 \
        -tls-cert "$tls/cert.pem" -tls-key "$tls/key.pem" -state-dir "$RUN_DIR" \
        -rate-limit 0 -drain-timeout 1 -trusted-server "$UAS_IP::$UAS_PORT:udp:" "$@" >"$log" 2>&1 &
      PROXY_PID=$!
      wait_listen 5066 7443 ;;
    kamailio|kamailio-stateful)
      local stateful=()
      [ "$kind" = kamailio-stateful ] && stateful=(-A STATEFUL)
      $PX_TS kamailio -f "$HERE/kamailio/ws.cfg" -DD -E -m "$KAM_SHM_MB" -M 16 -A WITH_TLS \
        "${stateful[@]}" -A "TLS_CERT=\"$tls/cert.pem\"" -A "TLS_KEY=\"$tls/key.pem\"" >"$log" 2>&1 &
      PROXY_PID=$!
      wait_listen 8080 8443 ;;
    *) echo "unknown proxy $kind" >&2; exit 2 ;;
  esac || { echo "$kind did not start:"; tail -20 "$log"; exit 1; }
  PROXY_TREE=$(tree "$PROXY_PID")
}

# url PROXY TRANSPORT: the WebSocket URL of the proxy's listener
url() {
  case $1-$2 in
    roundabout-ws) echo ws://127.0.0.1:5066/ ;;
    roundabout-wss) echo wss://127.0.0.1:7443/ ;;
    kamailio*-ws) echo ws://127.0.0.1:8080/ ;;
    kamailio*-wss) echo wss://127.0.0.1:8443/ ;;
  esac
}
