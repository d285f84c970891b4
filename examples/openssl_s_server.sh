#!/usr/bin/env bash
# Put tlsproxy in front of a real server (`openssl s_server`), send a real client through it
# (`openssl s_client`), save the session, then replay the saved session.
#
#   examples/openssl_s_server.sh            # uses the `tlsproxy` command
#   TLSPROXY="python -m tlsproxy" examples/openssl_s_server.sh
set -euo pipefail

TLSPROXY=${TLSPROXY:-tlsproxy}
SERVER_PORT=${SERVER_PORT:-14433}
PROXY_PORT=${PROXY_PORT:-18443}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# A throwaway self-signed certificate for localhost.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

openssl s_server -accept "127.0.0.1:$SERVER_PORT" -cert "$work/cert.pem" -key "$work/key.pem" -www -quiet \
    >/dev/null 2>&1 &
pids+=($!)

# The proxy: everything arriving on PROXY_PORT goes to the server, annotated on the way.
$TLSPROXY run --listen "127.0.0.1:$PROXY_PORT" --upstream "127.0.0.1:$SERVER_PORT" \
    --save "$work/session.json" --no-color >"$work/proxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
for _ in $(seq 100); do grep -q "listening on" "$work/proxy.log" && break; sleep 0.1; done

# A client that talks to the proxy as if it were the server.
printf 'GET / HTTP/1.0\r\n\r\n' | openssl s_client -connect "127.0.0.1:$PROXY_PORT" -servername localhost \
    -CAfile "$work/cert.pem" -verify_return_error -quiet 2>/dev/null | sed -n 1p

kill -TERM "$proxy"                 # SIGTERM: the proxy finishes the session file and exits
wait "$proxy" || true
echo "--- transcript"
cat "$work/proxy.log"
echo "--- replay of the saved session"
$TLSPROXY replay "$work/session.json" -q --no-color
