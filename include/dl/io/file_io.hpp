// Byte-level plumbing shared by the io/ readers and writers.
//
// ByteSource: random-access reads from a file (pread) or from memory, with the total size known
// up front, so a reader can validate a whole header against the size before it allocates anything.
// The in-memory form is what the fuzz targets and tests use.
//
// write_atomically(): writes through data::AtomicFile (temp file in the same folder, fsync,
// rename) and adds what checkpoints need on top: the new file keeps the permissions of the file it
// replaces (a fresh file gets 0666 & ~umask, like fopen), and the folder is fsynced after the
// rename so the new directory entry survives a power cut.
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "dl/core/error.hpp"
#include "dl/data/atomic_file.hpp"

namespace dl::io {

class ByteSource {
 public:
  // Opens a file; `op` names the format in errors ("safetensors", "npy").
  ByteSource(const std::string& path, const char* op) : name_(path) {
    std::error_code ec;
    auto st = std::filesystem::status(path, ec);
    check<IoError>(std::filesystem::exists(st), op, ": file '", path, "' does not exist");
    check<IoError>(!std::filesystem::is_directory(st), op, ": '", path, "' is a directory, not a file");
    // FIFOs and devices have no size to validate headers against (and may block or never end).
    check<IoError>(std::filesystem::is_regular_file(st), op, ": '", path, "' is not a regular file");
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    check<IoError>(fd_ >= 0, op, ": cannot open file '", path, "': ", std::strerror(errno));
    struct stat s {};
    if (::fstat(fd_, &s) != 0) {
      int err = errno;
      ::close(fd_);
      fail<IoError>(op, ": cannot stat '", path, "': ", std::strerror(err));
    }
    size_ = static_cast<uint64_t>(s.st_size);
  }
  // Reads from memory that must outlive the source; `name` stands in for the path in errors.
  ByteSource(const void* data, uint64_t size, std::string name)
      : name_(std::move(name)), mem_(static_cast<const unsigned char*>(data)), size_(size) {}
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;
  ~ByteSource() {
    if (fd_ >= 0) ::close(fd_);
  }

  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }

  // Reads exactly n bytes at `offset` (callers check offset + n <= size() first).
  void read_at(uint64_t offset, void* dst, uint64_t n, const char* op) const {
    check<IoError>(offset <= size_ && n <= size_ - offset, op, ": file '", name_, "': read of ", n, " bytes at offset ",
                   offset, " is past the end (", size_, " bytes)");
    if (n == 0) return;
    if (mem_) {
      std::memcpy(dst, mem_ + offset, n);
      return;
    }
    auto* out = static_cast<unsigned char*>(dst);
    while (n > 0) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(n, uint64_t(1) << 30));
      ssize_t got = ::pread(fd_, out, want, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      check<IoError>(got >= 0, op, ": error reading '", name_, "': ", std::strerror(errno));
      check<IoError>(got > 0, op, ": file '", name_, "' shrank while being read");
      out += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<uint64_t>(got);
    }
  }

 private:
  std::string name_;
  int fd_ = -1;
  const unsigned char* mem_ = nullptr;
  uint64_t size_ = 0;
};

namespace detail {
inline mode_t current_umask() {
  mode_t m = ::umask(0);  // the only portable way to read it; restored at once
  ::umask(m);
  return m;
}
}  // namespace detail

// Writes a file atomically: `write(fd)` gets a descriptor to a temporary file in the destination's
// folder and must write everything (it must not close the descriptor). Readers of `path` see the
// old file or the complete new one, never a mix, even if the process is killed at any point.
template <class Writer>
void write_atomically(const std::string& path, const char* op, Writer&& write) {
  data::AtomicFile file(path, op);
  int fd = file.release_fd();
  struct FdGuard {
    int fd;
    ~FdGuard() { if (fd >= 0) ::close(fd); }
  } guard{fd};
  // mkstemp makes the file 0600: give it the old file's mode, or what fopen would have given it.
  struct stat old {};
  mode_t mode = ::stat(path.c_str(), &old) == 0 ? (old.st_mode & 07777) : (0666 & ~detail::current_umask());
  check<IoError>(::fchmod(fd, mode) == 0, op, ": cannot set permissions of '", file.temp_path(), "': ",
                 std::strerror(errno));
  write(fd);
  guard.fd = -1;
  check<IoError>(::close(fd) == 0, op, ": error closing '", file.temp_path(), "': ", std::strerror(errno));
  file.commit();  // fsync + rename
  // fsync the folder so that the rename itself is durable.
  std::filesystem::path p(path);
  std::string dir = p.has_parent_path() ? p.parent_path().string() : std::string(".");
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // best effort: some file systems refuse fsync on folders; the data is already safe
    ::close(dfd);
  }
}

// Writes all n bytes to fd (retrying short writes); errors name the file.
inline void write_all(int fd, const void* data, uint64_t n, const char* op, const std::string& path) {
  auto* p = static_cast<const unsigned char*>(data);
  while (n > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(n, uint64_t(1) << 30));
    ssize_t put = ::write(fd, p, want);
    if (put < 0 && errno == EINTR) continue;
    check<IoError>(put > 0, op, ": error writing '", path, "': ", std::strerror(errno));
    p += put;
    n -= static_cast<uint64_t>(put);
  }
}

}  // namespace dl::io
