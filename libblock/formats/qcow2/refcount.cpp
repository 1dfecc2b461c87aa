// qcow2 refcounts: refcount table and blocks, cluster and byte allocation, table growth.
#include "refcount.h"

#include <algorithm>
#include <cstdio>

#include "blk/endian.h"

namespace blk::qcow2 {

namespace {

std::string hex(uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

uint64_t div_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

Refcounts::Refcounts(const Header& h, const EdgeSlot& file, std::string name, MetadataMap& meta)
    : h_(h),
      file_(file),
      name_(std::move(name)),
      meta_(meta),
      cache_(std::max<size_t>(kMinRefblockCacheEntries, kRefblockCacheBytes / h.cluster_size())),
      cs_(h.cluster_size()),
      per_block_(refcount_block_entries(h)),
      max_(refcount_max(h.refcount_order)) {}

Error Refcounts::corrupt(const std::string& what) const { return make_error(EIO, name_ + ": " + what); }

Status Refcounts::load() {
    table_offset_ = h_.refcount_table_offset;
    table_clusters_ = h_.refcount_table_clusters;
    std::vector<std::byte> raw(table_clusters_ * cs_);
    BLK_TRY(file_->read(table_offset_, raw).context(name_ + ": reading the refcount table"));
    table_.resize(raw.size() / 8);
    const uint64_t fsize = file_->size();
    for (uint64_t i = 0; i < table_.size(); ++i) {
        table_[i] = load_be64(raw.data() + 8 * i) & kRefTableEntryMask;
        const uint64_t off = table_[i];
        if (off == 0) continue;
        const std::string what = "refcount block " + std::to_string(i) + " at " + hex(off);
        if (off % cs_ != 0) return corrupt(what + " is not cluster-aligned");
        if (off >= fsize || cs_ > fsize - off) return corrupt(what + " lies past the end of the file");
        if (meta_.overlaps(off, cs_)) return corrupt(what + " overlaps other qcow2 metadata");
        meta_.add(off, cs_);
    }
    hwm_ = div_up(fsize, cs_);
    return {};
}

Result<MetaCache::Entry*> Refcounts::block(uint64_t index) {
    const uint64_t off = table_[index];
    if (MetaCache::Entry* e = cache_.find(off)) return e;
    std::vector<std::byte> data(cs_);
    BLK_TRY(file_->read(off, data).context(name_ + ": reading refcount block at " + hex(off)));
    return cache_.insert(off, std::move(data), false);
}

Result<uint64_t> Refcounts::get(uint64_t cluster) {
    const uint64_t i = cluster / per_block_;
    if (i >= table_.size() || table_[i] == 0) return uint64_t{0};
    BLK_TRY_ASSIGN(MetaCache::Entry * e, block(i));
    return get_refcount(e->data, cluster % per_block_, h_.refcount_order);
}

Status Refcounts::set_one(uint64_t cluster, uint64_t value) {
    BLK_TRY_ASSIGN(MetaCache::Entry * e, block(cluster / per_block_));
    set_refcount(e->data, cluster % per_block_, h_.refcount_order, value);
    cache_.mark_dirty(e);
    return {};
}

Status Refcounts::update(uint64_t cluster, int64_t delta) {
    BLK_TRY_ASSIGN(uint64_t cur, get(cluster));
    uint64_t next = cur;
    if (delta < 0) {
        const uint64_t d = static_cast<uint64_t>(-delta);
        if (cur < d) return corrupt("refcount of cluster " + hex(cluster * cs_) + " would drop below zero");
        next = cur - d;
    } else if (delta > 0) {
        const uint64_t d = static_cast<uint64_t>(delta);
        if (max_ - cur < d) {
            return make_error(EIO, name_ + ": refcount of cluster " + hex(cluster * cs_) + " would exceed the maximum of " +
                                       std::to_string(max_));
        }
        next = cur + d;
        BLK_TRY(ensure_block(cluster / per_block_));
    }
    if (next == cur) return {};
    BLK_TRY(set_one(cluster, next));
    if (next == 0) {
        free_hint_ = std::min(free_hint_, cluster);
        if (tail_ != 0 && tail_ / cs_ == cluster) tail_ = 0;
    }
    return {};
}

Status Refcounts::ensure_block(uint64_t index) {
    if (index >= table_.size()) return grow_table(index);
    if (table_[index] != 0) return {};
    // The block covers itself: it goes in the first cluster of its own range, which is free
    // (no block, so no refcounts there).
    const uint64_t c = index * per_block_;
    const uint64_t off = c * cs_;
    if (off >= kMaxHostOffset) return make_error(EFBIG, name_ + ": the image file would grow beyond 64 PiB");
    if (meta_.overlaps(off, cs_)) {
        return corrupt("a new refcount block at " + hex(off) + " would overwrite metadata (the refcounts are corrupt)");
    }
    BLK_TRY(grow_file(c + 1));
    table_[index] = off;
    table_dirty_ = true;
    cache_.insert(off, std::vector<std::byte>(cs_), true);
    meta_.add(off, cs_);
    BLK_TRY(set_one(c, 1));
    hwm_ = std::max(hwm_, c + 1);
    return {};
}

Status Refcounts::grow_table(uint64_t need_index) {
    // The new table and the blocks it needs go at the end of everything, in blocks that
    // count them: blocks first, then the table. Placing them can need one more block,
    // which can need a bigger table: iterate until the sizes settle.
    const uint64_t old_entries = table_.size();
    const uint64_t e0 = hwm_;
    auto missing_block = [&](uint64_t j) { return j >= old_entries || table_[j] == 0; };
    uint64_t b = 0, t = 0, entries = 0;
    std::vector<uint64_t> missing;
    for (int round = 0;; ++round) {
        if (round > 64) return corrupt("cannot size a new refcount table");
        const uint64_t end = e0 + b + t;
        const uint64_t last_index = std::max(need_index, (end > e0 ? end - 1 : e0) / per_block_);
        entries = std::max(last_index + 1, old_entries + old_entries / 2);
        const uint64_t t_new = div_up(entries * 8, cs_);
        missing.clear();
        if (missing_block(need_index)) missing.push_back(need_index);
        for (uint64_t j = e0 / per_block_; j <= (e0 + b + t_new - 1) / per_block_; ++j)
            if (missing_block(j) && j != need_index) missing.push_back(j);
        const uint64_t b_new = missing.size();
        if (b_new == b && t_new == t) break;
        b = b_new;
        t = t_new;
    }
    entries = t * cs_ / 8;
    if (t * cs_ > kMaxRefcountTableBytes) {
        return make_error(EFBIG, name_ + ": the image needs a refcount table larger than qemu's limit of " +
                                     std::to_string(kMaxRefcountTableBytes >> 20) + " MiB");
    }
    if ((e0 + b + t) * cs_ > kMaxHostOffset) return make_error(EFBIG, name_ + ": the image file would grow beyond 64 PiB");
    if (meta_.overlaps(e0 * cs_, (b + t) * cs_)) {
        return corrupt("the new refcount table at " + hex(e0 * cs_) + " would overwrite metadata");
    }
    BLK_TRY(grow_file(e0 + b + t));
    std::sort(missing.begin(), missing.end());
    std::vector<uint64_t> table(entries);
    std::copy(table_.begin(), table_.end(), table.begin());
    for (uint64_t k = 0; k < b; ++k) {
        const uint64_t off = (e0 + k) * cs_;
        table[missing[k]] = off;
        cache_.insert(off, std::vector<std::byte>(cs_), true);
        meta_.add(off, cs_);
    }
    if (old_table_clusters_ != 0) {
        // The table being replaced never reached the header: nothing on disk points at it.
        meta_.remove(table_offset_, table_clusters_ * cs_);
        table_.swap(table);
        for (uint64_t c = 0; c < table_clusters_; ++c) BLK_TRY(update(table_offset_ / cs_ + c, -1));
    } else {
        old_table_offset_ = table_offset_;
        old_table_clusters_ = table_clusters_;
        table_.swap(table);
    }
    table_offset_ = (e0 + b) * cs_;
    table_clusters_ = t;
    table_dirty_ = true;
    meta_.add(table_offset_, t * cs_);
    hwm_ = e0 + b + t;
    for (uint64_t c = e0; c < e0 + b + t; ++c) BLK_TRY(set_one(c, 1));
    return {};
}

Result<bool> Refcounts::run_free(uint64_t cluster, uint64_t n) {
    for (uint64_t c = cluster; c < cluster + n; ++c) {
        const uint64_t i = c / per_block_;
        if (i >= table_.size() || table_[i] == 0) return false;
        BLK_TRY_ASSIGN(uint64_t rc, get(c));
        if (rc != 0) return false;
    }
    return !meta_.overlaps(cluster * cs_, n * cs_);
}

Status Refcounts::allocate_range(uint64_t first, uint64_t n) {
    if (meta_.overlaps(first * cs_, n * cs_)) {
        return corrupt("cluster allocation at " + hex(first * cs_) + " would overwrite metadata (the refcounts are corrupt)");
    }
    for (uint64_t c = first; c < first + n; ++c) BLK_TRY(set_one(c, 1));
    hwm_ = std::max(hwm_, first + n);
    return {};
}

Result<AllocRun> Refcounts::allocate(uint64_t n, bool exact) {
    if (n == 0) return make_error(EINVAL, "empty cluster allocation");
    uint64_t c = free_hint_;
    uint64_t first_free = UINT64_MAX;
    for (;;) {
        if (c * cs_ >= kMaxHostOffset || n * cs_ > kMaxHostOffset - c * cs_) {
            return make_error(EFBIG, name_ + ": the image file would grow beyond 64 PiB");
        }
        const uint64_t i = c / per_block_;
        if (i >= table_.size() || table_[i] == 0) {
            BLK_TRY(ensure_block(i));
            continue;
        }
        uint64_t idx = c % per_block_;
        {
            BLK_TRY_ASSIGN(MetaCache::Entry * e, block(i));
            while (idx < per_block_ && get_refcount(e->data, idx, h_.refcount_order) != 0) ++idx;
        }
        if (idx == per_block_) {
            c = (i + 1) * per_block_;
            continue;
        }
        c = i * per_block_ + idx;
        if (first_free == UINT64_MAX) first_free = c;
        uint64_t len = 1;
        MetaCache::Entry* e = nullptr;
        uint64_t e_index = UINT64_MAX;
        while (len < n) {
            const uint64_t cc = c + len;
            const uint64_t j = cc / per_block_;
            if (j >= table_.size() || table_[j] == 0) break;  // the next range has no block yet
            if (j != e_index) {
                BLK_TRY_ASSIGN(e, block(j));
                e_index = j;
            }
            if (get_refcount(e->data, cc % per_block_, h_.refcount_order) != 0) break;
            ++len;
        }
        if (exact && len < n) {
            c += len;
            continue;
        }
        const uint64_t old_hwm = hwm_;
        // The file first: if it cannot grow (a device), no refcount counts space it lacks.
        BLK_TRY(grow_file(std::max(hwm_, c + len)));
        BLK_TRY(allocate_range(c, len));
        free_hint_ = first_free == c ? c + len : first_free;
        return AllocRun{c * cs_, len, std::max(c, old_hwm) * cs_};
    }
}

Result<uint64_t> Refcounts::allocate_bytes(uint64_t bytes) {
    if (bytes == 0 || bytes > 2 * cs_) return make_error(EINVAL, "bad compressed cluster size " + std::to_string(bytes));
    if (tail_ != 0) {
        // Behind the previous compressed cluster, if its host cluster can take one more
        // reference and, for bytes running past it, the next clusters are free.
        const uint64_t tc = tail_ / cs_;
        const uint64_t room = cs_ - tail_ % cs_;
        BLK_TRY_ASSIGN(uint64_t rc, get(tc));
        bool fits = rc >= 1 && rc < max_;
        const uint64_t k = bytes > room ? div_up(bytes - room, cs_) : 0;
        if (fits && k > 0) {
            BLK_TRY_ASSIGN(fits, run_free(tc + 1, k));
            if (fits) {
                BLK_TRY(grow_file(std::max(hwm_, tc + 1 + k)));
                BLK_TRY(allocate_range(tc + 1, k));
            }
        }
        if (fits) {
            const uint64_t off = tail_;
            BLK_TRY(update(tc, +1));
            tail_ = (off + bytes) % cs_ ? off + bytes : 0;
            return off;
        }
    }
    BLK_TRY_ASSIGN(AllocRun run, allocate(div_up(bytes, cs_), true));
    tail_ = (run.offset + bytes) % cs_ ? run.offset + bytes : 0;
    return run.offset;
}

bool DiscardPass::passes(FreeKind k) const {
    switch (k) {
        case FreeKind::Never: return false;
        case FreeKind::Always: return true;
        case FreeKind::Request: return request;
        case FreeKind::Snapshot: return snapshot;
        case FreeKind::Other: return other;
    }
    return false;
}

// Cluster numbers stay far below 2^60 (a cluster is at least 512 bytes of a 64-bit file
// offset), so the kind rides in the top bits.
void Refcounts::defer_free(uint64_t cluster, uint64_t n, FreeKind kind) {
    const uint64_t tag = static_cast<uint64_t>(kind) << kKindShift;
    for (uint64_t c = cluster; c < cluster + n; ++c) deferred_.push_back(c | tag);
}

Status Refcounts::apply_deferred(const DiscardPass& pass) {
    std::vector<uint64_t> list;
    list.swap(deferred_);
    constexpr uint64_t kMask = (uint64_t{1} << kKindShift) - 1;
    std::vector<uint64_t> gone;  // clusters freed for good whose kind passes the discard on
    for (uint64_t e : list) {
        const uint64_t c = e & kMask;
        BLK_TRY(update(c, -1));
        if (!pass.passes(static_cast<FreeKind>(e >> kKindShift))) continue;
        BLK_TRY_ASSIGN(uint64_t left, get(c));
        if (left == 0) gone.push_back(c);
    }
    std::sort(gone.begin(), gone.end());
    gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
    for (size_t i = 0; i < gone.size();) {
        size_t j = i + 1;
        while (j < gone.size() && gone[j] == gone[j - 1] + 1) ++j;
        const uint64_t off = gone[i] * cs_;
        const uint64_t end = std::min(file_->size(), (gone[j - 1] + 1) * cs_);
        if (off < end) (void)file_->discard(off, end - off);
        i = j;
    }
    return {};
}

Status Refcounts::write_blocks() {
    for (MetaCache::Entry* e : cache_.dirty_entries()) {
        BLK_TRY(file_->write(e->offset, e->data).context(name_ + ": writing refcount block at " + hex(e->offset)));
        cache_.mark_clean(e);
    }
    return {};
}

Status Refcounts::write_table() {
    if (!table_dirty_) return {};
    std::vector<std::byte> raw(table_.size() * 8);
    for (uint64_t i = 0; i < table_.size(); ++i) store_be64(raw.data() + 8 * i, table_[i]);
    BLK_TRY(file_->write(table_offset_, raw).context(name_ + ": writing the refcount table at " + hex(table_offset_)));
    table_dirty_ = false;
    return {};
}

void Refcounts::table_move_committed() {
    if (old_table_clusters_ == 0) return;
    meta_.remove(old_table_offset_, old_table_clusters_ * cs_);
    defer_free(old_table_offset_ / cs_, old_table_clusters_, FreeKind::Other);
    old_table_offset_ = old_table_clusters_ = 0;
}

Status Refcounts::grow_file(uint64_t end_cluster) {
    const uint64_t need = std::max(hwm_, end_cluster) * cs_;
    if (file_->size() >= need) return {};
    return file_->truncate(need).context(name_ + ": growing the image file");
}

}  // namespace blk::qcow2
