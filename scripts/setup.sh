#!/usr/bin/env bash
# Set up the project on a bare machine: system packages (Vulkan for ManiSkill rendering, Chromium for the
# gallery browser test), a virtual environment at .venv, torch first, then the project constrained so torch is
# never replaced. Idempotent: a second run checks and skips what is already there.
#
#   scripts/setup.sh            # everything
#   SKIP_SYSTEM=1 scripts/setup.sh   # Python side only (no apt)
#   WITH_BROWSER=0 scripts/setup.sh  # do not install Chromium (gallery browser test then skips)
#
# As root on Debian bookworm it installs Mesa lavapipe >= 24.3 from bookworm-backports (bookworm's own 22.3
# cannot run SAPIEN 3's renderer). Not root, or not Debian: it installs nothing system-wide and prints the exact
# commands to run, then `vla doctor` says what is still missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
STAMP="$VENV/.setup-stamp"
WITH_BROWSER="${WITH_BROWSER:-1}"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
warn() { printf '\033[1;33m[setup]\033[0m %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------------------
# System packages
# ---------------------------------------------------------------------------------------------------------
mesa_version() {
  dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | sed -E 's/^([0-9]+\.[0-9]+).*/\1/' || true
}

mesa_ok() {
  local v
  v="$(mesa_version)"
  [ -n "$v" ] || return 1
  awk -v v="$v" 'BEGIN { split(v, a, "."); exit !((a[1] > 24) || (a[1] == 24 && a[2] >= 3)) }'
}

debian_mirror() {
  # The mirror this machine already uses for bookworm (deb822 or one-line format); never hard-coded.
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri="$(awk '$1 == "deb" && $3 ~ /^bookworm/ {print $2; exit}' /etc/apt/sources.list)"
  fi
  printf '%s' "$uri"
}

system_commands() {
  # Prints the commands that install what is missing; used both to run them (root) and to show them (non-root).
  local need_mesa=$1 need_browser=$2 mirror
  mirror="$(debian_mirror)"
  if [ "$need_mesa" = 1 ]; then
    if [ -z "$mirror" ]; then
      echo "# could not read a Debian mirror from /etc/apt/sources*; add a bookworm-backports source by hand"
    elif ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      printf "printf 'Types: deb\\\\nURIs: %s\\\\nSuites: bookworm-backports\\\\nComponents: main\\\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\\\n' > /etc/apt/sources.list.d/vla-backports.sources\n" "$mirror"
    fi
    echo "apt-get update"
    echo "DEBIAN_FRONTEND=noninteractive apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1"
  fi
  if [ "$need_browser" = 1 ]; then
    [ "$need_mesa" = 1 ] || echo "apt-get update"
    echo "DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
  fi
}

setup_system() {
  if [ "${SKIP_SYSTEM:-0}" = 1 ]; then log "SKIP_SYSTEM=1: not touching system packages"; return; fi
  if ! command -v dpkg-query >/dev/null 2>&1 || ! grep -qs 'bookworm' /etc/os-release; then
    warn "not Debian bookworm: install a Vulkan driver yourself (an NVIDIA driver, or Mesa >= 24.3 lavapipe)."
    warn "run '.venv/bin/vla doctor' afterwards; it says exactly what is missing."
    return
  fi
  local need_mesa=0 need_browser=0
  mesa_ok && dpkg-query -W -f='${Status}' libvulkan1 2>/dev/null | grep -q 'ok installed' || need_mesa=1
  if [ "$WITH_BROWSER" = 1 ] && ! command -v chromium >/dev/null 2>&1; then need_browser=1; fi
  if [ "$need_mesa" = 0 ] && [ "$need_browser" = 0 ]; then
    log "system packages present (Mesa $(mesa_version), libvulkan1$([ "$WITH_BROWSER" = 1 ] && echo ', chromium'))"
    return
  fi
  if [ "$(id -u)" != 0 ]; then
    warn "not root: run these commands, then this script again:"
    system_commands "$need_mesa" "$need_browser" | sed 's/^/  sudo /' >&2
    return
  fi
  log "installing system packages: $(system_commands "$need_mesa" "$need_browser" | grep -c apt-get) apt steps"
  local cmd
  while IFS= read -r cmd; do
    case "$cmd" in "#"*) warn "$cmd"; continue ;; esac
    log "+ $cmd"
    bash -c "$cmd" >/dev/null
  done < <(system_commands "$need_mesa" "$need_browser")
  mesa_ok || { warn "Mesa is $(mesa_version) after install; SAPIEN needs >= 24.3"; exit 1; }
}

# ---------------------------------------------------------------------------------------------------------
# Python
# ---------------------------------------------------------------------------------------------------------
setup_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  local constraints="$VENV/constraints.txt"
  echo "torch==$TORCH_VERSION" > "$constraints"
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1) torch==$TORCH_VERSION"
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import torch, mani_skill" 2>/dev/null; then
    log "python environment up to date ($VENV)"
    return
  fi
  if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    log "installing torch==$TORCH_VERSION first (CPU build where no CUDA build is requested)"
    "$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION"
  fi
  log "installing the project (pip install -e .[dev]) constrained to torch==$TORCH_VERSION"
  PIP_CONSTRAINT="$constraints" "$VENV/bin/pip" install --quiet -e ".[dev]"
  echo "$want" > "$STAMP"
}

setup_system
setup_python
log "done. Check the machine with: .venv/bin/vla doctor"
