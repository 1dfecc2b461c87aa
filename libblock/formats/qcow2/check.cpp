// qcow2 check: a read-only walk over header, L1/L2 tables, snapshots and refcount structures
// that recomputes every cluster's refcount and reports what qemu-img check reports.
#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <cstdio>
#include <unordered_map>

#include "blk/check.h"
#include "blk/endian.h"
#include "format.h"

namespace blk::qcow2 {
namespace {

constexpr uint64_t kL1ReservedMask = 0x7f000000000001ffull;
constexpr uint64_t kL2StdReservedMask = 0x3f000000000001feull;
constexpr uint64_t kRefTableReservedMask = 0x1ffull;
constexpr uint64_t kL2BitmapAllAlloc = 0xffffffffull;
// The in-memory refcount array may grow past the file by less than one cluster per
// reference (qemu allows a semi-allocated last cluster); this bounds it.
constexpr uint64_t kMaxCheckClusters = 1ull << 31;
constexpr uint64_t kMaxBitmapDirBytes = 64ull << 20;  // qemu's QCOW2_MAX_BITMAP_DIRECTORY_SIZE

struct SnapshotRef {
    std::string id, name;
    uint64_t l1_offset = 0;
    uint32_t l1_size = 0;
};

std::string fmt(const char* f, auto... args) {
    char buf[512];
    std::snprintf(buf, sizeof buf, f, args...);
    return buf;
}

class Checker {
public:
    Checker(const Header& h, Node& file, CheckResult& r) : h_(h), file_(file), r_(r), cs_(h.cluster_size()) {}

    // Reads [off, off+len); bytes past the end of the file read as zeroes (as qemu's file
    // driver pads short reads).
    Status read(uint64_t off, std::span<std::byte> buf) {
        std::fill(buf.begin(), buf.end(), std::byte{0});
        const uint64_t size = file_.size();
        if (off >= size) return {};
        const uint64_t n = std::min<uint64_t>(buf.size(), size - off);
        return file_.read(off, buf.first(n));
    }

    Status run() {
        const uint64_t file_size = file_.size();
        nb_clusters_ = (file_size + cs_ - 1) / cs_;
        if (nb_clusters_ > kMaxCheckClusters) return make_error(EFBIG, "image file too large to check");
        imrt_.assign(nb_clusters_, 0);
        r_.total_clusters = (h_.size + cs_ - 1) / cs_;
        data_file_ = (h_.incompatible & kIncompatDataFile) != 0;

        BLK_TRY(load_reftable());
        std::vector<SnapshotRef> snaps;
        uint64_t snap_bytes = 0;
        BLK_TRY(load_snapshots(snaps, snap_bytes));

        inc(0, cs_);
        BLK_TRY(check_l1(h_.l1_table_offset, h_.l1_size, true));
        if (data_file_ && !snaps.empty()) {
            line(fmt("ERROR %d snapshots in image with data file", static_cast<int>(snaps.size())));
            r_.corruptions++;
        }
        for (const SnapshotRef& s : snaps) {
            if (s.l1_offset & (cs_ - 1)) {
                line(fmt("ERROR snapshot %s (%s) l1_offset=%#" PRIx64
                         ": L1 table is not cluster aligned; snapshot table entry corrupted",
                         s.id.c_str(), s.name.c_str(), s.l1_offset));
                r_.corruptions++;
                continue;
            }
            if (s.l1_size > kMaxL1Bytes / 8) {
                line(fmt("ERROR snapshot %s (%s) l1_size=%#" PRIx32
                         ": L1 table is too large; snapshot table entry corrupted",
                         s.id.c_str(), s.name.c_str(), s.l1_size));
                r_.corruptions++;
                continue;
            }
            BLK_TRY(check_l1(s.l1_offset, s.l1_size, false));
        }
        inc(h_.snapshots_offset, snap_bytes);
        inc(h_.refcount_table_offset, reftable_.size() * 8);
        if (h_.crypto_length) inc(h_.crypto_offset, h_.crypto_length);
        BLK_TRY(count_bitmaps());
        check_refblocks();
        compare_refcounts();
        BLK_TRY(check_copied());
        r_.image_end_offset = (highest_ + 1) * cs_;
        return {};
    }

private:
    void line(std::string s) { r_.lines.push_back(std::move(s)); }

