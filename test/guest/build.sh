#!/usr/bin/env bash
# Builds the test guest (Debian cloud kernel + busybox initramfs) once into .cache/guest/ from Debian packages only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPT="$ROOT/test/guest/build.sh"
# VMDESK_GUEST_FLAVOUR=desktop builds the same guest on Debian's generic kernel into .cache/guest-desktop/:
# it has the virtio-gpu (DRM) and 9p drivers the cloud kernel lacks, for the display-resize and 9p tests.
FLAVOUR="${VMDESK_GUEST_FLAVOUR:-cloud}"
case "$FLAVOUR" in
  cloud) OUT="$ROOT/.cache/guest"; KSUFFIX="-cloud" ;;
  desktop) OUT="$ROOT/.cache/guest-desktop"; KSUFFIX="" ;;
  *) echo "VMDESK_GUEST_FLAVOUR must be cloud or desktop" >&2; exit 2 ;;
esac
KERNEL="$OUT/vmlinuz"
INITRD="$OUT/initrd.cpio.gz"
MARKER="VMDESK-GUEST-READY"
# The string the guest's port-forward service serves; test/guest/guest.ts exports the same value.
HTTP_TEXT="vmdesk-guest-http-ok"

# Idempotent: nothing to do when both outputs exist and are newer than this script.
if [[ -s "$KERNEL" && -s "$INITRD" && "$KERNEL" -nt "$SCRIPT" && "$INITRD" -nt "$SCRIPT" && "$INITRD" -nt "$ROOT/test/guest/guest-integration.sh" && "$INITRD" -nt "$ROOT/test/guest/vdagent-test.c" ]]; then
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
  pkg="$(apt-cache depends "linux-image${KSUFFIX}-amd64" 2>/dev/null | sed -n "s/^ *Depends: \(linux-image-6\.1\.0-[0-9]*${KSUFFIX}-amd64\)\$/\1/p" | head -n1)"
  if [[ -z "$pkg" ]]; then
    pkg="$(apt-cache search --names-only "^linux-image-6\.1\.0-[0-9]+${KSUFFIX}-amd64\$" 2>/dev/null | awk '{print $1}' | sort -V | tail -n1)"
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
# Guest integration (issue 12): qemu-ga and its libraries, the clipboard test agent, their modules.
source "$ROOT/test/guest/guest-integration.sh"
gi_download

mkdir -p "$WORK/kpkg" "$WORK/bb"
dpkg -x "$WORK"/linux-image-*.deb "$WORK/kpkg"
dpkg -x "$WORK"/busybox-static_*.deb "$WORK/bb"

# SSH server for `vmdesk shell` tests: dropbear (dynamically linked) and the libraries it needs, from
# Debian packages like the rest; the dependency list comes from apt so a new release's names are followed.
deps_of() { apt-cache depends --no-recommends --no-suggests "$@" 2>/dev/null | awk '/^ *Depends: [a-z0-9]/{print $2}' | sort -u; }
DB_DEPS1="$(deps_of dropbear-bin)"
# shellcheck disable=SC2086 # word splitting of package names is meant
DB_PKGS="dropbear-bin $(printf '%s\n' $DB_DEPS1 $(deps_of $DB_DEPS1) | sort -u | tr '\n' ' ')"
mkdir -p "$WORK/db-debs" "$WORK/db"
(cd "$WORK/db-debs" && apt-get download $DB_PKGS >/dev/null)
for deb in "$WORK"/db-debs/*.deb; do dpkg -x "$deb" "$WORK/db"; done

VMLINUZ="$(ls "$WORK"/kpkg/boot/vmlinuz-* | head -n1)"
KVER="${VMLINUZ##*/vmlinuz-}"
CONFIG="$WORK/kpkg/boot/config-$KVER"
MODDIR="$WORK/kpkg/lib/modules/$KVER"

# Root filesystem of the initramfs.
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,etc/acpi/PWRF,proc,sys,dev,tmp,root,var/run,var/log,www,lib/modules,usr/sbin,usr/bin,lib64,lib/x86_64-linux-gnu,etc/dropbear,home,seed}
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
gi_modules
# Memory balloon (vmdesk set --memory-target), with free page reporting (CONFIG_PAGE_REPORTING is built in).
want_module virtio_balloon CONFIG_VIRTIO_BALLOON
want_module isofs CONFIG_ISO9660_FS

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
gi_install

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

