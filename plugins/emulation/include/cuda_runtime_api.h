// CPU emulation of the CUDA runtime API subset the EventSPD launchers call (plugins/emulation).
// It stands in for the toolkit's header: this folder comes first on the include path of the
// emulation build, so plugins/*/kernel.cu and cuda.cpp compile unchanged against it. "Device"
// memory is host memory; a stream is only a token. A launch that fails records its error for the
// next cudaGetLastError(), like a launch-configuration error of the real runtime; a fault inside
// a kernel is reported the same way (a GPU reports it asynchronously and loses the context).
#pragma once

#include <cstddef>
#include <cstdint>

enum cudaError_t : int {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorMisalignedAddress = 716,
    cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;

struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUevent_st;  // only named by TensorRT's headers (plugin_runtime.cpp)
using cudaEvent_t = CUevent_st*;

enum cudaDeviceAttr : int { cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

namespace emu {
// The emulated device's opt-in shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin);
// an H100/H200's 227 KB unless a test sets another (e.g. an sm_86's 99 KB).
int shared_optin_bytes();
void set_shared_optin_bytes(int bytes);
cudaError_t func_set_max_dynamic_shared(const void* func, int bytes);
cudaError_t occupancy_blocks(int* blocks, const void* func, int threads, size_t dynamic_shared);
}  // namespace emu

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);

template <class T>
cudaError_t cudaFuncSetAttribute(T* func, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
    return emu::func_set_max_dynamic_shared(reinterpret_cast<const void*>(func), value);
}

// CUDA's occupancy calculator for the emulated device (runtime.cpp: sm_90's rules).
template <class T>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, T* func, int threads, size_t dynamic_shared) {
    return emu::occupancy_blocks(blocks, reinterpret_cast<const void*>(func), threads, dynamic_shared);
}
