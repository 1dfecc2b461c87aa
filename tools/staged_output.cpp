#include "staged_output.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

namespace blkimg {

namespace {

bool write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

int open_temp() {
    const char* dir = std::getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    int fd = ::open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    // File systems without O_TMPFILE: a named file, unlinked at once.
    std::string name = std::string(dir) + "/blkimg-out.XXXXXX";
    fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(name.c_str());
    return fd;
}

}  // namespace

StagedOutput::~StagedOutput() {
    if (fd_ >= 0) ::close(fd_);
}

bool StagedOutput::spill() {
    if (fd_ < 0) {
        fd_ = open_temp();
        if (fd_ < 0) return false;  // stays in memory
    }
    if (!write_all(fd_, mem_.data(), mem_.size())) {
        failed_ = true;
        error_ = errno;
    }
    mem_.clear();
    return true;
}

void StagedOutput::append(std::string_view text) {
    if (failed_) return;
    mem_.append(text);
    if (mem_.size() >= kMemoryLimit) spill();
}

bool StagedOutput::commit() {
    if (failed_) {
        errno = error_;
        return false;
    }
    std::fflush(stdout);
    const int out = ::fileno(stdout);
    if (fd_ >= 0) {
        if (::lseek(fd_, 0, SEEK_SET) < 0) return false;
        std::vector<char> buf(256 << 10);
        for (;;) {
            const ssize_t r = ::read(fd_, buf.data(), buf.size());
            if (r < 0) {
                if (errno == EINTR) continue;
                return false;
            }
            if (r == 0) break;
            if (!write_all(out, buf.data(), static_cast<size_t>(r))) return false;
        }
    }
    const bool ok = write_all(out, mem_.data(), mem_.size());
    mem_.clear();
    return ok;
}

}  // namespace blkimg
