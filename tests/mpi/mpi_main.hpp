// doctest main for the MPI suites: every rank runs every test case and asserts; rank 0 prints the
// summary (other ranks print only their failures, prefixed by doctest with the file and line), and
// the exit code is non-zero on every rank when any rank failed, so mpirun reports the failure.
// Include it from exactly one .cpp per test program, after defining nothing.
#pragma once
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "dl/dist/runtime.hpp"

int main(int argc, char** argv) {
  dl::dist::Environment env(argc, argv);
  const int rank = env.rank();
  doctest::Context ctx;
  ctx.setOption("no-colors", true);  // several ranks share one log: escape codes only clutter it
  ctx.applyCommandLine(argc, argv);
  if (rank != 0) ctx.setOption("minimal", true);
  int failed = ctx.run();
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0)
    std::printf("[mpi] %s: %d ranks, %s\n", argv[0], env.size(), any ? "FAILED on some rank" : "all ranks passed");
  return any ? 1 : 0;
}