    void inc(uint64_t off, uint64_t size) {
        if (size == 0) return;
        if (off + size >= file_.size() + cs_) {  // offsets are below 2^56, sizes below 2^32: no overflow
            line(fmt("ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
                     "offset 0x%" PRIx64 " size 0x%" PRIx64, off, size));
            r_.corruptions++;
            return;
        }
        const uint64_t max = refcount_max(h_.refcount_order);
        for (uint64_t c = off / cs_; c <= (off + size - 1) / cs_; ++c) {
            if (c >= imrt_.size()) imrt_.resize(c + 1, 0);
            if (imrt_[c] == max) {
                line(fmt("ERROR: overflow cluster offset=0x%" PRIx64, c * cs_));
                line("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean "
                     "copy if the image cannot be opened for writing");
                r_.corruptions++;
                continue;
            }
            imrt_[c]++;
        }
    }

    Status load_reftable() {
        const uint64_t bytes = uint64_t{h_.refcount_table_clusters} * cs_;
        if (bytes > kMaxRefcountTableBytes) return make_error(EINVAL, "refcount table too large");
        std::vector<std::byte> buf(bytes);
        BLK_TRY(read(h_.refcount_table_offset, buf));
        reftable_.resize(bytes / 8);
        for (size_t i = 0; i < reftable_.size(); ++i) reftable_[i] = load_be64(buf.data() + i * 8);
        return {};
    }

    Status load_snapshots(std::vector<SnapshotRef>& out, uint64_t& bytes) {
        uint64_t off = h_.snapshots_offset;
        for (uint32_t i = 0; i < h_.nb_snapshots; ++i) {
            std::byte fixed[40];
            BLK_TRY(read(off, fixed));
            SnapshotRef s;
            s.l1_offset = load_be64(fixed);
            s.l1_size = load_be32(fixed + 8);
            const uint16_t id_len = load_be16(fixed + 12), name_len = load_be16(fixed + 14);
            const uint32_t extra = load_be32(fixed + 36);
            if (extra > kMaxSnapshotExtraData) return make_error(EFBIG, "snapshot extra data too large");
            const uint64_t strings = off + 40 + extra;
            std::string text(uint64_t{id_len} + name_len, '\0');
            BLK_TRY(read(strings, std::as_writable_bytes(std::span(text))));
            s.id = text.substr(0, id_len);
            s.name = text.substr(id_len);
            off = (strings + text.size() + 7) & ~7ull;
            if (off - h_.snapshots_offset > kMaxSnapshotTableBytes) return make_error(EFBIG, "snapshot table too large");
            out.push_back(std::move(s));
        }
        bytes = off - h_.snapshots_offset;
        return {};
    }

    Status check_l1(uint64_t l1_offset, uint32_t l1_size, bool active) {
        if (l1_size == 0) return {};
        inc(l1_offset, uint64_t{l1_size} * 8);
        if (uint64_t{l1_size} * 8 > kMaxL1Bytes) return make_error(EFBIG, "L1 table too large");
        std::vector<std::byte> buf(uint64_t{l1_size} * 8);
        BLK_TRY(read(l1_offset, buf));
        std::vector<std::byte> l2(cs_);
        for (uint32_t i = 0; i < l1_size; ++i) {
            const uint64_t e = load_be64(buf.data() + uint64_t{i} * 8);
            if (active) l1_.push_back(e);
            if (e == 0) continue;
            if (e & kL1ReservedMask) {
                line(fmt("ERROR found L1 entry with reserved bits set: %" PRIx64, e));
                r_.corruptions++;
            }
            const uint64_t l2_off = e & kOffsetMask;
            inc(l2_off, cs_);
            if (l2_off & (cs_ - 1)) {
                line(fmt("ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry corrupted", l2_off));
                r_.corruptions++;
            }
            BLK_TRY(read(l2_off, l2));
            check_l2(l2, active);
        }
        return {};
    }

