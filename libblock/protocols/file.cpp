// The `file` protocol: a host file or block device, with SEEK_DATA/SEEK_HOLE block status.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "blk/driver.h"
#include "blk/fd.h"

namespace blk {

namespace {

// QEMU's image locking: one byte per permission at kLockPermBase + bit (held while the
// permission is used) and at kLockSharedBase + bit (held while it is NOT shared with others),
// as open-file-description read locks. Honouring them keeps us from reading an image a VM
// is writing, and keeps a VM from writing an image we are working on.
constexpr uint64_t kSectorSize = 512;
constexpr off_t kLockPermBase = 100;
constexpr off_t kLockSharedBase = 200;
enum LockPerm : unsigned { kPermConsistentRead = 0, kPermWrite = 1, kPermWriteUnchanged = 2, kPermResize = 3 };
constexpr const char* kPermNames[] = {"consistent read", "write", "write unchanged", "resize"};

struct flock one_byte(short type, off_t byte) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    return fl;
}

Status lock_byte(int fd, off_t byte) {
    struct flock fl = one_byte(F_RDLCK, byte);
    if (fcntl(fd, F_OFD_SETLK, &fl) != 0) return errno_error(errno, "lock");
    return {};
}

// True if another open file description holds a lock on `byte`.
bool byte_locked_by_other(int fd, off_t byte) {
    struct flock fl = one_byte(F_WRLCK, byte);
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return false;
    return fl.l_type != F_UNLCK;
}

Status take_qemu_locks(int fd, const std::string& path, bool writable) {
    std::vector<unsigned> perms = {kPermConsistentRead};
    if (writable) {
        perms.push_back(kPermWrite);
        perms.push_back(kPermResize);
    }
    const unsigned unshared[] = {kPermWrite, kPermResize};
    for (unsigned p : perms) BLK_TRY(lock_byte(fd, kLockPermBase + p).context(path));
    for (unsigned p : unshared) BLK_TRY(lock_byte(fd, kLockSharedBase + p).context(path));
    for (unsigned p : perms) {
        if (byte_locked_by_other(fd, kLockSharedBase + p)) {
            return make_error(EAGAIN, std::string("Failed to get \"") + kPermNames[p] +
                                          "\" lock: is another process using the image [" + path + "]? (-U skips the check)");
        }
    }
    for (unsigned p : unshared) {
        if (byte_locked_by_other(fd, kLockPermBase + p)) {
            return make_error(EAGAIN, std::string("Failed to get shared \"") + kPermNames[p] +
                                          "\" lock: is another process using the image [" + path + "]? (-U skips the check)");
        }
    }
    return {};
}

class FileNode final : public Node {
public:
    FileNode(Json opts, std::string path, Fd fd, uint64_t size, bool read_only)
        : Node("file", std::move(opts)), path_(std::move(path)), fd_(std::move(fd)) {
        size_ = size;
        read_only_ = read_only;
    }

    bool is_protocol() const override { return true; }
    std::string exact_filename() const override { return path_; }
    Json format_specific() const override { return Json{{"type", "file"}, {"data", Json::object()}}; }

    Result<uint64_t> allocated_file_size() const override {
        struct stat st;
        if (fstat(fd_.get(), &st) != 0) return errno_error(errno, path_);
        return static_cast<uint64_t>(st.st_blocks) * 512;
    }

protected:
    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        size_t done = 0;
        while (done < buf.size()) {
            ssize_t n = ::pread(fd_.get(), buf.data() + done, buf.size() - done, static_cast<off_t>(off + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                return errno_error(errno, path_ + ": read at byte " + std::to_string(off + done));
            }
            if (n == 0) {
                // Past the end of the host file reads as zeroes.
                std::memset(buf.data() + done, 0, buf.size() - done);
                break;
            }
            done += static_cast<size_t>(n);
        }
        return {};
    }

