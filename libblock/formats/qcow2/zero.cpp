// qcow2 write_zeroes and discard: zero flags (v3), subcluster zero bits (extended L2),
// deallocation (v2 without a backing file), and zeroes in a raw external data file.
#include <algorithm>

#include "engine.h"

namespace blk::qcow2 {

namespace {

constexpr uint64_t kAllSubclusters = 0xffffffffull;

}  // namespace

// True if [off, off+bytes) already reads as zeroes.
Result<bool> Qcow2Node::reads_zero(uint64_t off, uint64_t bytes) {
    const uint64_t end = off + bytes;
    while (off < end) {
        Extent e;
        {
            std::lock_guard lock(mu_);
            BLK_TRY_ASSIGN(e, lookup_locked(off, end - off));
        }
        switch (e.kind) {
            case ClusterKind::ZeroPlain:
            case ClusterKind::ZeroAlloc:
                break;
            case ClusterKind::UnallocatedPlain:
            case ClusterKind::UnallocatedAlloc:
                if (!backing_reads_zero(off, e.bytes)) return false;
                break;
            default:
                return false;
        }
        off += e.bytes;
    }
    return true;
}

Status Qcow2Node::do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) {
    {
        std::lock_guard lock(mu_);
        BLK_TRY(writable_locked());
    }
    mark_bitmaps(off, bytes);
    const uint64_t g = h_.subcluster_size();
    const uint64_t end = off + bytes;
    uint64_t a = (off + g - 1) / g * g;
    // The last (sub)cluster of an image whose size is not aligned counts as whole.
    uint64_t b = end == size_ ? (end + g - 1) / g * g : end / g * g;
    std::vector<std::pair<uint64_t, uint64_t>> partial;
    if (a >= b) {
        partial.emplace_back(off, end);
        a = b = 0;
    } else {
        if (off < a) partial.emplace_back(off, a);
        if (b < end) partial.emplace_back(b, end);
    }
    for (auto [p0, p1] : partial) {
        BLK_TRY_ASSIGN(bool zero, reads_zero(p0, p1 - p0));
        if (zero) continue;
        if (flags & kZeroNoFallback) return make_error(ENOTSUP, name_ + ": cannot zero part of a cluster without writing data");
        BLK_TRY(Node::do_write_zeroes(p0, p1 - p0, 0));
    }
    if (a < b) BLK_TRY(zero_clusters(a, std::min(b, size_.load()) - a, flags, false));
    return {};
}

Status Qcow2Node::do_discard(uint64_t off, uint64_t bytes) {
    {
        std::lock_guard lock(mu_);
        BLK_TRY(writable_locked());
    }
    mark_bitmaps(off, bytes);
    // As qemu: whole clusters only (the partial last one counts when the request reaches the
    // end), and nothing for v2 images over a backing file, whose only way to drop a cluster
    // would show the backing file's data.
    if (h_.version < 3 && cow_child(*this)) return {};
    const uint64_t cs = h_.cluster_size();
    const uint64_t end = off + bytes;
    const uint64_t a = (off + cs - 1) / cs * cs;
    const uint64_t b = end == size_ ? end : end / cs * cs;
    if (a >= b) return {};
    return zero_clusters(a, b - a, kZeroMayUnmap, true);
}

// qemu's make_empty: a full discard of every cluster (unallocated, not zero, so the
// backing file shows through again), in every version. Clusters and L2 tables shared with
// internal snapshots lose the active image's reference only (the snapshots keep reading
// them). The host space is freed in the refcounts; the file keeps
// its length (qemu may rebuild a small image from scratch instead, with the same result
// for the guest).
Status Qcow2Node::do_make_empty() {
    {
        std::lock_guard lock(mu_);
        BLK_TRY(writable_locked());
    }
    if (size_ == 0) return {};
    BLK_TRY(zero_clusters(0, size_, kZeroMayUnmap, true, true));
    std::lock_guard lock(mu_);
    return writeback_locked(true);
}

