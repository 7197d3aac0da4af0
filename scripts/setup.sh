#!/usr/bin/env bash
# One-command set-up on a fresh machine: system packages (QEMU & co), npm dependencies, build, test guest.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

case "$(uname -s)" in
  Linux)
    if command -v apt-get >/dev/null; then
      # qemu + utils run the guests; ovmf is the UEFI firmware; passt isolates NAT guests from the host; busybox-static + cpio build the test guest;
      # chromium drives the GUI end-to-end tests; build-essential/python3 build the native addon and node-pty;
      # libvirt-clients (virsh) reaches libvirt hosts, and libvirtd with its QEMU driver is the daemon the
      # libvirt tests start privately (a host of your own: add libvirt-daemon-system for qemu:///system).
      PKGS="qemu-system-x86 qemu-utils ovmf passt busybox-static cpio chromium build-essential python3 libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu"
      missing=""
      # swtpm + swtpm-tools give guests a TPM 2.0 (Windows 11; the TPM tests).
      PKGS="$PKGS swtpm swtpm-tools"
      # cloud-init seed ISOs (xorriso; genisoimage also gives the tests' isoinfo), ssh for vmdesk shell, gpgv/gpg
      # for signed SHA256SUMS, iproute2 for the network-namespace tests, pngquant to keep screenshots small.
      PKGS="$PKGS xorriso genisoimage openssh-client gpgv gpg iproute2 pngquant"
      for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
      if [ -n "$missing" ]; then
        say "installing system packages:$missing"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
      fi
    else
      echo "vmdesk setup: not a Debian/Ubuntu system; install QEMU (qemu-system-x86_64, qemu-img), OVMF and Chromium yourself" >&2
    fi
    ;;
  Darwin)
    command -v brew >/dev/null || { echo "vmdesk setup: install Homebrew first (https://brew.sh)" >&2; exit 1; }
    command -v qemu-system-x86_64 >/dev/null || { say "installing QEMU with Homebrew"; brew install qemu; }
    ;;
esac

say "installing npm dependencies"
# Electron's own binary is fetched by its postinstall step; where that cannot be reached (offline, CI
# without internet) install without it: everything but the desktop window runs in plain Node.
if ! npm ci --no-audit --no-fund >/tmp/vmdesk-npm-ci.log 2>&1; then
  if grep -qiE "electron|ENOTFOUND|ETIMEDOUT|EAI_AGAIN|ECONNREFUSED" /tmp/vmdesk-npm-ci.log; then
    echo "vmdesk setup: the Electron binary could not be downloaded; continuing without it (npm start falls back to the browser mode)"
    ELECTRON_SKIP_BINARY_DOWNLOAD=1 npm ci --no-audit --no-fund
  else
    cat /tmp/vmdesk-npm-ci.log >&2
    exit 1
  fi
fi

say "building"
npm run build

say "building the test guest from Debian packages"
if command -v apt-get >/dev/null; then
  bash test/guest/build.sh || echo "vmdesk setup: test guest not built; integration tests will fail until 'npm run test:guest' succeeds"
fi

say "done: 'npm start' opens VMDesk, 'npm test' runs the tests"
