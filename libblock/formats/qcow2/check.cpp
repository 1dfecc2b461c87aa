// qcow2 check: a walk over header, L1/L2 tables, snapshots and refcount structures that
// recomputes every cluster's refcount and reports what qemu-img check reports; with a repair
// mode it also fixes what qemu-img check -r fixes, in the same order and with the same lines.
//
// How a repair keeps the image safe if it stops half-way (crash, I/O error): nothing a
// guest reads is ever rewritten, and every step leaves an image no worse than before it.
// - Refcount fixes: first every refcount that is too low is raised, then flush, then the
//   leaks (refcounts too high) are lowered, then flush. Stopped in between, a cluster's
//   refcount is at worst too high (a leak), never too low (which would let it be reused
//   while referenced).
// - A rebuilt refcount structure is written into clusters no reference uses (the in-memory
//   refcounts say so, and the new blocks cover themselves): refcount blocks first, then the
//   table, flush, and only then the header is pointed at the new table (12 bytes, one
//   sector) and flushed. Before that write the old structure is still the image's; after
//   it the new one is complete. The old structure's clusters are then freed as leaks.
// - COPIED flags are fixed after the refcounts they are judged by reached the disk; an L1
//   entry or L2 table is rewritten only where it lies whole inside the file and on no other
//   metadata (qemu's overlap check).
// - The dirty and corrupt header bits are cleared last, once nothing is left to fix.
#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <cstdio>
#include <unordered_map>

#include "blk/check.h"
#include "blk/endian.h"
#include "engine.h"
#include "format.h"

namespace blk::qcow2 {
namespace {

// The check's in-memory refcount table (qemu's): one entry per host cluster, 16 bits wide
// when the image's refcounts fit (refcount_order <= 4: the default, and every image
// qemu-img makes unless told otherwise), 64 bits otherwise. A 4 GiB image of 4 KiB
// clusters needs 2 MiB of 64-bit entries, which put check's peak RSS above qemu-img's.
class RefArray {
public:
    explicit RefArray(uint32_t refcount_order) : wide_(refcount_order > 4) {}
    uint64_t size() const { return wide_ ? w_.size() : n_.size(); }
    void resize(uint64_t n) { wide_ ? w_.resize(n, 0) : n_.resize(n, 0); }
    void assign(uint64_t n) { wide_ ? w_.assign(n, 0) : n_.assign(n, 0); }
    uint64_t operator[](uint64_t i) const { return wide_ ? w_[i] : n_[i]; }
    // Callers keep values within the image's refcount width (they check against its
    // maximum before they count), so a narrow entry never wraps.
    void set(uint64_t i, uint64_t v) {
        if (wide_) w_[i] = v;
        else n_[i] = static_cast<uint16_t>(v);
    }
    void inc(uint64_t i) { set(i, (*this)[i] + 1); }

private:
    bool wide_;
    std::vector<uint16_t> n_;
    std::vector<uint64_t> w_;
};

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
    Checker(const Header& h, Node& file, CheckResult& r, Repair fix)
        : h_(h), file_(file), r_(r), cs_(h.cluster_size()), fix_(fix), imrt_(h.refcount_order) {}

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
        r_.total_clusters = (h_.size + cs_ - 1) / cs_;
        data_file_ = (h_.incompatible & kIncompatDataFile) != 0;
        BLK_TRY(load_snapshots(snaps_, snap_bytes_));
        if (fix_ != Repair::None && h_.l1_size && uint64_t{h_.l1_size} * 8 <= kMaxL1Bytes) {
            // The active L1 as opened, for the overlap check of the writes a repair makes.
            std::vector<std::byte> buf(uint64_t{h_.l1_size} * 8);
            BLK_TRY(read(h_.l1_table_offset, buf));
            for (uint32_t i = 0; i < h_.l1_size; ++i) active_l1_.push_back(load_be64(buf.data() + uint64_t{i} * 8));
        }