    void check_l2(std::span<const std::byte> table, bool active) {
        const bool ext = h_.extended_l2();
        const unsigned csize_shift = 62 - (h_.cluster_bits - 8);
        const uint64_t csize_mask = (1ull << (h_.cluster_bits - 8)) - 1;
        const uint64_t coff_mask = (1ull << csize_shift) - 1;
        uint64_t next = 0;
        for (uint64_t i = 0; i < h_.l2_entries(); ++i) {
            const L2Entry le = load_l2_entry(h_, table, i);
            uint64_t e = le.entry;
            const uint64_t bitmap = le.bitmap;
            const bool compressed = e & kEntryCompressed;
            if (!compressed && (e & kL2StdReservedMask)) {
                line(fmt("ERROR found l2 entry with reserved bits set: %" PRIx64, e));
                r_.corruptions++;
            }
            if (compressed) {
                if (e & kEntryCopied) {
                    line(fmt("ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for compressed clusters",
                             e & coff_mask));
                    e &= ~kEntryCopied;
                    r_.corruptions++;
                }
                if (data_file_) {
                    line(fmt("ERROR compressed cluster %d with data file, entry=0x%" PRIx64, static_cast<int>(i), e));
                    r_.corruptions++;
                    continue;
                }
                if (bitmap) {
                    line(fmt("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%" PRIx64,
                             static_cast<int>(i), e));
                    r_.corruptions++;
                    continue;
                }
                const uint64_t coff = e & coff_mask;
                const uint64_t nsec = ((e >> csize_shift) & csize_mask) + 1;
                inc(coff, nsec * 512 - (coff & 511));
                if (active) {
                    r_.allocated_clusters++;
                    r_.compressed_clusters++;
                    r_.fragmented_clusters++;
                }
                continue;
            }
            const uint64_t off = e & kOffsetMask;
            const bool zero_flag = !ext && (e & kEntryZero);
            bool allocated = off != 0 || (data_file_ && (e & kEntryCopied) && !zero_flag);
            if (!allocated) {
                if (ext && (bitmap & kL2BitmapAllAlloc)) {
                    r_.corruptions++;
                    line("ERROR: Unallocated cluster has non-zero subcluster allocation map");
                }
                continue;
            }
            if ((bitmap >> 32) & bitmap) {
                r_.corruptions++;
                line(fmt("ERROR offset=%" PRIx64 ": Allocated cluster has corrupted subcluster allocation bitmap", off));
            }
            if (off & (cs_ - 1)) {
                r_.corruptions++;
                const bool has_data = ext ? (bitmap & kL2BitmapAllAlloc) != 0 : !zero_flag;
                if (!has_data) {
                    line(fmt("ERROR offset=%" PRIx64 ": Preallocated cluster is not properly aligned; L2 entry corrupted.",
                             off));
                } else {
                    line(fmt("ERROR offset=%" PRIx64 ": Data cluster is not properly aligned; L2 entry corrupted.", off));
                }
            }
            if (active) {
                r_.allocated_clusters++;
                if (next && off != next) r_.fragmented_clusters++;
                next = off + cs_;
            }
            if (!data_file_) inc(off, cs_);
        }
    }

    // Persistent bitmaps: the directory, each bitmap table and the data clusters it names.
    // qemu ignores the extension when the autoclear bit is clear.
    Status count_bitmaps() {
        if (!h_.has_bitmaps_ext || !(h_.autoclear & kAutoclearBitmaps) || h_.nb_bitmaps == 0) return {};
        if (h_.bitmap_dir_size > kMaxBitmapDirBytes) return make_error(EFBIG, "bitmap directory too large");
        std::vector<std::byte> dir(h_.bitmap_dir_size);
        BLK_TRY(read(h_.bitmap_dir_offset, dir));
        inc(h_.bitmap_dir_offset, dir.size());
        uint64_t pos = 0;
        for (uint32_t i = 0; i < h_.nb_bitmaps; ++i) {
            if (pos + 24 > dir.size()) return make_error(EINVAL, "bitmap directory entry past its end");
            const std::byte* e = dir.data() + pos;
            const uint64_t table_off = load_be64(e) & kOffsetMask;
            const uint32_t table_size = load_be32(e + 8);
            const uint16_t name_size = load_be16(e + 18);
            const uint32_t extra = load_be32(e + 20);
            pos = (pos + 24 + uint64_t{extra} + name_size + 7) & ~7ull;
            if (uint64_t{table_size} * 8 > kMaxL1Bytes) return make_error(EFBIG, "bitmap table too large");
            inc(table_off, uint64_t{table_size} * 8);
            std::vector<std::byte> table(uint64_t{table_size} * 8);
            BLK_TRY(read(table_off, table));
            for (uint32_t j = 0; j < table_size; ++j) {
                const uint64_t off = load_be64(table.data() + uint64_t{j} * 8) & kOffsetMask;
                if (off) inc(off, cs_);
            }
        }
        return {};
    }

    void check_refblocks() {
        for (uint64_t i = 0; i < reftable_.size(); ++i) {
            const uint64_t off = reftable_[i] & kRefTableEntryMask;
            if (reftable_[i] & kRefTableReservedMask) {
                line(fmt("ERROR refcount table entry %" PRId64 " has reserved bits set", static_cast<int64_t>(i)));
                r_.corruptions++;
                continue;
            }
            if (off & (cs_ - 1)) {
                line(fmt("ERROR refcount block %" PRId64 " is not cluster aligned; refcount table entry corrupted",
                         static_cast<int64_t>(i)));
                r_.corruptions++;
                continue;
            }
            if (off / cs_ >= nb_clusters_) {
                r_.corruptions++;
                line(fmt("ERROR refcount block %" PRId64 " is outside image", static_cast<int64_t>(i)));
                continue;
            }
            if (off == 0) continue;
            inc(off, cs_);
            if (imrt_[off / cs_] != 1) {
                line(fmt("ERROR refcount block %" PRId64 " refcount=%" PRIu64, static_cast<int64_t>(i), imrt_[off / cs_]));
                r_.corruptions++;
            }
        }
    }

