// qcow2 reads: the L1/L2 lookup every operation shares, guest reads (backing files,
// compressed clusters, subclusters, external data files) and block status.
#include <algorithm>
#include <cstring>

#include "blk/endian.h"
#include "compress.h"
#include "engine.h"

namespace blk::qcow2 {

Status Qcow2Node::do_read(uint64_t off, std::span<std::byte> buf) {
    // Opened for its metadata only: the clusters hold ciphertext, never data to hand out.
    if (encrypted()) return make_error(ENOTSUP, name_ + ": encrypted qcow2 images are not supported yet");
    std::vector<std::byte> cluster;
    while (!buf.empty()) {
        Extent e;
        {
            std::lock_guard lock(mu_);
            BLK_TRY_ASSIGN(e, lookup_locked(off, buf.size()));
        }
        auto chunk = buf.first(e.bytes);
        switch (e.kind) {
            case ClusterKind::Normal:
                BLK_TRY(data_->read(e.host, chunk).context(name_));
                break;
            case ClusterKind::ZeroPlain:
            case ClusterKind::ZeroAlloc:
                std::memset(chunk.data(), 0, chunk.size());
                break;
            case ClusterKind::UnallocatedPlain:
            case ClusterKind::UnallocatedAlloc:
                BLK_TRY(read_backing(off, chunk));
                break;
            case ClusterKind::Compressed: {
                const uint64_t cs = h_.cluster_size();
                // A whole cluster inflates straight into the caller's buffer.
                if (off % cs == 0 && chunk.size() == cs) {
                    BLK_TRY(read_compressed_cluster(off, e.entry, chunk));
                    break;
                }
                cluster.resize(cs);
                BLK_TRY(read_compressed_cluster(off - off % cs, e.entry, cluster));
                std::memcpy(chunk.data(), cluster.data() + off % cs, chunk.size());
                break;
            }
        }
        off += e.bytes;
        buf = buf.subspan(e.bytes);
    }
    return {};
}


Result<BlockStatus> Qcow2Node::do_block_status(uint64_t off, uint64_t bytes) {
    BLK_TRY(check_preallocation());
    Extent e;
    {
        std::lock_guard lock(mu_);
        BLK_TRY_ASSIGN(e, lookup_locked(off, bytes));
    }
    BlockStatus st;
    st.bytes = e.bytes;
    switch (e.kind) {
        case ClusterKind::Normal:
            st.flags = kStatusData | kStatusOffsetValid | (metadata_prealloc_ ? unsigned{kStatusRecurse} : 0u);
            st.offset = e.host;
            st.file = data_.get();
            break;
        case ClusterKind::ZeroAlloc:
            st.flags = kStatusZero | kStatusOffsetValid;
            st.offset = e.host;
            st.file = data_.get();
            break;
        case ClusterKind::UnallocatedAlloc:
            st.flags = kStatusOffsetValid;
            st.offset = e.host;
            st.file = data_.get();
            break;
        case ClusterKind::ZeroPlain:
            st.flags = kStatusZero;
            break;
        case ClusterKind::UnallocatedPlain:
            st.flags = 0;
            break;
        case ClusterKind::Compressed:
            st.flags = kStatusData | kStatusCompressed;
            break;
    }
    return st;
}

// True if [off, off+len) of the image file holds the header, the L1 or the refcount table.
// Reads check only these (as qemu, which reads whatever an L2 entry names); writes check
// every table through meta_.
bool Qcow2Node::in_metadata(uint64_t off, uint64_t len) const {
    auto overlaps = [&](uint64_t start, uint64_t n) { return n && off < start + n && start < off + len; };
    return overlaps(0, h_.cluster_size()) || overlaps(h_.l1_table_offset, uint64_t{h_.l1_size} * 8) ||
           overlaps(h_.refcount_table_offset, uint64_t{h_.refcount_table_clusters} * h_.cluster_size());
}

Result<MetaCache::Entry*> Qcow2Node::l2_load_locked(uint64_t l2_off, uint64_t l1_index) {
    if (MetaCache::Entry* e = l2_cache_.find(l2_off)) return e;
    const uint64_t cs = h_.cluster_size();
    if (l2_off % cs != 0) {
        return make_error(EIO, name_ + ": L2 table offset " + hex(l2_off) + " unaligned (L1 index " + std::to_string(l1_index) + ")");
    }
    if (l2_off > file_->size() || cs > file_->size() - l2_off) {
        return make_error(EIO, name_ + ": L2 table at " + hex(l2_off) + " (L1 index " + std::to_string(l1_index) +
                                   ") lies past the end of the file");
    }
    if (in_metadata(l2_off, cs)) {
        return make_error(EIO, name_ + ": L2 table at " + hex(l2_off) + " overlaps the qcow2 header or tables");
    }
    std::vector<std::byte> t(cs);
    BLK_TRY(file_->read(l2_off, t).context(name_ + ": reading L2 table at " + hex(l2_off)));
    return l2_cache_.insert(l2_off, std::move(t), false);
}

// Checks a host cluster that holds guest data in this image's own file.
Status Qcow2Node::check_host(uint64_t host_cluster, uint64_t guest) const {
    if (host_cluster % h_.cluster_size() != 0) {
        return make_error(EIO, name_ + ": cluster allocation offset " + hex(host_cluster) + " unaligned (guest offset " + hex(guest) + ")");
    }
    if (external_) return {};
    if (host_cluster >= file_->size()) {
        return make_error(EIO, name_ + ": L2 entry for guest offset " + hex(guest) + " points past the end of the file (" +
                                   hex(host_cluster) + ")");
    }
    if (in_metadata(host_cluster, h_.cluster_size())) {
        return make_error(EIO, name_ + ": L2 entry for guest offset " + hex(guest) + " points into qcow2 metadata (" +
                                   hex(host_cluster) + ")");
    }
    return {};
}

// The run of same-kind (sub)clusters starting at `off`, at most `max` bytes, within one L2
// table; data runs also have contiguous host offsets.
Result<Extent> Qcow2Node::lookup_locked(uint64_t off, uint64_t max) {
    const uint64_t cs = h_.cluster_size();
    const uint64_t scs = h_.subcluster_size();
    const uint64_t per_l2 = h_.l2_entries() * cs;
    const uint64_t l1_index = off / per_l2;
    const uint64_t table_end = std::min(size_.load(), (l1_index + 1) * per_l2);
    max = std::min(max, table_end - off);
    Extent e;
    if (l1_index >= l1_.size()) return make_error(EIO, name_ + ": guest offset " + hex(off) + " beyond the L1 table");
    const uint64_t l2_off = l1_[l1_index] & kOffsetMask;
    if (l2_off == 0) {
        e.kind = ClusterKind::UnallocatedPlain;
        e.bytes = max;
        return e;
    }
    BLK_TRY_ASSIGN(MetaCache::Entry * t, l2_load_locked(l2_off, l1_index));
    uint64_t pos = off;
    bool first = true;
    uint64_t expect_host = 0;
    while (pos < off + max) {
        const uint64_t index = (pos / cs) % h_.l2_entries();
        const L2Entry le = load_l2_entry(h_, t->data, index);
        const unsigned sc = static_cast<unsigned>((pos % cs) / scs);
        auto kind = subcluster_kind(h_, le, sc);
        if (!kind) return std::move(kind).error().with_context(name_ + ": L2 entry for guest offset " + hex(pos));
        const bool hosted = *kind == ClusterKind::Normal || *kind == ClusterKind::ZeroAlloc || *kind == ClusterKind::UnallocatedAlloc;
        uint64_t host = 0;
        if (hosted) {
            const uint64_t cluster_host = standard_offset(le.entry);
            BLK_TRY(check_host(cluster_host, pos - pos % cs));
            host = cluster_host + pos % cs;
        }
        if (first) {
            e.kind = *kind;
            e.host = host;
            e.entry = le.entry;
            first = false;
        } else if (*kind != e.kind || (hosted && host != expect_host) || e.kind == ClusterKind::Compressed) {
            break;
        }
        const uint64_t step_end = e.kind == ClusterKind::Compressed ? (pos / cs + 1) * cs : (pos / scs + 1) * scs;
        const uint64_t next = std::min(step_end, off + max);
        expect_host = host + (next - pos);
        pos = next;
    }
    e.bytes = pos - off;
    return e;
}

Status Qcow2Node::read_backing(uint64_t off, std::span<std::byte> buf) {
    Node* cow = cow_child(*this);
    uint64_t have = 0;
    if (cow && off < cow->size()) {
        have = std::min<uint64_t>(buf.size(), cow->size() - off);
        BLK_TRY(cow->read(off, buf.first(have)));
    }
    std::memset(buf.data() + have, 0, buf.size() - have);
    return {};
}

// True if an unallocated range reads as zero: no backing file covers it.
bool Qcow2Node::backing_reads_zero(uint64_t off, uint64_t) const {
    Node* cow = cow_child(*this);
    return !cow || off >= cow->size();
}

// Reads and inflates the compressed cluster `entry` of guest cluster `guest` into `cluster`
// (cluster_size() bytes).
Status Qcow2Node::read_compressed_cluster(uint64_t guest, uint64_t entry, std::span<std::byte> cluster) {
    const CompressedRef ref = compressed_ref(h_, entry);
    if (ref.offset >= file_->size() || in_metadata(ref.offset & ~511ull, 512)) {
        return make_error(EIO, name_ + ": compressed cluster for guest offset " + hex(guest) + " at " + hex(ref.offset) +
                                   " lies outside the image data");
    }
    const uint64_t len = std::min(ref.size, file_->size() - ref.offset);
    std::vector<std::byte> in(len);
    BLK_TRY(file_->read(ref.offset, in).context(name_));
    auto st = decompress_cluster(h_.compression, in, cluster);
    if (!st) return std::move(st).error().with_context(name_ + ": compressed cluster for guest offset " + hex(guest));
    return {};
}

// qemu reports data clusters of an image with preallocated metadata by asking the file
// whether they are holes. It decides "preallocated" once: more clusters have a refcount
// than the file really allocates.
Status Qcow2Node::check_preallocation() {
    std::lock_guard lock(prealloc_mu_);
    if (prealloc_checked_) return {};
    prealloc_checked_ = true;
    auto alloc = file_->allocated_file_size();
    if (!alloc) return {};
    const uint64_t cs = h_.cluster_size();
    const uint64_t real_clusters = *alloc / cs;
    const uint64_t threshold = std::max(real_clusters * 10 / 9, real_clusters + 2);
    const uint64_t end_cluster = (file_->size() + cs - 1) / cs;
    const uint64_t per_block = refcount_block_entries(h_);
    const uint64_t rt_entries = uint64_t{h_.refcount_table_clusters} * cs / 8;
    std::vector<std::byte> rt(rt_entries * 8);
    if (!file_->read(h_.refcount_table_offset, rt)) return {};
    std::vector<std::byte> block(cs);
    uint64_t loaded = UINT64_MAX;
    uint64_t count = 0;
    for (uint64_t i = 0; i < end_cluster && count < threshold; ++i) {
        const uint64_t rti = i / per_block;
        if (rti >= rt_entries) break;
        const uint64_t boff = load_be64(rt.data() + rti * 8) & ~511ull;
        if (boff == 0) {
            i = (rti + 1) * per_block - 1;  // a whole block of zero refcounts
            continue;
        }
        if (boff % cs != 0 || boff >= file_->size()) return {};
        if (loaded != boff) {
            if (!file_->read(boff, block)) return {};
            loaded = boff;
        }
        count += get_refcount(block, i % per_block, h_.refcount_order) != 0;
    }
    metadata_prealloc_ = count >= threshold;
    return {};
}

}  // namespace blk::qcow2