        BLK_TRY(calculate(fix_ == Repair::All));
        // With a repair the first comparison only reports; it runs again below to fix.
        const CheckResult pre = counters();
        BLK_TRY(compare_refcounts(Repair::None));
        if (rebuild_ && fix_ == Repair::All) {
            line("Rebuilding refcount structure");
            const CheckResult old = counters();
            BLK_TRY(rebuild_structure());
            r_.corruptions = 0;
            r_.leaks = 0;
            // The table changed: every reference is counted again against it.
            rebuild_ = false;
            BLK_TRY(calculate(false));
            uint64_t fresh_leaks = 0;
            // The old structure is leaked now: free it. Only leaks this pass cannot fix
            // (made by the rebuild) are kept.
            const CheckResult saved = counters();
            set_counters(CheckResult{});
            BLK_TRY(compare_refcounts(Repair::Leaks));
            if (rebuild_) line("ERROR rebuilt refcount structure is still broken");
            fresh_leaks = r_.leaks;
            set_counters(saved);
            if (r_.corruptions < old.corruptions) r_.corruptions_fixed += old.corruptions - r_.corruptions;
            if (r_.leaks < old.leaks) r_.leaks_fixed += old.leaks - r_.leaks;
            r_.leaks += fresh_leaks;
        } else if (fix_ != Repair::None) {
            if (rebuild_) {
                line("ERROR need to rebuild refcount structures");
                r_.check_errors++;
                return make_error(EIO, "need to rebuild refcount structures");
            }
            if (r_.leaks || r_.corruptions) {
                set_counters(pre);
                BLK_TRY(compare_refcounts(fix_));
            }
        }
        BLK_TRY(check_copied());
        r_.image_end_offset = (highest_ + 1) * cs_;
        if (fix_ != Repair::None && r_.check_errors == 0 && r_.corruptions == 0) BLK_TRY(mark_clean());
        return {};
    }

private:
    void line(std::string s) { r_.lines.push_back(std::move(s)); }

    // The counters without the lines (qemu resets its counters between passes, never what
    // it printed).
    CheckResult counters() const {
        CheckResult c = r_;
        c.lines.clear();
        return c;
    }
    void set_counters(const CheckResult& c) {
        std::vector<std::string> lines = std::move(r_.lines);
        const bool disabled = r_.disabled;
        r_ = c;
        r_.lines = std::move(lines);
        r_.disabled = disabled;
    }

