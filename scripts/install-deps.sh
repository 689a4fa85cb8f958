#!/usr/bin/env bash
# Installs what dl's build, tests and examples need from Debian's packages (idempotent).
# Usage: scripts/install-deps.sh [--mpi]    (run as root, or with sudo available)
set -euo pipefail
# python3-venv: the interchange tests check files against NumPy/safetensors in a private venv.
pkgs=(g++ meson ninja-build pkg-config libeigen3-dev zlib1g-dev doctest-dev libcli11-dev dataset-fashion-mnist python3-venv)
for arg in "$@"; do
  case "$arg" in
    --mpi) pkgs+=(libopenmpi-dev openmpi-bin) ;;
    --plot) pkgs+=(gnuplot-nox) ;;
    *) echo "install-deps: unknown option '$arg'" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
