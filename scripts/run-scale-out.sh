#!/usr/bin/env bash
# The production topology without containers: two ingest replicas (`serve --no-worker`) and one
# forwarding `worker`, all on one PostgreSQL. Same processes as compose.yaml, run here with uv.
#
#   scripts/run-scale-out.sh [CONFIG]        CONFIG defaults to ./hooktrack.toml
#
# CONFIG's [store] url must be postgresql://...; the database must exist (createdb hooktrack).
# Environment: INGEST_PORTS (default "8001 8002"), WORKERS (default 1), HOST (default 127.0.0.1),
# LOG_DIR (default ./scale-out-logs). Ctrl-C (or SIGTERM) stops every process it started.
set -euo pipefail

config="$(realpath "${1:-hooktrack.toml}")"
ports="${INGEST_PORTS:-8001 8002}"
workers="${WORKERS:-1}"
host="${HOST:-127.0.0.1}"
log_dir="${LOG_DIR:-scale-out-logs}"
cd "$(dirname "$0")/.."
hooktrack=(uv run --quiet hooktrack)

mkdir -p "$log_dir"
"${hooktrack[@]}" migrate --config "$config"   # once, before any replica starts
"${hooktrack[@]}" check --config "$config"

pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

for port in $ports; do
    "${hooktrack[@]}" serve --no-worker --config "$config" --host "$host" --port "$port" \
        2>>"$log_dir/serve-$port.log" &
    pids+=("$!")
done
for n in $(seq 1 "$workers"); do
    "${hooktrack[@]}" worker --config "$config" 2>>"$log_dir/worker-$n.log" &
    pids+=("$!")
done

for port in $ports; do
    for _ in $(seq 1 100); do
        curl -fsS "http://$host:$port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "http://$host:$port/readyz" >/dev/null || { echo "ingest on :$port is not ready; see $log_dir" >&2; exit 1; }
    echo "ingest ready: http://$host:$port/webhooks/<source>"
done
echo "$workers worker(s) forwarding; logs in $log_dir; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
echo "a process exited; stopping the others (see $log_dir)" >&2
