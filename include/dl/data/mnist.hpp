// MNIST and Fashion-MNIST loaders (the two share the file format and names). load_mnist() reads
// the IDX image and label files of one split from a directory and returns images as float32
// (N, 1, 28, 28) scaled to [0, 1] and labels as int64 (N). Each file may be gzip-compressed
// (name + ".gz", as Debian's dataset-fashion-mnist installs them) or raw.
//
//   auto train = dl::data::load_mnist(dl::data::kFashionMnistDir, dl::data::Split::train);
//   train.images.shape() == (60000, 1, 28, 28); train.labels.shape() == (60000,)
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "dl/core/error.hpp"
#include "dl/core/parallel.hpp"
#include "dl/data/idx.hpp"
#include "dl/ndarray/ndarray.hpp"

namespace dl::data {

// Where `apt-get install dataset-fashion-mnist` puts the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

enum class Split { train, test };

struct MnistData {
  NDArray<float> images;   // (N, 1, 28, 28), values in [0, 1]
  NDArray<int64_t> labels; // (N,), values in [0, 10)
};

namespace detail {
inline std::string mnist_install_hint() {
  return std::string("; install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (files go to ") +
         kFashionMnistDir + ") or pass --data-dir DIR pointing at a directory with the IDX files";
}

// "<dir>/<stem>.gz" if present, else "<dir>/<stem>"; IoError with the install hint if neither.
inline std::string find_mnist_file(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const std::string& name : {stem + ".gz", stem}) {
    fs::path p = fs::path(dir) / name;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  fail<IoError>("mnist: file '", (fs::path(dir) / (stem + ".gz")).string(), "' (or '", stem, "') not found in '",
                dir, "'", mnist_install_hint());
}
}  // namespace detail

inline MnistData load_mnist(const std::string& dir, Split split) {
  std::error_code ec;
  check<IoError>(std::filesystem::is_directory(dir, ec), "mnist: data directory '", dir, "' does not exist",
                 detail::mnist_install_hint());
  std::string prefix = split == Split::train ? "train" : "t10k";
  std::string image_path = detail::find_mnist_file(dir, prefix + "-images-idx3-ubyte");
  std::string label_path = detail::find_mnist_file(dir, prefix + "-labels-idx1-ubyte");

  // Labels first: the small file catches a wrong directory before the big read.
  IdxArray labels = read_idx(label_path);
  check<IoError>(labels.dims.size() == 1, "mnist: label file '", label_path, "' has shape ", labels.data.shape(),
                 ", expected one dimension");
  IdxArray images = read_idx(image_path);
  check<IoError>(images.dims.size() == 3 && images.dims[1] == 28 && images.dims[2] == 28, "mnist: image file '",
                 image_path, "' has shape ", images.data.shape(), ", expected (N, 28, 28)");
  int64_t n = images.dims[0];
  check<IoError>(labels.dims[0] == n, "mnist: '", image_path, "' holds ", n, " images but '", label_path, "' holds ",
                 labels.dims[0], " labels");

  MnistData out{NDArray<float>(Shape{n, 1, 28, 28}), NDArray<int64_t>(Shape{n})};
  const uint8_t* lab = n ? labels.data.data() : nullptr;
  int64_t* lab_out = n ? out.labels.data() : nullptr;
  for (int64_t i = 0; i < n; ++i) {
    check<IoError>(lab[i] < 10, "mnist: label file '", label_path, "' has label ", int(lab[i]), " at index ", i,
                   "; labels must be 0 to 9");
    lab_out[i] = lab[i];
  }
  const uint8_t* px = n ? images.data.data() : nullptr;
  float* px_out = n ? out.images.data() : nullptr;
  parallel_for(0, n * 784, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) px_out[i] = static_cast<float>(px[i]) / 255.0f;  // exact 0 and 1 at the ends
  });
  return out;
}

}  // namespace dl::data
