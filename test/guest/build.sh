#!/usr/bin/env bash
# Builds the test guest (Debian cloud kernel + busybox initramfs) once into .cache/guest/ from Debian packages only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPT="$ROOT/test/guest/build.sh"
OUT="$ROOT/.cache/guest"
KERNEL="$OUT/vmlinuz"
INITRD="$OUT/initrd.cpio.gz"
MARKER="VMDESK-GUEST-READY"
# The string the guest's port-forward service serves; test/guest/guest.ts exports the same value.
HTTP_TEXT="vmdesk-guest-http-ok"

# Idempotent: nothing to do when both outputs exist and are newer than this script.
if [[ -s "$KERNEL" && -s "$INITRD" && "$KERNEL" -nt "$SCRIPT" && "$INITRD" -nt "$SCRIPT" ]]; then
  echo "kernel=$KERNEL"
  echo "initrd=$INITRD"
  exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vmdesk-guest.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK" # lets apt's _apt user write the downloads
mkdir -p "$OUT"

# The newest 6.1 cloud kernel apt knows about: the meta package names it; fall back to sorting the names.
pick_kernel_pkg() {
  local pkg
  pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-cloud-amd64\)$/\1/p' | head -n1)"
  if [[ -z "$pkg" ]]; then
    pkg="$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' 2>/dev/null | awk '{print $1}' | sort -V | tail -n1)"
  fi
  echo "$pkg"
}

download() {
  (cd "$WORK" && apt-get download "$@" >/dev/null)
}

KPKG="$(pick_kernel_pkg)"
if [[ -z "$KPKG" ]] || ! download "$KPKG" busybox-static; then
  # CI images ship without package lists: refresh them once and retry.
  echo "apt-get download failed; running apt-get update and retrying" >&2
  if [[ "$(id -u)" == 0 ]]; then apt-get update >/dev/null; else sudo apt-get update >/dev/null; fi
  KPKG="$(pick_kernel_pkg)"
  [[ -n "$KPKG" ]] || { echo "no linux-image-6.1.0-*-cloud-amd64 package available from apt" >&2; exit 1; }
  download "$KPKG" busybox-static
fi
echo "kernel package: $KPKG" >&2

mkdir -p "$WORK/kpkg" "$WORK/bb"
dpkg -x "$WORK"/linux-image-*.deb "$WORK/kpkg"
dpkg -x "$WORK"/busybox-static_*.deb "$WORK/bb"

VMLINUZ="$(ls "$WORK"/kpkg/boot/vmlinuz-* | head -n1)"
KVER="${VMLINUZ##*/vmlinuz-}"
CONFIG="$WORK/kpkg/boot/config-$KVER"
MODDIR="$WORK/kpkg/lib/modules/$KVER"

# Root filesystem of the initramfs.
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,etc/acpi/PWRF,proc,sys,dev,tmp,root,var/run,var/log,www,lib/modules}
cp "$WORK/bb/bin/busybox" "$R/bin/busybox"
for applet in $("$R/bin/busybox" --list); do
  [[ "$applet" == busybox ]] || ln -sf busybox "$R/bin/$applet"
done

# Modules the tests need, in dependency order. The package ships no modules.dep (depmod runs at install), so
# read each module's "depends=" from its .modinfo strings. Options built in (=y in the config) need nothing.
declare -A LOADED=()
ORDER=()
module_path() { # module name (underscores) -> path relative to $MODDIR, from modules.order
  local pattern="${1//_/[_-]}"
  grep -E "/${pattern}\.ko(\.[a-z]+)?$" "$MODDIR/modules.order" | head -n1 || true
}
module_depends() {
  local file="$MODDIR/$1"
  case "$file" in
    *.xz) xz -dc "$file" ;; *.zst) zstd -qdc "$file" ;; *.gz) gzip -dc "$file" ;; *) cat "$file" ;;
  esac | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
}
add_module() {
  local name="$1" rel dep
  [[ -n "${LOADED[$name]:-}" ]] && return 0
  LOADED[$name]=1
  rel="$(module_path "$name")"
  if [[ -z "$rel" ]]; then echo "  $name: no such module" >&2; return 0; fi
  for dep in $(module_depends "$rel"); do add_module "$dep"; done
  ORDER+=("$rel")
}
want_module() {
  local name="$1" option="$2"
  if grep -qE "^${option}=y" "$CONFIG"; then echo "  $name: built in" >&2; return 0; fi
  add_module "$name"
}
want_module virtio_pci CONFIG_VIRTIO_PCI
want_module virtio_blk CONFIG_VIRTIO_BLK
want_module virtio_net CONFIG_VIRTIO_NET
want_module evdev CONFIG_INPUT_EVDEV
want_module button CONFIG_ACPI_BUTTON
# Memory balloon (vmdesk set --memory-target), with free page reporting (CONFIG_PAGE_REPORTING is built in).
want_module virtio_balloon CONFIG_VIRTIO_BALLOON

