#!/usr/bin/env bash
# An emulated arm64 "board" on this x86 machine: a Debian arm64 root filesystem run under qemu-user,
# with the aarch64 apache-tvm wheel from PyPI and a TVM RPC server on loopback. edgec's TVM backend
# validates `--target rpi4` / `--target jetson-orin` artifacts on it automatically while it runs.
#
#   scripts/arm64_board.sh setup    # once: debootstrap + aarch64 wheels (~150 MB download, a few minutes)
#   scripts/arm64_board.sh start    # RPC server on 127.0.0.1:$EDGEC_BOARD_PORT (default 9190), in the background
#   scripts/arm64_board.sh status   # is it up? (exit 0 when it answers)
#   scripts/arm64_board.sh stop
#
# Needs (Debian/Ubuntu, as root): apt-get install qemu-user-static debootstrap
# It uses no binfmt_misc registration and no chroot (containers usually have neither): the arm64
# python runs as `qemu-aarch64-static -L ROOTFS ROOTFS/usr/bin/python3`, where -L makes every absolute
# path resolve inside the root filesystem first. The board is emulated: its latencies are qemu's,
# not a Cortex-A72's, and are recorded as such; its numerics are real aarch64 code.
set -euo pipefail

BOARD_DIR="${EDGEC_BOARD_DIR:-${EDGEC_CACHE_DIR:-$HOME/.cache/edgec}/arm64-board}"
ROOTFS="$BOARD_DIR/rootfs"
PORT="${EDGEC_BOARD_PORT:-9190}"
SUITE="${EDGEC_BOARD_SUITE:-bookworm}"          # Debian 12: python 3.11, glibc 2.36 (>= the wheel's 2.28)
MIRROR="${EDGEC_BOARD_MIRROR:-http://deb.debian.org/debian}"
PYVER="3.11"
TVM_PIN="${EDGEC_BOARD_TVM:-apache-tvm==0.27.0.post1}"
FFI_PIN="${EDGEC_BOARD_TVM_FFI:-apache-tvm-ffi==0.1.14.post1}"
SITE=/opt/edgec-site                             # inside the rootfs
PIDFILE="$BOARD_DIR/rpc_server.pid"
LOG="$BOARD_DIR/rpc_server.log"

die() { echo "arm64_board: $*" >&2; exit 2; }
need() { command -v "$1" >/dev/null || die "'$1' not found; install it: apt-get install $2"; }

qemu_py() {
  PYTHONPATH="$SITE" PYTHONNOUSERSITE=1 \
    qemu-aarch64-static -L "$ROOTFS" "$ROOTFS/usr/bin/python$PYVER" "$@"
}

setup() {
  need qemu-aarch64-static qemu-user-static
  need debootstrap debootstrap
  mkdir -p "$BOARD_DIR"
  if [ ! -x "$ROOTFS/usr/bin/python$PYVER" ]; then
    echo "arm64_board: debootstrap $SUITE arm64 (files only, --foreign) into $ROOTFS"
    rm -rf "$ROOTFS"
    # --foreign only unpacks: the second stage (maintainer scripts) would need an arm64 chroot, and
    # running python from the unpacked tree needs none of it.
    debootstrap --foreign --arch=arm64 --variant=minbase \
      --include="python$PYVER,libpython$PYVER-stdlib,python3-minimal,libstdc++6,libgomp1" \
      "$SUITE" "$ROOTFS" "$MIRROR"
    # The first stage unpacks only the "required" set; the --include'd packages (python) are merely
    # downloaded. Unpacking every downloaded .deb gives the files the second stage would install.
    for deb in "$ROOTFS"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOTFS"; done
  fi
  echo "arm64_board: installing $TVM_PIN $FFI_PIN (aarch64 wheels from PyPI) into $ROOTFS$SITE"
  local pip="${PIP:-python3 -m pip}"
  $pip install --quiet --upgrade --no-compile --target "$ROOTFS$SITE" \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --python-version "$PYVER" \
    --implementation cp --only-binary=:all: "$TVM_PIN" "$FFI_PIN" "numpy<2.5" psutil cloudpickle
  echo "arm64_board: checking the emulated python imports tvm (slow under emulation: ~1 minute)"
  qemu_py -c "import platform, tvm; print('board ok:', platform.machine(), 'tvm', tvm.__version__)"
}

status() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    if python3 - "$PORT" <<'EOF'
import socket, sys
s = socket.socket(); s.settimeout(2)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
    then echo "arm64_board: up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; return 0; fi
    echo "arm64_board: starting (pid $(cat "$PIDFILE")), not listening yet; see $LOG"; return 1
  fi
  echo "arm64_board: not running (scripts/arm64_board.sh start)"; return 1
}

start() {
  [ -x "$ROOTFS/usr/bin/python$PYVER" ] && [ -d "$ROOTFS$SITE/tvm" ] || die "not set up; run: $0 setup"
  if status >/dev/null 2>&1; then status; return 0; fi
  # Not `python -m tvm.exec.rpc_server`: its rpc.Server re-executes sys.executable in a Popen worker, and
  # an aarch64 executable cannot be exec'ed without binfmt_misc. The same server state runs in-process;
  # each session is still a fork()ed child, which qemu-user handles.
  local SERVE='import logging, sys
logging.basicConfig(level=logging.INFO)
from tvm.rpc import server
server._popen_start_rpc_server("127.0.0.1", int(sys.argv[1]), int(sys.argv[1]) + 1)
server.PopenRPCServerState.current.thread.join()'
  echo "arm64_board: starting TVM RPC server on 127.0.0.1:$PORT (log $LOG)"
  # setsid: the server outlives this shell; its pid is the process group to stop.
  (PYTHONPATH="$SITE" PYTHONNOUSERSITE=1 setsid qemu-aarch64-static -L "$ROOTFS" "$ROOTFS/usr/bin/python$PYVER" \
     -c "$SERVE" "$PORT" \
     >"$LOG" 2>&1 & echo $! >"$PIDFILE")
  for _ in $(seq 1 180); do
    if status >/dev/null 2>&1; then status; return 0; fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -20 "$LOG" >&2; die "server exited; see $LOG"; }
    sleep 1
  done
  die "server did not listen within 180 s; see $LOG"
}

stop() {
  if [ -f "$PIDFILE" ]; then
    kill -- "-$(cat "$PIDFILE")" 2>/dev/null || kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"; echo "arm64_board: stopped"
  else
    echo "arm64_board: not running"
  fi
}

case "${1:-}" in
  setup) setup ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  shell) shift; qemu_py "$@" ;;
  *) echo "usage: $0 setup|start|status|stop|shell [python args]" >&2; exit 2 ;;
esac
