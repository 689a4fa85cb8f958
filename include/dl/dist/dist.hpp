// dl/dist umbrella: the MPI-based distributed layer (runtime and topology, collectives, KVStore,
// DataParallel). Kept out of dl/dl.hpp because it needs <mpi.h> and linking with MPI; include this
// header (or the narrow ones) and build with mpicxx or Meson's dependency('mpi').
#pragma once

#include "dl/dist/runtime.hpp"
#include "dl/dist/collectives.hpp"
#include "dl/dist/kvstore.hpp"
#include "dl/dist/data_parallel.hpp"