: >"$R/etc/modules.order"
for rel in "${ORDER[@]}"; do
  base="$(basename "$rel")"
  case "$base" in
    *.ko.xz) xz -dc "$MODDIR/$rel" >"$R/lib/modules/${base%.xz}"; base="${base%.xz}" ;;
    *.ko.zst) zstd -qdc "$MODDIR/$rel" >"$R/lib/modules/${base%.zst}"; base="${base%.zst}" ;;
    *.ko.gz) gzip -dc "$MODDIR/$rel" >"$R/lib/modules/${base%.gz}"; base="${base%.gz}" ;;
    *) cp "$MODDIR/$rel" "$R/lib/modules/$base" ;;
  esac
  echo "$base" >>"$R/etc/modules.order"
  echo "  module: $base" >&2
done

cat >"$R/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "vmdesk-guest: power button pressed, powering off" >/dev/console
poweroff -f
EOF
chmod +x "$R/etc/acpi/PWRF/00000080"

echo "$HTTP_TEXT" >"$R/www/index.html"

# Network set-up, per card from the kernel command line: vmdesk.ethN=static|dhcp|none|ADDR/PREFIX.
# eth0 defaults to static (10.0.2.15/24 via 10.0.2.2, what NAT gives), the others to none (link up, no
# address). dhcp uses busybox udhcpc with the script below, which prints the lease on the console.
cat >"$R/etc/net.sh" <<'NETSH'
#!/bin/sh
for dev in /sys/class/net/eth*; do
  [ -e "$dev" ] || continue
  i="${dev##*/}"
  how=""
  for arg in $(cat /proc/cmdline); do
    case "$arg" in "vmdesk.$i="*) how="${arg#vmdesk.$i=}" ;; esac
  done
  if [ -z "$how" ]; then if [ "$i" = eth0 ]; then how=static; else how=none; fi; fi
  ip link set "$i" up
  case "$how" in
    static) ip addr add 10.0.2.15/24 dev "$i"; ip route add default via 10.0.2.2 ;;
    dhcp) udhcpc -i "$i" -n -q -t 5 -T 1 -A 1 -s /etc/udhcpc.script >/dev/null 2>&1 || echo "vmdesk-guest: $i: no DHCP lease" ;;
    none) ;;
    */*) ip addr add "$how" dev "$i" ;;
    *) echo "vmdesk-guest: $i: unknown setting vmdesk.$i=$how" ;;
  esac
done
NETSH
chmod +x "$R/etc/net.sh"
cat >"$R/etc/udhcpc.script" <<'DHCP'
#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    gw="${router%% *}"
    [ -n "$gw" ] && ip route add default via "$gw" dev "$interface"
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    echo "vmdesk-guest: $interface dhcp $ip/${mask:-24} router ${gw:-none} dns ${dns:-none}" >/dev/console
    ;;
esac
DHCP
chmod +x "$R/etc/udhcpc.script"

cat >"$R/init" <<EOF
#!/bin/sh
# VMDesk test guest init: devices, modules, network, ACPI power button, a tiny HTTP service, a console shell.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
while read -r m; do insmod "/lib/modules/\$m" 2>/dev/null || echo "vmdesk-guest: insmod \$m failed"; done </etc/modules.order
hostname vmdesk-guest
ip link set lo up
/etc/net.sh
mkdir -p /var/run /var/log
acpid -c /etc/acpi
httpd -p 8080 -h /www
echo "$MARKER"
while true; do setsid cttyhack sh; done
EOF
chmod +x "$R/init"

cp "$VMLINUZ" "$KERNEL.tmp"
(cd "$R" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) >"$INITRD.tmp"
mv "$KERNEL.tmp" "$KERNEL"
mv "$INITRD.tmp" "$INITRD"
echo "$KPKG" >"$OUT/kernel-package"
echo "kernel=$KERNEL"
echo "initrd=$INITRD"
