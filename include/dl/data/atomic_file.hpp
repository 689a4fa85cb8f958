// AtomicFile: writes a file so that readers see either the old file or the complete new one,
// never a half-written one. The data goes to a unique temporary file in the destination's
// directory (same file system, so rename() is atomic); commit() syncs it and renames it over the
// destination. A writer that throws before commit() leaves the destination untouched, and the
// destructor removes the temporary file.
//
//   dl::data::AtomicFile f("out.idx", "idx");
//   std::FILE* fp = f.open_stdio();        // or gzdopen(f.release_fd(), "wb") for gzip
//   ... fwrite ...; std::fclose(fp);
//   f.commit();
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "dl/core/error.hpp"

namespace dl::data {

class AtomicFile {
 public:
  // `op` names the caller in error messages ("idx", "metrics log", ...).
  AtomicFile(std::string path, std::string op) : path_(std::move(path)), op_(std::move(op)) {
    check<IoError>(!path_.empty(), op_, ": empty output path");
    std::filesystem::path p(path_);
    std::string dir = p.has_parent_path() ? p.parent_path().string() : std::string(".");
    std::error_code ec;
    check<IoError>(std::filesystem::is_directory(dir, ec), op_, ": cannot write '", path_, "': directory '", dir,
                   "' does not exist");
    temp_ = (std::filesystem::path(dir) / ("." + p.filename().string() + ".tmp.XXXXXX")).string();
    std::vector<char> name(temp_.begin(), temp_.end());
    name.push_back('\0');
    fd_ = ::mkstemp(name.data());
    check<IoError>(fd_ >= 0, op_, ": cannot create a temporary file next to '", path_, "': ", std::strerror(errno));
    temp_ = name.data();
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_.c_str());
  }

  const std::string& temp_path() const { return temp_; }
  const std::string& path() const { return path_; }

  // Hands the descriptor to a stream (fdopen/gzdopen) that will close it.
  int release_fd() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  std::FILE* open_stdio() {
    std::FILE* fp = ::fdopen(fd_, "wb");
    check<IoError>(fp != nullptr, op_, ": cannot open '", temp_, "' for writing: ", std::strerror(errno));
    fd_ = -1;
    return fp;
  }

  // The writer must have closed its stream. Syncs the data, then renames over the destination.
  void commit() {
    if (fd_ >= 0) { ::close(fd_); fd_ = -1; }
    int fd = ::open(temp_.c_str(), O_RDONLY);
    check<IoError>(fd >= 0, op_, ": cannot reopen '", temp_, "': ", std::strerror(errno));
    bool synced = ::fsync(fd) == 0;  // data on disk before the rename makes it visible
    int err = errno;
    ::close(fd);
    check<IoError>(synced, op_, ": cannot sync '", temp_, "': ", std::strerror(err));
    check<IoError>(::rename(temp_.c_str(), path_.c_str()) == 0, op_, ": cannot rename '", temp_, "' to '", path_,
                   "': ", std::strerror(errno));
    committed_ = true;
  }

 private:
  std::string path_, op_, temp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace dl::data
