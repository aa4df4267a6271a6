# shellcheck shell=bash disable=SC2054
# vm-lib.sh: shell shared by the real-guest scripts (vm-pair, vm-tests,
# vm-switch-test). Source it; it defines functions and sets nothing else.
#
#   vm_env                 load vm-setup's cache (SHARENET_KERNEL, _INITRD,
#                          _BLOB_SHA256, _BLOB_BYTES) from $SHARENET_VM_DIR
#                          (default /var/tmp/sharenet-vm); 1 if it is missing
#   vm_accel_args ACCEL    ACCEL_ARGS for tcg | kvm | auto, and GUEST_APPEND
#                          (extra kernel arguments; see below)
#   vm_qemu_base NAME IP MAC CMD SERIAL MEM
#                          Q=(qemu-system-x86_64 ...) booting vm-setup's kernel
#                          and initramfs with guest address IP/24 and the
#                          guest command CMD (base64 on the kernel command
#                          line: sharenet.cmd64=), console to SERIAL; no NIC
#   vm_vhost_nic SOCK MAC [MTU]
#                          append a vhost-user virtio-net NIC served on SOCK
#                          (QEMU is the client, reconnect=1; vectors=0: QEMU
#                          7.2 crashes under TCG with MSI-X on vhost-user);
#                          MTU: QEMU's host_mtu= (VIRTIO_NET_F_MTU)
#   wait_for FILE PATTERN SECS   until a line of FILE matches (1: timed out)
#   until_ping IP TRIES    a guest snippet: ping IP until it answers
#   serial_field FILE MARKER KEY value of KEY=... on the last MARKER line of
#                          a guest console log (CRs stripped)
#
# Guest side (vm-setup's initramfs): the init brings eth0 up with
# sharenet.ip=, prints "SHARENET-READY uptime=S", runs the command under
# busybox sh, prints "SHARENET-RESULT rc=N" and powers off.

vm_env() {
  local dir=${SHARENET_VM_DIR:-/var/tmp/sharenet-vm}
  [ -r "$dir/env" ] || return 1
  # shellcheck disable=SC1091
  . "$dir/env"
  [ -r "$SHARENET_KERNEL" ] && [ -r "$SHARENET_INITRD" ]
}

# Under TCG the guest kernel is booted with clearcpuid=erms,rep_good
# ($SHARENET_TCG_APPEND overrides; empty: nothing). With ERMS (which
# "-cpu max" has) Linux copies user data and memcpy()s with "rep movsb",
# with REP_GOOD "rep movsq"; TCG runs each iteration of a rep string
# instruction as one trip through a translated block, so every byte (or 8)
# costs a whole block's overhead, while the unrolled 8-byte-move loop the
# kernel uses without both flags moves 32 or 64 bytes per trip. Measured with
# iperf3 between two guests (scripts/vm-pair --test iperf): with "rep
# movsb" the receiving guest spent its time copying to user space and hid
# what the NIC's offloads save (README, "Real guests"); a real CPU copies
# at memory speed. KVM guests run the host's CPU as it is.
vm_accel_args() { # tcg | kvm | auto
  local accel=$1
  if [ "$accel" = auto ]; then
    if [ -w /dev/kvm ] && { exec 9<>/dev/kvm; } 2>/dev/null; then accel=kvm; else accel=tcg; fi
    exec 9>&- 2>/dev/null || true
  fi
  case "$accel" in
    kvm) ACCEL_ARGS=(-accel kvm -cpu host) GUEST_APPEND= ;;
    tcg) ACCEL_ARGS=(-accel tcg -cpu max)
         GUEST_APPEND=${SHARENET_TCG_APPEND-clearcpuid=erms,rep_good} ;;
    *) return 1 ;;
  esac
}

# The QEMU options, one reason each:
#   no_timer_check    (kernel) Linux checks at boot that the IO-APIC timer
#                     ticks within a delay loop calibrated moments before;
#                     on a loaded host TCG misses that window now and then
#                     and the guest panics ("IO-APIC + timer doesn't work!",
#                     seen once in scripts/vm-tests); virtual machines'
#                     timers are known good, so skip the check
#   -nodefaults       no default NIC, VGA, monitor or serial: only what we name
#   -display none     nothing on stdio; the console goes to a file
#   memory-backend-memfd,share=on + -numa node,memdev=
#                     guest RAM is a shareable memfd: vhost-user needs it
vm_qemu_base() { # NAME IP MAC CMD SERIAL MEM
  local name=$1 ip=$2 cmd=$4 serial=$5 mem=$6
  Q=(qemu-system-x86_64 -name "$name" "${ACCEL_ARGS[@]}"
     -m "${mem}M" -object "memory-backend-memfd,id=mem,size=${mem}M,share=on"
     -numa node,memdev=mem
     -nodefaults -display none
     -serial "file:$serial"
     -kernel "$SHARENET_KERNEL" -initrd "$SHARENET_INITRD"
     -append "console=ttyS0 quiet panic=-1 no_timer_check${GUEST_APPEND:+ $GUEST_APPEND} sharenet.ip=$ip/24 sharenet.cmd64=$(printf '%s' "$cmd" | base64 -w0)")
}

vm_vhost_nic() { # SOCK MAC [MTU]
  Q+=(-chardev "socket,id=c0,path=$1,reconnect=1"
      -netdev vhost-user,id=n0,chardev=c0
      -device "virtio-net-pci,netdev=n0,mac=$2,vectors=0${3:+,host_mtu=$3}")
}

wait_for() { # FILE PATTERN SECS
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

until_ping() { # IP TRIES
  echo "i=0; until ping -c 1 -W 1 $1 >/dev/null 2>&1; do i=\$((i+1)); [ \$i -ge $2 ] && break; done"
}

serial_field() { # FILE MARKER KEY
  tr -d '\r' <"$1" | sed -n "s/^$2 .*\\b$3=\\([^ ]*\\).*/\\1/p" | tail -n 1
}