    Status do_write(uint64_t off, std::span<const std::byte> buf) override {
        size_t done = 0;
        while (done < buf.size()) {
            ssize_t n = ::pwrite(fd_.get(), buf.data() + done, buf.size() - done, static_cast<off_t>(off + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                return errno_error(errno, path_ + ": write at byte " + std::to_string(off + done));
            }
            done += static_cast<size_t>(n);
        }
        return {};
    }

    Status do_flush() override {
        if (::fdatasync(fd_.get()) != 0) return errno_error(errno, path_ + ": flush");
        return {};
    }

    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override {
        BlockStatus st;
        st.offset = off;
        st.file = this;
        st.bytes = bytes;
        st.flags = kStatusData | kStatusOffsetValid;
        // A walk asks where the hole it was just told about ends: that offset is known data,
        // so skip asking again (a third fewer lseeks on a map). Only a hint for read-only files.
        off_t data;
        {
            std::lock_guard lock(hint_mu_);
            data = read_only_ && off == data_hint_ ? static_cast<off_t>(off) : ::lseek(fd_.get(), static_cast<off_t>(off), SEEK_DATA);
        }
        if (data < 0) {
            if (errno == ENXIO) {
                st.flags = kStatusZero | kStatusOffsetValid;  // a hole up to the end
            }
            return st;  // other errors: report data, the safe answer
        }
        if (static_cast<uint64_t>(data) > off) {
            st.bytes = std::min<uint64_t>(bytes, static_cast<uint64_t>(data) - off);
            st.flags = kStatusZero | kStatusOffsetValid;
            std::lock_guard lock(hint_mu_);
            data_hint_ = static_cast<uint64_t>(data);
            return st;
        }
        off_t hole = ::lseek(fd_.get(), static_cast<off_t>(off), SEEK_HOLE);
        if (hole > data) st.bytes = std::min<uint64_t>(bytes, static_cast<uint64_t>(hole) - off);
        return st;
    }

private:
    std::string path_;
    Fd fd_;
    std::mutex hint_mu_;
    uint64_t data_hint_ = UINT64_MAX;  // an offset SEEK_DATA last returned
};

Result<std::shared_ptr<Node>> open_file(OpenContext& ctx, const Json& opts) {
    BLK_TRY_ASSIGN(auto fname, opt_string(opts, "filename"));
    if (!fname || fname->empty()) return make_error(EINVAL, "Parameter 'filename' is required");
    std::string path = *fname;
    if (path.rfind("file:", 0) == 0) path = path.substr(5);
    bool ro = ctx.flags().read_only;
    BLK_TRY_ASSIGN(auto ro_opt, opt_bool(opts, "read-only"));
    if (ro_opt) ro = ro || *ro_opt;
    int fd = ::open(path.c_str(), (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) return errno_error(errno, "Could not open '" + path + "'");
    Fd f(fd);
    struct stat st;
    if (fstat(f.get(), &st) != 0) return errno_error(errno, "Could not stat '" + path + "'");
    BLK_TRY_ASSIGN(auto locking, opt_string(opts, "locking"));
    BLK_TRY_ASSIGN(auto share, opt_bool(opts, "force-share"));
    bool force_share = ctx.flags().force_share || share.value_or(false);
    if (!force_share && locking.value_or("auto") != "off" && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        BLK_TRY(take_qemu_locks(f.get(), path, !ro).context("Could not open '" + path + "'"));
    }
    uint64_t size = 0;
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(f.get(), BLKGETSIZE64, &size) != 0) return errno_error(errno, "Could not get size of '" + path + "'");
    } else if (S_ISREG(st.st_mode)) {
        size = static_cast<uint64_t>(st.st_size);
    } else if (S_ISDIR(st.st_mode)) {
        return make_error(EISDIR, "Could not open '" + path + "': Is a directory");
    } else {
        off_t end = ::lseek(f.get(), 0, SEEK_END);
        if (end < 0) return errno_error(errno, "Could not get size of '" + path + "'");
        size = static_cast<uint64_t>(end);
    }
    // qemu sizes every node in whole 512-byte sectors; a partial last sector reads as zeroes.
    size = (size + kSectorSize - 1) / kSectorSize * kSectorSize;
    return std::shared_ptr<Node>(std::make_shared<FileNode>(opts, path, std::move(f), size, ro));
}

}  // namespace

DriverSpec file_driver() {
    DriverSpec d;
    d.name = "file";
    d.kind = DriverKind::Protocol;
    d.description = "host file or block device";
    d.options = {
        {"filename", OptType::String, "path of the host file", {}, {}, true},
        {"aio", OptType::Enum, "AIO backend (accepted for compatibility; I/O is synchronous)", {"threads", "native", "io_uring"}, "threads"},
        {"aio-max-batch", OptType::Int, "accepted for compatibility"},
        {"locking", OptType::Enum, "file locking mode", {"auto", "on", "off"}, "auto"},
        {"pr-manager", OptType::String, "accepted for compatibility"},
        {"x-check-cache-dropped", OptType::Bool, "accepted for compatibility"},
        {"drop-cache", OptType::Bool, "accepted for compatibility"},
    };
    d.open = open_file;
    return d;
}

}  // namespace blk
