"""Run a command as if this CPU were of an older class, to measure a CPU class one has no machine of:
``avx2`` (AVX2, no AVX-512/AVX-VNNI/AMX: AMD Zen 2/3, Haswell-Skylake client) or ``avx512-vnni``
(AVX-512 with VNNI but no BF16/AMX: Cascade Lake, Ice Lake Xeons).

    python benchmarks/emulate_cpu.py avx2 -- python benchmarks/bench_peers.py --only rag-rerank

Environment variables hold back parts of torch, MKL and oneDNN (``ATEN_CPU_CAPABILITY``,
``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``), but ONNX Runtime, OpenVINO and some of torch's own
choices (its int8 matmul) read the CPU's features with the ``cpuid`` instruction and obey no variable.
So this script copies those three packages, rewrites each of their ``cpuid`` instructions into ``ud2``
(same length; found with objdump), and preloads a small library whose SIGILL handler answers for them:
the real ``cpuid`` with the class's missing features cleared. Only the rewritten places are answered
(checked by library and offset); any other ``ud2`` fails as before. The copies go first on
``PYTHONPATH`` (other venvs must hold the same versions), and ``RAG_RERANK_CACHE`` is a fresh folder:
auto's cached verdicts name the real CPU. Under pytest add ``-p no:faulthandler`` (its SIGILL handler
would replace the trap's). The cores stay what they are: ratios between rows mean more
than absolute rates. Needs gcc and objdump (binutils), Linux x86-64, ~1 GB of temporary disk and ~2
minutes to prepare.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = ("torch", "onnxruntime", "openvino")
CPUID, UD2 = b"\x0f\xa2", b"\x0f\x0b"


def bits(*positions: int) -> int:
    return sum(1 << p for p in positions)


# What each class lacks, as cpuid bits to clear: leaf 7.0 ebx, ecx, edx; leaf 7.1 eax, edx.
AMX_FP16_VP2INTERSECT = bits(8, 22, 23, 24, 25)  # 7.0 edx: VP2INTERSECT, AMX-BF16, AVX512-FP16, AMX-TILE, AMX-INT8
NO_BF16 = bits(4, 5, 23)  # 7.1 eax: AVX-VNNI, AVX512-BF16, AVX-IFMA
CLASSES = {
    "avx2": {
        "clear": (
            bits(16, 17, 21, 26, 27, 28, 30, 31),  # AVX-512 F, DQ, IFMA, PF, ER, CD, BW, VL
            bits(1, 6, 11, 12, 14),  # AVX-512 VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ
            bits(2, 3) | AMX_FP16_VP2INTERSECT,  # + AVX-512 4VNNIW, 4FMAPS
            NO_BF16,
            bits(4, 5),  # AVX-VNNI-INT8, AVX-NE-CONVERT
        ),
        "variables": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    },
    "avx512-vnni": {
        "clear": (0, 0, AMX_FP16_VP2INTERSECT, NO_BF16, bits(4, 5)),
        "variables": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    },
}

TRAP = r"""
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

static char names[8192][64];
static unsigned long offsets[8192];
static int count;
static unsigned clear[5];  /* bits to clear: leaf 7.0 ebx, ecx, edx; leaf 7.1 eax, edx */

static int rewritten(const char *file, unsigned long offset) {
    const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    for (int i = 0; i < count; i++)
        if (offsets[i] == offset && strcmp(names[i], base) == 0) return 1;
    return 0;
}

static void on_sigill(int sig, siginfo_t *info, void *context) {
    greg_t *r = ((ucontext_t *)context)->uc_mcontext.gregs;
    unsigned char *ip = (unsigned char *)r[REG_RIP];
    Dl_info where;
    if (!dladdr(ip, &where) || !rewritten(where.dli_fname, (unsigned long)(ip - (unsigned char *)where.dli_fbase))) {
        signal(SIGILL, SIG_DFL);  /* a real ud2: it runs again and fails as it would have */
        return;
    }
    unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX], a, b, c, d;
    __cpuid_count(leaf, sub, a, b, c, d);
    if (leaf == 7 && sub == 0) {
        b &= ~clear[0]; c &= ~clear[1]; d &= ~clear[2];
    } else if (leaf == 7 && sub == 1) {
        a &= ~clear[3]; d &= ~clear[4];
    }
    r[REG_RAX] = a; r[REG_RBX] = b; r[REG_RCX] = c; r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

