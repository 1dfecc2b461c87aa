// A move-only file descriptor whose explicit close() reports errors.
#pragma once

#include <unistd.h>

#include <utility>

#include "blk/result.h"

namespace blk {

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    ~Fd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }

    // Closes and reports the error close() returned (the last chance to see a failed write).
    Status close() {
        if (fd_ < 0) return {};
        int fd = std::exchange(fd_, -1);
        if (::close(fd) != 0) return errno_error(errno, "close");
        return {};
    }

private:
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    int fd_ = -1;
};

}  // namespace blk
