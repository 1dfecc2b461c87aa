// The `file` protocol: a host file or block device, with SEEK_DATA/SEEK_HOLE block status.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "blk/driver.h"
#include "blk/fd.h"
#include "flush_behind.h"

namespace blk {

namespace {

// QEMU's image locking: one byte per permission at kLockPermBase + bit (held while the
// permission is used) and at kLockSharedBase + bit (held while it is NOT shared with others),
// as open-file-description read locks. Honouring them keeps us from reading an image a VM
// is writing, and keeps a VM from writing an image we are working on.
constexpr uint64_t kSectorSize = 512;
constexpr uint64_t kFirstBlockBytes = 4096;  // qemu's MAX_BLOCKSIZE
// Buffered writes go to the kernel in pieces of at most this much. Linux (ext4 and xfs with
// large folios) sizes a new page-cache folio by the write that creates it, so a 2 MiB write
// asks for 2 MiB of contiguous memory. Measured on the 2-core VM of the README's benchmark:
// writing 2 GiB into a new file with dd bs=2M took 5.2 s, with bs=64K to 128K 1.6 to 2.1 s;
// convert raw -> qcow2 went from 0.82x to 0.56x qemu-img's time (tests/bench).
constexpr size_t kWritePieceBytes = 64u << 10;
// cache.direct=on (O_DIRECT): offsets, lengths and memory must be aligned to the device's
// logical block. Block devices say theirs (BLKSSZGET); files use 4096, which every common
// logical block size divides (probing a file tells nothing while it is empty). Requests
// that are not aligned go through bounce buffers of at most kBounceBytes.
constexpr uint64_t kDirectFileAlign = 4096;
constexpr uint64_t kBounceBytes = 1u << 20;
// Marks a file a copy is still overwriting in place (convert -n); see Node::set_incomplete.
constexpr const char* kIncompleteXattr = "user.blkimg.incomplete";
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

// A conflict is EAGAIN with "is another process using the image [PATH]?": the tools recognise
// it and add their own hint where their flags can skip the check (-U on a read-only open).
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
                                          "\" lock: is another process using the image [" + path + "]?");
        }
    }
    for (unsigned p : unshared) {
        if (byte_locked_by_other(fd, kLockPermBase + p)) {
            return make_error(EAGAIN, std::string("Failed to get shared \"") + kPermNames[p] +
                                          "\" lock: is another process using the image [" + path + "]?");
        }
    }
    return {};
}

// Drops every QEMU lock byte `fd`'s open file description holds.
void release_qemu_locks(int fd) {
    for (off_t base : {kLockPermBase, kLockSharedBase}) {
        struct flock fl = one_byte(F_UNLCK, base);
        fl.l_len = kPermResize + 1;
        (void)fcntl(fd, F_OFD_SETLK, &fl);
    }
}

// Makes [off, off+len) of fd read as zeroes without writing data: punches a hole when
// unmapping is allowed, else zeroes the range in place. ENOTSUP where the host cannot.
Status zero_range(int fd, uint64_t off, uint64_t len, bool unmap) {
    const int mode = unmap ? (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) : FALLOC_FL_ZERO_RANGE;
    if (::fallocate(fd, mode, static_cast<off_t>(off), static_cast<off_t>(len)) == 0) return {};
    int err = errno;
    if (err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) return make_error(ENOTSUP, "fallocate not supported");
    return errno_error(err, "fallocate");
}

// Writes zeroes over [off, end) in 1 MiB pieces (preallocation=full).
Status write_zero_buffers(int fd, uint64_t off, uint64_t end, const std::string& path) {
    constexpr uint64_t kChunk = 1 << 20;
    std::vector<std::byte> zeroes(kChunk);
    while (off < end) {
        size_t n = static_cast<size_t>(std::min(kChunk, end - off));
        ssize_t w = ::pwrite(fd, zeroes.data(), n, static_cast<off_t>(off));
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno_error(errno, path + ": write at byte " + std::to_string(off));
        }
        off += static_cast<uint64_t>(w);
    }
    return {};
}