__attribute__((constructor)) static void install(void) {
    const char *list = getenv("CPUID_TRAP_SITES"), *masks = getenv("CPUID_TRAP_CLEAR");
    FILE *f = list ? fopen(list, "r") : NULL;
    if (!f || !masks || sscanf(masks, "%x %x %x %x %x", &clear[0], &clear[1], &clear[2], &clear[3], &clear[4]) != 5)
        return;
    while (count < 8192 && fscanf(f, "%63s %lx", names[count], &offsets[count]) == 2) count++;
    fclose(f);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigill;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGILL, &action, NULL);
}
"""


def load_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(virtual address, file offset, size) of each PT_LOAD segment of an ELF64 file."""
    (table,) = struct.unpack_from("<Q", data, 0x20)
    entry_size, entries = struct.unpack_from("<HH", data, 0x36)
    segments = []
    for i in range(entries):
        kind, _, offset, address, _, size = struct.unpack_from("<IIQQQQ", data, table + i * entry_size)
        if kind == 1:
            segments.append((address, offset, size))
    return segments


def rewrite_cpuid(library: Path) -> list[int]:
    """Turn each ``cpuid`` instruction of ``library`` into ``ud2``; returns their virtual addresses."""
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True, check=True
    )
    addresses = [int(m, 16) for m in re.findall(r"^\s*([0-9a-f]+):\s+cpuid\b", listing.stdout, re.MULTILINE)]
    if not addresses:
        return []
    data = bytearray(library.read_bytes())
    segments = load_segments(data)
    for address in addresses:
        offset = next(o + address - a for a, o, size in segments if a <= address < a + size)
        if data[offset : offset + 2] != CPUID:
            raise SystemExit(f"{library.name}: no cpuid at {address:#x}; objdump and the file disagree")
        data[offset : offset + 2] = UD2
    library.write_bytes(data)
    return addresses


def prepare(folder: Path, cpu_class: str) -> dict[str, str]:
    """Patched copies of PACKAGES and the trap library under ``folder``; the environment that runs
    them as ``cpu_class``."""
    for tool in ("gcc", "objdump"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install it (Debian: apt install gcc binutils)")
    trap = folder / "cpuid_trap.so"
    (folder / "cpuid_trap.c").write_text(TRAP)
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(trap), str(folder / "cpuid_trap.c"), "-ldl"], check=True
    )
    sites = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            print(f"emulate_cpu: {package} not installed, left out", file=sys.stderr)
            continue
        copy = folder / "site" / package
        shutil.copytree(Path(spec.origin).parent, copy, symlinks=True)
        for library in sorted(p for p in copy.rglob("*.so*") if p.is_file() and not p.is_symlink()):
            sites += [f"{library.name} {address:x}\n" for address in rewrite_cpuid(library)]
        print(f"emulate_cpu: {package} copied, {len(sites)} cpuid instructions rewritten so far", file=sys.stderr)
    (folder / "sites.txt").write_text("".join(sites))
    emulated = CLASSES[cpu_class]
    return {
        **emulated["variables"],
        "LD_PRELOAD": " ".join(filter(None, [str(trap), os.environ.get("LD_PRELOAD", "")])),
        "CPUID_TRAP_SITES": str(folder / "sites.txt"),
        "CPUID_TRAP_CLEAR": " ".join(f"{mask:x}" for mask in emulated["clear"]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(folder / "site"), os.environ.get("PYTHONPATH", "")])),
        "RAG_RERANK_EMULATED_CPU": f"{cpu_class} (emulated by benchmarks/emulate_cpu.py)",
        # auto's cached verdicts are keyed by /proc/cpuinfo, which still names the real CPU
        "RAG_RERANK_CACHE": str(folder / "cache"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cpu_class", choices=sorted(CLASSES), help="the CPU class to run as")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run (after --)")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    with tempfile.TemporaryDirectory(prefix="emulate-cpu-") as folder:
        environment = {**os.environ, **prepare(Path(folder), args.cpu_class)}
        raise SystemExit(subprocess.run(command, env=environment, check=False).returncode)


if __name__ == "__main__":
    main()
