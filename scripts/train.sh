#!/usr/bin/env bash
# The training command: installs dependencies (compiler, meson, Eigen, CLI11, zlib and the
# Fashion-MNIST package), builds the example trainers and trains the default MLP.
# Usage: scripts/train.sh [train_mlp flags...]      e.g. scripts/train.sh --epochs 3 --plot
set -euo pipefail
cd "$(dirname "$0")/.."
example=train_mlp
if [ $# -gt 0 ] && [[ "$1" == train_* ]]; then example=$1; shift; fi
scripts/install-deps.sh
builddir=build-release
if [ ! -d "$builddir" ]; then
  meson setup "$builddir" --buildtype=release -Dtests=disabled -Dbench=disabled >/dev/null
fi
ninja -C "$builddir" "examples/$example" >/dev/null
exec "$builddir/examples/$example" "$@"
