#!/usr/bin/env bash
# curl through tlsproxy's HTTP CONNECT mode: curl asks the proxy for a tunnel, the proxy relays
# the TLS session unchanged and prints what the handshake said.
#
#   examples/curl_connect.sh
#   TLSPROXY="python -m tlsproxy" examples/curl_connect.sh
set -euo pipefail

TLSPROXY=${TLSPROXY:-tlsproxy}
SERVER_PORT=${SERVER_PORT:-14434}
PROXY_PORT=${PROXY_PORT:-18080}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
openssl s_server -accept "127.0.0.1:$SERVER_PORT" -cert "$work/cert.pem" -key "$work/key.pem" -www -quiet \
    >/dev/null 2>&1 &
pids+=($!)

# A loopback CONNECT proxy needs no --allow list (one reachable from other machines would).
$TLSPROXY run --mode connect --listen "127.0.0.1:$PROXY_PORT" --no-color -q >"$work/proxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
for _ in $(seq 100); do grep -q "listening on" "$work/proxy.log" && break; sleep 0.1; done

curl --silent --show-error --proxy "http://127.0.0.1:$PROXY_PORT" --cacert "$work/cert.pem" \
    "https://localhost:$SERVER_PORT/" | sed -n 1,3p

kill -TERM "$proxy"
wait "$proxy" || true
cat "$work/proxy.log"