# dropbear and its shared libraries (the dynamic loader at the path the binaries name: /lib64).
cp "$WORK/db/usr/sbin/dropbear" "$R/usr/sbin/dropbear"
cp "$WORK/db/usr/bin/dropbearkey" "$R/usr/bin/dropbearkey"
mkdir -p "$WORK/dblibs"
for lib in $(find "$WORK/db/lib" "$WORK/db/usr/lib" -path '*/gconv' -prune -o \( -name 'lib*.so*' -o -name 'ld-linux*.so*' \) -print 2>/dev/null); do
  cp -a "$lib" "$WORK/dblibs/"
done
# Only the libraries dropbear loads (the loader lists them), not all of libc6's.
cp -L "$WORK/dblibs/ld-linux-x86-64.so.2" "$R/lib/x86_64-linux-gnu/"
for bin in "$R/usr/sbin/dropbear" "$R/usr/bin/dropbearkey"; do
  "$WORK/dblibs/ld-linux-x86-64.so.2" --library-path "$WORK/dblibs" --list "$bin" | awk '$1 !~ /\// && $2 == "=>" && $3 ~ /^\// {print $1}' | while read -r so; do
    cp -L "$WORK/dblibs/$so" "$R/lib/x86_64-linux-gnu/$so"
  done
done
ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"
# Checked here, on the host, with the guest's own loader and libraries: a missing library fails the build.
"$R/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$R/lib/x86_64-linux-gnu" "$R/usr/sbin/dropbear" -V 2>&1 | grep -q Dropbear \
  || { echo "dropbear does not run with the libraries copied into the guest" >&2; exit 1; }
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
printf '/bin/sh\n' >"$R/etc/shells"

# A tiny cloud-init NoCloud reader: the seed is an ISO 9660 image labelled cidata on a virtio disk (as VMDesk
# attaches it). It reads the host name (meta-data), the user and its SSH keys (user-data, as VMDesk writes
# it: one "- name:" line and "- \"ssh-...\"" lines), creates the user and starts dropbear on port 22.
cat >"$R/etc/nocloud.sh" <<'NOCLOUD'
#!/bin/sh
found=""
for dev in /dev/vd? /dev/sr?; do
  [ -b "$dev" ] || continue
  mount -t iso9660 -o ro "$dev" /seed 2>/dev/null || continue
  if [ -f /seed/meta-data ] && [ -f /seed/user-data ]; then found="$dev"; break; fi
  umount /seed
done
[ -n "$found" ] || exit 0
host="$(sed -n 's/^local-hostname: *"\{0,1\}\([a-z0-9-]*\)"\{0,1\} *$/\1/p' /seed/meta-data | head -n1)"
user="$(sed -n 's/^ *- name: *"\{0,1\}\([a-z_][a-z0-9_-]*\)"\{0,1\} *$/\1/p' /seed/user-data | head -n1)"
[ -n "$host" ] && hostname "$host"
if [ -n "$user" ]; then
  mkdir -p "/home/$user/.ssh"
  sed -n 's/^ *- "\(ssh-[a-z0-9-]* [A-Za-z0-9+\/=]*[^"]*\)" *$/\1/p' /seed/user-data >"/home/$user/.ssh/authorized_keys"
  echo "$user:x:1000:1000:$user:/home/$user:/bin/sh" >>/etc/passwd
  echo "$user:x:1000:" >>/etc/group
  chown -R 1000:1000 "/home/$user"
  chmod 755 "/home/$user"; chmod 700 "/home/$user/.ssh"; chmod 600 "/home/$user/.ssh/authorized_keys"
fi
umount /seed
# An ed25519 host key made now (quick even under TCG); keys made on first connection (-R) take seconds.
/usr/bin/dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1
/usr/sbin/dropbear -r /etc/dropbear/dropbear_ed25519_host_key -E -p 22 -P /var/run/dropbear.pid 2>>/var/log/dropbear.log
# One frame out, as a DHCP client would send: passt learns the guest's MAC address from the guest's first
# frame, and until then connections to forwarded ports (SSH) go nowhere. This guest's address is static.
ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1 &
echo "vmdesk-guest: nocloud seed on $found: host $host, user $user, dropbear on port 22"
NOCLOUD
chmod +x "$R/etc/nocloud.sh"

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
/etc/nocloud.sh
/etc/guest-integration.sh
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
