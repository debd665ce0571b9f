#!/usr/bin/env bash
# The whole test suite, as the README gives it: installs the real peers the tests drive (SIPp,
# Kamailio with its TLS and WebSocket modules, Node for JsSIP, HAProxy, systemd-analyze,
# promtool, sngrep, rtpengine, chromium for the WebRTC tests, dnsmasq, sofia-sip's sip-dig),
# then format and lint checks, every test, and a build of the benchmarks.
# Under CI=true a peer that cannot be installed fails the run; the tests themselves also refuse
# to skip under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages that provide the programs the tests need: program=package (a path for
# Kamailio modules, which come in their own packages).
needs=(
    sipp=sip-tester
    openssl=openssl
    kamailio=kamailio
    /usr/lib/*/kamailio/modules/tls.so=kamailio-tls-modules
    /usr/lib/*/kamailio/modules/websocket.so=kamailio-websocket-modules
    systemd-analyze=systemd
    node=nodejs
    npm=npm
    haproxy=haproxy
    promtool=prometheus
    sngrep=sngrep
    rtpengine=rtpengine-daemon
    chromium=chromium
    dnsmasq=dnsmasq-base
    sip-dig=sofia-sip-bin
)
missing=()
for need in "${needs[@]}"; do
    program=${need%%=*}
    if [[ $program == /* ]]; then
        compgen -G "$program" >/dev/null || missing+=("${need#*=}")
    else
        command -v "$program" >/dev/null 2>&1 || missing+=("${need#*=}")
    fi
done
# Node.js and npm go in an apt-get of their own, after the rest: where a Node.js from elsewhere
# is installed, Debian's npm conflicts with it, and that must not keep the other peers out.
install() {
    [ $# -gt 0 ] || return 0
    echo "installing $*"
    if ! as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
        echo "cannot install $*" >&2
        [ "${CI:-}" = "true" ] && exit 1
    fi
}
if [ ${#missing[@]} -gt 0 ]; then
    as_root apt-get update -qq || { [ "${CI:-}" = "true" ] && exit 1; }
    node_packages=() other_packages=()
    for package in "${missing[@]}"; do
        case $package in
            nodejs | npm) node_packages+=("$package") ;;
            *) other_packages+=("$package") ;;
        esac
    done
    install "${other_packages[@]}"
    install "${node_packages[@]}"
fi

# JsSIP, ws and playwright-core (which drives Debian's chromium and downloads no browser) for
# the WebSocket and browser tests, exactly as locked.
if [ -f tests/node/package-lock.json ]; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# A test whose peer is missing passes outside CI without checking what it is for; each says so
# as it returns, and all of them are listed again at the end, so such a run never looks whole.
skips=$(mktemp)
trap 'rm -f "$skips"' EXIT
status=0
TEST_SKIP_LOG=$skips cargo test --locked || status=$?
if [ -s "$skips" ]; then
    echo "$(wc -l <"$skips") tests SKIPPED for a missing peer (under CI=true each is a failure):" >&2
    sort "$skips" >&2
fi
[ "$status" -eq 0 ] || exit "$status"
# Benchmarks are not tests, but they must keep building.
cargo bench --locked --no-run
