// Helpers shared by the tests/io tests: a private temp folder, raw byte files, the fixture folder,
// and a Python with numpy + safetensors (the reference implementations) for interchange checks.
#pragma once
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"

namespace dl_test_io {

namespace fs = std::filesystem;

using dl_test::TempDir;
using dl_test::read_bytes;
using dl_test::write_bytes;

inline std::string fixture(const std::string& name) { return std::string(DL_SOURCE_DIR) + "/tests/fixtures/" + name; }

inline bool runs_ok(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

// A python3 that can import numpy and safetensors: $DL_PYTHON, the system python3, or a venv in
// /tmp/dl-pyref-venv (created with pip on first use). Empty, with `why` set, when none can be had.
inline std::string reference_python(std::string& why) {
  const char* check = " -c 'import numpy, safetensors'";
  if (const char* env = std::getenv("DL_PYTHON"); env && runs_ok(std::string(env) + check)) return env;
  if (runs_ok(std::string("python3") + check)) return "python3";
  std::string venv = "/tmp/dl-pyref-venv";
  std::string py = venv + "/bin/python";
  if (runs_ok(py + check)) return py;
  if (!runs_ok("python3 -m venv " + venv)) {
    why = "python3 -m venv failed (is python3-venv installed?)";
    return "";
  }
  if (!runs_ok("timeout 600 " + py + " -m pip install -q numpy safetensors")) {
    why = "pip install numpy safetensors failed (no network?)";
    return "";
  }
  if (!runs_ok(py + check)) {
    why = "numpy/safetensors still not importable after pip install";
    return "";
  }
  return py;
}

// Runs a Python snippet; returns its exit status.
inline int run_python(const std::string& python, const std::string& dir, const std::string& code) {
  std::string script = dir + "/check.py";
  write_bytes(script, code);
  return std::system((python + " " + script).c_str());
}

}  // namespace dl_test_io