// Makes whole (sub)clusters read as zero through metadata, one L2 table at a time.
Status Qcow2Node::zero_clusters(uint64_t off, uint64_t bytes, unsigned flags, bool discard, bool full) {
    const uint64_t cs = h_.cluster_size();
    const uint64_t scs = h_.subcluster_size();
    const uint64_t per_l2 = h_.l2_entries() * cs;
    const bool ext = h_.extended_l2();
    const bool unmap = flags & kZeroMayUnmap;
    const bool backing = cow_child(*this) != nullptr;
    const bool raw_data = external_ && (h_.autoclear & kAutoclearDataFileRaw);
    if (h_.version < 3 && backing && !full) {
        // No zero flag, and unallocated clusters would read the backing file.
        if (flags & kZeroNoFallback) {
            return make_error(ENOTSUP, name_ + ": compat=0.10 images over a backing file cannot zero without writing data");
        }
        return Node::do_write_zeroes(off, bytes, 0);
    }
    const uint64_t end = off + bytes;
    while (off < end) {
        const uint64_t chunk_end = std::min(end, (off / per_l2 + 1) * per_l2);
        const uint64_t first = off / cs, last = (chunk_end + cs - 1) / cs;
        std::vector<std::pair<uint64_t, uint64_t>> fallback;  // ranges zeroed by writing data
        Lock lk(mu_);
        BLK_TRY(writable_locked());
        begin_inflight_locked(lk, first, last);
        if (raw_data) {
            // The data file must stay a valid raw image: it reads zeroes there too.
            const uint64_t zend = std::min(chunk_end, data_->size());
            lk.unlock();
            Status io = zend > off ? data_->write_zeroes(off, zend - off, unmap ? kZeroMayUnmap : 0u) : Status{};
            lk.lock();
            if (!io) {
                end_inflight_locked(first, last);
                return std::move(io).error().with_context(name_);
            }
        }
        auto st = [&]() -> Status {
            // A discard with no L2 table and nothing below has nothing to drop. Writing
            // zeroes still records them, as qemu does (its map then says "present"), so
            // convert -n leaves the same image qemu-img does (iotest 122).
            if ((l1_[off / per_l2] & kOffsetMask) == 0 && ((!backing && discard) || full)) return {};
            BLK_TRY_ASSIGN(MetaCache::Entry * t, l2_for_write_locked(off / per_l2));
            for (uint64_t c = first; c < last; ++c) {
                Plan p;
                p.guest = c * cs;
                const uint64_t lo = std::max(off, p.guest) - p.guest;
                const uint64_t hi = std::min(chunk_end, p.guest + cs) - p.guest;
                const uint64_t index = c % h_.l2_entries();
                p.old = load_l2_entry(h_, t->data, index);
                BLK_TRY(classify_locked(p));  // checks every offset the entry names
                const L2Entry& old = p.old;
                const bool compressed = old.entry & kEntryCompressed;
                const bool hosted = !compressed && (standard_offset(old.entry) != 0 || (external_ && (old.entry & kEntryCopied)));
                const bool owned = hosted && !p.fresh;  // ours to keep (not shared)
                L2Entry next = old;
                bool release = false;
                if (full) {
                    if (old.entry == 0 && old.bitmap == 0) continue;
                    next = L2Entry{};
                    release = compressed || hosted;
                } else if (h_.version < 3) {
                    next = L2Entry{};
                    release = true;
                } else if (!ext) {
                    const ClusterKind k = *subcluster_kind(h_, old, 0);
                    if (k == ClusterKind::ZeroPlain || (k == ClusterKind::UnallocatedPlain && !backing && discard)) continue;
                    if (k == ClusterKind::ZeroAlloc && !unmap) continue;
                    if (owned && !unmap) {
                        next.entry = old.entry | kEntryZero;
                    } else {
                        next.entry = kEntryZero;
                        release = true;
                    }
                } else {
                    // Unallocated without a backing file already reads zero: a discard
                    // leaves it so, write_zeroes records zero bits as qemu does.
                    if (!hosted && !compressed && !backing && discard) continue;
                    uint64_t mask = 0;
                    for (uint64_t s = lo / scs; s < (hi + scs - 1) / scs; ++s) mask |= 1ull << s;
                    if ((compressed || (hosted && !owned)) && mask != kAllSubclusters) {
                        // The rest of shared or compressed data must move to a new cluster,
                        // which is what writing zeroes does.
                        fallback.emplace_back(p.guest + lo, p.guest + hi);
                        continue;
                    }
                    if (compressed || (hosted && !owned)) {
                        next = L2Entry{0, kL2BitmapAllZero};
                        release = true;
                    } else {
                        const uint64_t alloc = (old.bitmap & kAllSubclusters) & ~mask;
                        const uint64_t zero = (old.bitmap >> 32) | mask;
                        next.bitmap = alloc | (zero << 32);
                        if (hosted && unmap && alloc == 0 && zero == kAllSubclusters && !external_) {
                            next = L2Entry{0, kL2BitmapAllZero};
                            release = true;
                        }
                    }
                }
                if (next.entry == old.entry && next.bitmap == old.bitmap) continue;
                BLK_TRY(mark_dirty_locked());
                store_l2_entry(h_, t->data, index, next);
                l2_cache_.mark_dirty(t);
                if (release) BLK_TRY(release_locked(old, full ? FreeKind::Snapshot : FreeKind::Request));
            }
            return {};
        }();
        end_inflight_locked(first, last);
        if (!st) return meta_error_locked(std::move(st).error());
        BLK_TRY(maybe_writeback_locked());
        lk.unlock();
        for (auto [f0, f1] : fallback) {
            if (flags & kZeroNoFallback) {
                return make_error(ENOTSUP, name_ + ": cannot zero part of a shared or compressed cluster without writing data");
            }
            BLK_TRY(Node::do_write_zeroes(f0, f1 - f0, 0));
        }
        off = chunk_end;
    }
    return {};
}

}  // namespace blk::qcow2