    // Counts every reference into a fresh in-memory refcount table (qemu's
    // calculate_refcounts); `fix` repairs refcount blocks past the end of the file.
    Status calculate(bool fix) {
        calc_fix_ = fix;
        nb_clusters_ = std::max<uint64_t>(nb_clusters_, (file_.size() + cs_ - 1) / cs_);
        imrt_.assign(nb_clusters_);
        l1_.clear();
        block_index_ = UINT64_MAX;
        BLK_TRY(load_reftable());
        inc(0, cs_);
        BLK_TRY(check_l1(h_.l1_table_offset, h_.l1_size, true));
        if (data_file_ && !snaps_.empty()) {
            line(fmt("ERROR %d snapshots in image with data file", static_cast<int>(snaps_.size())));
            r_.corruptions++;
        }
        for (const SnapshotRef& s : snaps_) {
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
        inc(h_.snapshots_offset, snap_bytes_);
        inc(h_.refcount_table_offset, reftable_.size() * 8);
        if (h_.crypto_length) inc(h_.crypto_offset, h_.crypto_length);
        BLK_TRY(count_bitmaps());
        return check_refblocks(fix);
    }

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
            if (c >= imrt_.size()) imrt_.resize(c + 1);
            if (imrt_[c] == max) {
                line(fmt("ERROR: overflow cluster offset=0x%" PRIx64, c * cs_));
                line("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean "
                     "copy if the image cannot be opened for writing");
                r_.corruptions++;
                continue;
            }
            imrt_.inc(c);
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
            BLK_TRY(check_l2(l2, l2_off, active));
        }
        return {};
    }

    Status check_l2(std::span<std::byte> table, uint64_t l2_off, bool active) {
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
                    const bool fix = calc_fix_;
                    line(fmt("%s offset=%" PRIx64 ": Preallocated cluster is not properly aligned; L2 entry corrupted.",
                             fix ? "Repairing" : "ERROR", off));
                    if (fix) {
                        BLK_TRY_ASSIGN(bool fixed, zero_l2_entry(table, l2_off, i, active));
                        if (fixed) continue;  // the cluster is no longer referenced
                    }
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
        return {};
    }

    // Makes L2 entry `i` of the table at `l2_off` read as zeroes with nothing allocated
    // (qemu's fix for a preallocated cluster at an unaligned offset), written at once. False
    // if the write failed (the check goes on); an error if it would hit other metadata.
    Result<bool> zero_l2_entry(std::span<std::byte> table, uint64_t l2_off, uint64_t i, bool active) {
        L2Entry le = load_l2_entry(h_, table, i);
        if (h_.extended_l2()) {
            le.bitmap = (le.bitmap | (le.bitmap << 32)) & kL2BitmapAllZero;
            le.entry = 0;
        } else {
            le.entry = kEntryZero;
        }
        store_l2_entry(h_, table, i, le);
        const uint64_t esize = h_.l2_entry_size(), at = l2_off + i * esize;
        if (const char* hit = overlap(at, esize, active ? kOlActiveL2 : kOlInactiveL2)) {
            BLK_TRY(signal_overlap(hit));
            line("ERROR: Overlap check failed");
            r_.check_errors++;
            return make_error(EIO, "an L2 entry to fix overlaps other metadata");
        }
        Status st = at + esize <= file_.size() ? file_.write(at, table.subspan(i * esize, esize)) : make_error(EIO, "past the end");
        if (st) st = file_.flush();
        if (!st) {
            line(fmt("ERROR: Failed to overwrite L2 table entry: %s", std::strerror(st.error().code)));
            r_.check_errors++;
            return false;
        }
        r_.corruptions--;
        r_.corruptions_fixed++;
        return true;
    }

    // qemu's metadata overlap check (its default "cached" set: everything but inactive L2
    // tables), in its order: the name of what [off, off + len) would overwrite, or null.
    static constexpr unsigned kOlActiveL2 = 1, kOlInactiveL2 = 2, kOlActiveL1 = 4;
    const char* overlap(uint64_t off, uint64_t len, unsigned ign) {
        if (len == 0) return nullptr;
        if (off < cs_) return "qcow2_header";
        const uint64_t lo = off / cs_ * cs_, hi = (off + len + cs_ - 1) / cs_ * cs_;
        auto hits = [&](uint64_t o, uint64_t l) { return l != 0 && o < hi && lo < o + l; };
        if (!(ign & kOlActiveL1) && hits(h_.l1_table_offset, uint64_t{h_.l1_size} * 8)) return "active L1 table";
        if (hits(h_.refcount_table_offset, reftable_.size() * 8)) return "refcount table";
        if (hits(h_.snapshots_offset, snap_bytes_)) return "snapshot table";
        for (const SnapshotRef& sn : snaps_) {
            if (hits(sn.l1_offset, uint64_t{sn.l1_size} * 8)) return "inactive L1 table";
        }
        if (!(ign & kOlActiveL2)) {
            for (uint64_t e : active_l1_) {
                if ((e & kOffsetMask) && hits(e & kOffsetMask, cs_)) return "active L2 table";
            }
        }
        for (uint64_t e : reftable_) {
            if ((e & kRefTableEntryMask) && hits(e & kRefTableEntryMask, cs_)) return "refcount block";
        }
        if ((h_.autoclear & kAutoclearBitmaps) && hits(h_.bitmap_dir_offset, h_.bitmap_dir_size)) return "bitmap directory";
        return nullptr;
    }

    // What qemu does when a write would overwrite metadata: it says so, marks the image
    // corrupt (so that nothing writes to it until it is repaired) and stops.
    Status signal_overlap(const char* what) {
        signal_corruption(fmt("Preventing invalid write on metadata (overlaps with %s)", what));
        return {};
    }

    // qemu's corruption event, said once: on a read-only check only reported; on an image
    // open for repair the corrupt bit is set on disk and the image is done for (qemu can no
    // longer check it again: "No medium found").
    void signal_corruption(const std::string& what) {
        if (signaled_) return;
        signaled_ = true;
        if (fix_ == Repair::None) {
            line("qcow2: Image is corrupt: " + what + "; further non-fatal corruption events will be suppressed");
            return;
        }
        line("qcow2: Marking image as corrupt: " + what + "; further corruption events will be suppressed");
        r_.disabled = true;
        if (h_.version < 3 || (h_.incompatible & kIncompatCorrupt)) return;
        h_.incompatible |= kIncompatCorrupt;
        std::byte be[8];
        store_be64(be, h_.incompatible);
        if (file_.write(72, be)) (void)file_.flush();  // best effort: the repair fails anyway
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

    Status check_refblocks(bool fix) {
        for (uint64_t i = 0; i < reftable_.size(); ++i) {
            const uint64_t off = reftable_[i] & kRefTableEntryMask;
            if (reftable_[i] & kRefTableReservedMask) {
                line(fmt("ERROR refcount table entry %" PRId64 " has reserved bits set", static_cast<int64_t>(i)));
                r_.corruptions++;
                rebuild_ = true;
                continue;
            }
            if (off & (cs_ - 1)) {
                line(fmt("ERROR refcount block %" PRId64 " is not cluster aligned; refcount table entry corrupted",
                         static_cast<int64_t>(i)));
                r_.corruptions++;
                rebuild_ = true;
                continue;
            }
            if (off / cs_ >= nb_clusters_) {
                line(fmt("%s refcount block %" PRId64 " is outside image", fix ? "Repairing" : "ERROR",
                         static_cast<int64_t>(i)));
                if (!fix) {
                    r_.corruptions++;
                    continue;
                }
                // qemu grows the file to hold the block (it then reads as zeroes and the
                // refcounts it should hold are rebuilt). A block far past the end would
                // make a huge file: refused like a failed resize.
                Status st = off / cs_ + 1 > kMaxCheckClusters ? make_error(EFBIG, "File too large")
                                                               : file_.truncate(off + cs_);
                if (!st) {
                    r_.corruptions++;
                    rebuild_ = true;
                    line(fmt("ERROR could not resize image: %s", std::strerror(st.error().code)));
                    continue;
                }
                nb_clusters_ = (file_.size() + cs_ - 1) / cs_;
                if (imrt_.size() < nb_clusters_) imrt_.resize(nb_clusters_);
                r_.corruptions_fixed++;
                inc(off, cs_);
                continue;
            }
            if (off == 0) continue;
            inc(off, cs_);
            if (imrt_[off / cs_] != 1) {
                line(fmt("ERROR refcount block %" PRId64 " refcount=%" PRIu64, static_cast<int64_t>(i), imrt_[off / cs_]));
                r_.corruptions++;
                rebuild_ = true;
            }
        }
        return {};
    }

    // The refcount the image records for `cluster` (0 where no block covers it).
    Result<uint64_t> disk_refcount(uint64_t cluster) {
        const uint64_t per_block = refcount_block_entries(h_);
        const uint64_t idx = cluster / per_block;
        if (idx >= reftable_.size()) return uint64_t{0};
        const uint64_t off = reftable_[idx] & kRefTableEntryMask;
        if (off == 0) return uint64_t{0};
        if (off & (cs_ - 1)) {
            signal_corruption(fmt("Refblock offset %#" PRIx64 " unaligned (reftable index: %#" PRIx64 ")", off, idx));
            return make_error(EIO, "unaligned refcount block");
        }
        if (block_index_ != idx) {
            block_.resize(cs_);
            BLK_TRY(read(off, block_));
            block_index_ = idx;
        }
        return get_refcount(block_, cluster % per_block, h_.refcount_order);
    }

    // Compares the recorded refcounts with the counted ones; `fix` repairs leaks (Leaks)
    // or every mismatch but a missing refcount (All), which needs a rebuild.
    Status compare_refcounts(Repair fix) {
        highest_ = 0;
        std::vector<std::pair<uint64_t, uint64_t>> raise, lower;  // cluster, new refcount
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
            uint64_t* fixed = nullptr;
            if (r1 == 0) {
                rebuild_ = true;
            } else if (r1 > r2 && fix != Repair::None) {
                fixed = &r_.leaks_fixed;
            } else if (r1 < r2 && fix == Repair::All) {
                fixed = &r_.corruptions_fixed;
            }
            line(fmt("%s cluster %" PRId64 " refcount=%" PRIu64 " reference=%" PRIu64,
                     fixed ? "Repairing" : r1 < r2 ? "ERROR" : "Leaked", static_cast<int64_t>(i), r1, r2));
            if (fixed) {
                (*fixed)++;
                (r1 < r2 ? raise : lower).emplace_back(i, r2);
                continue;
            }
            if (r1 < r2) r_.corruptions++;
            else r_.leaks++;
        }
        // An image marked corrupt meanwhile gets no refcount writes (qemu's go through its
        // refcount cache, which a disabled image never writes back): the fixes stay leaks;
        // the discards of freed clusters still happen, as in qemu.
        if (!r_.disabled) {
            // Raised first, lowered after: see the top of the file.
            BLK_TRY(set_disk_refcounts(raise));
            BLK_TRY(set_disk_refcounts(lower));
        }
        // Clusters freed for good are discarded once their refcount 0 is on disk, as qemu
        // does (advisory: a failed discard leaves the bytes, unreferenced).
        for (size_t k = 0; k < lower.size();) {
            size_t e = k;
            while (e < lower.size() && lower[e].second == 0 && (e == k || lower[e].first == lower[e - 1].first + 1)) ++e;
            if (e == k) {
                ++k;
                continue;
            }
            (void)file_.discard(lower[k].first * cs_, (e - k) * cs_);
            k = e;
        }
        return {};
    }

    // Writes new refcounts into the existing refcount blocks (each fix above has one: its
    // recorded refcount is not zero), one block write each, then flushes.
    Status set_disk_refcounts(const std::vector<std::pair<uint64_t, uint64_t>>& v) {
        if (v.empty()) return {};
        const uint64_t per_block = refcount_block_entries(h_);
        std::vector<std::byte> blk(cs_);
        uint64_t cur = UINT64_MAX, cur_off = 0;
        auto write_back = [&]() -> Status {
            if (cur == UINT64_MAX) return {};
            BLK_TRY(write_meta(cur_off, blk, "refcount block"));
            return {};
        };
        for (const auto& [cluster, value] : v) {
            const uint64_t idx = cluster / per_block;
            if (idx != cur) {
                BLK_TRY(write_back());
                cur = idx;
                cur_off = reftable_[idx] & kRefTableEntryMask;
                BLK_TRY(read(cur_off, blk));
            }
            set_refcount(blk, cluster % per_block, h_.refcount_order, value);
        }
        BLK_TRY(write_back());
        block_index_ = UINT64_MAX;
        return sync();
    }

    Status sync() {
        Status st = file_.flush();
        if (!st) return make_error(st.error().code, "could not flush the image: " + st.error().message);
        return {};
    }

    // True if [off, off + len) touches the header, the L1 table, the refcount table or a
    // refcount block, the snapshot table or a snapshot's L1 table, or lies past the end of
    // the file. `l2_ok`: an active L2 table may be there (it is the one being rewritten).
    bool unsafe_to_write(uint64_t off, uint64_t len, bool l2_ok) const {
        const uint64_t size = file_.size();
        if (off < cs_ || off > size || len > size - off) return true;
        const uint64_t lo = off / cs_ * cs_, hi = (off + len + cs_ - 1) / cs_ * cs_;
        auto hits = [&](uint64_t o, uint64_t l) { return l != 0 && o < hi && lo < o + l; };
        if (hits(h_.l1_table_offset, uint64_t{h_.l1_size} * 8)) return true;
        if (hits(h_.refcount_table_offset, reftable_.size() * 8)) return true;
        for (uint64_t e : reftable_) {
            if ((e & kRefTableEntryMask) && hits(e & kRefTableEntryMask, cs_)) return true;
        }
        if (hits(h_.snapshots_offset, snap_bytes_)) return true;
        for (const SnapshotRef& s : snaps_) {
            if (hits(s.l1_offset, uint64_t{s.l1_size} * 8)) return true;
        }
        if (!l2_ok) {
            for (uint64_t e : active_l1_) {
                if ((e & kOffsetMask) && hits(e & kOffsetMask, cs_)) return true;
            }
        }
        return false;
    }

    // Writes metadata the repair rebuilt or fixed; `what` names it in errors.
    Status write_meta(uint64_t off, std::span<const std::byte> buf, const char* what) {
        Status st = file_.write(off, buf);
        if (!st) {
            line(fmt("ERROR: Could not write %s: %s", what, std::strerror(st.error().code)));
            r_.check_errors++;
            return make_error(st.error().code, std::string("could not write ") + what);
        }
        return {};
    }

    // COPIED flags against the recorded refcounts. -r all fixes them; -r leaks only when
    // nothing else is wrong (the refcounts they are judged by are then right), as qemu.
    Status check_copied() {
        const bool repair = fix_ == Repair::All ||
                            (fix_ == Repair::Leaks && !r_.check_errors && !r_.corruptions && !r_.leaks);
        const char* tag = repair ? "Repairing" : "ERROR";
        std::vector<std::byte> l2(cs_);
        for (size_t i = 0; i < l1_.size(); ++i) {
            const uint64_t l1e = l1_[i];
            const uint64_t l2_off = l1e & kOffsetMask;
            if (!l2_off) continue;
            auto rc = disk_refcount(l2_off / cs_);
            if (!rc) continue;
            if ((*rc == 1) != ((l1e & kEntryCopied) != 0)) {
                r_.corruptions++;
                line(fmt("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%" PRIx64 " refcount=%" PRIu64, tag,
                         static_cast<int>(i), l1e, *rc));
                if (repair) {
                    const uint64_t fixed = *rc == 1 ? l1e | kEntryCopied : l1e & ~kEntryCopied;
                    std::byte be[8];
                    store_be64(be, fixed);
                    const uint64_t at = h_.l1_table_offset + uint64_t{i} * 8;
                    if (const char* hit = overlap(at, 8, kOlActiveL1)) {
                        BLK_TRY(signal_overlap(hit));
                        r_.check_errors++;
                        return make_error(EIO, "an L1 entry to fix overlaps other metadata");
                    }
                    if (at + 8 > file_.size()) {
                        line("ERROR: Could not write L1 entry; it lies outside the image");
                        r_.check_errors++;
                        return make_error(EIO, "L1 entry outside the image");
                    }
                    BLK_TRY(write_meta(at, be, "L1 entry"));
                    l1_[i] = fixed;
                    r_.corruptions--;
                    r_.corruptions_fixed++;
                }
            }
            BLK_TRY(read(l2_off, l2));
            uint64_t l2_dirty = 0;
            for (uint64_t j = 0; j < h_.l2_entries(); ++j) {
                L2Entry le = load_l2_entry(h_, l2, j);
                const uint64_t e = le.entry;
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
                    line(fmt("%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64, tag, e, refcount));
                    if (repair) {
                        le.entry = refcount == 1 ? e | kEntryCopied : e & ~kEntryCopied;
                        store_l2_entry(h_, l2, j, le);
                        l2_dirty++;
                    }
                }
            }
            if (l2_dirty) {
                // Only an L2 table that lies whole in the file on no other metadata is
                // rewritten (qemu's overlap check).
                const char* hit = overlap(l2_off, cs_, kOlActiveL2);
                if (hit) BLK_TRY(signal_overlap(hit));
                if (hit || (l2_off & (cs_ - 1)) || unsafe_to_write(l2_off, cs_, true)) {
                    line("ERROR: Could not write L2 table; metadata overlap check failed: Input/output error");
                    r_.check_errors++;
                    return make_error(EIO, "L2 table overlaps other metadata");
                }
                BLK_TRY(write_meta(l2_off, l2, "L2 table"));
                r_.corruptions -= l2_dirty;
                r_.corruptions_fixed += l2_dirty;
            }
        }
        if (repair) return sync();
        return {};
    }

    // --- rebuilding the refcount structure from the in-memory refcounts (qemu's layout) ---

    // Marks `n` contiguous clusters used in the in-memory refcounts, the first run free at or
    // after *first_free (grown past the end when none is); *first_free moves to the first
    // free cluster seen. Returns the run's offset.
    uint64_t alloc_imrt(uint64_t n, uint64_t& first_free) {
        uint64_t c = first_free, run = 0;
        bool first_gap = true;
        for (; c < imrt_.size() && run < n; ++c) {
            if (imrt_[c] == 0) {
                run++;
                if (first_gap) {
                    first_free = c;
                    first_gap = false;
                }
            } else {
                run = 0;
            }
        }
        if (run < n) imrt_.resize(c + n - run);
        c -= run;
        for (uint64_t k = 0; k < n; ++k) imrt_.set(c + k, 1);
        return c * cs_;
    }

    // Writes a refcount block for every block-sized range of clusters in [first, end) that
    // holds a counted cluster: a slice of the in-memory refcounts, placed in a free cluster
    // (which it counts itself) unless `table` already names one. True if `table` grew.
    Result<bool> write_refblocks(uint64_t first, uint64_t end, std::vector<uint64_t>& table) {
        const uint64_t per_block = refcount_block_entries(h_);
        const uint64_t max_entries = kMaxRefcountTableBytes / 8;
        uint64_t first_free = 0;
        bool grown = false;
        std::vector<std::byte> blk(cs_);
        for (uint64_t c = first; c < end && c < imrt_.size(); ++c) {
            if (imrt_[c] == 0) continue;
            const uint64_t index = c / per_block, start = index * per_block;
            uint64_t off = 0;
            if (index < table.size() && table[index]) {
                off = table[index];
            } else {
                first_free = std::max(first_free, start);
                off = alloc_imrt(1, first_free);
                if (off / cs_ >= end) end = off / cs_ + 1;  // the block holding its own refcount
                if (index >= table.size()) {
                    const uint64_t per_cluster = cs_ / 8;
                    const uint64_t entries = (index + per_cluster) / per_cluster * per_cluster;
                    if (entries > max_entries) {
                        line("ERROR allocating reftable: File too large");
                        r_.check_errors++;
                        return make_error(EFBIG, "the rebuilt refcount table would be too large");
                    }
                    table.resize(entries, 0);
                    grown = true;
                }
                table[index] = off;
            }
            std::fill(blk.begin(), blk.end(), std::byte{0});
            for (uint64_t k = 0; k < per_block && start + k < imrt_.size(); ++k) {
                set_refcount(blk, k, h_.refcount_order, std::min(imrt_[start + k], refcount_max(h_.refcount_order)));
            }
            BLK_TRY(place(off, blk, "refblock"));
            c = start + per_block - 1;
        }
        return grown;
    }

    // Writes freshly allocated structure data, growing the file when it lies past the end,
    // never onto the old structure or other metadata.
    Status place(uint64_t off, std::span<const std::byte> buf, const char* what) {
        if (off + buf.size() > file_.size()) {
            Status st = file_.truncate(off + buf.size());
            if (!st) {
                line(fmt("ERROR writing %s: %s", what, std::strerror(st.error().code)));
                r_.check_errors++;
                return make_error(st.error().code, std::string("could not grow the image for a ") + what);
            }
        }
        const char* hit = overlap(off, buf.size(), 0);
        if (hit) BLK_TRY(signal_overlap(hit));
        if (hit || unsafe_to_write(off, buf.size(), false)) {
            line(fmt("ERROR writing %s: Input/output error", what));
            r_.check_errors++;
            return make_error(EIO, std::string("a new ") + what + " would overlap other metadata");
        }
        return write_meta(off, buf, what);
    }

    // A new refcount structure from the in-memory refcounts (see the top of the file for
    // the order of writes). The old one stays allocated; the caller frees it as leaks.
    Status rebuild_structure() {
        std::vector<uint64_t> table;
        BLK_TRY_ASSIGN(bool grown, write_refblocks(0, imrt_.size(), table));
        uint64_t rt_off = 0, rt_clusters = 0;
        do {
            rt_clusters = (table.size() * 8 + cs_ - 1) / cs_;
            uint64_t first_free = 0;
            rt_off = alloc_imrt(rt_clusters, first_free);
            BLK_TRY_ASSIGN(grown, write_refblocks(rt_off / cs_, rt_off / cs_ + rt_clusters, table));
        } while (grown);
        std::vector<std::byte> buf(rt_clusters * cs_);
        for (size_t i = 0; i < table.size(); ++i) store_be64(buf.data() + i * 8, table[i]);
        BLK_TRY(place(rt_off, buf, "reftable"));
        BLK_TRY(sync());
        std::byte hdr[12];
        store_be64(hdr, rt_off);
        store_be32(hdr + 8, static_cast<uint32_t>(rt_clusters));
        BLK_TRY(write_meta(48, hdr, "reftable location into the header"));
        BLK_TRY(sync());
        h_.refcount_table_offset = rt_off;
        h_.refcount_table_clusters = static_cast<uint32_t>(rt_clusters);
        return {};
    }

    // qemu marks a repaired image clean and consistent: the dirty and corrupt bits go.
    Status mark_clean() {
        if (h_.version < 3 || !(h_.incompatible & (kIncompatDirty | kIncompatCorrupt))) return {};
        h_.incompatible &= ~(kIncompatDirty | kIncompatCorrupt);
        std::byte be[8];
        store_be64(be, h_.incompatible);
        BLK_TRY(write_meta(72, be, "header"));
        return sync();
    }

    Header h_;  // a copy: a rebuild moves the refcount table
    Node& file_;
    CheckResult& r_;
    const uint64_t cs_;
    const Repair fix_;
    bool calc_fix_ = false;
    bool signaled_ = false;  // a corruption event was reported (qemu reports the first only)  // the counting pass under way repairs (the first one of -r all)
    bool rebuild_ = false;  // the refcount structure is broken: only a rebuild fixes it
    std::vector<SnapshotRef> snaps_;
    uint64_t snap_bytes_ = 0;
    bool data_file_ = false;
    uint64_t nb_clusters_ = 0;
    uint64_t highest_ = 0;
    RefArray imrt_;
    std::vector<uint64_t> reftable_;
    std::vector<uint64_t> l1_;
    std::vector<uint64_t> active_l1_;  // with a repair: the active L1 entries, for overlap checks
    std::vector<std::byte> block_;
    uint64_t block_index_ = UINT64_MAX;
};

}  // namespace

Result<CheckResult> check_qcow2(Node& file, Repair repair) {
    BLK_TRY_ASSIGN(std::vector<std::byte> head, read_header_cluster(file));
    auto h = parse_header(head, file.size());
    if (!h) return std::move(h).error();
    if (repair != Repair::None && file.read_only()) return make_error(EACCES, "the image is open read-only");
    CheckResult r;
    Checker c(*h, file, r, repair);
    Status st = c.run();
    if (!st) {
        // A repair that stopped still reports what it printed and fixed.
        if (repair == Repair::None || r.check_errors == 0) return std::move(st).error();
        r.failed = st.error().code;
    }
    return r;
}

}  // namespace blk::qcow2

namespace blk {

Node* check_target(Node* root) {
    Node* n = skip_filters(root);
    if (!n || n->driver_name() != "qcow2") return nullptr;
    return primary_child(*n);
}

Result<CheckResult> check_image(Node* root, Repair repair) {
    Node* n = skip_filters(root);
    if (!n || n->driver_name() != "qcow2") return make_error(ENOTSUP, "This image format does not support checks");
    Node* file = primary_child(*n);
    if (!file) return make_error(EINVAL, "qcow2 node without file");
    return qcow2::check_qcow2(*file, repair);
}

}  // namespace blk
