"""What each CUDA kernel of plugins/ costs a GPU, from ptxas (no GPU needed).

``kernel_resources(cu, arch)`` compiles one ``kernel.cu`` with ``nvcc --resource-usage`` (the flags
of the extension build, plus ``-Werror all-warnings``) and returns, per ``__global__`` function that
nvcc instantiated, what ptxas reports: registers per thread, local memory (the stack frame: arrays
indexed at run time and register spills, both in slow off-chip memory), static shared memory and
barriers. Results are cached under ``build/kernel_resources`` by the hash of the compiler, the flags
and every source the file can include.

These numbers decide whether a launch can happen at all on a GPU, which the CPU emulation
(plugins/emulation) cannot otherwise know: a function launches with at most ``max_threads_per_block``
threads (its ``__launch_bounds__``, read from the PTX, and its registers cap it; more gives "too many
resources requested for launch"), and its static shared memory counts against the same per-block
limit as the dynamic shared memory it is launched with. The emulation registers these figures for
every kernel it compiles and rejects such launches as a GPU would;
tests/plugins/test_kernel_resources.py holds the kernels to a local-memory budget. ``Device`` holds
the architecture's allocation rules, once: ``blocks_per_sm`` gives the theoretical occupancy of a
launch (scripts/kernel_occupancy.py).

``python -m plugins.kernel_resources [--arch sm_90] [--json]`` prints the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from plugins import build_ext
from plugins.build_ext import find_nvcc  # the one lookup of nvcc, shared with the extension build

PLUGINS = Path(__file__).resolve().parent
ARCHS = ("sm_90", "sm_80")  # H100/H200 and A100: the GPUs the issues measure on
# the extension's nvcc flags (build_ext) plus warnings as errors; the compile tests use the same command
NVCC_FLAGS = ("-std=c++17", *build_ext._NVCC_FLAGS, "-Werror", "all-warnings")


class NvccError(RuntimeError):
    """nvcc could not compile a kernel source; the message holds the command and its output."""


@dataclasses.dataclass(frozen=True)
class Device:
    """Per-block and per-SM limits of a GPU architecture and its allocation rules, as CUDA's
    occupancy calculator (cuda_occupancy.h) applies them."""
    arch: str
    registers_per_block: int = 65536
    registers_per_sm: int = 65536
    register_unit: int = 256  # registers are given to a warp in units of 256
    sub_partitions: int = 4   # an SM's register file is split four ways; see registers_per_warp
    max_registers_per_thread: int = 255
    max_threads_per_block: int = 1024
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    shared_per_sm: int = 233472          # 228 KB on sm_90
    shared_optin_per_block: int = 232448  # 227 KB: cudaDevAttrMaxSharedMemoryPerBlockOptin
    shared_reserved_per_block: int = 1024  # the driver keeps 1 KB of each block's shared memory
    shared_unit: int = 128

    def registers_per_warp(self, registers: int) -> int:
        return -(-registers * 32 // self.register_unit) * self.register_unit

    def launchable_warps(self, registers: int) -> int:
        """The most warps a block of a kernel with ``registers`` per thread can launch with: the
        hardware counts a block's warps rounded up to a multiple of the sub-partitions against the
        per-block registers ("too many resources requested for launch" beyond)."""
        if registers > self.max_registers_per_thread:
            return 0
        per_warp = self.registers_per_warp(registers)
        if per_warp == 0:
            return self.max_threads_per_block // 32
        return min(self.max_threads_per_block // 32,
                   self.registers_per_block // (per_warp * self.sub_partitions) * self.sub_partitions)


DEVICES = {"sm_90": Device("sm_90"),
           "sm_80": Device("sm_80", shared_per_sm=167936, shared_optin_per_block=166912)}


@dataclasses.dataclass(frozen=True)
class KernelResources:
    kernel: str  # demangled, e.g. "eventspd::cuda::(anonymous namespace)::block_pass1_tc<true>(...)"
    source: str  # the kernel.cu it comes from, relative to plugins/
    arch: str
    registers: int
    stack_frame: int  # bytes of local memory per thread (spills included)
    spill_stores: int
    spill_loads: int
    static_shared: int  # bytes of __shared__ variables per block
    barriers: int
    launch_bound: int = 0  # __launch_bounds__' maxThreadsPerBlock (the PTX's .maxntid), 0 for none

    @property
    def qualified_name(self) -> str:
        """The function's name with its namespaces and template arguments, without parameters (nor
        the ``void`` c++filt writes before a function template's name: kernels return void)."""
        name = _split_parameters(self.kernel)[0]
        return name[len("void "):] if name.startswith("void ") else name

    @property
    def template_id(self) -> str:
        """``block_pass1_tc<true>``: the name a launch spells, without namespaces."""
        return scopes(self.qualified_name)[-1]

    @property
    def name(self) -> str:
        """``block_pass1_tc``: without template arguments."""
        return self.template_id.split("<", 1)[0]

    def max_threads_per_block(self, device: Device) -> int:
        """cudaFuncGetAttributes' maxThreadsPerBlock: the launch bound and the registers cap it."""
        by_registers = device.launchable_warps(self.registers) * 32
        return min(by_registers, self.launch_bound) if self.launch_bound else by_registers

    def blocks_per_sm(self, device: Device, threads: int, dynamic_shared: int) -> tuple[int, str]:
        """Resident blocks per SM at a launch of ``threads`` and ``dynamic_shared`` bytes, and the
        limit that sets it (theoretical occupancy = blocks * warps / max_warps_per_sm); 0 blocks
        for a launch the GPU refuses."""
        warps = -(-threads // 32)
        per_warp = device.registers_per_warp(self.registers)
        shared = -(-(self.static_shared + dynamic_shared) // device.shared_unit) * device.shared_unit
        if threads > self.max_threads_per_block(device):
            return 0, "registers or launch bounds: cannot launch"
        if self.static_shared + dynamic_shared > device.shared_optin_per_block:
            return 0, "shared memory: cannot launch"
        # registers are allocated per sub-partition: whole warps of each quarter of the register file
        by_registers = (device.registers_per_sm // device.sub_partitions // per_warp * device.sub_partitions // warps
                        if per_warp else device.max_blocks_per_sm)
        limits = {"blocks": device.max_blocks_per_sm,
                  "warps": device.max_warps_per_sm // warps,
                  "registers": by_registers,
                  "shared memory": device.shared_per_sm // (shared + device.shared_reserved_per_block)}
        limiter = min(limits, key=limits.get)
        return limits[limiter], limiter


def scopes(qualified: str) -> list[str]:
    """``a::(anonymous namespace)::f<x::y>`` -> ``["a", "(anonymous namespace)", "f<x::y>"]``."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(qualified):
        if qualified[i] in "<(":
            depth += 1
        elif qualified[i] in ">)":
            depth -= 1
        elif depth == 0 and qualified.startswith("::", i):
            parts.append(qualified[start:i])
            start = i = i + 2
            continue
        i += 1
    return parts + [qualified[start:]]


def _split_parameters(demangled: str) -> tuple[str, str]:
    """``ns::f<a, b>(int, float*)`` -> (``ns::f<a, b>``, ``(int, float*)``); "(anonymous namespace)"
    is a scope, not a parameter list."""
    depth = 0
    for i, c in enumerate(demangled):
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "(" and depth == 0 and not demangled.startswith("(anonymous namespace)", i):
            return demangled[:i], demangled[i:]
    return demangled, ""


def nvcc_command(nvcc: str, cu: Path, arch: str, output: Path, include_dirs: tuple[Path, ...] = ()) -> list[str]:
    """The one nvcc command for a kernel source: the compile tests and the resource figures share it."""
    includes = [a for d in (cu.parent.parent, *include_dirs) for a in ("-I", str(d))]
    return [nvcc, *NVCC_FLAGS, f"-arch={arch}", "--resource-usage", *includes, "-c", str(cu), "-o", str(output)]


_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\w+)'")
_FRAME = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")
_USED = re.compile(r"Used (?P<regs>\d+) registers(?:, used (?P<barriers>\d+) barriers)?(?:, (?P<smem>\d+) bytes smem)?")


_PTX_ENTRY = re.compile(r"\.entry\s+(?P<name>[\w$]+)\s*\((?P<params>[^{]*)\{", re.S)
_MAXNTID = re.compile(r"\.maxntid\s+(\d+)\s*,\s*(\d+)\s*,\s*(\d+)")


def parse_launch_bounds(ptx: str) -> dict[str, int]:
    """Mangled entry name -> its ``.maxntid`` thread count (``__launch_bounds__``), for those that have one."""
    bounds = {}
    for m in _PTX_ENTRY.finditer(ptx):
        if n := _MAXNTID.search(m["params"]):
            bounds[m["name"]] = int(n[1]) * int(n[2]) * int(n[3])
    return bounds


def parse_ptxas(text: str, source: str, launch_bounds: dict[str, int] | None = None) -> list[KernelResources]:
    """The entries of ``nvcc --resource-usage`` output (mangled names, demangled here), with the
    launch bounds of ``parse_launch_bounds`` by mangled name."""
    found, entry, frame = [], None, None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            entry, frame = m, None
        elif entry is not None and (m := _FRAME.search(line)):
            frame = m
        elif entry is not None and (m := _USED.search(line)):
            found.append((entry["name"], entry["arch"], frame, m))
            entry = None
    names = demangle([name for name, *_ in found])
    return [KernelResources(kernel=names[i], source=source, arch=arch, registers=int(used["regs"]),
                            stack_frame=int(frame["stack"]) if frame else 0,
                            spill_stores=int(frame["stores"]) if frame else 0,
                            spill_loads=int(frame["loads"]) if frame else 0,
                            static_shared=int(used["smem"] or 0), barriers=int(used["barriers"] or 0),
                            launch_bound=(launch_bounds or {}).get(mangled, 0))
            for i, (mangled, arch, frame, used) in enumerate(found)]


def demangle(names: list[str]) -> list[str]:
    """C++ names from mangled ones (binutils' c++filt, which nvcc's entry names follow)."""
    if not names:
        return []
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None:
        raise FileNotFoundError("c++filt (binutils) not found: it turns ptxas' mangled kernel names into C++ names")
    out = subprocess.run([cxxfilt], input="\n".join(names) + "\n", capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


_CACHE_SCHEMA = "2"  # bump when KernelResources' fields change


@functools.lru_cache(maxsize=None)
def _nvcc_version(nvcc: str) -> str:
    # once per process: the emulation's load() asks for five files' figures
    return subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout


def _cache_key(nvcc: str, cu: Path, arch: str, include_dirs: tuple[Path, ...]) -> str:
    h = hashlib.sha256(" ".join((_CACHE_SCHEMA, os.path.realpath(nvcc), *NVCC_FLAGS, arch)).encode())
    h.update(_nvcc_version(nvcc).encode())
    h.update(cu.read_bytes())
    for root in (cu.parent.parent, *include_dirs):  # every header the source can include
        for header in sorted(root.rglob("*.h")):
            h.update(str(header.relative_to(root)).encode() + b"\0" + header.read_bytes())
    return h.hexdigest()[:24]


def cache_directory() -> Path:
    return PLUGINS.parent / "build" / "kernel_resources"


def kernel_resources(cu: Path, arch: str = "sm_90", include_dirs: tuple[Path, ...] = (),
                     source: str | None = None) -> list[KernelResources]:
    """ptxas' figures for every kernel of ``cu`` on ``arch``; NvccError when it does not compile,
    FileNotFoundError without nvcc."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    cu = Path(cu).resolve()
    source = source or f"{cu.parent.name}/{cu.name}"
    cached = cache_directory() / f"{_cache_key(nvcc, cu, arch, include_dirs)}.json"
    if cached.is_file():
        return [KernelResources(**row) for row in json.loads(cached.read_text())]
    with tempfile.TemporaryDirectory() as tmp:
        # --keep leaves the PTX, whose .maxntid lines carry the launch bounds ptxas does not report
        cmd = nvcc_command(nvcc, cu, arch, Path(tmp) / "k.o", include_dirs) + ["--keep", "--keep-dir", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            raise NvccError(f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        bounds = {k: v for ptx in Path(tmp).glob("*.ptx") for k, v in parse_launch_bounds(ptx.read_text()).items()}
    found = parse_ptxas(proc.stdout + proc.stderr, source, bounds)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=cached.parent, suffix=".tmp", delete=False) as f:
        f.write(json.dumps([dataclasses.asdict(r) for r in found], indent=1))
    os.replace(f.name, cached)  # never a half-written entry, also with several processes at once
    return found


# One line of the CPU emulation's launch log, as its one writer (plugins/emulation/runtime.cpp, run())
# prints it: `<launch text> grid=(x,y,z) block=(x,y,z) smem=N[ kernel=<template-id> registers=N static_shared=N]`
_LAUNCH_LINE = re.compile(r"(?P<text>.+?) grid=\((?P<grid>\d+,\d+,\d+)\) block=\((?P<block>\d+,\d+,\d+)\) smem=(?P<smem>\d+)"
                          r"(?: kernel=(?P<kernel>.+?) registers=(?P<regs>\d+) static_shared=(?P<static>\d+))?")


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel launch of the CPU emulation (``emu.launch_log()``)."""
    text: str  # the launched expression as written in kernel.cu, e.g. ``block_pass1_tc<kSharedW, kWarps1>``
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dynamic_shared: int
    kernel: str | None = None  # the instantiation's template-id, where its ptxas figures are registered
    registers: int | None = None
    static_shared: int | None = None

    @property
    def threads(self) -> int:
        return math.prod(self.block)


def parse_launch_log(log: str) -> list[Launch]:
    """Every launch of the log, in order. A line in another format is an error (ValueError), so a
    change of the writer's format cannot silently drop launches from what is counted."""
    launches = []
    for n, line in enumerate(log.splitlines(), 1):
        m = _LAUNCH_LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"launch log line {n} is not in the format of plugins/emulation/runtime.cpp: {line!r}")
        triple = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
        launches.append(Launch(m["text"], triple(m["grid"]), triple(m["block"]), int(m["smem"]), m["kernel"],
                               None if m["regs"] is None else int(m["regs"]),
                               None if m["static"] is None else int(m["static"])))
    return launches


@dataclasses.dataclass(frozen=True)
class LaunchOccupancy:
    """One distinct launch configuration of a kernel and what it gets of an SM."""
    kernel: str  # the template-id, or the launch's text where ptxas' figures were not registered
    grid: tuple[int, int, int]
    threads: int
    dynamic_shared: int
    registers: int | None
    static_shared: int | None
    launches: int  # how many launches in the log had this configuration
    blocks_per_sm: int | None = None
    limiter: str | None = None

    def occupancy(self, device: Device) -> float | None:
        """Theoretical occupancy: resident warps over the SM's maximum."""
        if self.blocks_per_sm is None:
            return None
        return self.blocks_per_sm * -(-self.threads // 32) / device.max_warps_per_sm


def launch_occupancy(log: str, device: Device, resources: dict[str, KernelResources] | None = None) -> list[LaunchOccupancy]:
    """The CPU emulation's launch log (``emu.launch_log()``) as distinct launch configurations with
    their resident blocks per SM on ``device``. Without ``resources`` (template-id ->
    KernelResources of ``device``'s architecture) the log's own figures are used: sm_90's."""
    counts: dict[tuple, int] = {}
    for launch in parse_launch_log(log):
        key = (launch.kernel or launch.text, launch.grid, launch.threads, launch.dynamic_shared, launch.registers,
               launch.static_shared)
        counts[key] = counts.get(key, 0) + 1
    rows = []
    for (kernel, grid, threads, smem, regs, static), n in counts.items():
        if resources is not None:
            r = resources.get(kernel)
        elif regs is not None and device.arch == "sm_90":
            r = KernelResources(kernel, "", device.arch, regs, 0, 0, 0, static, 0)
        else:
            r = None
        blocks, limiter = r.blocks_per_sm(device, threads, smem) if r else (None, None)
        rows.append(LaunchOccupancy(kernel, grid, threads, smem, r.registers if r else None,
                                    r.static_shared if r else None, n, blocks, limiter))
    return rows


def occupancy_table(rows: list[LaunchOccupancy], device: Device) -> str:
    head = (f"{'kernel':44} {'launches':>8} {'grid':>14} {'threads':>7} {'dyn smem':>8} {'regs':>4} "
            f"{'blocks/SM':>9} {'occupancy':>9}  limited by")
    lines = [head, "-" * len(head)]
    for r in rows:
        occ = r.occupancy(device)
        lines.append(f"{r.kernel[:44]:44} {r.launches:>8} {'x'.join(map(str, r.grid)):>14} {r.threads:>7} "
                     f"{r.dynamic_shared:>8} {r.registers if r.registers is not None else '?':>4} "
                     f"{r.blocks_per_sm if r.blocks_per_sm is not None else '?':>9} "
                     f"{f'{occ:.0%}' if occ is not None else '?':>9}  {r.limiter or 'no ptxas figures'}")
    return "\n".join(lines)


def kernel_sources() -> list[Path]:
    return sorted(PLUGINS.glob("*/kernel.cu"))


def _table(rows: list[KernelResources]) -> str:
    head = (f"{'kernel':58} {'arch':6} {'regs':>4} {'local B':>7} {'spill B':>7} {'static smem':>11} "
            f"{'bound':>5} {'max thr':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.template_id[:58]:58} {r.arch:6} {r.registers:>4} {r.stack_frame:>7} "
                     f"{r.spill_stores + r.spill_loads:>7} {r.static_shared:>11} {r.launch_bound or '-':>5} "
                     f"{r.max_threads_per_block(DEVICES[r.arch]):>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugins.kernel_resources", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=ARCHS, help="default: all of " + ", ".join(ARCHS))
    parser.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    args = parser.parse_args(argv)
    try:
        rows = [r for arch in args.arch or ARCHS for cu in kernel_sources() for r in kernel_resources(cu, arch)]
    except (FileNotFoundError, NvccError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps([dataclasses.asdict(r) for r in rows], indent=1) if args.json else _table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