    // The refcount the image records for `cluster` (0 where no block covers it).
    Result<uint64_t> disk_refcount(uint64_t cluster) {
        const uint64_t per_block = refcount_block_entries(h_);
        const uint64_t idx = cluster / per_block;
        if (idx >= reftable_.size()) return uint64_t{0};
        const uint64_t off = reftable_[idx] & kRefTableEntryMask;
        if (off == 0) return uint64_t{0};
        if (off & (cs_ - 1)) return make_error(EIO, "unaligned refcount block");
        if (block_index_ != idx) {
            block_.resize(cs_);
            BLK_TRY(read(off, block_));
            block_index_ = idx;
        }
        return get_refcount(block_, cluster % per_block, h_.refcount_order);
    }

    void compare_refcounts() {
        highest_ = 0;
        for (uint64_t i = 0; i < imrt_.size(); ++i) {
            auto rc = disk_refcount(i);
            if (!rc) {
                line(fmt("Can't get refcount for cluster %" PRId64 ": %s", static_cast<int64_t>(i), std::strerror(rc.error().code)));
                r_.check_errors++;
                continue;
            }
            const uint64_t r1 = *rc, r2 = imrt_[i];
            if (r1 || r2) highest_ = i;
            if (r1 == r2) continue;
            line(fmt("%s cluster %" PRId64 " refcount=%" PRIu64 " reference=%" PRIu64, r1 < r2 ? "ERROR" : "Leaked",
                     static_cast<int64_t>(i), r1, r2));
            if (r1 < r2) r_.corruptions++;
            else r_.leaks++;
        }
    }

    Status check_copied() {
        std::vector<std::byte> l2(cs_);
        for (size_t i = 0; i < l1_.size(); ++i) {
            const uint64_t l1e = l1_[i];
            const uint64_t l2_off = l1e & kOffsetMask;
            if (!l2_off) continue;
            auto rc = disk_refcount(l2_off / cs_);
            if (!rc) continue;
            if ((*rc == 1) != ((l1e & kEntryCopied) != 0)) {
                r_.corruptions++;
                line(fmt("ERROR OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%" PRIx64 " refcount=%" PRIu64,
                         static_cast<int>(i), l1e, *rc));
            }
            BLK_TRY(read(l2_off, l2));
            for (uint64_t j = 0; j < h_.l2_entries(); ++j) {
                const uint64_t e = load_l2_entry(h_, l2, j).entry;
                if (e & kEntryCompressed) continue;
                const uint64_t off = e & kOffsetMask;
                const bool allocated = off != 0 || (data_file_ && (e & kEntryCopied) && !(e & kEntryZero));
                if (!allocated) continue;
                uint64_t refcount = 1;
                if (!data_file_) {
                    auto r = disk_refcount(off / cs_);
                    if (!r) continue;
                    refcount = *r;
                }
                if ((refcount == 1) != ((e & kEntryCopied) != 0)) {
                    r_.corruptions++;
                    line(fmt("ERROR OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64, e, refcount));
                }
            }
        }
        return {};
    }

    const Header& h_;
    Node& file_;
    CheckResult& r_;
    const uint64_t cs_;
    bool data_file_ = false;
    uint64_t nb_clusters_ = 0;
    uint64_t highest_ = 0;
    std::vector<uint64_t> imrt_;
    std::vector<uint64_t> reftable_;
    std::vector<uint64_t> l1_;
    std::vector<std::byte> block_;
    uint64_t block_index_ = UINT64_MAX;
};

}  // namespace

Result<CheckResult> check_qcow2(Node& file) {
    const uint64_t head_len = std::min<uint64_t>(file.size(), 1ull << kMaxClusterBits);
    std::vector<std::byte> head(head_len);
    BLK_TRY(file.read(0, head));
    auto h = parse_header(head, file.size());
    if (!h) return std::move(h).error();
    CheckResult r;
    Checker c(*h, file, r);
    BLK_TRY(c.run());
    return r;
}

}  // namespace blk::qcow2

namespace blk {

Result<CheckResult> check_image(Node* root) {
    Node* n = skip_filters(root);
    if (!n || n->driver_name() != "qcow2") return make_error(ENOTSUP, "This image format does not support checks");
    Node* file = primary_child(*n);
    if (!file) return make_error(EINVAL, "qcow2 node without file");
    return qcow2::check_qcow2(*file);
}

}  // namespace blk
