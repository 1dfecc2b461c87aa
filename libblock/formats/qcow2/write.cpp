// qcow2 writes: planning a request under the metadata lock (in-place clusters, one
// contiguous allocation for the rest, copy-on-write of partial (sub)clusters), data I/O
// outside the lock, then the L2 updates; and compressed cluster writes.
#include <algorithm>
#include <cstring>

#include "compress.h"
#include "engine.h"

namespace blk::qcow2 {

namespace {

bool zero_kind(ClusterKind k) { return k == ClusterKind::ZeroPlain || k == ClusterKind::ZeroAlloc; }

}  // namespace

Status Qcow2Node::do_write(uint64_t off, std::span<const std::byte> buf) {
    mark_bitmaps(off, buf.size());
    while (!buf.empty()) {
        // Pieces end on cluster boundaries so each is planned on its own.
        uint64_t n = std::min<uint64_t>(buf.size(), kMaxWriteChunk);
        if (n < buf.size()) n -= (off + n) % h_.cluster_size();
        BLK_TRY(write_chunk(off, buf.first(n)));
        off += n;
        buf = buf.subspan(n);
    }
    return {};
}

// A host cluster an L2 entry names for data we overwrite or copy: inside the file and clear
// of every table. With an external data file, the host offset is the guest offset.
Status Qcow2Node::check_write_host(uint64_t host, uint64_t guest) const {
    const uint64_t cs = h_.cluster_size();
    if (external_) {
        if (host != guest) {
            return make_error(EIO, name_ + ": L2 entry for guest offset " + hex(guest) + " names data file offset " + hex(host) +
                                       " (an external data file maps guest offsets one to one)");
        }
        return {};
    }
    if (host % cs != 0) return make_error(EIO, name_ + ": L2 entry for guest offset " + hex(guest) + " is not cluster-aligned (" + hex(host) + ")");
    if (host >= file_->size()) {
        return make_error(EIO, name_ + ": L2 entry for guest offset " + hex(guest) + " points past the end of the file (" + hex(host) + ")");
    }
    if (meta_.overlaps(host, cs)) {
        return make_error(EIO, name_ + ": L2 entry for guest offset " + hex(guest) + " points into qcow2 metadata (" + hex(host) + ")");
    }
    return {};
}

// Decides whether the cluster is written in place or needs a new host cluster, and checks
// every offset the old entry names before anything relies on it.
Status Qcow2Node::classify_locked(Plan& p) {
    const uint64_t cs = h_.cluster_size();
    const L2Entry& e = p.old;
    const unsigned subs = h_.extended_l2() ? kSubclustersPerCluster : 1;
    for (unsigned s = 0; s < subs; ++s) {
        auto k = subcluster_kind(h_, e, s);
        if (!k) return make_error(EIO, name_ + ": L2 entry for guest offset " + hex(p.guest) + ": " + k.error().message);
    }
    if (e.entry & kEntryCompressed) {
        if (external_) return make_error(EIO, name_ + ": compressed cluster at guest offset " + hex(p.guest) + " in an image with an external data file");
        const CompressedRef ref = compressed_ref(h_, e.entry);
        const ClusterSpan span = compressed_clusters(h_, e.entry);
        if (ref.offset >= file_->size() || meta_.overlaps(span.first * cs, (span.last - span.first + 1) * cs)) {
            return make_error(EIO, name_ + ": compressed cluster for guest offset " + hex(p.guest) + " at " + hex(ref.offset) +
                                       " lies outside the image data");
        }
        p.fresh = true;
        return {};
    }
    const uint64_t host = standard_offset(e.entry);
    const bool hosted = host != 0 || (external_ && (e.entry & kEntryCopied));
    if (hosted) BLK_TRY(check_write_host(host, p.guest));
    if (external_) {
        // Data file clusters are not refcounted and never move.
        p.host = p.guest;
        return {};
    }
    if (hosted && (e.entry & kEntryCopied)) {
        p.host = host;
        return {};
    }
    p.fresh = true;  // unallocated, or shared (refcount > 1): copy on write
    return {};
}

// The COW ranges, the entry after the write and the written window, once the host is known.
// Per (sub)cluster: covered bytes come from the request; the rest of a partly covered one
// from its old content; an uncovered one keeps its state, except that old data moving to a
// new host cluster is copied along.
void Qcow2Node::plan_cow(Plan& p) {
    const uint64_t cs = h_.cluster_size();
    const bool ext = h_.extended_l2();
    const unsigned subs = ext ? kSubclustersPerCluster : 1;
    const uint64_t scs = cs / subs;
    const bool in_place = !p.fresh;
    uint64_t alloc = 0, zero = 0;
    // Zero ranges are written too (the cluster buffer starts zeroed): a cluster reusing freed
    // space holds old bytes, and a fully written cluster keeps the file free of holes inside
    // data clusters, as qemu leaves it.
    auto add = [&](uint64_t a, uint64_t b, ClusterKind src) {
        if (a < b) p.cow.push_back(Plan::Cow{a, b, src});
    };
    for (unsigned s = 0; s < subs; ++s) {
        const uint64_t s0 = s * scs, s1 = s0 + scs;
        const ClusterKind k = *subcluster_kind(h_, p.old, s);
        const uint64_t c0 = std::max(s0, p.lo), c1 = std::min(s1, p.hi);
        const bool covered = c0 < c1;
        if (covered) {
            alloc |= 1ull << s;
            if (in_place && k == ClusterKind::Normal) continue;
            add(s0, c0, k);
            add(c1, s1, k);
        } else if (!in_place && (k == ClusterKind::Normal || k == ClusterKind::Compressed)) {
            alloc |= 1ull << s;
            add(s0, s1, k);
        } else if (in_place && k == ClusterKind::Normal) {
            alloc |= 1ull << s;
        } else if (zero_kind(k)) {
            zero |= 1ull << s;
        }
    }
    const uint64_t host = external_ ? p.guest : p.host;
    p.next.entry = standard_entry(host, true);
    p.next.bitmap = ext ? (alloc | (zero << 32)) : 0;
    std::sort(p.cow.begin(), p.cow.end(), [](const Plan::Cow& x, const Plan::Cow& y) { return x.a < y.a; });
    p.w_lo = p.lo;
    p.w_hi = p.hi;
    for (const Plan::Cow& c : p.cow) {
        p.w_lo = std::min(p.w_lo, c.a);
        p.w_hi = std::max(p.w_hi, c.b);
    }
}

// Builds the cluster's bytes for a COW write: old content where the request does not reach.
Status Qcow2Node::fill_cow(Plan& p, std::span<const std::byte> user, uint64_t req_off) {
    if (p.cow.empty()) return {};
    const uint64_t cs = h_.cluster_size();
    p.buf.assign(cs, std::byte{0});
    std::vector<std::byte> inflated;
    for (const Plan::Cow& c : p.cow) {
        auto dst = std::span(p.buf).subspan(c.a, c.b - c.a);
        switch (c.src) {
            case ClusterKind::Normal:
                BLK_TRY(data_->read(standard_offset(p.old.entry) + c.a, dst).context(name_));
                break;
            case ClusterKind::Compressed:
                if (inflated.empty()) {
                    inflated.resize(cs);
                    BLK_TRY(read_compressed_cluster(p.guest, p.old.entry, inflated));
                }
                std::memcpy(dst.data(), inflated.data() + c.a, dst.size());
                break;
            case ClusterKind::ZeroPlain:
            case ClusterKind::ZeroAlloc:
                break;
            case ClusterKind::UnallocatedPlain:
            case ClusterKind::UnallocatedAlloc:
                BLK_TRY(read_backing(p.guest + c.a, dst));
                break;
        }
    }
    std::memcpy(p.buf.data() + p.lo, user.data() + (p.guest + p.lo - req_off), p.hi - p.lo);
    return {};
}

// Writes the request's clusters with as few calls as the host layout allows: pieces that
// are contiguous on the host and in memory go out together.
Status Qcow2Node::write_plans(std::vector<Plan>& plans, std::span<const std::byte> user, uint64_t req_off) {
    for (Plan& p : plans) BLK_TRY(fill_cow(p, user, req_off));
    uint64_t host = 0, len = 0;
    const std::byte* mem = nullptr;
    auto flush_piece = [&]() -> Status {
        if (len == 0) return {};
        BLK_TRY(data_->write(host, std::span(mem, len)));  // the host node names itself
        len = 0;
        return {};
    };
    for (Plan& p : plans) {
        const uint64_t h = p.host + p.w_lo;
        const std::byte* m = p.cow.empty() ? user.data() + (p.guest + p.lo - req_off) : p.buf.data() + p.w_lo;
        const uint64_t n = p.w_hi - p.w_lo;
        if (len != 0 && host + len == h && mem + len == m) {
            len += n;
            continue;
        }
        BLK_TRY(flush_piece());
        host = h;
        mem = m;
        len = n;
    }
    return flush_piece();
}

Status Qcow2Node::release_locked(const L2Entry& old, FreeKind kind) {
    if (external_) return {};
    const uint64_t cs = h_.cluster_size();
    if (old.entry & kEntryCompressed) {
        const ClusterSpan span = compressed_clusters(h_, old.entry);
        refs_->defer_free(span.first, span.last - span.first + 1, kind);
    } else if (uint64_t host = standard_offset(old.entry)) {
        refs_->defer_free(host / cs, 1, kind);
    }
    return {};
}

// Points the L2 entries at the written clusters and releases what they replaced; after a
// failed write only gives the new clusters back.
Status Qcow2Node::commit_locked(std::vector<Plan>& plans, bool ok) {
    const uint64_t cs = h_.cluster_size();
    if (!ok) {
        for (const Plan& p : plans)
            if (p.allocated) refs_->defer_free(p.host / cs, 1, FreeKind::Never);
        return {};
    }
    const uint64_t per_l2 = h_.l2_entries() * cs;
    uint64_t cur = UINT64_MAX;
    MetaCache::Entry* t = nullptr;
    for (const Plan& p : plans) {
        if (p.next.entry == p.old.entry && p.next.bitmap == p.old.bitmap) continue;
        const uint64_t l1i = p.guest / per_l2;
        if (l1i != cur) {
            BLK_TRY_ASSIGN(t, l2_for_write_locked(l1i));
            cur = l1i;
        }
        store_l2_entry(h_, t->data, (p.guest / cs) % h_.l2_entries(), p.next);
        l2_cache_.mark_dirty(t);
        if (p.fresh) BLK_TRY(release_locked(p.old, FreeKind::Never));
    }
    unsynced_data_ = true;
    return {};
}

Status Qcow2Node::write_chunk(uint64_t off, std::span<const std::byte> buf) {
    const uint64_t cs = h_.cluster_size();
    const uint64_t per_l2 = h_.l2_entries() * cs;
    const uint64_t first = off / cs;
    const uint64_t end = (off + buf.size() + cs - 1) / cs;
    std::vector<Plan> plans(end - first);
    Lock lk(mu_);
    BLK_TRY(writable_locked());
    begin_inflight_locked(lk, first, end);
    auto planned = [&]() -> Status {
        uint64_t cur = UINT64_MAX;
        MetaCache::Entry* t = nullptr;
        for (uint64_t k = 0; k < plans.size(); ++k) {
            Plan& p = plans[k];
            p.guest = (first + k) * cs;
            p.lo = std::max(off, p.guest) - p.guest;
            p.hi = std::min(off + buf.size(), p.guest + cs) - p.guest;
            const uint64_t l1i = p.guest / per_l2;
            if (l1i != cur) {
                BLK_TRY_ASSIGN(t, l2_for_write_locked(l1i));
                cur = l1i;
            }
            p.old = load_l2_entry(h_, t->data, (p.guest / cs) % h_.l2_entries());
        }
        uint64_t need = 0;
        for (Plan& p : plans) {
            BLK_TRY(classify_locked(p));
            need += p.fresh;
        }
        if (need) BLK_TRY(mark_dirty_locked());
        for (size_t k = 0; need > 0;) {
            BLK_TRY_ASSIGN(AllocRun run, refs_->allocate(need, false));
            for (uint64_t c = 0; c < run.clusters; ++c) {
                while (!plans[k].fresh) ++k;
                Plan& p = plans[k++];
                p.host = run.offset + c * cs;
                p.allocated = true;
            }
            need -= run.clusters;
        }
        uint64_t data_end = 0;
        for (Plan& p : plans) {
            plan_cow(p);
            if (!(p.next.entry == p.old.entry && p.next.bitmap == p.old.bitmap)) BLK_TRY(mark_dirty_locked());
            data_end = std::max(data_end, p.host + p.w_hi);
        }
        if (external_) {
            BLK_TRY(grow_data_file(data_end));
        } else if (data_end > file_->size()) {
            // An old cluster the file does not wholly cover (qemu leaves files that end inside
            // a cluster): the file grows to take it.
            BLK_TRY(file_->truncate((data_end + cs - 1) / cs * cs).context(name_ + ": growing the image file"));
        }
        return {};
    }();
    if (!planned) {
        (void)commit_locked(plans, false);
        end_inflight_locked(first, end);
        return meta_error_locked(std::move(planned).error());
    }
    lk.unlock();
    Status io = write_plans(plans, buf, off);
    lk.lock();
    Status committed = commit_locked(plans, io.ok());
    end_inflight_locked(first, end);
    if (!io) return io;
    if (!committed) return meta_error_locked(std::move(committed).error());
    return maybe_writeback_locked();
}

// One compressed cluster: its bytes go behind the previous compressed cluster (see
// Refcounts::allocate_bytes), then its L2 entry is set and the old cluster released.
Status Qcow2Node::do_write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c) {
    if (!c.compressed) return do_write(off, c.bytes);
    mark_bitmaps(off, len);
    const uint64_t cs = h_.cluster_size();
    if (c.bytes.empty() || c.bytes.size() >= cs) {
        return make_error(EINVAL, name_ + ": a compressed cluster of " + std::to_string(c.bytes.size()) + " bytes does not fit");
    }
    (void)len;
    const uint64_t g = off / cs;
    const uint64_t per_l2 = h_.l2_entries() * cs;
    Lock lk(mu_);
    BLK_TRY(writable_locked());
    begin_inflight_locked(lk, g, g + 1);
    L2Entry old, next;
    uint64_t host = 0;
    auto planned = [&]() -> Status {
        BLK_TRY(mark_dirty_locked());
        BLK_TRY_ASSIGN(MetaCache::Entry * t, l2_for_write_locked(off / per_l2));
        old = load_l2_entry(h_, t->data, g % h_.l2_entries());
        Plan p;
        p.guest = off;
        p.old = old;
        BLK_TRY(classify_locked(p));  // checks what the old entry names before it is released
        BLK_TRY_ASSIGN(host, refs_->allocate_bytes(c.bytes.size()));
        BLK_TRY_ASSIGN(next.entry, compressed_entry(h_, host, c.bytes.size()));
        return {};
    }();
    if (!planned) {
        end_inflight_locked(g, g + 1);
        return meta_error_locked(std::move(planned).error());
    }
    lk.unlock();
    Status io = file_->write(host, c.bytes);
    lk.lock();
    auto committed = [&]() -> Status {
        if (!io) {
            // The bytes' references go again; the space stays allocated until they do.
            const ClusterSpan span = compressed_clusters(h_, next.entry);
            refs_->defer_free(span.first, span.last - span.first + 1, FreeKind::Never);
            return {};
        }
        BLK_TRY_ASSIGN(MetaCache::Entry * t, l2_for_write_locked(off / per_l2));
        store_l2_entry(h_, t->data, g % h_.l2_entries(), next);
        l2_cache_.mark_dirty(t);
        unsynced_data_ = true;
        return release_locked(old, FreeKind::Never);
    }();
    end_inflight_locked(g, g + 1);
    if (!io) return io;
    if (!committed) return meta_error_locked(std::move(committed).error());
    return maybe_writeback_locked();
}

}  // namespace blk::qcow2
