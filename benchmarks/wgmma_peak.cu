// b1 tensor-core peak of a Hopper card through wgmma (BGMMA), for benchmarks/gpu_profile.sh:
// the rate bench_gpu.py's register-loop probe measures for mma.sync m16n8k256 (BMMA), here for
// wgmma.mma_async m64n128k256 .and.popc with both operands in shared memory. Values and
// layout do not matter for the rate: the descriptors point at random bits (no swizzle,
// 8-row x 16-byte core matrices). Needs sm_90a:
//   nvcc -O3 -arch=sm_90a -o /tmp/wgmma_peak benchmarks/wgmma_peak.cu && /tmp/wgmma_peak
#include <cstdint>
#include <cstdio>
#include <cuda_runtime.h>

constexpr int kIters = 4096, kPerGroup = 4, kThreads = 256;  // 2 warpgroups per block

__device__ inline uint64_t descriptor(const void* smem) {  // K-major, no swizzle
  const uint64_t addr = (uint64_t)__cvta_generic_to_shared(smem);
  const uint64_t lbo = 128, sbo = 256;  // next core matrix along K / along M or N
  return ((addr & 0x3ffff) >> 4) | ((lbo >> 4) << 16) | ((sbo >> 4) << 32);
}

__global__ void __launch_bounds__(kThreads) wgmma_peak(int* sink) {
  __shared__ __align__(128) uint32_t smem[8192];  // A: 2 KiB, B: 4 KiB used
  for (int i = threadIdx.x; i < 8192; i += kThreads) smem[i] = (i * 2654435761u) ^ (blockIdx.x * 40503u);
  __syncthreads();
  const uint64_t da = descriptor(smem), db = descriptor(smem + 1024);
  int d[64] = {};
  for (int it = 0; it < kIters; ++it) {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int k = 0; k < kPerGroup; ++k)
      asm volatile("wgmma.mma_async.sync.aligned.m64n128k256.s32.b1.b1.and.popc {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, 1;\n"
                   : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
                   : "l"(da), "l"(db));
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  }
  int s = 0;
#pragma unroll
  for (int i = 0; i < 64; ++i) s += d[i];
  if (s == 0x7fffffff) *sink = s;  // keeps the loop
}

int main() {
  int sms = 0, clock_khz = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  int* sink = nullptr;
  cudaMalloc(&sink, sizeof(int));
  cudaEvent_t start, end;
  cudaEventCreate(&start);
  cudaEventCreate(&end);
  for (int blocks_per_sm : {1, 2, 4}) {
    const int blocks = sms * blocks_per_sm;
    wgmma_peak<<<blocks, kThreads>>>(sink);  // warm-up
    float best = 1e30f;
    for (int r = 0; r < 5; ++r) {
      cudaEventRecord(start);
      wgmma_peak<<<blocks, kThreads>>>(sink);
      cudaEventRecord(end);
      cudaEventSynchronize(end);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, end);
      best = ms < best ? ms : best;
    }
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) {
      printf("wgmma_peak: %s\n", cudaGetErrorString(err));
      return 1;
    }
    const double pairs = (double)blocks * (kThreads / 128) * kIters * kPerGroup * 64.0 * 128 * 256;
    printf("peak b1 wgmma and (m64n128k256, %d blocks/SM): %.3f ms, %.4g bit pairs/s (%d SMs, max clock %d MHz)\n",
           blocks_per_sm, best, pairs / (best * 1e-3), sms, clock_khz / 1000);
  }
  return 0;
}
