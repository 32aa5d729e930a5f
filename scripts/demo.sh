#!/usr/bin/env bash
# keymesh demo: builds the binaries, then runs a rendezvous server, a relay and
# two peers (A and B) on loopback. A pings B by its peer ID, pipes a line of
# text to B, and shows its status. Everything lives in a temporary directory
# and is stopped and removed on exit. Needs only Go; root is not needed.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		PATH="/usr/local/go/bin:$PATH"
	else
		echo "demo: needs Go (https://go.dev/dl/) on PATH" >&2
		exit 1
	fi
fi

# Settings from the caller's environment must not change the demo.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(KEYMESH_[A-Z0-9_]*\)=.*/\1/p')

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keymesh-demo.XXXXXX")"
chmod 700 "$WORK"
PIDS=()

cleanup() {
	local code=$?
	trap - EXIT INT TERM
	if [ ${#PIDS[@]} -gt 0 ]; then
		echo
		echo "==> stopping everything"
		kill -TERM "${PIDS[@]}" 2>/dev/null || true
		wait "${PIDS[@]}" 2>/dev/null || true
	fi
	if [ "$code" -ne 0 ] && [ -d "$WORK" ]; then
		echo "--- logs (the demo failed) ---" >&2
		for f in "$WORK"/*.log; do
			[ -f "$f" ] && { echo "### $(basename "$f")" >&2; tail -n 20 "$f" >&2; }
		done
	fi
	rm -rf "$WORK"
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n==> %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
fail() { echo "demo: $*" >&2; exit 1; }

# wait_for FILE PATTERN: wait (up to 15 s) for a line matching PATTERN.
wait_for() {
	local i
	for i in $(seq 150); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	fail "timed out waiting for \"$2\" in $1"
}

step "building peer, rendezvous and relay into $WORK/bin (the first build takes a minute or more)"
go build -o "$WORK/bin/" ./cmd/peer ./cmd/rendezvous ./cmd/relay
PATH="$WORK/bin:$PATH"

step "starting a relay on loopback (--dev: a random in-memory ticket key)"
relay --dev --listen 127.0.0.1:0 --admin "" --log-format json >"$WORK/relay.out" 2>"$WORK/relay.log" &
PIDS+=($!)
wait_for "$WORK/relay.log" '"relay ready"'
RELAY="$(sed -n 's/.*"msg":"relay ready".*"udp":"\([^"]*\)".*/\1/p' "$WORK/relay.log" | head -n 1)"
[ -n "$RELAY" ] || fail "could not read the relay's address from its log"
echo "relay listens on udp $RELAY"

step "starting a rendezvous server on loopback, advertising the relay"
rendezvous --listen 127.0.0.1:0 --admin "" --key "$WORK/rendezvous.key" --relay "$RELAY" \
	>"$WORK/rendezvous.out" 2>"$WORK/rendezvous.log" &
PIDS+=($!)
wait_for "$WORK/rendezvous.out" '^connect string: '
SERVER="$(sed -n 's/^connect string: //p' "$WORK/rendezvous.out")"
echo "peers connect with --server $SERVER"

step "making an identity (key file) for each peer"
show peer keygen --key "$WORK/a.key"
show peer keygen --key "$WORK/b.key"
A="$(peer id --key "$WORK/a.key" | head -n 1)"
B="$(peer id --key "$WORK/b.key" | head -n 1)"

step "starting the two peer daemons; each allows only the other"
peer up --server "$SERVER" --key "$WORK/a.key" --socket "$WORK/a.sock" --listen 127.0.0.1:0 --allow "$B" 2>"$WORK/peer-a.log" &
PIDS+=($!)
peer up --server "$SERVER" --key "$WORK/b.key" --socket "$WORK/b.sock" --listen 127.0.0.1:0 --allow "$A" 2>"$WORK/peer-b.log" &
PIDS+=($!)
for p in a b; do
	for i in $(seq 100); do
		peer status --json --socket "$WORK/$p.sock" 2>/dev/null | grep -q '"registered": true' && break
		[ "$i" -eq 100 ] && fail "peer $p did not register within 20 s"
		sleep 0.2
	done
done
echo "peer A: $A"
echo "peer B: $B"

step "A pings B by its peer ID (the first reply may come through the relay, then direct)"
show peer ping "$B" --count 3 --interval 500ms --socket "$WORK/a.sock"

step "A pipes a line of text to B (B runs \"peer listen\", A runs \"peer pipe\")"
peer listen --socket "$WORK/b.sock" >"$WORK/received.txt" </dev/null &
LISTEN=$!
PIDS+=("$LISTEN")
echo "hello B, this is A, sent at $(date +%T)" | show peer pipe "$B" --socket "$WORK/a.sock"
wait "$LISTEN"
echo "B received: $(cat "$WORK/received.txt")"

step "A's status"
show peer status --socket "$WORK/a.sock"

echo
echo "demo finished: it worked."
