#!/usr/bin/env bash
# Installs what the tests and `make run` need on this machine:
#   redis      redis-server (Debian package; apt-get when run as root)
#   stripe-mock  github.com/stripe/stripe-mock (go install; a failure only warns)
#   chromium   Debian's chromium, the headless browser of the web-page tests
#              (internal/browser drives it over CDP; apt-get when run as root)
# Usage: scripts/ensure-deps.sh [redis] [stripe-mock] [chromium]   (default: all)
set -euo pipefail

want_redis=0 want_stripe=0 want_chromium=0
if [ $# -eq 0 ]; then
	want_redis=1 want_stripe=1 want_chromium=1
fi
for arg in "$@"; do
	case "$arg" in
	redis) want_redis=1 ;;
	stripe-mock) want_stripe=1 ;;
	chromium) want_chromium=1 ;;
	*) echo "ensure-deps: unknown dependency '$arg' (want: redis, stripe-mock, chromium)" >&2; exit 2 ;;
	esac
done

# stripe-mock is built first, in the background while the system packages
# install: under scripts/test.sh it compiles the standard library with the
# test build's flags before the tests' own build gets there, and that build
# then finds it compiled (started later, both would compile it at once).
install_stripe_mock() {
	local gobin version
	gobin="$(go env GOBIN)"
	[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
	if ! command -v stripe-mock >/dev/null 2>&1 && [ ! -x "$gobin/stripe-mock" ]; then
		version="${STRIPE_MOCK_VERSION:-latest}"
		echo "ensure-deps: installing stripe-mock@$version into $gobin" >&2
		if ! go install "github.com/stripe/stripe-mock@$version"; then
			echo "ensure-deps: WARNING: could not install stripe-mock; tests that need it will fail or skip" >&2
		fi
	fi
}
if [ "$want_stripe" = 1 ]; then
	install_stripe_mock &
	stripe_pid=$!
	trap 'kill "$stripe_pid" 2>/dev/null || true' EXIT
fi

if [ "$want_redis" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ]; then
		echo "ensure-deps: redis-server not found; installing it with apt-get" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update
		apt-get install -y --no-install-recommends redis-server
	else
		cat >&2 <<'MSG'
ensure-deps: redis-server is not installed, and it is needed to run the tests
and `make run` (they start their own redis-server on free loopback ports).
Install it as root, then try again:
    sudo apt-get install redis-server      # Debian/Ubuntu
    brew install redis                     # macOS
MSG
		exit 1
	fi
	command -v redis-server >/dev/null 2>&1 || { echo "ensure-deps: redis-server still not on PATH" >&2; exit 1; }
fi

# $CHROMIUM, when set, names the browser to use instead (as internal/browser reads it).
if [ "$want_chromium" = 1 ] && [ -n "${CHROMIUM:-}" ] && ! command -v "$CHROMIUM" >/dev/null 2>&1; then
	echo "ensure-deps: CHROMIUM=$CHROMIUM is not an executable; unset it to use Debian's chromium" >&2
	exit 1
fi
if [ "$want_chromium" = 1 ] && [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ]; then
		echo "ensure-deps: chromium not found; installing it with apt-get" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update
		apt-get install -y --no-install-recommends chromium
	else
		cat >&2 <<'MSG'
ensure-deps: chromium is not installed, and it is needed to run the tests
(the web-page tests drive a headless chromium; see internal/browser).
Install it as root, then try again:
    sudo apt-get install --no-install-recommends chromium   # Debian
or point CHROMIUM at a Chromium or Chrome binary:
    export CHROMIUM=/path/to/chrome
MSG
		exit 1
	fi
	command -v chromium >/dev/null 2>&1 || { echo "ensure-deps: chromium still not on PATH" >&2; exit 1; }
fi

[ -z "${stripe_pid:-}" ] || wait "$stripe_pid"
