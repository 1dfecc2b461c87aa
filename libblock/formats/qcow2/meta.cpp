// qcow2 metadata: L2 tables for writing, the header (dirty and corrupt bits), write-back
// in crash-safe order, in-flight tracking, resize, and the facts a copy asks of a target.
#include <algorithm>
#include <cstring>

#include "blk/endian.h"
#include "compress.h"
#include "engine.h"

namespace blk::qcow2 {

Status Qcow2Node::writable_locked() const {
    if (!writable_) return make_error(EACCES, name_ + ": the image is open read-only");
    if (broken_) return make_error(EIO, broken_msg_);
    return {};
}

// An I/O error or corrupt metadata met while changing metadata stops all further writes, so
// nothing half-done reaches the disk: the image stays as its last write-back left it.
Error Qcow2Node::meta_error_locked(Error e) {
    if (e.code == EIO && !broken_) {
        broken_ = true;
        broken_msg_ = name_ + ": no further writes after an earlier error (" + e.message + ")";
    }
    return e;
}

void Qcow2Node::l1_dirty_locked(uint64_t index) {
    l1_dirty_lo_ = std::min(l1_dirty_lo_, index);
    l1_dirty_hi_ = std::max(l1_dirty_hi_, index + 1);
}

Result<MetaCache::Entry*> Qcow2Node::l2_for_write_locked(uint64_t l1_index) {
    const uint64_t cs = h_.cluster_size();
    if (l1_index >= l1_.size()) return make_error(EIO, name_ + ": L1 index " + std::to_string(l1_index) + " beyond the L1 table");
    const uint64_t e = l1_[l1_index];
    const uint64_t off = e & kOffsetMask;
    if (off == 0) {
        BLK_TRY(mark_dirty_locked());
        BLK_TRY_ASSIGN(AllocRun run, refs_->allocate(1, true));
        meta_.add(run.offset, cs);
        l1_[l1_index] = run.offset | kEntryCopied;
        l1_dirty_locked(l1_index);
        return l2_cache_.insert(run.offset, std::vector<std::byte>(cs), true);
    }
    if (!(e & kEntryCopied)) {
        // Shared with an internal snapshot (refcount > 1): the active L1 gets its own copy
        // before anything in it changes, as qemu's l2_allocate. The copy's entries keep
        // their flags: the data clusters stay shared by both tables (their refcounts do not
        // change), so each is copied in turn when written. The old table loses the active
        // L1's reference at write-back, after the L1 points at the copy.
        BLK_TRY_ASSIGN(MetaCache::Entry * old_t, l2_load_locked(off, l1_index));
        std::vector<std::byte> copy = old_t->data;
        BLK_TRY_ASSIGN(uint64_t refs, refs_->get(off / cs));
        BLK_TRY(mark_dirty_locked());
        BLK_TRY_ASSIGN(AllocRun run, refs_->allocate(1, true));
        meta_.add(run.offset, cs);
        l1_[l1_index] = run.offset | kEntryCopied;
        l1_dirty_locked(l1_index);
        refs_->defer_free(off / cs, 1, FreeKind::Other);
        // Nothing else holds a table whose refcount was 1 (a COPIED flag left clear): it is
        // free space after the decrement.
        if (refs <= 1) meta_.remove(off, cs);
        return l2_cache_.insert(run.offset, std::move(copy), true);
    }
    return l2_load_locked(off, l1_index);
}

Status Qcow2Node::mark_dirty_locked() {
    if (!lazy_ || dirty_on_disk_) return {};
    // Before the first metadata change: a crash from here on leaves refcounts to repair.
    h_.incompatible |= kIncompatDirty;
    BLK_TRY(write_header_locked());
    BLK_TRY(barrier_locked());
    dirty_on_disk_ = true;
    return {};
}

Status Qcow2Node::write_header_locked() {
    std::byte* b = hdr_.data();
    store_be64(b + 24, h_.size);
    store_be32(b + 36, h_.l1_size);
    store_be64(b + 40, h_.l1_table_offset);
    store_be64(b + 48, h_.refcount_table_offset);
    store_be32(b + 56, h_.refcount_table_clusters);
    if (h_.version >= 3) {
        store_be64(b + 72, h_.incompatible);
        store_be64(b + 88, h_.autoclear);
    }
    BLK_TRY(file_->write(0, hdr_).context(name_ + ": writing the header"));
    unsynced_file_ = true;
    return {};
}

// Makes everything written so far durable before what follows depends on it.
Status Qcow2Node::barrier_locked() {
    if (no_flush_) {
        // Writes still go out in order, which keeps the image consistent if the process
        // dies; only a host crash can lose them (cache=unsafe).
        unsynced_file_ = unsynced_data_ = false;
        return {};
    }
    if (unsynced_data_ && external_) BLK_TRY(data_->flush().context(name_ + ": flushing the data file"));
    if (unsynced_file_ || (unsynced_data_ && !external_)) BLK_TRY(file_->flush().context(name_ + ": flushing"));
    unsynced_file_ = unsynced_data_ = false;
    return {};
}

// Writes dirty metadata back so that the image on disk is consistent after every step (a
// crash leaks clusters at worst): refcount increments first (blocks, a grown table, then the
// header pointing at it), then L2 tables, then the L1 table and the header, then the
// refcount decrements of clusters nothing points at any more. A barrier (host flush) sits
// between steps that depend on each other. With lazy refcounts the refcount steps wait for
// the final flush (the dirty bit covers them) unless the refcount cache overflows.
Status Qcow2Node::writeback_locked(bool final) {
    if (!writable_) return {};
    if (broken_) return make_error(EIO, broken_msg_);
    auto st = [&]() -> Status {
        const uint64_t cs = h_.cluster_size();
        const bool refs = !lazy_ || final || refs_->needs_writeback();
        if (refs && (refs_->blocks_dirty() || refs_->table_dirty())) {
            BLK_TRY(refs_->write_blocks());
            BLK_TRY(refs_->write_table());
            unsynced_file_ = true;
            if (refs_->table_moved()) {
                BLK_TRY(barrier_locked());
                h_.refcount_table_offset = refs_->table_offset();
                h_.refcount_table_clusters = static_cast<uint32_t>(refs_->table_clusters());
                BLK_TRY(write_header_locked());
                BLK_TRY(barrier_locked());
                refs_->table_move_committed();
            }
        }
        std::vector<MetaCache::Entry*> dirty = l2_cache_.dirty_entries();
        if (!dirty.empty()) {
            BLK_TRY(barrier_locked());
            for (MetaCache::Entry* e : dirty) {
                BLK_TRY(file_->write(e->offset, e->data).context(name_ + ": writing L2 table at " + hex(e->offset)));
                l2_cache_.mark_clean(e);
            }
            unsynced_file_ = true;
        }
        if (l1_moved_to_ != 0) {
            BLK_TRY(barrier_locked());
            std::vector<std::byte> raw(l1_.size() * 8);
            for (uint64_t i = 0; i < l1_.size(); ++i) store_be64(raw.data() + 8 * i, l1_[i]);
            BLK_TRY(file_->write(l1_moved_to_, raw).context(name_ + ": writing the L1 table"));
            unsynced_file_ = true;
            BLK_TRY(barrier_locked());
            const uint64_t old_off = h_.l1_table_offset;
            const uint64_t old_clusters = (uint64_t{h_.l1_size} * 8 + cs - 1) / cs;
            h_.l1_table_offset = l1_moved_to_;
            h_.l1_size = static_cast<uint32_t>(l1_.size());
            h_.size = size_;
            BLK_TRY(write_header_locked());
            BLK_TRY(barrier_locked());
            l1_moved_to_ = 0;
            header_dirty_ = false;
            l1_dirty_lo_ = UINT64_MAX;
            l1_dirty_hi_ = 0;
            if (old_clusters != 0) {
                meta_.remove(old_off, old_clusters * cs);
                refs_->defer_free(old_off / cs, old_clusters, FreeKind::Other);
            }
        } else if (l1_dirty_lo_ < l1_dirty_hi_) {
            BLK_TRY(barrier_locked());
            std::vector<std::byte> raw((l1_dirty_hi_ - l1_dirty_lo_) * 8);
            for (uint64_t i = l1_dirty_lo_; i < l1_dirty_hi_; ++i) store_be64(raw.data() + 8 * (i - l1_dirty_lo_), l1_[i]);
            BLK_TRY(file_->write(h_.l1_table_offset + 8 * l1_dirty_lo_, raw).context(name_ + ": writing the L1 table"));
            unsynced_file_ = true;
            l1_dirty_lo_ = UINT64_MAX;
            l1_dirty_hi_ = 0;
        }
        if (header_dirty_) {
            BLK_TRY(barrier_locked());
            h_.size = size_;
            BLK_TRY(write_header_locked());
            header_dirty_ = false;
        }
        if (refs && refs_->has_deferred()) {
            BLK_TRY(barrier_locked());
            BLK_TRY(refs_->apply_deferred(discard_pass()));
            BLK_TRY(refs_->write_blocks());
            unsynced_file_ = true;
        }
        if (final) {
            unsynced_file_ = unsynced_data_ = true;  // the host flush is part of every flush
            BLK_TRY(barrier_locked());
            if (dirty_on_disk_) {
                h_.incompatible &= ~kIncompatDirty;
                BLK_TRY(write_header_locked());
                BLK_TRY(barrier_locked());
                dirty_on_disk_ = false;
            }
        }
        l2_cache_.trim();
        refs_->trim();
        return {};
    }();
    if (!st) return meta_error_locked(std::move(st).error());
    return {};
}

Status Qcow2Node::maybe_writeback_locked() {
    if (l2_cache_.needs_writeback() || refs_->needs_writeback()) return writeback_locked(false);
    return {};
}

void Qcow2Node::begin_inflight_locked(Lock& lk, uint64_t first, uint64_t end) {
    inflight_cv_.wait(lk, [&] {
        for (const auto& r : inflight_)
            if (r.first < end && first < r.second) return false;
        return true;
    });
    inflight_.emplace_back(first, end);
}

void Qcow2Node::end_inflight_locked(uint64_t first, uint64_t end) {
    auto it = std::find(inflight_.begin(), inflight_.end(), std::make_pair(first, end));
    if (it != inflight_.end()) inflight_.erase(it);
    inflight_cv_.notify_all();
}

Status Qcow2Node::grow_data_file(uint64_t end) {
    if (data_->size() >= end) return {};
    return data_->truncate(end).context(name_ + ": growing the data file");
}

Status Qcow2Node::do_flush() {
    std::lock_guard lock(mu_);
    if (!writable_) return {};
    return writeback_locked(true);
}

Status Qcow2Node::do_truncate(uint64_t size, Prealloc prealloc) {
    Lock lk(mu_);
    BLK_TRY(writable_locked());
    if (size == size_) return {};
    // As qemu: a v2 snapshot records no disk size of its own, so it would take the new one.
    if (h_.nb_snapshots > 0 && h_.version < 3) return make_error(ENOTSUP, "Can't resize a v2 image which has snapshots");
    if (size < size_) return make_error(ENOTSUP, name_ + ": shrinking qcow2 images is not supported yet");
    if (size % 512 != 0) return make_error(EINVAL, name_ + ": The new size must be a multiple of 512");
    if (size > kMaxVirtualSize) return make_error(EFBIG, name_ + ": Image is too big (virtual size " + std::to_string(size) + ")");
    const uint64_t cs = h_.cluster_size();
    const uint64_t per_l2 = h_.l2_entries() * cs;
    const uint64_t need = (size + per_l2 - 1) / per_l2;
    if (need * 8 > kMaxL1Bytes) return make_error(EFBIG, name_ + ": the L1 table would exceed qemu's limit of 32 MiB");
    begin_inflight_locked(lk, 0, UINT64_MAX);
    auto st = [&]() -> Status {
        BLK_TRY(mark_dirty_locked());
        if (need > l1_.size()) {
            const uint64_t clusters = (need * 8 + cs - 1) / cs;
            BLK_TRY_ASSIGN(AllocRun run, refs_->allocate(clusters, true));
            meta_.add(run.offset, clusters * cs);
            if (l1_moved_to_ != 0) {
                // An earlier move that never reached the header: nothing on disk points at it.
                const uint64_t old_clusters = (l1_.size() * 8 + cs - 1) / cs;
                meta_.remove(l1_moved_to_, old_clusters * cs);
                refs_->defer_free(l1_moved_to_ / cs, old_clusters, FreeKind::Never);
            }
            l1_.resize(need, 0);
            l1_moved_to_ = run.offset;
        }
        const uint64_t old_size = size_;
        if (external_ && data_->size() < size) {
            const Prealloc file_mode = prealloc == Prealloc::Metadata ? Prealloc::Off : prealloc;
            BLK_TRY(data_->truncate(size, file_mode).context(name_ + ": growing the data file"));
        }
        // As qemu: a raw data file's clusters are all mapped, so the new ones are too.
        if (prealloc == Prealloc::Off && external_ && (h_.autoclear & kAutoclearDataFileRaw)) prealloc = Prealloc::Metadata;
        size_ = size;
        resize_bitmaps(size);
        header_dirty_ = true;
        if (prealloc != Prealloc::Off) BLK_TRY(preallocate_locked(old_size, size, prealloc));
        return writeback_locked(false);
    }();
    end_inflight_locked(0, UINT64_MAX);
    if (!st) return meta_error_locked(std::move(st).error());
    return {};
}

// Allocates every unallocated cluster of guest range [from, to) as zero-filled data, L2
// tables first, data clusters in contiguous runs (qemu's preallocation): `metadata` leaves
// the data clusters sparse in the file, `falloc` reserves them, `full` writes zeroes.
Status Qcow2Node::preallocate_locked(uint64_t from, uint64_t to, Prealloc mode) {
    const uint64_t cs = h_.cluster_size();
    const uint64_t per_table = h_.l2_entries();
    std::vector<std::pair<uint64_t, uint64_t>> runs;  // host ranges to reserve or zero
    uint64_t c = from / cs;
    const uint64_t end = (to + cs - 1) / cs;
    while (c < end) {
        const uint64_t l1i = c / per_table;
        const uint64_t table_end = std::min(end, (l1i + 1) * per_table);
        BLK_TRY_ASSIGN(MetaCache::Entry * t, l2_for_write_locked(l1i));
        std::vector<uint64_t> todo;
        for (uint64_t k = c; k < table_end; ++k) {
            const L2Entry e = load_l2_entry(h_, t->data, k % per_table);
            const bool hosted = standard_offset(e.entry) != 0 || (external_ && (e.entry & kEntryCopied));
            if (!hosted && !(e.entry & kEntryCompressed)) todo.push_back(k);
        }
        std::vector<uint64_t> hosts;
        hosts.reserve(todo.size());
        if (external_) {
            for (uint64_t k : todo) hosts.push_back(k * cs);
        } else {
            while (hosts.size() < todo.size()) {
                BLK_TRY_ASSIGN(AllocRun run, refs_->allocate(todo.size() - hosts.size(), false));
                for (uint64_t i = 0; i < run.clusters; ++i) hosts.push_back(run.offset + i * cs);
                if (!runs.empty() && runs.back().second == run.offset) runs.back().second += run.clusters * cs;
                else runs.emplace_back(run.offset, run.offset + run.clusters * cs);
            }
        }
        BLK_TRY_ASSIGN(t, l2_for_write_locked(l1i));
        for (size_t i = 0; i < todo.size(); ++i) {
            // With extended L2, as qemu: the space is reserved, the subclusters stay unallocated.
            store_l2_entry(h_, t->data, todo[i] % per_table, L2Entry{standard_entry(hosts[i], true), 0});
        }
        if (!todo.empty()) l2_cache_.mark_dirty(t);
        BLK_TRY(maybe_writeback_locked());
        c = table_end;
    }
    if (external_ || mode == Prealloc::Metadata) return {};  // a data file was preallocated as it grew
    constexpr uint64_t kZeroChunk = 1 << 20;
    const std::vector<std::byte> zeroes(mode == Prealloc::Full ? kZeroChunk : 0);
    for (auto [a, b] : runs) {
        if (mode == Prealloc::Falloc) {
            BLK_TRY(file_->write_zeroes(a, b - a, 0).context(name_ + ": preallocating"));
            continue;
        }
        for (uint64_t pos = a; pos < b; pos += kZeroChunk) {
            BLK_TRY(file_->write(pos, std::span(zeroes).first(std::min(kZeroChunk, b - pos))).context(name_ + ": preallocating"));
        }
    }
    unsynced_data_ = true;
    return {};
}

// Everything but compressed writes with an external data file (qemu refuses those too);
// zero_init as qemu's has_zero_init, below.
Capabilities Qcow2Node::own_caps() const {
    Capabilities c;
    c.flush = true;
    c.truncate = true;
    c.fast_zero = true;
    c.discard = true;
    c.make_empty = true;
    c.write_compressed = writable_ && !external_;
    c.zero_init = zero_init();
    c.backing = true;
    c.block_status = true;
    return c;
}

Result<CompressedCluster> Qcow2Node::compress_cluster(std::span<const std::byte> data) const {
    const uint64_t cs = h_.cluster_size();
    if (data.empty() || data.size() > cs) {
        return make_error(EINVAL, "compress_cluster: " + std::to_string(data.size()) + " bytes for a cluster of " + std::to_string(cs));
    }
    std::vector<std::byte> padded;
    std::span<const std::byte> in = data;
    if (data.size() < cs) {
        // The image's last cluster: qemu compresses it padded with zeroes to a whole cluster.
        padded.assign(cs, std::byte{0});
        std::memcpy(padded.data(), data.data(), data.size());
        in = padded;
    }
    // Like qemu: the result must be smaller than a cluster, or the cluster is stored plain.
    BLK_TRY_ASSIGN(auto out, compress_cluster_data(h_.compression, in, cs - 1));
    CompressedCluster c;
    if (out) {
        c.bytes = std::move(*out);
        c.compressed = true;
    } else {
        c.bytes.assign(data.begin(), data.end());
    }
    return c;
}

// As qemu: an image reads as zeroes right after creation unless a backing file shows
// through, or metadata was preallocated over a data file that is not known to be zero.
bool Qcow2Node::zero_init() const {
    if (cow_child(*this) || !h_.backing_file.empty() || h_.crypt_method != 0) return false;
    std::lock_guard lock(mu_);
    for (uint64_t e : l1_)
        if (e & kOffsetMask) return data_->caps().zero_init;
    return true;
}

// The corrupt bit is our mark (qemu then refuses the image read-write and `info` shows
// "corrupt: true"); the file below records an extended attribute, best effort, which lets
// our own read-write open tell the mark from real corruption. v2 images have no feature
// bits: the file's mark is all there is.
Status Qcow2Node::set_incomplete(bool on) {
    std::lock_guard lock(mu_);
    BLK_TRY(writable_locked());
    if (h_.version < 3) return file_->set_incomplete(on);
    if (on) {
        h_.incompatible |= kIncompatCorrupt;
        auto st = [&]() -> Status {
            BLK_TRY(write_header_locked());
            return barrier_locked();
        }();
        if (!st) return meta_error_locked(std::move(st).error());
        (void)file_->set_incomplete(true);
        return {};
    }
    BLK_TRY(writeback_locked(true));
    h_.incompatible &= ~kIncompatCorrupt;
    auto st = [&]() -> Status {
        BLK_TRY(write_header_locked());
        return barrier_locked();
    }();
    if (!st) return meta_error_locked(std::move(st).error());
    auto fst = file_->set_incomplete(false);
    if (!fst && fst.error().code != ENOTSUP) return fst;
    return {};
}

bool Qcow2Node::incomplete() const {
    std::lock_guard lock(mu_);
    if (h_.version < 3) return file_->incomplete();
    return h_.incompatible & kIncompatCorrupt;
}

}  // namespace blk::qcow2
