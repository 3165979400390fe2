#!/usr/bin/env bash
# The go test -exec wrapper of scripts/test.sh: waits until
# scripts/ensure-deps.sh, which test.sh runs beside the Go builds, has
# finished (AITOKEN_DEPS_RC holds its exit status), then runs the test
# binary. Without AITOKEN_DEPS_RC it runs the binary at once.
set -euo pipefail
if [ -n "${AITOKEN_DEPS_RC:-}" ]; then
	while [ ! -e "$AITOKEN_DEPS_RC" ]; do
		sleep 0.2
	done
	if [ "$(cat "$AITOKEN_DEPS_RC")" != 0 ]; then
		echo "await-deps: scripts/ensure-deps.sh failed (its output follows the tests)" >&2
		exit 1
	fi
fi
exec "$@"
