"""The seccomp filter of the local sandbox: the system calls a service never needs.

bubblewrap loads it (`--seccomp FD`) just before it runs `setpriv`, so it holds for the
whole of the service's process tree. Refused with EPERM, as Docker's default profile does:

- file handles (`open_by_handle_at` opens any file of a mounted file system, the host's
  root included, from a handle that can be guessed; `name_to_handle_at` makes them);
- namespaces and mounts (`unshare`, `setns`, `mount` and the new mount API, `clone` with a
  namespace flag): a user namespace hands its creator every capability inside it, the
  first step of most container escapes;
- the kernel's own interfaces: modules, `kexec`, `bpf`, `perf_event_open`,
  `userfaultfd`, keyrings, `io_uring`, swap, clock and reboot.

`clone3` answers ENOSYS, so that the C library falls back to `clone`, whose flags a
classic BPF filter can read (those of `clone3` sit in memory it cannot).

The program is classic BPF, as the kernel reads it (`struct sock_filter`, 8 bytes a
line); written out here because it is short and fixed, instead of a libseccomp binding.
"""

from __future__ import annotations

import errno
import platform
import struct

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
_NR, _ARCH, _ARG0 = 0, 4, 16

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K

RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

#: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET and NEWTIME.
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000
CLONE_NAMESPACES |= 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080

#: System calls numbered alike on every architecture (the table shared since 5.1).
_COMMON = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "mount_setattr": 442,
}


def _table(pairs: str) -> dict[str, int]:
    return {name: int(nr) for name, nr in (item.split("=") for item in pairs.split())} | _COMMON


#: (audit architecture, table of numbers) per machine this runs on.
ARCHITECTURES = {
    "x86_64": (
        0xC000003E,
        _table(
            "clone=56 name_to_handle_at=303 open_by_handle_at=304 unshare=272 setns=308 "
            "mount=165 umount2=166 pivot_root=155 chroot=161 keyctl=250 add_key=248 "
            "request_key=249 bpf=321 perf_event_open=298 userfaultfd=323 kexec_load=246 "
            "kexec_file_load=320 init_module=175 finit_module=313 delete_module=176 acct=163 "
            "swapon=167 swapoff=168 reboot=169 syslog=103 settimeofday=164 clock_settime=227 "
            "adjtimex=159 clock_adjtime=305 quotactl=179 lookup_dcookie=212"
        ),
    ),
    "aarch64": (
        0xC00000B7,
        _table(
            "clone=220 name_to_handle_at=264 open_by_handle_at=265 unshare=97 setns=268 "
            "mount=40 umount2=39 pivot_root=41 chroot=51 keyctl=219 add_key=217 "
            "request_key=218 bpf=280 perf_event_open=241 userfaultfd=282 kexec_load=104 "
            "kexec_file_load=294 init_module=105 finit_module=273 delete_module=106 acct=89 "
            "swapon=224 swapoff=225 reboot=142 syslog=116 settimeofday=170 clock_settime=112 "
            "adjtimex=171 clock_adjtime=266 quotactl=60 lookup_dcookie=18"
        ),
    ),
}

#: x86_64's x32 ABI numbers carry this bit; the filter refuses them all.
_X32_BIT = 0x40000000


class UnsupportedMachine(Exception):
    pass


def _line(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes:
    """The filter for `machine` (default: this one), ready for bubblewrap's --seccomp."""
    machine = machine or platform.machine()
    if machine not in ARCHITECTURES:
        raise UnsupportedMachine(f"no seccomp filter for {machine} (only x86_64 and aarch64)")
    arch, numbers = ARCHITECTURES[machine]
    refused = sorted(nr for name, nr in numbers.items() if name not in ("clone", "clone3"))
    # Lines after the checks: [allow, enosys, eperm]; each jump counts the lines it skips.
    checks: list[tuple[int, int, str]] = []  # (opcode, k, target when true)
    checks.append((_JEQ, numbers["clone3"], "enosys"))
    checks += [(_JEQ, nr, "eperm") for nr in refused]
    body = [_line(_LD_W_ABS, _ARCH), _line(_JEQ, arch, jt=1), _line(_RET, RET_ERRNO | errno.EPERM)]
    body.append(_line(_LD_W_ABS, _NR))
    # Lines from here: x32 check, the checks, the clone check (3 lines), allow, enosys, eperm.
    tail = len(checks) + 3
    body.append(_line(_JGE, _X32_BIT, jt=tail + 2) if machine == "x86_64" else _line(_JEQ, 0, 0))
    targets = {"allow": tail, "enosys": tail + 1, "eperm": tail + 2}
    for i, (code, k, target) in enumerate(checks):
        body.append(_line(code, k, jt=targets[target] - i - 1))
    at = len(checks)  # the clone check: is it clone, and does it ask for a namespace?
    body.append(_line(_JEQ, numbers["clone"], jf=2))
    body.append(_line(_LD_W_ABS, _ARG0))
    body.append(_line(_JSET, CLONE_NAMESPACES, jt=targets["eperm"] - at - 3))
    body.append(_line(_RET, RET_ALLOW))
    body.append(_line(_RET, RET_ERRNO | errno.ENOSYS))
    body.append(_line(_RET, RET_ERRNO | errno.EPERM))
    return b"".join(body)
