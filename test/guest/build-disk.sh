#!/usr/bin/env bash
# Makes the test guest (test/guest/build.sh) into a bootable disk image, .cache/guest/disk.qcow2: a FAT file
# system holding the kernel and initramfs with SYSLINUX in its boot sector, so SeaBIOS boots it from the disk
# like a cloud image. Tests and bench/images.mjs serve it as a "cloud image" (its /etc/nocloud.sh reads the
# cidata seed VMDesk attaches). Needs dosfstools, mtools and syslinux (Debian packages; scripts/setup.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/.cache/guest"
DISK="$OUT/disk.qcow2"
bash "$ROOT/test/guest/build.sh" >/dev/null
KERNEL="$OUT/vmlinuz"
INITRD="$OUT/initrd.cpio.gz"

if [[ -s "$DISK" && "$DISK" -nt "$KERNEL" && "$DISK" -nt "$INITRD" && "$DISK" -nt "${BASH_SOURCE[0]}" ]]; then
  echo "disk=$DISK"
  exit 0
fi
for tool in mkfs.fat mcopy syslinux qemu-img; do
  PATH="$PATH:/sbin:/usr/sbin" command -v "$tool" >/dev/null || { echo "build-disk.sh: $tool is missing (sudo apt install dosfstools mtools syslinux qemu-utils)" >&2; exit 1; }
done
export PATH="$PATH:/sbin:/usr/sbin"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vmdesk-disk.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
RAW="$WORK/disk.img"
# Room for the kernel, the initramfs and SYSLINUX, rounded up to whole MiB.
KIB=$(( ( $(stat -c %s "$KERNEL") + $(stat -c %s "$INITRD") ) / 1024 + 4096 ))
KIB=$(( (KIB + 1023) / 1024 * 1024 ))
mkfs.fat -C -n VMDESKBOOT "$RAW" "$KIB" >/dev/null
cat >"$WORK/syslinux.cfg" <<'EOF'
DEFAULT vmdesk
PROMPT 0
TIMEOUT 0
LABEL vmdesk
  KERNEL vmlinuz
  APPEND initrd=initrd.gz console=ttyS0 quiet
EOF
mcopy -i "$RAW" "$KERNEL" ::vmlinuz
mcopy -i "$RAW" "$INITRD" ::initrd.gz
mcopy -i "$RAW" "$WORK/syslinux.cfg" ::syslinux.cfg
syslinux --install "$RAW"
qemu-img convert -q -f raw -O qcow2 "$RAW" "$DISK.tmp"
mv "$DISK.tmp" "$DISK"
echo "disk=$DISK"
