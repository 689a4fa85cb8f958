// The CUDA backend's umbrella header: include it (after dl/dl.hpp) in a .cu file compiled by nvcc
// with -DDL_WITH_CUDA. NDArray, elementwise expressions, autograd and matmul already dispatch to
// the GPU through dl/dl.hpp; this adds the explicit API (RNG fills, reductions, NCCL, memory stats).
// Ran on an H100 in session 5 (tests/gpu: 18 cases pass); what exists and what does not: docs/gpu.md.
#pragma once
#include "dl/backend/cuda/allocator.hpp"
#include "dl/backend/cuda/copy.hpp"
#include "dl/backend/cuda/cudnn.hpp"
#include "dl/backend/cuda/elementwise.hpp"
#include "dl/backend/cuda/gemm.hpp"
#include "dl/backend/cuda/nccl.hpp"
#include "dl/backend/cuda/philox.hpp"
#include "dl/backend/cuda/reduce.hpp"
#include "dl/backend/cuda/runtime.hpp"