// Sets the file's size to `size`, allocating the grown part as `prealloc` asks.
Status resize_file(int fd, const std::string& path, uint64_t old_size, uint64_t size, Prealloc prealloc) {
    if (prealloc == Prealloc::Metadata) {
        return make_error(ENOTSUP, "Unsupported preallocation mode 'metadata'");
    }
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return errno_error(errno, "Could not resize file '" + path + "'");
    if (size > 0 && old_size == 0 && prealloc == Prealloc::Off) {
        // As qemu does: allocate the first block of a new file (it helps alignment probing),
        // so an image has the same allocated size whichever tool made it. Failures don't matter.
        static const std::byte kZeroBlock[kFirstBlockBytes] = {};
        const uint64_t n = std::min<uint64_t>(size, size < kFirstBlockBytes ? kSectorSize : kFirstBlockBytes);
        (void)!::pwrite(fd, kZeroBlock, n, 0);
    }
    if (size <= old_size || prealloc == Prealloc::Off) return {};
    if (prealloc == Prealloc::Falloc) {
        int r = ::posix_fallocate(fd, static_cast<off_t>(old_size), static_cast<off_t>(size - old_size));
        if (r != 0) return errno_error(r, "Could not preallocate new data in '" + path + "'");
        return {};
    }
    return write_zero_buffers(fd, old_size, size, path);
}

struct FreeDeleter {
    void operator()(std::byte* p) const { std::free(p); }
};

// An `align`-aligned buffer of `bytes` (a multiple of align), for O_DIRECT.
Result<std::unique_ptr<std::byte[], FreeDeleter>> aligned_buffer(uint64_t align, uint64_t bytes) {
    auto* p = static_cast<std::byte*>(std::aligned_alloc(align, bytes));
    if (!p) return make_error(ENOMEM, "cannot allocate a " + std::to_string(bytes) + "-byte buffer");
    return std::unique_ptr<std::byte[], FreeDeleter>(p);
}

