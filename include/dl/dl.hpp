// dl: tensors, automatic differentiation and deep learning in header-only C++20.
// Include this one header; optional parts (MPI, CUDA) have their own umbrella headers.
#pragma once

#include "dl/core/allocator.hpp"
#include "dl/core/device.hpp"
#include "dl/core/dtype.hpp"
#include "dl/core/error.hpp"
#include "dl/core/parallel.hpp"
#include "dl/core/rng.hpp"
#include "dl/core/shape.hpp"
#include "dl/core/storage.hpp"

#include "dl/ndarray/creation.hpp"
#include "dl/ndarray/ndarray.hpp"
#include "dl/ndarray/print.hpp"

#include "dl/expr/assign.hpp"
#include "dl/expr/evaluator.hpp"
#include "dl/expr/executor.hpp"
#include "dl/expr/expr.hpp"
#include "dl/expr/primitives.hpp"

#include "dl/autograd/checkpoint.hpp"
#include "dl/autograd/engine.hpp"
#include "dl/autograd/gradcheck.hpp"
#include "dl/autograd/record.hpp"

#include "dl/ops/elementwise.hpp"
#include "dl/ops/indexing.hpp"
#include "dl/ops/loss.hpp"
#include "dl/ops/matmul.hpp"
#include "dl/ops/reduce.hpp"
#include "dl/ops/shaping.hpp"
#include "dl/ops/softmax.hpp"

#include "dl/data/dataloader.hpp"
#include "dl/data/dataset.hpp"
#include "dl/data/idx.hpp"
#include "dl/data/mnist.hpp"
#include "dl/data/transforms.hpp"

#include "dl/util/metrics.hpp"
#include "dl/util/metrics_log.hpp"
#include "dl/util/plot.hpp"
#include "dl/util/progress.hpp"
