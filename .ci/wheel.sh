#!/usr/bin/env bash
# The wheel as a user gets it: `pip wheel .` builds it (a platform wheel holding the compiled C library), a fresh
# venv installs it, and .ci/wheel_check.py runs there with no C compiler on PATH (PATH = the venv's bin only,
# CC=/nonexistent): the cpu backend must be active, from the wheel's own library, and give the torch reference's bits.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python -m pip wheel -q --no-deps -w "$tmp/dist" .
wheel=$(ls "$tmp"/dist/fdgpu-*.whl)
case "$wheel" in *-py3-none-any.whl) echo "wheel.sh: expected a platform wheel, got $wheel" >&2; exit 1;; esac
python -m venv "$tmp/venv"
# torch and numpy come from the environment that runs CI: its site-packages folders go on the venv's path after the
# venv's own (a .pth line adds a folder without running that folder's .pth files, so an editable fdgpu there is
# not seen; the wheel's fdgpu, in the venv's own site-packages, comes first)
site=$("$tmp/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python -c "import sys; print('\n'.join(p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))))" \
    > "$site/ci-outer.pth"
"$tmp/venv/bin/python" -m pip install -q --no-deps "$wheel"
cd "$tmp"
env -i PATH="$tmp/venv/bin" CC=/nonexistent HOME="$tmp/home" FDGPU_CACHE="$tmp/cache" \
    "$tmp/venv/bin/python" -I "$repo/.ci/wheel_check.py" --no-compiler "$wheel"