uint64_t round_down(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

class FileNode final : public Node {
public:
    FileNode(Json opts, std::string path, Fd fd, uint64_t size, bool read_only, bool regular, bool no_flush)
        : Node("file", std::move(opts)),
          path_(std::move(path)),
          fd_(std::move(fd)),
          regular_(regular),
          no_flush_(no_flush) {
        size_ = size;
        read_only_ = read_only;
        // FIEMAP where its answers are known to match SEEK_DATA/SEEK_HOLE's (see
        // fiemap_status): regular files on ext2/3/4 and XFS.
        struct statfs fs;
        fiemap_ = regular_ && ::fstatfs(fd_.get(), &fs) == 0 &&
                  (fs.f_type == kExtMagic || fs.f_type == kXfsMagic);
    }

    // cache.direct=on: reads and writes of data go through `dio` (the same file opened with
    // O_DIRECT, aligned to `align`); everything else keeps using the first descriptor.
    void set_direct(Fd dio, uint64_t align) {
        dio_ = std::move(dio);
        align_ = align;
    }
    // The QEMU locks were taken at open (not -U, not locking=off, a file or device).
    void set_locking(bool on) { locking_ = on; }


    Status set_incomplete(bool on) override {
        if (read_only_) return make_error(EACCES, path_ + ": read-only");
        if (on) {
            static constexpr char kValue[] = "convert";
            if (::fsetxattr(fd_.get(), kIncompleteXattr, kValue, sizeof kValue - 1, 0) != 0) {
                return errno_error(errno == ENOTSUP ? ENOTSUP : errno, path_ + ": cannot set " + kIncompleteXattr);
            }
        } else if (::fremovexattr(fd_.get(), kIncompleteXattr) != 0 && errno != ENODATA) {
            return errno_error(errno, path_ + ": cannot remove " + kIncompleteXattr);
        }
        return {};
    }

    bool incomplete() const override {
        return ::fgetxattr(fd_.get(), kIncompleteXattr, nullptr, 0) >= 0;
    }

    int host_fd() const override { return fd_.get(); }
    std::string exact_filename() const override { return path_; }
    FormatFacts format_specific() const override { return FileFacts{}; }

    Result<uint64_t> allocated_file_size() const override {
        struct stat st;
        if (fstat(fd_.get(), &st) != 0) return errno_error(errno, path_);
        return static_cast<uint64_t>(st.st_blocks) * 512;
    }

protected:
    // A new regular file reads as zeroes, a block device may hold anything; fallocate
    // (zeroing, punching holes) and SEEK_DATA are for regular files. Truncate is answered
    // for devices too (to their own size only, as qemu's).
    Capabilities own_caps() const override {
        Capabilities c;
        c.flush = !no_flush_;
        c.truncate = true;
        c.fast_zero = regular_;
        c.discard = regular_;
        c.zero_init = regular_;
        c.protocol = true;
        c.block_status = regular_;
        return c;
    }

    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        if (align_) return direct_read(off, buf);
        return read_fully(fd_.get(), off, buf);
    }

    Status do_write(uint64_t off, std::span<const std::byte> buf) override {
        BLK_TRY(write_data(off, buf));
        // Files that are flushed flush behind the writes (see flush_behind.h); files that
        // never are (convert's default cache=unsafe) leave writeback to the kernel.
        if (regular_ && !no_flush_) flush_behind_.wrote(buf.size());
        return {};
    }

    Status write_data(uint64_t off, std::span<const std::byte> buf) {
        if (align_) return direct_write(off, buf);
        size_t done = 0;
        while (done < buf.size()) {
            size_t piece = std::min(buf.size() - done, kWritePieceBytes);
            ssize_t n = ::pwrite(fd_.get(), buf.data() + done, piece, static_cast<off_t>(off + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                return errno_error(errno, path_ + ": write at byte " + std::to_string(off + done));
            }
            done += static_cast<size_t>(n);
        }
        return {};
    }

    Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) override {
        if (regular_) {
            std::shared_lock lock(rmw_mu_);  // not in the middle of a read-modify-write
            // Past the end of the file, nothing is needed but the size.
            auto st = zero_range(fd_.get(), off, bytes, flags & kZeroMayUnmap);
            if (st) return {};
            if (st.error().code != ENOTSUP) return std::move(st).error().with_context(path_ + ": write zeroes at byte " + std::to_string(off));
        }
        return Node::do_write_zeroes(off, bytes, flags);
    }

    Status do_discard(uint64_t off, uint64_t bytes) override {
        if (!regular_) return {};
        std::shared_lock lock(rmw_mu_);
        auto st = zero_range(fd_.get(), off, bytes, true);
        if (!st && st.error().code != ENOTSUP) return std::move(st).error().with_context(path_ + ": discard at byte " + std::to_string(off));
        return {};
    }

    Status do_flush() override {
        if (no_flush_) return {};
        if (::fdatasync(fd_.get()) != 0) return errno_error(errno, path_ + ": flush");
        if (int e = flush_behind_.take_error()) return errno_error(e, path_ + ": flush");
        return {};
    }

    Status do_truncate(uint64_t size, Prealloc prealloc) override {
        // Not while a direct write merges a partial block: it trims the length it saw.
        std::unique_lock lock(rmw_mu_);
        if (!regular_) {
            if (size == size_ && prealloc == Prealloc::Off) return {};
            return make_error(ENOTSUP, path_ + ": cannot resize a device");
        }
        struct stat st;
        if (fstat(fd_.get(), &st) != 0) return errno_error(errno, path_);
        BLK_TRY(resize_file(fd_.get(), path_, static_cast<uint64_t>(st.st_size), size, prealloc));
        size_ = (size + kSectorSize - 1) / kSectorSize * kSectorSize;
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
            if (read_only_ && fiemap_ && fiemap_status(off, bytes, st)) return st;
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
    static constexpr long kExtMagic = 0xEF53;    // ext2, ext3, ext4
    static constexpr long kXfsMagic = 0x58465342;  // XFS

    // Block status from a cache of the file's extents (FS_IOC_FIEMAP, 256 extents per
    // ioctl), for read-only files: a map of a fragmented file asks SEEK_DATA and SEEK_HOLE
    // twice per extent, and those lseeks were nearly all of its time. The answers are
    // SEEK_DATA's, on ext4 and XFS: a written or delayed-allocation extent is data, a gap
    // between extents is a hole, and bytes past the end of the file (an extent's tail
    // there, the rest of the last sector) are a hole. An unwritten (preallocated) extent
    // is not answered here (false: the caller asks lseek), because SEEK_DATA counts the
    // page-cache pages of such an extent as data and FIEMAP cannot see them. The ioctl
    // failing turns the cache off for good. Called under hint_mu_.
    bool fiemap_status(uint64_t off, uint64_t bytes, BlockStatus& st) {
        if (off < ext_lo_ || off >= ext_hi_) {
            if (!fill_extents(off)) return false;
        }
        auto it = std::partition_point(ext_.begin(), ext_.end(), [&](const HostExtent& e) { return e.end <= off; });
        if (it == ext_.end()) {
            // Past every extent the ioctl returned. Known to be a hole only when it said
            // there are no more (ext_hi_ open-ended); otherwise ask again from here.
            if (ext_hi_ != UINT64_MAX) return false;
            st.flags = kStatusZero | kStatusOffsetValid;
            return true;
        }
        if (it->start > off) {
            st.bytes = std::min(bytes, it->start - off);
            st.flags = kStatusZero | kStatusOffsetValid;
            return true;
        }
        if (it->unwritten) return false;
        uint64_t end = it->end;
        for (auto n = it + 1; n != ext_.end() && n->start == end && !n->unwritten; ++n) end = n->end;
        st.bytes = std::min(bytes, end - off);
        return true;
    }

    bool fill_extents(uint64_t off) {
        constexpr unsigned kCount = 256;
        fiemap_buf_.resize((sizeof(struct fiemap) + kCount * sizeof(struct fiemap_extent) + 7) / 8);
        auto* fm = reinterpret_cast<struct fiemap*>(fiemap_buf_.data());
        std::memset(fm, 0, sizeof(*fm));
        fm->fm_start = off;
        fm->fm_length = FIEMAP_MAX_OFFSET - off;
        fm->fm_extent_count = kCount;
        struct stat sb;
        if (::ioctl(fd_.get(), FS_IOC_FIEMAP, fm) != 0 || ::fstat(fd_.get(), &sb) != 0) {
            fiemap_ = false;
            return false;
        }
        const uint64_t eof = static_cast<uint64_t>(sb.st_size);
        ext_.clear();
        bool last = fm->fm_mapped_extents < kCount;
        for (unsigned i = 0; i < fm->fm_mapped_extents; ++i) {
            const struct fiemap_extent& e = fm->fm_extents[i];
            if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
            const uint64_t start = e.fe_logical;
            const uint64_t end = std::min<uint64_t>(eof, e.fe_logical + e.fe_length);
            if (end <= start) continue;
            ext_.push_back(HostExtent{start, end, (e.fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0});
        }
        ext_lo_ = off;
        // Without the last extent in hand, the cache knows nothing past the end of the
        // last one it holds (the ioctl returns whole extents, in order, from `off` on).
        ext_hi_ = last ? UINT64_MAX : (ext_.empty() ? off : std::max(off, ext_.back().end));
        if (ext_hi_ <= off) {
            ext_lo_ = ext_hi_ = 0;
            return false;
        }
        return true;
    }

    bool aligned(uint64_t off, uint64_t len, const void* mem) const {
        return off % align_ == 0 && len % align_ == 0 && reinterpret_cast<uintptr_t>(mem) % align_ == 0;
    }

    // Reads buf from fd at off; past the end of the file reads as zeroes. With O_DIRECT
    // (`align` set) a short read that ends off the alignment is the end of the file:
    // another read from an unaligned offset would be refused.
    Status read_fully(int fd, uint64_t off, std::span<std::byte> buf, uint64_t align = 0) {
        size_t done = 0;
        while (done < buf.size()) {
            ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(off + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                return errno_error(errno, path_ + ": read at byte " + std::to_string(off + done));
            }
            done += static_cast<size_t>(n);
            if (n == 0 || (align && done % align != 0)) break;
        }
        std::memset(buf.data() + done, 0, buf.size() - done);
        return {};
    }

    // One aligned O_DIRECT read.
    Status dio_pread(uint64_t off, std::span<std::byte> buf) { return read_fully(dio_.get(), off, buf, align_); }

    Status dio_pwrite(uint64_t off, std::span<const std::byte> buf) {
        size_t done = 0;
        while (done < buf.size()) {
            ssize_t n = ::pwrite(dio_.get(), buf.data() + done, buf.size() - done, static_cast<off_t>(off + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                return errno_error(errno, path_ + ": write at byte " + std::to_string(off + done));
            }
            if (n == 0) return make_error(EIO, path_ + ": write at byte " + std::to_string(off + done) + ": no progress");
            done += static_cast<size_t>(n);
        }
        return {};
    }

    Status direct_read(uint64_t off, std::span<std::byte> buf) {
        if (aligned(off, buf.size(), buf.data())) return dio_pread(off, buf);
        const uint64_t end = off + buf.size();
        const uint64_t span = std::min(round_up(end, align_) - round_down(off, align_), kBounceBytes);
        BLK_TRY_ASSIGN(auto bounce, aligned_buffer(align_, span));
        uint64_t pos = off;
        while (pos < end) {
            const uint64_t start = round_down(pos, align_);
            const uint64_t stop = std::min(round_up(end, align_), start + span);
            BLK_TRY(dio_pread(start, {bounce.get(), stop - start}));
            const uint64_t n = std::min(stop, end) - pos;
            std::memcpy(buf.data() + (pos - off), bounce.get() + (pos - start), n);
            pos += n;
        }
        return {};
    }

    // Aligned requests write as they are (from a bounce copy if only the memory is not
    // aligned), concurrently. A request that covers part of a block reads that block,
    // merges and writes it back, alone: no other write may land between its read and
    // its write. A merge never leaves the file longer than the request asked for.
    Status direct_write(uint64_t off, std::span<const std::byte> buf) {
        const uint64_t end = off + buf.size();
        if (off % align_ == 0 && buf.size() % align_ == 0) {
            std::shared_lock lock(rmw_mu_);
            if (reinterpret_cast<uintptr_t>(buf.data()) % align_ == 0) return dio_pwrite(off, buf);
            BLK_TRY_ASSIGN(auto bounce, aligned_buffer(align_, std::min<uint64_t>(buf.size(), kBounceBytes)));
            for (uint64_t pos = off; pos < end;) {
                const uint64_t n = std::min(end - pos, kBounceBytes);
                std::memcpy(bounce.get(), buf.data() + (pos - off), n);
                BLK_TRY(dio_pwrite(pos, {bounce.get(), n}));
                pos += n;
            }
            return {};
        }
        std::unique_lock lock(rmw_mu_);
        struct stat st;
        if (fstat(fd_.get(), &st) != 0) return errno_error(errno, path_);
        const uint64_t old_len = static_cast<uint64_t>(st.st_size);
        const uint64_t first = round_down(off, align_);
        const uint64_t last = round_up(end, align_);
        const uint64_t span = std::min(last - first, kBounceBytes);
        BLK_TRY_ASSIGN(auto bounce, aligned_buffer(align_, span));
        for (uint64_t start = first; start < last;) {
            const uint64_t stop = std::min(last, start + span);
            // Only the first piece can begin, and only the last can end, inside a block.
            if (start < off) BLK_TRY(dio_pread(start, {bounce.get(), align_}));
            if (stop > end && (stop - align_ > start || start >= off)) {
                BLK_TRY(dio_pread(stop - align_, {bounce.get() + (stop - align_ - start), align_}));
            }
            const uint64_t from = std::max(start, off);
            const uint64_t to = std::min(stop, end);
            std::memcpy(bounce.get() + (from - start), buf.data() + (from - off), to - from);
            BLK_TRY(dio_pwrite(start, {bounce.get(), stop - start}));
            start = stop;
        }
        if (regular_ && last > end && last > old_len) {
            if (::ftruncate(fd_.get(), static_cast<off_t>(std::max(old_len, end))) != 0) {
                return errno_error(errno, path_ + ": write at byte " + std::to_string(off));
            }
        }
        return {};
    }

    // A new descriptor of the same open file in the new mode (the path may have changed
    // since the open; /proc names the file we hold). Its locks are taken before the old
    // descriptor goes, and the old one's dropped first: the two are different open file
    // descriptions, so the new one would see the old one's "not shared" bytes as another
    // process's. If the new locks conflict, the old ones are taken again.
    Status do_reopen(bool writable) override {
        const int mode = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
        auto reopen_fd = [&](int old, int extra) -> Result<Fd> {
            const std::string self = "/proc/self/fd/" + std::to_string(old);
            int d = ::open(self.c_str(), mode | extra);
            if (d < 0 && errno != EACCES && errno != EROFS) d = ::open(path_.c_str(), mode | extra);
            if (d < 0) return errno_error(errno, "Could not reopen '" + path_ + "'");
            return Fd(d);
        };
        BLK_TRY_ASSIGN(Fd nf, reopen_fd(fd_.get(), 0));
        Fd nd;
        if (dio_.get() >= 0) {
            BLK_TRY_ASSIGN(nd, reopen_fd(dio_.get(), O_DIRECT));
        }
        if (locking_) {
            release_qemu_locks(fd_.get());
            Status st = take_qemu_locks(nf.get(), path_, writable);
            if (!st) {
                release_qemu_locks(nf.get());
                (void)take_qemu_locks(fd_.get(), path_, !read_only_);
                return st;  // qemu's words: "Failed to get "write" lock ... [PATH]?"
            }
        }
        if (!writable && !no_flush_ && ::fdatasync(fd_.get()) != 0 && errno != EINVAL) {
            return errno_error(errno, path_ + ": flush");
        }
        // The flush-behind thread flushes fd_: it stops before fd_ changes (a writable
        // reopen starts it again when enough is written).
        if (int e = flush_behind_.take_error()) return errno_error(e, path_ + ": flush");
        flush_behind_.stop();
        fd_ = std::move(nf);
        if (dio_.get() >= 0) dio_ = std::move(nd);
        read_only_ = !writable;
        std::lock_guard lock(hint_mu_);
        ext_lo_ = ext_hi_ = 0;  // the file may have been written while writable
        data_hint_ = UINT64_MAX;
        return {};
    }

    std::string path_;
    Fd fd_;
    // After fd_: destroyed (its thread joined) before the descriptor it flushes is closed.
    FlushBehind flush_behind_{kFlushBehindBytes, [this] { return ::fdatasync(fd_.get()) == 0 ? 0 : errno; }};
    Fd dio_;             // cache.direct: fd_'s file opened with O_DIRECT
    uint64_t align_ = 0;  // cache.direct: the alignment O_DIRECT needs; 0: buffered
    // Held exclusively by a direct write that merges partial blocks, shared by the others.
    std::shared_mutex rmw_mu_;
    bool regular_;
    bool no_flush_;  // cache.no-flush: flushes do not reach the disk (qemu's cache=unsafe)
    bool locking_ = false;
    std::mutex hint_mu_;
    uint64_t data_hint_ = UINT64_MAX;  // an offset SEEK_DATA last returned
    // The FIEMAP cache (fiemap_status), under hint_mu_: the extents in file order, which
    // describe [ext_lo_, ext_hi_) completely.
    struct HostExtent {
        uint64_t start = 0;
        uint64_t end = 0;
        bool unwritten = false;
    };
    bool fiemap_ = false;
    std::vector<HostExtent> ext_;
    uint64_t ext_lo_ = 0;
    uint64_t ext_hi_ = 0;
    std::vector<uint64_t> fiemap_buf_;
};

Result<std::shared_ptr<Node>> open_file(OpenContext& ctx, const Json& opts) {
    BLK_TRY_ASSIGN(auto fname, opt_string(opts, "filename"));
    if (!fname || fname->empty()) return make_error(EINVAL, "The 'file' block driver requires a file name");
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
    const bool locked = !force_share && locking.value_or("auto") != "off" && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
    if (locked) BLK_TRY(take_qemu_locks(f.get(), path, !ro).context("Could not open '" + path + "'"));
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
    bool no_flush = false;
    bool direct = false;
    if (auto c = opts.find("cache"); c != opts.end() && c->is_object()) {
        BLK_TRY_ASSIGN(auto nf, opt_bool(*c, "no-flush"));
        no_flush = nf.value_or(false);
        BLK_TRY_ASSIGN(auto d, opt_bool(*c, "direct"));
        direct = d.value_or(false);
    }
    Fd dio;
    uint64_t align = 0;
    if (direct) {
        // The same open file again, by its descriptor (the path may have changed meanwhile).
        const int flags = (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_DIRECT;
        const std::string self = "/proc/self/fd/" + std::to_string(f.get());
        int d = ::open(self.c_str(), flags);
        if (d < 0 && errno != EINVAL) d = ::open(path.c_str(), flags);
        if (d < 0) return errno_error(errno, "Could not open '" + path + "'");
        dio = Fd(d);
        align = kDirectFileAlign;
        if (S_ISBLK(st.st_mode)) {
            int lbs = 0;
            if (ioctl(dio.get(), BLKSSZGET, &lbs) == 0 && lbs >= 512 && (lbs & (lbs - 1)) == 0) align = static_cast<uint64_t>(lbs);
        }
    }
    auto node = std::make_shared<FileNode>(opts, path, std::move(f), size, ro, S_ISREG(st.st_mode), no_flush);
    if (direct) node->set_direct(std::move(dio), align);
    node->set_locking(locked);
    return std::shared_ptr<Node>(std::move(node));
}

// Sets the XFS-style extent size hint; filesystems without it ignore the request, as qemu's
// default hint is ignored there too.
void set_extent_size_hint(int fd, uint64_t hint) {
    struct fsxattr attr {};
    if (hint == 0 || ioctl(fd, FS_IOC_FSGETXATTR, &attr) != 0) return;
    attr.fsx_xflags |= FS_XFLAG_EXTSIZE;
    attr.fsx_extsize = static_cast<uint32_t>(hint);
    (void)ioctl(fd, FS_IOC_FSSETXATTR, &attr);
}

// Creates (or empties) a host file of `size` bytes, rounded up to a sector as qemu does.
// An existing file is emptied only after the lock check; a file this call emptied or made
// is removed again if creating it fails, so no half-made image stays behind. True when the
// file is new.
Result<bool> create_file(const CreateRequest& req) {
    std::string path = req.filename;
    if (path.rfind("file:", 0) == 0) path = path.substr(5);
    BLK_TRY_ASSIGN(auto size, opt_size(req.options, "size"));
    BLK_TRY_ASSIGN(auto prealloc_text, opt_string(req.options, "preallocation"));
    BLK_TRY_ASSIGN(auto nocow, opt_bool(req.options, "nocow"));
    BLK_TRY_ASSIGN(auto hint, opt_size(req.options, "extent_size_hint"));
    Prealloc prealloc = Prealloc::Off;
    if (prealloc_text) {
        auto p = parse_prealloc(*prealloc_text);
        if (!p) return make_error(EINVAL, "invalid parameter value: " + *prealloc_text);
        if (*p == Prealloc::Metadata) return make_error(ENOTSUP, "Unsupported preallocation mode: metadata");
        prealloc = *p;
    }
    if (hint.value_or(0) > UINT32_MAX) return make_error(EINVAL, "Extent size hint is too large");
    uint64_t bytes = size.value_or(0);
    // Beyond INT64_MAX ftruncate fails with EINVAL, which is what qemu reports too.
    if (bytes <= UINT64_MAX - kSectorSize) bytes = (bytes + kSectorSize - 1) / kSectorSize * kSectorSize;
    bool made = true;
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST) {
        made = false;
        fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    }
    if (fd < 0) return errno_error(errno, "Could not create '" + path + "'");
    Fd f(fd);
    struct stat st;
    if (fstat(f.get(), &st) != 0) return errno_error(errno, "Could not stat '" + path + "'");
    if (!S_ISREG(st.st_mode)) {
        if (prealloc != Prealloc::Off) {
            return make_error(ENOTSUP, std::string("Unsupported preallocation mode '") + prealloc_name(prealloc) + "'");
        }
        uint64_t dev_size = 0;
        if (S_ISBLK(st.st_mode)) {
            if (ioctl(f.get(), BLKGETSIZE64, &dev_size) != 0) return errno_error(errno, "Could not get size of '" + path + "'");
        } else {
            off_t end = ::lseek(f.get(), 0, SEEK_END);
            dev_size = end < 0 ? 0 : static_cast<uint64_t>(end);
        }
        if (bytes > dev_size) return make_error(ENOSPC, "Cannot grow device files");
        BLK_TRY(f.close().context(path));
        return false;
    }
    // Nobody may be using a file we are about to empty.
    auto locked = take_qemu_locks(f.get(), path, true);
    if (!locked) {
        if (made) ::unlink(path.c_str());
        return std::move(locked).error();
    }
    auto fill = [&]() -> Status {
        if (nocow.value_or(false)) {
            int attr = 0;
            if (ioctl(f.get(), FS_IOC_GETFLAGS, &attr) == 0) {
                attr |= FS_NOCOW_FL;
                (void)ioctl(f.get(), FS_IOC_SETFLAGS, &attr);  // only btrfs knows it; elsewhere it is a no-op
            }
        }
        if (req.incomplete) {
            // Before the old content goes: from here on the file never looks finished.
            static constexpr char kValue[] = "convert";
            (void)::fsetxattr(f.get(), kIncompleteXattr, kValue, sizeof kValue - 1, 0);
        }
        if (::ftruncate(f.get(), 0) != 0) return errno_error(errno, "Could not resize file");
        set_extent_size_hint(f.get(), hint.value_or(0));
        if (::ftruncate(f.get(), static_cast<off_t>(std::min<uint64_t>(bytes, INT64_MAX))) != 0 || bytes > INT64_MAX) {
            return errno_error(bytes > INT64_MAX ? EINVAL : errno, "Could not resize file");
        }
        BLK_TRY(resize_file(f.get(), path, 0, bytes, prealloc));
        return f.close().context(path);
    };
    auto st2 = fill();
    // A file that was there before keeps its name (and inode): removing it would lose more.
    if (!st2) {
        if (made) ::unlink(path.c_str());
        return std::move(st2).error();
    }
    return made;
}

Status delete_file(const std::string& filename) {
    const std::string path = filename.rfind("file:", 0) == 0 ? filename.substr(5) : filename;
    if (::unlink(path.c_str()) != 0) return errno_error(errno, "Could not delete '" + path + "'");
    return {};
}

}  // namespace

DriverSpec file_driver() {
    DriverSpec d;
    d.name = "file";
    d.kind = DriverKind::Protocol;
    d.needs_filename = true;
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
    // qemu's order and texts (file-posix); no defaults, so qemu's Formatting line shows none.
    d.create_options = {
        {"size", OptType::Size, "Virtual disk size"},
        {"nocow", OptType::Bool, "Turn off copy-on-write (valid only on btrfs)"},
        {"preallocation", OptType::Enum, "Preallocation mode (allowed values: off, falloc, full)", {"off", "falloc", "full"}},
        {"extent_size_hint", OptType::Size, "Extent size hint for the image file, 0 to disable"},
    };
    d.create_file = create_file;
    d.delete_file = delete_file;
    return d;
}

}  // namespace blk
