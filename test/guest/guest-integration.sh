# Sourced by build.sh: what the test guest needs for the guest integration tests (issue 12).
# - the QEMU guest agent (qemu-ga, dynamically linked) and its libraries, from Debian packages; it starts when
#   the VM has the org.qemu.guest_agent.0 port, with an fsfreeze hook that reports freeze/thaw on the console;
# - vdagent-test (test/guest/vdagent-test.c, built static here): a minimal clipboard agent on com.redhat.spice.0;
# - fuse + virtiofs and virtio_console modules; virtio-gpu and 9p where the kernel has them (desktop flavour).

GI_SRC="$ROOT/test/guest/vdagent-test.c"

gi_download() { # into $WORK/qga
  local pkgs
  pkgs="$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances --no-pre-depends qemu-guest-agent 2>/dev/null \
    | grep -E '^[a-z0-9]' | grep -E '^(qemu-guest-agent|lib)' | sort -u | tr '\n' ' ')"
  [[ -n "$pkgs" ]] || { echo "apt knows no qemu-guest-agent" >&2; return 1; }
  mkdir -p "$WORK/qga-debs" "$WORK/qga"
  (cd "$WORK/qga-debs" && apt-get download $pkgs >/dev/null)
  for deb in "$WORK"/qga-debs/*.deb; do dpkg -x "$deb" "$WORK/qga"; done
}

gi_modules() {
  want_module virtio_console CONFIG_VIRTIO_CONSOLE
  want_module virtiofs CONFIG_VIRTIO_FS
  # Only the generic kernel (VMDESK_GUEST_FLAVOUR=desktop) has these; the cloud kernel reports "no such module".
  want_module virtio_gpu CONFIG_DRM_VIRTIO_GPU
  want_module 9pnet_virtio CONFIG_NET_9P_VIRTIO
  want_module 9p CONFIG_9P_FS
}

gi_install() { # into $R
  mkdir -p "$R/usr/bin" "$R/lib/x86_64-linux-gnu" "$R/lib64" "$R/etc/qemu" "$R/mnt/share"
  cp "$WORK/qga/usr/sbin/qemu-ga" "$R/usr/bin/qemu-ga"
  for lib in $(find "$WORK/qga/lib" "$WORK/qga/usr/lib" -path '*/gconv' -prune -o \( -name 'lib*.so*' -o -name 'ld-linux*.so*' \) -print 2>/dev/null); do
    cp -a "$lib" "$R/lib/x86_64-linux-gnu/"
  done
  ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"
  "$R/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$R/lib/x86_64-linux-gnu" "$R/usr/bin/qemu-ga" --version 2>&1 | grep -q 'QEMU Guest Agent' \
    || { echo "qemu-ga does not run with the libraries copied into the guest" >&2; return 1; }
  ${CC:-cc} -static -Os -Wall -o "$R/usr/bin/vdagent-test" "$GI_SRC" || { echo "vdagent-test did not build (needs a C compiler and libc.a: build-essential)" >&2; return 1; }

  cat >"$R/etc/qemu/fsfreeze-hook" <<'HOOK'
#!/bin/sh
echo "vmdesk-guest: fsfreeze-hook $1" >/dev/console
HOOK
  chmod +x "$R/etc/qemu/fsfreeze-hook"

  cat >"$R/etc/guest-integration.sh" <<'GI'
#!/bin/sh
# Starts what the VM's devices ask for: qemu-ga on the agent's port, vdagent-test on the clipboard's port, and
# the tests mount shares themselves (mount -t virtiofs TAG DIR).
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] || continue
  dev="/dev/${p##*/}"
  case "$(cat "$p/name")" in
    org.qemu.guest_agent.0)
      /usr/bin/qemu-ga -m virtio-serial -p "$dev" -F/etc/qemu/fsfreeze-hook -t /var/run -l /var/log/qga.log &
      echo "vmdesk-guest: qemu-ga on $dev" ;;
    com.redhat.spice.0)
      mkfifo /tmp/clip-to-host
      /usr/bin/vdagent-test "$dev" /tmp/clip-to-host >/dev/console 2>&1 &
      echo "vmdesk-guest: vdagent-test on $dev" ;;
  esac
done
GI
  chmod +x "$R/etc/guest-integration.sh"
}
