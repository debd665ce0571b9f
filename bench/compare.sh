#!/usr/bin/env bash
# Roundabout and Kamailio side by side, same machine, same harness, one sitting.
#
#   bench/compare.sh [SCENARIO ...]        default: udp-udp udp-tcp tcp-udp
#
# Builds the release binary, then for each scenario runs bench/run.sh for kamailio and for
# roundabout (pinned to one core, see run.sh) and prints, per scenario: proxy CPU time per
# forwarded message at fixed offered rates (the comparable figure while SIPp is the limit),
# the max sustained calls/s per repeat, RSS, and the Roundabout/Kamailio ratio.
# Environment: everything run.sh reads (REPEATS, STEP_SECS, ...), PROXIES (default "kamailio
# roundabout"; kamailio-stateful is Kamailio with tm t_relay, the comparison for tcp-udp, which
# Roundabout forwards with a transaction), RESULTS (default
# /tmp/bench-results/compare-<time>), FIXED_RATES (default "4000 8000").
# ROUNDABOUT_BIN measures another build of Roundabout instead of building this tree.
# ROUNDABOUT_FLAGS are added to Roundabout's command line (say `-metrics-addr 127.0.0.1:9464`, to
# measure what an optional feature costs).
# FIXED_ONLY=1 runs only FIXED_RATES (no max search), one repeat at a time with the proxies and
# scenarios interleaved, so that a machine that drifts during the sitting drifts for both.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(udp-udp udp-tcp tcp-udp)
export RESULTS=${RESULTS:-/tmp/bench-results/compare-$(date +%Y%m%d-%H%M%S)}
FIXED_RATES=${FIXED_RATES:-"4000 8000"}
mkdir -p "$RESULTS"

# ROUNDABOUT_BIN: another build to measure (an earlier commit's, for a before/after).
if [ -z "${ROUNDABOUT_BIN:-}" ]; then (cd "$ROOT" && cargo build --release --quiet); fi
BIN=${ROUNDABOUT_BIN:-$ROOT/target/release/roundabout}

PROXIES=${PROXIES:-"kamailio roundabout"}
run_proxy() {   # run_proxy KIND SCENARIO (then run.sh's environment)
  local kind=$1 scen=$2
  case $kind in kamailio|kamailio-stateful) timeout 1800 "$HERE/run.sh" "$kind" "$scen"; return;; esac
  # The flood guards are off: one SIPp UAC is one source sending thousands of messages a
  # second, which is what -rate-limit exists to stop; the bench measures the forwarding path.
  ROUNDABOUT_CMD="$BIN -local-ip 127.0.0.1 -ack-ruri -strict-host -log-level warn \
    -rate-limit 0 -max-new-requests 0 \
    -udp-port 5060 -tcp-port 5060 -ws-port off -state-dir $RESULTS \
    -trusted-server 127.0.0.2::5080:${scen##*-}: ${ROUNDABOUT_FLAGS:-}" \
    timeout 1800 "$HERE/run.sh" roundabout "$scen"
}
if [ "${FIXED_ONLY:-0}" = 1 ]; then
  for rep in $(seq 1 "${REPEATS:-3}"); do
    for scen in "${SCENARIOS[@]}"; do
      for kind in $PROXIES; do REPEATS=1 RATES=$FIXED_RATES run_proxy "$kind" "$scen"; done
    done
  done
else
  for scen in "${SCENARIOS[@]}"; do
    for kind in $PROXIES; do run_proxy "$kind" "$scen"; done
  done
fi

python3 - "$RESULTS" "$FIXED_RATES" <<'PY'
import csv, glob, os, re, statistics, sys
results, rates = sys.argv[1], [int(r) for r in sys.argv[2].split()]
MSGS = 7
runs = {}   # (proxy, scenario) -> (step rows of every run, summaries)
for d in sorted(glob.glob(os.path.join(results, '*-*-*'))):
    m = re.match(r'(kamailio-stateful|kamailio|roundabout)-(\w+-\w+)-', os.path.basename(d))
    if not m or not os.path.exists(os.path.join(d, 'summary.txt')):
        continue
    rows = list(csv.DictReader(open(os.path.join(d, 'steps.tsv')), delimiter='\t'))
    summary = open(os.path.join(d, 'summary.txt')).read()
    kept = runs.setdefault((m.group(1), m.group(2)), ([], []))
    kept[0].extend(rows)
    kept[1].append(summary)

def us_per_msg(rows, rate):
    # every passing step at this rate, over all repeats
    vals = [float(r['proxy_cpu_pct']) / 100 * 1e6 / (rate * MSGS)
            for r in rows if int(r['rate']) == rate and r['pass'] == '1']
    return vals

def field(summary, key):
    m = re.search(key + r'=(\S+)', summary)
    return m.group(1) if m else '?'

print('| scenario | rate (calls/s) | Kamailio kind | Kamailio us/msg | Roundabout us/msg | ratio | target |')
print('|---|---|---|---|---|---|---|')
spread = lambda v: f' ({min(v):.1f}-{max(v):.1f}, n={len(v)})'
for scen in sorted({s for _, s in runs}):
    for rate in rates:
        r = us_per_msg(runs.get(('roundabout', scen), ([], []))[0], rate)
        kinds = [(k, t) for k, t in (('kamailio', '<= 0.65'), ('kamailio-stateful', '<= 0.5'))
                 if (k, scen) in runs]
        if not kinds and r:
            print(f'| {scen} | {rate} | - | - | {statistics.median(r):.1f}{spread(r)} | - | - |')
        for kind, target in kinds:
            k = us_per_msg(runs[(kind, scen)][0], rate)
            if not k or not r:
                print(f'| {scen} | {rate} | {kind} | {"n/a" if not k else f"{statistics.median(k):.1f}"} | '
                      f'{"n/a" if not r else f"{statistics.median(r):.1f}"} | n/a | {target} |')
                continue
            km, rm = statistics.median(k), statistics.median(r)
            print(f'| {scen} | {rate} | {kind} | {km:.1f}{spread(k)} | {rm:.1f}{spread(r)} | {rm / km:.2f} | {target} |')
print()
print('| proxy | scenario | max calls/s per repeat | median | proxy RSS at max |')
print('|---|---|---|---|---|')
for (kind, scen), (_, summaries) in sorted(runs.items()):
    for summary in summaries:
        print(f'| {kind} | {scen} | {field(summary, "max calls/s")} | {field(summary, "median_cps")} | {field(summary, "proxy_rss")} |')
PY
