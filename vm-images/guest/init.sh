#!/bin/sh
# PID 1 of the tmem-kvm test guest (installed as /sbin/tmem-init; boot with init=/sbin/tmem-init).
#
# Mounts proc/sys/dev/debugfs, finds the disks by their virtio serial numbers
# (tmemswap, tmemfiles, tmemdata), enables swap, mounts the project files at
# /opt/tmem, loads /opt/tmem/virtio_tmem.ko if present, runs the requested
# command (or a shell) and powers off.
#
# Kernel command line (all optional):
#   tmem.run=/opt/tmem/workloads/x.sh   command to run (no spaces; for arguments use
#                                       QEMU -fw_cfg name=opt/tmem/run,string="cmd args")
#   tmem.module=0                       do not load the module
#   tmem.modparams=a=1,b=2              module parameters (commas become spaces)
#   tmem.swap=0                         no swapon
#   tmem.shell=1                        drop to a shell after the command instead of powering off
# Markers for the host harness, on the console and, when QEMU gives the VM a
# virtio-serial port named org.tmem-kvm.harness (vm-images/lib/vm.mjs does),
# on that port too: the kernel writes its messages straight to the UART, so on
# the console they can land inside a line; the port carries only our lines.
#   @@TMEM-READY ...        init finished setup
#   @@TMEM-RUN-BEGIN cmd    / @@TMEM-RUN-END rc=N
#   @@TMEM-RESULT {json}    printed by the workloads
#   @@TMEM-POWEROFF
# Workloads print their markers with mark() of workloads/lib.sh (fd 9 is the port).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=${TERM:-linux}
cd /

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /dev/shm 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -o remount,rw / 2>/dev/null
hostname tmem-guest 2>/dev/null
# minbase has no init system: poweroff/reboot for the shell user (the root disk is a
# per-VM snapshot, so writing here is fine; /usr/local/sbin survives /etc/profile's PATH)
for c in poweroff reboot; do
  printf '#!/bin/sh\nsync\nexec busybox %s -f\n' "$c" > /usr/local/sbin/$c && chmod 0755 /usr/local/sbin/$c
done
# warnings and worse still reach the console; chatter does not split our result lines
echo 5 > /proc/sys/kernel/printk 2>/dev/null

# the harness port: /dev/vportNpM whose name is org.tmem-kvm.harness. Its name
# arrives from the device shortly after probe, so wait a little when a
# virtio-serial device is present (PCI 1af4:1003 or 1af4:1043) and not otherwise.
harness_port() {
  for n in /sys/class/virtio-ports/*/name; do
    [ -r "$n" ] && [ "$(cat "$n")" = org.tmem-kvm.harness ] && { p=${n%/name}; echo "/dev/${p##*/}"; return 0; }
  done
  return 1
}
# pci_find VENDOR:DEVICE...: the address of the first PCI device with one of these ids
pci_find() {
  for d in /sys/bus/pci/devices/*; do
    id="$(cat "$d/vendor" 2>/dev/null):$(cat "$d/device" 2>/dev/null)"
    for want in "$@"; do
      [ "$id" = "$want" ] && { echo "${d##*/}"; return 0; }
    done
  done
  return 1
}
TMEM_HARNESS=0
if pci_find 0x1af4:0x1003 0x1af4:0x1043 > /dev/null; then
  i=0
  while ! HPORT=$(harness_port) && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  # `command exec`: a failed redirection must not end PID 1
  if [ -n "$HPORT" ] && [ -c "$HPORT" ] && command exec 9> "$HPORT"; then
    TMEM_HARNESS=1
  else
    echo "init: a virtio-serial device but no usable org.tmem-kvm.harness port; markers go to the console only" > /dev/console
  fi
fi
export TMEM_HARNESS

say() {
  echo "$*" > /dev/console 2>/dev/null || echo "$*"
  [ "$TMEM_HARNESS" = 1 ] && printf '%s\n' "$*" >&9
  return 0
}

param() { # param NAME -> value of tmem.NAME on the kernel command line
  for w in $(cat /proc/cmdline); do
    case "$w" in "tmem.$1="*) echo "${w#*=}"; return 0 ;; esac
  done
  return 1
}

disk_by_serial() {
  for s in /sys/block/vd*/serial; do
    [ -r "$s" ] || continue
    if [ "$(cat "$s")" = "$1" ]; then d=${s%/serial}; echo "/dev/${d##*/}"; return 0; fi
  done
  return 1
}

# --- disks
SWAPDEV=$(disk_by_serial tmemswap) || SWAPDEV=""
FILESDEV=$(disk_by_serial tmemfiles) || FILESDEV=""
DATADEV=$(disk_by_serial tmemdata) || DATADEV=""
if [ -n "$FILESDEV" ]; then
  mount -o ro "$FILESDEV" /opt/tmem || say "init: cannot mount $FILESDEV at /opt/tmem"
fi
if [ -n "$DATADEV" ]; then
  mkdir -p /mnt/data
  mount "$DATADEV" /mnt/data || say "init: cannot mount $DATADEV at /mnt/data"
fi
if [ -n "$SWAPDEV" ] && [ "$(param swap)" != 0 ]; then
  swapon "$SWAPDEV" || say "init: swapon $SWAPDEV failed"
fi

# --- the tmem module
MODULE=""
if [ "$(param module)" != 0 ] && [ -f /opt/tmem/virtio_tmem.ko ]; then
  MP=$(param modparams | tr ',' ' ')
  if [ -r /sys/firmware/qemu_fw_cfg/by_name/opt/tmem/modparams/raw ]; then
    MP=$(cat /sys/firmware/qemu_fw_cfg/by_name/opt/tmem/modparams/raw)
  fi
  # shellcheck disable=SC2086
  if insmod /opt/tmem/virtio_tmem.ko $MP; then MODULE=loaded; else MODULE=failed; say "init: insmod virtio_tmem.ko failed"; fi
fi

# the tmem device: PCI 1af4:1067 (virtio device id 39 = 0x1040 + 39)
TMEMDEV=$(pci_find 0x1af4:0x1067) || TMEMDEV=none

say "@@TMEM-READY kernel=$(uname -r) mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo) cpus=$(nproc) swap=${SWAPDEV:-none} files=${FILESDEV:-none} data=${DATADEV:-none} tmemdev=$TMEMDEV module=${MODULE:-none} harness=$([ "$TMEM_HARNESS" = 1 ] && echo port || echo console)"

# --- the command
RUN=""
if [ -r /sys/firmware/qemu_fw_cfg/by_name/opt/tmem/run/raw ]; then
  RUN=$(cat /sys/firmware/qemu_fw_cfg/by_name/opt/tmem/run/raw)
elif RUN=$(param run); then :; else RUN=""; fi

if [ -n "$RUN" ]; then
  say "@@TMEM-RUN-BEGIN $RUN"
  sh -c "$RUN" < /dev/console > /dev/console 2>&1
  rc=$?
  say "@@TMEM-RUN-END rc=$rc"
  [ "$(param shell)" = 1 ] && setsid -c sh -l < /dev/console > /dev/console 2>&1
else
  say "tmem guest: root shell on the console; 'poweroff' or 'exit' stops the VM"
  # setsid -c gives the shell a controlling tty so Ctrl-C works
  setsid -c sh -l < /dev/console > /dev/console 2>&1 || sh < /dev/console > /dev/console 2>&1
fi

# --- power off
swapoff -a 2>/dev/null
umount /mnt/data 2>/dev/null
sync
say "@@TMEM-POWEROFF"
busybox poweroff -f 2>/dev/null
echo o > /proc/sysrq-trigger
sleep 5
