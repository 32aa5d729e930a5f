#!/usr/bin/env bash
# Measures N real rendezvous processes on one UDP address (SO_REUSEPORT)
# with `loadtest peers`. Builds rendezvous and loadtest into a temporary
# directory, starts a private redis-server (no persistence) for the redis
# registry, starts the instances, runs the load and stops everything.
#
#   bash test/scaleout/loadtest-instances.sh                 # 3 instances, Redis
#   REGISTRY=memory INSTANCES=1 bash test/scaleout/loadtest-instances.sh
#   INSTANCES=1 REUSEPORT=4 bash test/scaleout/loadtest-instances.sh
#
# Settings (environment): REGISTRY (redis|memory, default redis), INSTANCES
# (default 3), REUSEPORT (sockets per instance, default 1), COUNT (peers,
# default 10000), DURATION (steady phase, default 20s).
set -euo pipefail
cd "$(dirname "$0")/../.."

REGISTRY=${REGISTRY:-redis}
INSTANCES=${INSTANCES:-3}
REUSEPORT=${REUSEPORT:-1}
COUNT=${COUNT:-10000}
DURATION=${DURATION:-20s}
if [ "$REGISTRY" = memory ] && [ "$INSTANCES" != 1 ]; then
	echo "memory registries are not shared: use INSTANCES=1 or REGISTRY=redis" >&2
	exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keymesh-scaleout.XXXXXX")"
PIDS=()
cleanup() {
	[ ${#PIDS[@]} -gt 0 ] && kill "${PIDS[@]}" 2>/dev/null && wait "${PIDS[@]}" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

go build -o "$WORK/" ./cmd/rendezvous ./loadtest
head -c 32 /dev/urandom | base64 >"$WORK/cookie.secret"
chmod 600 "$WORK/cookie.secret"

REGARGS=(--registry memory)
if [ "$REGISTRY" = redis ]; then
	command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
	PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
	REGARGS=(--registry redis --redis "redis://127.0.0.1:$PORT/0")
fi

LISTEN=127.0.0.1:0
ADMINS=()
for i in $(seq "$INSTANCES"); do
	"$WORK/rendezvous" --listen "$LISTEN" --key "$WORK/rendezvous.key" --cookie-secret-file "$WORK/cookie.secret" \
		"${REGARGS[@]}" --instance "rz$i" --reuseport "$REUSEPORT" --rate-limit 100000 \
		--admin 127.0.0.1:0 >"$WORK/rz$i.out" 2>"$WORK/rz$i.log" &
	PIDS+=($!)
	for _ in $(seq 100); do grep -q '^admin: ' "$WORK/rz$i.out" 2>/dev/null && break; sleep 0.1; done
	CONNECT=$(sed -n 's/^connect string: //p' "$WORK/rz$i.out")
	[ -n "$CONNECT" ] || { echo "rz$i did not start:" >&2; cat "$WORK/rz$i.log" >&2; exit 1; }
	LISTEN=${CONNECT%%#*}
	ADMINS+=(--admin "$(sed -n 's#^admin: \(.*\)/metrics$#\1#p' "$WORK/rz$i.out")")
done
echo "$INSTANCES instance(s), $REGISTRY registry, $REUSEPORT socket(s) each, on $LISTEN" >&2
"$WORK/loadtest" peers --server "$CONNECT" "${ADMINS[@]}" --count "$COUNT" --duration "$DURATION"
