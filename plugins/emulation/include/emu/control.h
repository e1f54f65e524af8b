// The CPU emulation's controls for its Python front end (plugins/emulation/module.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace emu {
// A fresh emulated device: no kernel attributes, no pending error, an empty launch log; the
// opt-in shared memory per block (<= 0: an H100/H200's 227 KB) and the fiber interleaving
// (0: threads in order; else a seed for another order in every scheduling round).
void reset(int shared_optin_bytes, uint64_t schedule_seed);
// One line per launch since reset(): "<kernel> grid=(x,y,z) block=(x,y,z) smem=<bytes>", followed, for a
// kernel with registered ptxas figures, by " kernel=<template-id> registers=<n> static_shared=<bytes>".
std::string launch_log();
// One line per kernel whose ptxas figures the library registered (none when it was built without
// nvcc): "<template-id> registers=<n> static_shared=<bytes> local=<bytes> launch_bound=<n> max_threads=<n>".
std::string kernel_resources();
// Resident blocks per SM of the registered kernel named `kernel` (its template-id) at `threads`
// and `dynamic_shared` bytes, with its dynamic shared memory attribute set to that size first, as
// the launchers do: cudaOccupancyMaxActiveBlocksPerMultiprocessor's answer; 0 where it cannot
// launch, -1 for no (or more than one) kernel of that name.
int occupancy_of(const std::string& kernel, int threads, int dynamic_shared);
// Fills memory with the bytes of 0x7FA57FA5, as fresh shared memory starts: NaN as float, half and
// bfloat16, a huge index as int32 / int64 (a huge finite number as double).
void poison(void* memory, size_t bytes);
}  // namespace emu
