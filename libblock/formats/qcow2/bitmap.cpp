// qcow2 persistent dirty bitmaps in a writable image, as qemu keeps them: at the writable
// open every bitmap is loaded and flagged in-use on disk (its content is then not to be
// trusted until it is stored back), every write, zero write and discard marks its range
// dirty in the enabled ("auto") ones, in memory; a resize resizes them all (new bits
// clean); when the image goes back to read-only or closes, each is stored and its in-use
// flag cleared.
//
// Store order (a crash at any point leaves a consistent image, leaks at worst): the bitmap
// data clusters and tables are written (new clusters for data that had none and for a table
// that grew; clusters already owned by the bitmap are rewritten in place, which is safe while
// it is flagged in-use), refcount increments reach the disk and a flush follows; then the
// directory names the new tables with the in-use flag cleared, a flush; only then do the
// clusters nothing names any more (an old table, data that became all-zero) lose their
// reference.
#include <algorithm>
#include <cstring>

#include "blk/endian.h"
#include "engine.h"

namespace blk::qcow2 {

namespace {

constexpr uint32_t kBitmapInUse = 1u << 0;
constexpr uint32_t kBitmapAuto = 1u << 1;
constexpr uint8_t kBitmapTypeDirty = 1;
constexpr uint64_t kBitmapEntryAllOnes = 1;
constexpr uint64_t kMaxBitmapBytes = 512ull << 20;

}  // namespace

uint64_t Qcow2Node::PersistentBitmap::bits_for(uint64_t size) const {
    const uint64_t g = uint64_t{1} << gran_bits;
    return (size + g - 1) / g;
}

// Loads the enabled bitmaps and flags them in-use on disk (see the top of the file).
// Anything this code would not store back as qemu does is refused.
Status Qcow2Node::open_bitmaps() {
    bitmaps_rw_.clear();
    bitmaps_in_use_ = false;
    if (!h_.has_bitmaps_ext || h_.nb_bitmaps == 0) return {};
    const uint64_t cs = h_.cluster_size();
    const uint64_t fsize = file_->size();
    if (!(h_.autoclear & kAutoclearBitmaps)) {
        return make_error(ENOTSUP, name_ + ": its persistent bitmaps were left inconsistent by an older writer; "
                                           "writing such images is not supported");
    }
    const uint64_t dir_off = h_.bitmap_dir_offset;
    const uint64_t dir_size = h_.bitmap_dir_size;
    if (dir_off % cs != 0 || dir_off > fsize || dir_size > fsize - dir_off) {
        return make_error(EIO, name_ + ": the bitmap directory is invalid");
    }
    const uint64_t dir_span = (dir_size + cs - 1) / cs * cs;
    if (meta_.overlaps(dir_off, dir_span)) return make_error(EIO, name_ + ": the bitmap directory overlaps other qcow2 metadata");
    bitmap_dir_.assign(dir_size, std::byte{0});
    BLK_TRY(file_->read(dir_off, bitmap_dir_).context(name_ + ": reading the bitmap directory"));
    meta_.add(dir_off, dir_span);
    uint64_t p = 0;
    bool any_enabled = false;
    for (uint32_t i = 0; i < h_.nb_bitmaps; ++i) {
        const std::string what = name_ + ": bitmap " + std::to_string(i);
        if (p + 24 > bitmap_dir_.size()) return make_error(EIO, name_ + ": the bitmap directory is truncated");
        const std::byte* e = bitmap_dir_.data() + p;
        PersistentBitmap b;
        b.dir_pos = p;
        b.table_off = load_be64(e) & kOffsetMask;
        b.table_size = load_be32(e + 8);
        b.flags = load_be32(e + 12);
        const uint8_t type = std::to_integer<uint8_t>(e[16]);
        b.gran_bits = std::to_integer<uint8_t>(e[17]);
        const uint16_t name_size = load_be16(e + 18);
        const uint32_t extra = load_be32(e + 20);
        if (p + 24 + extra + name_size > bitmap_dir_.size()) return make_error(EIO, what + ": its directory entry is truncated");
        const std::string bname(reinterpret_cast<const char*>(e + 24 + extra), name_size);
        if (b.flags & kBitmapInUse) {
            return make_error(ENOTSUP, name_ + ": bitmap '" + bname + "' is inconsistent (in use); writing such images is not supported");
        }
        if ((b.flags & ~(kBitmapInUse | kBitmapAuto)) || type != kBitmapTypeDirty || extra != 0 || b.gran_bits < 9 ||
            b.gran_bits > 31) {
            return make_error(ENOTSUP, name_ + ": bitmap '" + bname + "' has flags, a type or extra data blkimg does not know");
        }
        // qemu's BME_MAX_PHYS_SIZE: bitmaps are held in memory whole.
        if ((b.bits_for(size_) + 7) / 8 > kMaxBitmapBytes) {
            return make_error(ENOTSUP, name_ + ": bitmap '" + bname + "' is too large (granularity too fine for the image size)");
        }
        const uint64_t want_table = (b.bits_for(size_) + cs * 8 - 1) / (cs * 8);
        if (b.table_size != want_table) return make_error(EIO, what + ": its table has " + std::to_string(b.table_size) + " entries, expected " + std::to_string(want_table));
        const uint64_t tbytes = uint64_t{b.table_size} * 8;
        const uint64_t tspan = (tbytes + cs - 1) / cs * cs;
        if (b.table_off % cs != 0 || b.table_off > fsize || tbytes > fsize - b.table_off || meta_.overlaps(b.table_off, tspan)) {
            return make_error(EIO, what + ": its table at " + hex(b.table_off) + " is invalid");
        }
        std::vector<std::byte> raw(tbytes);
        BLK_TRY(file_->read(b.table_off, raw).context(what));
        meta_.add(b.table_off, tspan);
        b.table.resize(b.table_size);
        for (uint32_t k = 0; k < b.table_size; ++k) {
            b.table[k] = load_be64(raw.data() + 8ull * k);
            const uint64_t c = b.table[k] & kOffsetMask;
            if (c == 0) continue;
            if (c % cs != 0 || c >= fsize || cs > fsize - c || meta_.overlaps(c, cs)) {
                return make_error(EIO, what + ": table entry " + std::to_string(k) + " points at " + hex(c) + ", not a free cluster");
            }
            meta_.add(c, cs);
        }
        b.enabled = b.flags & kBitmapAuto;
        {
            any_enabled = true;
            b.bits.assign((b.bits_for(size_) + 7) / 8, 0);
            for (uint32_t k = 0; k < b.table_size; ++k) {
                const uint64_t from = uint64_t{k} * cs;
                if (from >= b.bits.size()) break;
                const uint64_t n = std::min<uint64_t>(cs, b.bits.size() - from);
                const uint64_t c = b.table[k] & kOffsetMask;
                if (c != 0) {
                    BLK_TRY(file_->read(c, std::as_writable_bytes(std::span(b.bits.data() + from, n))).context(what));
                } else if (b.table[k] & kBitmapEntryAllOnes) {
                    std::memset(b.bits.data() + from, 0xff, n);
                }
            }
        }
        bitmaps_rw_.push_back(std::move(b));
        p += (24ull + extra + name_size + 7) & ~7ull;
    }
    if (!any_enabled) return {};
    // In-use on disk before the first write can change the image, as qemu does at its
    // writable open (in place: only the flags change).
    for (const PersistentBitmap& b : bitmaps_rw_) store_be32(bitmap_dir_.data() + b.dir_pos + 12, b.flags | kBitmapInUse);
    std::lock_guard lock(mu_);
    BLK_TRY(file_->write(dir_off, bitmap_dir_).context(name_ + ": writing the bitmap directory"));
    unsynced_file_ = true;
    BLK_TRY(barrier_locked());
    bitmaps_in_use_ = true;
    return {};
}

void Qcow2Node::mark_bitmaps(uint64_t off, uint64_t len) {
    if (len == 0 || !bitmaps_in_use_) return;
    std::lock_guard lock(bitmap_mu_);
    for (PersistentBitmap& b : bitmaps_rw_) {
        if (!b.enabled || b.bits.empty()) continue;
        const uint64_t first = off >> b.gran_bits;
        const uint64_t last = std::min<uint64_t>((off + len - 1) >> b.gran_bits, b.bits.size() * 8 - 1);
        for (uint64_t i = first; i <= last; ++i) b.bits[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
    }
}

void Qcow2Node::resize_bitmaps(uint64_t size) {
    if (!bitmaps_in_use_) return;
    std::lock_guard lock(bitmap_mu_);
    // New bits start clean, as qemu's hbitmap_truncate leaves them; the last byte's bits
    // past the old end are clean already (never marked: marks stop at the old end).
    for (PersistentBitmap& b : bitmaps_rw_) b.bits.resize((b.bits_for(size) + 7) / 8, 0);
}

// Stores every enabled bitmap and clears its in-use flag (see the top of the file). Called
// with mu_ held, before the final write-back of a close or a reopen to read-only.
Status Qcow2Node::store_bitmaps_locked() {
    if (!bitmaps_in_use_) return {};
    const uint64_t cs = h_.cluster_size();
    std::vector<std::pair<uint64_t, uint64_t>> to_free;  // (first cluster, count), after the directory
    std::lock_guard block(bitmap_mu_);
    for (PersistentBitmap& b : bitmaps_rw_) {
        const uint64_t nbytes = b.bits.size();
        const uint64_t entries = (nbytes + cs - 1) / cs;
        std::vector<uint64_t> table(entries, 0);
        std::vector<std::byte> chunk(cs);
        for (uint64_t k = 0; k < entries; ++k) {
            const uint64_t from = k * cs;
            const uint64_t n = std::min<uint64_t>(cs, nbytes - from);
            const uint8_t* src = b.bits.data() + from;
            const bool zero = std::all_of(src, src + n, [](uint8_t v) { return v == 0; });
            const uint64_t old = k < b.table.size() ? (b.table[k] & kOffsetMask) : 0;
            if (zero) {
                if (old) to_free.emplace_back(old / cs, 1);
                continue;
            }
            uint64_t host = old;
            if (!host) {
                BLK_TRY_ASSIGN(AllocRun run, refs_->allocate(1, true));
                host = run.offset;
            }
            std::fill(chunk.begin(), chunk.end(), std::byte{0});
            std::memcpy(chunk.data(), src, n);
            BLK_TRY(file_->write(host, chunk).context(name_ + ": writing bitmap data"));
            table[k] = host;
        }
        const uint64_t old_span = (uint64_t{b.table_size} * 8 + cs - 1) / cs;
        const uint64_t new_span = (entries * 8 + cs - 1) / cs;
        uint64_t table_off = b.table_off;
        if (new_span > old_span || table_off == 0) {
            BLK_TRY_ASSIGN(AllocRun run, refs_->allocate(new_span, true));
            if (b.table_off) to_free.emplace_back(b.table_off / cs, old_span);
            table_off = run.offset;
        }
        std::vector<std::byte> raw(new_span * cs);
        for (uint64_t k = 0; k < entries; ++k) store_be64(raw.data() + 8 * k, table[k]);
        BLK_TRY(file_->write(table_off, raw).context(name_ + ": writing a bitmap table"));
        b.table = std::move(table);
        b.table_off = table_off;
        b.table_size = static_cast<uint32_t>(entries);
        std::byte* e = bitmap_dir_.data() + b.dir_pos;
        store_be64(e, table_off);
        store_be32(e + 8, b.table_size);
        store_be32(e + 12, b.flags & ~kBitmapInUse);
    }
    unsynced_file_ = true;
    // Refcount increments (new data, new tables) and the data itself, durable first.
    BLK_TRY(writeback_locked(false));
    BLK_TRY(barrier_locked());
    BLK_TRY(file_->write(h_.bitmap_dir_offset, bitmap_dir_).context(name_ + ": writing the bitmap directory"));
    unsynced_file_ = true;
    BLK_TRY(barrier_locked());
    bitmaps_in_use_ = false;
    for (auto [c, n] : to_free) refs_->defer_free(c, n, FreeKind::Always);
    return {};
}

}  // namespace blk::qcow2
