#!/usr/bin/env bash
# `make run`: build bin/caddy if needed, start what Caddyfile.example needs on
# loopback, and run it.
#   REDIS_URL unset -> a private redis-server on a free port (no persistence)
#   UPSTREAM unset  -> the bundled mock model provider (cmd/mockupstream)
#   AITOKEN_DB      -> default ./.run/ledger.db
# Whatever this script started is stopped when it exits (Ctrl-C included).
set -euo pipefail
cd "$(dirname "$0")/.."

CADDY="${CADDY:-bin/caddy}"
CONFIG="${CONFIG:-Caddyfile.example}"
RUN_DIR=.run

if [ ! -f "$CONFIG" ]; then
	echo "run: $CONFIG not found" >&2
	exit 1
fi

# Build when the binary is missing or older than any source file.
if [ ! -x "$CADDY" ] || [ -n "$(find . \( -path ./.git -o -path ./bin -o -path ./"$RUN_DIR" \) -prune -o \
	\( -name '*.go' -o -name go.mod -o -name go.sum -o -name xcaddy.json \) -newer "$CADDY" -print -quit)" ]; then
	echo "run: building $CADDY" >&2
	go run ./cmd/xbuild -o "$CADDY"
fi

mkdir -p "$RUN_DIR/bin"
pids=()
# cleanup stops what we started, in order (caddy first, then its backends).
cleanup() {
	local pid
	for pid in ${pids[@]+"${pids[@]}"}; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

freeport() { go run ./cmd/freeport; }

# wait_port PORT PID NAME: wait until something accepts on 127.0.0.1:PORT.
wait_port() {
	local i
	for i in $(seq 1 100); do
		if ! kill -0 "$2" 2>/dev/null; then
			echo "run: $3 exited early" >&2
			return 1
		fi
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "run: $3 did not listen on 127.0.0.1:$1" >&2
	return 1
}

if [ -z "${REDIS_URL:-}" ]; then
	scripts/ensure-deps.sh redis
	port="$(freeport)"
	mkdir -p "$RUN_DIR/redis"
	# setsid: a Ctrl-C in the terminal reaches caddy alone; the backends
	# are stopped after it (cleanup), so caddy drains into a live Redis.
	setsid redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
		--dir "$RUN_DIR/redis" --logfile redis.log --daemonize no &
	pids+=("$!")
	wait_port "$port" "$!" "redis-server (log: $RUN_DIR/redis/redis.log)"
	export REDIS_URL="redis://127.0.0.1:$port/0"
	echo "run: redis-server on $REDIS_URL (data is not persisted)"
fi

if [ -z "${UPSTREAM:-}" ]; then
	go build -o "$RUN_DIR/bin/mockupstream" ./cmd/mockupstream
	port="$(freeport)"
	setsid "$RUN_DIR/bin/mockupstream" -addr "127.0.0.1:$port" >"$RUN_DIR/mockupstream.log" 2>&1 &
	pids+=("$!")
	wait_port "$port" "$!" "mockupstream (log: $RUN_DIR/mockupstream.log)"
	export UPSTREAM="http://127.0.0.1:$port"
	echo "run: mock upstream on $UPSTREAM"
fi

export AITOKEN_DB="${AITOKEN_DB:-./$RUN_DIR/ledger.db}"
echo "run: ledger $AITOKEN_DB"

cat <<EOF

To apply an edited $CONFIG without stopping, from another shell in this directory
({\$UPSTREAM} is read when the file is adapted, so the reloading shell needs it):

  UPSTREAM=$UPSTREAM $CADDY reload --config $CONFIG --adapter caddyfile
EOF

cat <<'EOF'

caddy-aitoken gateway: http://localhost:8080   (admin API: http://localhost:2019)

Mint a first key and make a billed call, from another terminal:

  # 1. create a user "demo" (409 if it already exists from an earlier run: fine)
  curl -s -X POST localhost:2019/aitoken/users -H 'Content-Type: application/json' -d '{"id":"demo","email":"you@example.com"}'

  # 2. credit it with 10.00 USD
  curl -s -X POST localhost:2019/aitoken/users/demo/credits -H 'Content-Type: application/json' -d '{"amount":"10.00","reason":"first top-up"}'

  # 3. mint a key; its secret ("key") is shown only once
  KEY=$(curl -s -X POST localhost:2019/aitoken/keys -H 'Content-Type: application/json' -d '{"user":"demo"}' | sed -n 's/.*"key":"\([^"]*\)".*/\1/p'); echo $KEY

  # 4. a first chat call, billed to demo
  curl -s localhost:8080/v1/chat/completions -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d '{"model":"deepseek-v4-flash","messages":[{"role":"user","content":"Hello"}]}'

  # 5. the balance and the usage row (the ledger flushes every second)
  curl -s localhost:2019/aitoken/users/demo
  curl -s 'localhost:2019/aitoken/usage?user=demo'

Press Ctrl-C to stop.

EOF

# Not exec'd: this shell stays to stop redis-server and the mock afterwards.
# Caddy runs in the background so that a signal to this script interrupts the
# wait at once; the EXIT trap then stops caddy first.
"$CADDY" run --config "$CONFIG" --adapter caddyfile &
caddy_pid=$!
pids=("$caddy_pid" ${pids[@]+"${pids[@]}"})
wait "$caddy_pid"
