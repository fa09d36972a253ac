#!/usr/bin/env bash
# Idempotent set-up used by `make run` and `make test`:
#   1. system packages when missing, installed with apt as root: the PostGIS server and npm;
#      for the tests (IOC_SETUP_FOR=test) also GDAL's clients, Debian's chromium, QGIS
#      (python3-qgis), the MQTT broker mosquitto and the benchmark's load generator wrk
#      (tested too); for the benchmarks (IOC_SETUP_FOR=bench) wrk;
#   2. the .venv with the pinned requirements (reinstalled only when they change);
#   3. the project-managed PostGIS under var/pg (unless DATABASE_URL is set), migrations,
#      and the demo city when the database is empty.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

APT_PACKAGES=()
APT_LEAN=()  # installed without their recommends
have_postgis_server() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 &&
    ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1
}
if [ -z "${DATABASE_URL:-}" ] && ! have_postgis_server; then
  APT_PACKAGES+=(postgresql-15-postgis-3 postgresql-15)
fi
# Map pages: npm installs their browser assets. The tests also need GDAL's clients, Debian's
# chromium, QGIS and wrk (IOC_SETUP_FOR=test, set by `make test`); `make run` does not.
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)
if [ "${IOC_SETUP_FOR:-run}" = test ]; then
  command -v ogrinfo >/dev/null 2>&1 || APT_PACKAGES+=(gdal-bin)
  command -v chromium >/dev/null 2>&1 || APT_PACKAGES+=(chromium)
  # QGIS 3.22 for the client tests (tests/clients), in the system Python: ~170 packages and
  # about a minute without its recommends (compilers, desktop keyrings: ~220 more).
  /usr/bin/python3 -c 'import qgis.core' >/dev/null 2>&1 || APT_LEAN+=(python3-qgis)
  # The MQTT bridge's tests start their own mosquitto on a free port (never the service).
  [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || APT_LEAN+=(mosquitto)
  # The cluster test (tests/cluster) starts its own etcd, Patroni nodes and HAProxy (no service).
  command -v etcd >/dev/null 2>&1 || APT_LEAN+=(etcd-server)
  command -v patroni >/dev/null 2>&1 || APT_LEAN+=(patroni)
  [ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || APT_LEAN+=(haproxy)
fi
if [ "${IOC_SETUP_FOR:-run}" = test ] || [ "${IOC_SETUP_FOR:-run}" = bench ]; then
  command -v wrk >/dev/null 2>&1 || APT_PACKAGES+=(wrk)
fi
# As root the server runs as an unprivileged user (below), which must be able to run .venv's
# Python: prefer the distribution's Python 3.11+ (under /usr) to one under /root (pyenv).
if [ -z "${PYTHON:-}" ] && [ "$(id -u)" -eq 0 ] && [ "${IOC_RUN_AS:-ioc}" != root ] &&
    /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  PYTHON=/usr/bin/python3
fi
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || APT_PACKAGES+=(python3-venv)
# As root, `ioc serve` serves as an unprivileged system user (IOC_RUN_AS, default ioc); setfacl
# may be needed to let it reach the Python of .venv (below).
RUN_AS=${IOC_RUN_AS:-ioc}
if [ "$(id -u)" -eq 0 ] && [ "$RUN_AS" != root ]; then
  command -v setfacl >/dev/null 2>&1 || APT_PACKAGES+=(acl)
fi

if [ $((${#APT_PACKAGES[@]} + ${#APT_LEAN[@]})) -gt 0 ]; then
  ALL=("${APT_PACKAGES[@]}" "${APT_LEAN[@]}")
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; else
      die "missing system packages: ${ALL[*]}. Run: sudo apt-get install -y ${ALL[*]}"
    fi
  else SUDO=""; fi
  say "installing system packages: ${ALL[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  if [ ${#APT_PACKAGES[@]} -gt 0 ] &&
      ! $SUDO apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null; then
    # Not Debian 12: fall back to the distribution's default PostgreSQL + PostGIS.
    say "postgresql-15-postgis-3 unavailable; trying the distribution's PostGIS"
    ALT=("${APT_PACKAGES[@]/postgresql-15-postgis-3/postgis}")
    ALT=("${ALT[@]/postgresql-15/postgresql}")
    $SUDO apt-get install -y -qq "${ALT[@]}" >/dev/null
  fi
  if [ ${#APT_LEAN[@]} -gt 0 ]; then
    $SUDO apt-get install -y -qq --no-install-recommends "${APT_LEAN[@]}" >/dev/null
  fi
fi

# Python environment: reinstall only when the requirements change.
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "ioc needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version))."
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.ioc-requirements
WANT=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  say "installing Python requirements into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt -e '.[dev]'
  echo "$WANT" > "$STAMP"
fi
# `make lint` needs the Python tools only.
if [ "${IOC_SETUP_FOR:-run}" = lint ]; then exit 0; fi

# Map pages (issue #7): Leaflet and its plugins from the npm registry into node_modules/
# (package.json + package-lock.json), served by ioc itself under /static/vendor so that the
# pages work without internet. The tests also install the devDependencies (MapLibre GL JS, a
# web map on another origin that a test points at ioc). Reinstalled only when the lock file
# or that choice changes; a set-up for the tests serves `make run` too.
NPM_STAMP=node_modules/.ioc-package-lock
NPM_OMIT=(--omit=dev)
if [ "${IOC_SETUP_FOR:-run}" = test ]; then NPM_OMIT=(); fi
NPM_WANT="$(sha256sum package-lock.json | cut -d' ' -f1) ${NPM_OMIT[*]:-with-dev}"
NPM_HAVE=$(cat "$NPM_STAMP" 2>/dev/null || true)
if [ ! -d node_modules ] || { [ "$NPM_HAVE" != "$NPM_WANT" ] &&
    [ "$NPM_HAVE" != "${NPM_WANT% *} with-dev" ]; }; then
  say "installing the map pages' browser assets (npm ci ${NPM_OMIT[*]:-})"
  npm ci "${NPM_OMIT[@]}" --no-audit --no-fund --loglevel=error
  echo "$NPM_WANT" > "$NPM_STAMP"
fi

# The user that serves ioc when it is started as root: no login, no home, owns nothing but the
# tile cache and query-job folders (`ioc serve` hands them over). A new .venv uses the
# distribution's Python (above); when an older .venv's Python or the project lives in a folder
# it cannot enter (pyenv under /root), it may pass through, search only (it cannot list /root
# nor read files that are not world-readable).
if [ "$(id -u)" -eq 0 ] && [ "$RUN_AS" != root ]; then
  if ! id -u "$RUN_AS" >/dev/null 2>&1; then
    say "creating the system user $RUN_AS that serves ioc"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$RUN_AS"
  fi
  # Each folder from / down to the interpreter's prefix and to this project, outermost first.
  .venv/bin/python -c 'import os, sys, pathlib
for top in (sys.base_prefix, os.getcwd()):
    print(*reversed(pathlib.Path(top).parents), top, sep="\n")' |
    while read -r dir; do
      if ! runuser -u "$RUN_AS" -- test -x "$dir"; then
        say "letting $RUN_AS pass through $dir (search only) to reach .venv's Python and ioc"
        setfacl -m "u:$RUN_AS:x" "$dir"
      fi
    done
fi

IOC=.venv/bin/ioc
if [ -z "${DATABASE_URL:-}" ]; then
  $IOC db start
fi
$IOC db migrate
$IOC seed --if-empty
