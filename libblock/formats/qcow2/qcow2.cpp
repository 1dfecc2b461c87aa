// qcow2: the read engine (L1/L2 lookup with a bounded L2 cache, compressed clusters,
// subclusters, external data files, backing files) and the driver registration.
#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>

#include "blk/driver.h"
#include "blk/endian.h"
#include "compress.h"
#include "create.h"
#include "format.h"

namespace blk {

namespace {

using namespace qcow2;

constexpr uint64_t kL2CacheBytes = 4ull << 20;  // bound on cached L2 tables (qemu: 1 MiB)
constexpr size_t kMinL2CacheTables = 2;
constexpr uint64_t kProbeHeadBytes = 64 * 1024;
constexpr uint64_t kBitmapDirMaxBytes = 64ull << 20;  // qemu's QCOW2_MAX_BITMAP_DIRECTORY_SIZE
constexpr uint32_t kMaxBitmaps = 65535;

std::string hex(uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

struct Extent {
    ClusterKind kind = ClusterKind::UnallocatedPlain;
    uint64_t bytes = 0;
    uint64_t host = 0;   // host offset of the first byte (Normal, ZeroAlloc, UnallocatedAlloc)
    uint64_t entry = 0;  // the L2 entry (Compressed)
};

using Table = std::shared_ptr<const std::vector<std::byte>>;

class Qcow2Node final : public Node {
public:
    Qcow2Node(Json opts, Header h) : Node("qcow2", std::move(opts)), h_(std::move(h)) {
        size_ = h_.size;
        cache_max_ = std::max<size_t>(kMinL2CacheTables, kL2CacheBytes / h_.cluster_size());
    }

    Status init(OpenContext& ctx, const Json& opts, std::shared_ptr<Node> file) {
        file_ = file.get();
        name_ = file->filename();
        const bool external = h_.incompatible & kIncompatDataFile;
        BLK_TRY(attach_child("file", file, kRoleMetadata | kRolePrimary | (external ? 0u : unsigned{kRoleData})));
        data_ = file_;
        if (external) {
            std::shared_ptr<Node> df;
            if (opts.contains("data-file")) {
                BLK_TRY_ASSIGN(df, ctx.open_child(*this, opts, "data-file", kRoleData, true));
            } else if (!h_.data_file.empty()) {
                BLK_TRY_ASSIGN(std::string path, resolve_backing_name(name_, h_.data_file));
                auto r = ctx.open(Json{{"driver", "file"}, {"filename", path}});
                if (!r) return std::move(r).error().with_context("Could not open data file");
                df = *r;
                BLK_TRY(attach_child("data-file", df, kRoleData));
            } else {
                return make_error(EINVAL, "'data-file' is required for this image");
            }
            data_ = df.get();
        } else if (opts.contains("data-file") && !opts["data-file"].is_null()) {
            return make_error(EINVAL, "'data-file' can only be set for images with an external data file");
        }
        BLK_TRY(load_l1());
        BLK_TRY(ctx.open_backing(*this, opts, h_.backing_file, h_.backing_format, name_));
        if (h_.has_bitmaps_ext && h_.version >= 3) BLK_TRY(load_bitmaps());
        if (h_.nb_snapshots > 0) BLK_TRY(load_snapshots());
        return {};
    }

    Json snapshots() const override { return snapshots_; }

    bool supports_backing() const override { return true; }
    std::string backing_file_name() const override { return h_.backing_file; }
    std::string backing_format() const override { return h_.backing_format; }
    std::optional<uint64_t> cluster_size() const override { return h_.cluster_size(); }
    std::optional<bool> dirty() const override { return static_cast<bool>(h_.incompatible & kIncompatDirty); }

    Json format_specific() const override {
        Json d = Json::object();
        if (h_.version < 3) {
            d["compat"] = "0.10";
            d["compression-type"] = h_.compression == CompressionType::Zstd ? "zstd" : "zlib";
            d["refcount-bits"] = 1u << h_.refcount_order;
        } else {
            d["compat"] = "1.1";
            if (h_.incompatible & kIncompatDataFile) {
                if (!h_.data_file.empty()) d["data-file"] = h_.data_file;
                d["data-file-raw"] = static_cast<bool>(h_.autoclear & kAutoclearDataFileRaw);
            }
            d["extended-l2"] = h_.extended_l2();
            d["lazy-refcounts"] = static_cast<bool>(h_.compatible & kCompatLazyRefcounts);
            d["corrupt"] = static_cast<bool>(h_.incompatible & kIncompatCorrupt);
            d["refcount-bits"] = 1u << h_.refcount_order;
            if (!bitmaps_.empty()) d["bitmaps"] = bitmaps_;
            d["compression-type"] = h_.compression == CompressionType::Zstd ? "zstd" : "zlib";
        }
        return Json{{"type", "qcow2"}, {"data", d}};
    }

protected:
    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        while (!buf.empty()) {
            BLK_TRY_ASSIGN(Extent e, lookup(off, buf.size()));
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
                case ClusterKind::Compressed:
                    BLK_TRY(read_compressed(off, e.entry, chunk));
                    break;
            }
            off += e.bytes;
            buf = buf.subspan(e.bytes);
        }
        return {};
    }

    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override {
        BLK_TRY(check_preallocation());
        BLK_TRY_ASSIGN(Extent e, lookup(off, bytes));
        BlockStatus st;
        st.bytes = e.bytes;
        switch (e.kind) {
            case ClusterKind::Normal:
                st.flags = kStatusData | kStatusOffsetValid | (metadata_prealloc_ ? unsigned{kStatusRecurse} : 0u);
                st.offset = e.host;
                st.file = data_;
                break;
            case ClusterKind::ZeroAlloc:
                st.flags = kStatusZero | kStatusOffsetValid;
                st.offset = e.host;
                st.file = data_;
                break;
            case ClusterKind::UnallocatedAlloc:
                st.flags = kStatusOffsetValid;
                st.offset = e.host;
                st.file = data_;
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

private:
    Status load_l1() {
        l1_.resize(h_.l1_size);
        if (h_.l1_size == 0) return {};
        std::vector<std::byte> raw(uint64_t{h_.l1_size} * 8);
        BLK_TRY(file_->read(h_.l1_table_offset, raw).context(name_ + ": reading the L1 table"));
        for (uint32_t i = 0; i < h_.l1_size; ++i) l1_[i] = load_be64(raw.data() + 8ull * i);
        return {};
    }

    // True if [off, off+len) of the image file holds the header, the L1 or the refcount table.
    bool in_metadata(uint64_t off, uint64_t len) const {
        auto overlaps = [&](uint64_t start, uint64_t n) { return n && off < start + n && start < off + len; };
        return overlaps(0, h_.cluster_size()) || overlaps(h_.l1_table_offset, uint64_t{h_.l1_size} * 8) ||
               overlaps(h_.refcount_table_offset, uint64_t{h_.refcount_table_clusters} * h_.cluster_size());
    }

    Result<Table> l2_table(uint64_t l2_off, uint64_t l1_index) {
        {
            std::lock_guard lock(mu_);
            auto it = cache_index_.find(l2_off);
            if (it != cache_index_.end()) {
                lru_.splice(lru_.begin(), lru_, it->second);
                return it->second->second;
            }
        }
        const uint64_t cs = h_.cluster_size();
        if (l2_off % cs != 0) {
            return make_error(EIO, name_ + ": L2 table offset " + hex(l2_off) + " unaligned (L1 index " +
                                       std::to_string(l1_index) + ")");
        }
        if (l2_off > file_->size() || cs > file_->size() - l2_off) {
            return make_error(EIO, name_ + ": L2 table at " + hex(l2_off) + " (L1 index " + std::to_string(l1_index) +
                                       ") lies past the end of the file");
        }
        if (in_metadata(l2_off, cs)) {
            return make_error(EIO, name_ + ": L2 table at " + hex(l2_off) + " overlaps the qcow2 header or tables");
        }
        auto t = std::make_shared<std::vector<std::byte>>(cs);
        BLK_TRY(file_->read(l2_off, *t).context(name_ + ": reading L2 table at " + hex(l2_off)));
        std::lock_guard lock(mu_);
        auto it = cache_index_.find(l2_off);
        if (it != cache_index_.end()) return it->second->second;
        lru_.emplace_front(l2_off, t);
        cache_index_[l2_off] = lru_.begin();
        while (lru_.size() > cache_max_) {
            cache_index_.erase(lru_.back().first);
            lru_.pop_back();
        }
        return Table(t);
    }

    L2Entry entry_at(const std::vector<std::byte>& t, uint64_t index) const {
        const std::byte* p = t.data() + index * h_.l2_entry_size();
        L2Entry e;
        e.entry = load_be64(p);
        if (h_.extended_l2()) e.bitmap = load_be64(p + 8);
        return e;
    }

    // Checks a host cluster that holds guest data in this image's own file.
    Status check_host(uint64_t host_cluster, uint64_t guest) const {
        if (host_cluster % h_.cluster_size() != 0) {
            return make_error(EIO, name_ + ": cluster allocation offset " + hex(host_cluster) + " unaligned (guest offset " +
                                       hex(guest) + ")");
        }
        if (data_ != file_) return {};
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

    // The run of same-kind (sub)clusters starting at `off`, at most `max` bytes, within one
    // L2 table; data runs also have contiguous host offsets.
    Result<Extent> lookup(uint64_t off, uint64_t max) {
        const uint64_t cs = h_.cluster_size();
        const uint64_t scs = h_.subcluster_size();
        const uint64_t per_l2 = h_.l2_entries() * cs;
        const uint64_t l1_index = off / per_l2;
        const uint64_t table_end = std::min(size_, (l1_index + 1) * per_l2);
        max = std::min(max, table_end - off);
        Extent e;
        if (l1_index >= l1_.size()) return make_error(EIO, name_ + ": guest offset " + hex(off) + " beyond the L1 table");
        const uint64_t l2_off = l1_[l1_index] & kOffsetMask;
        if (l2_off == 0) {
            e.kind = ClusterKind::UnallocatedPlain;
            e.bytes = max;
            return e;
        }
        BLK_TRY_ASSIGN(Table t, l2_table(l2_off, l1_index));
        uint64_t pos = off;
        bool first = true;
        uint64_t expect_host = 0;
        while (pos < off + max) {
            const uint64_t index = (pos / cs) % h_.l2_entries();
            const L2Entry le = entry_at(*t, index);
            const unsigned sc = static_cast<unsigned>((pos % cs) / scs);
            auto kind = subcluster_kind(h_, le, sc);
            if (!kind) return std::move(kind).error().with_context(name_ + ": L2 entry for guest offset " + hex(pos));
            const bool hosted = *kind == ClusterKind::Normal || *kind == ClusterKind::ZeroAlloc ||
                                *kind == ClusterKind::UnallocatedAlloc;
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

    Status read_backing(uint64_t off, std::span<std::byte> buf) {
        Node* cow = cow_child(*this);
        uint64_t have = 0;
        if (cow && off < cow->size()) {
            have = std::min<uint64_t>(buf.size(), cow->size() - off);
            BLK_TRY(cow->read(off, buf.first(have)));
        }
        std::memset(buf.data() + have, 0, buf.size() - have);
        return {};
    }

    Status read_compressed(uint64_t off, uint64_t entry, std::span<std::byte> out) {
        const uint64_t cs = h_.cluster_size();
        const CompressedRef ref = compressed_ref(h_, entry);
        if (ref.offset >= file_->size() || in_metadata(ref.offset & ~511ull, 512)) {
            return make_error(EIO, name_ + ": compressed cluster for guest offset " + hex(off - off % cs) + " at " +
                                       hex(ref.offset) + " lies outside the image data");
        }
        const uint64_t len = std::min(ref.size, file_->size() - ref.offset);
        std::vector<std::byte> in(len);
        BLK_TRY(file_->read(ref.offset, in).context(name_));
        std::vector<std::byte> cluster(cs);
        auto st = decompress_cluster(h_.compression, in, cluster);
        if (!st) return std::move(st).error().with_context(name_ + ": compressed cluster for guest offset " + hex(off - off % cs));
        std::memcpy(out.data(), cluster.data() + off % cs, out.size());
        return {};
    }

    // qemu reports data clusters of an image with preallocated metadata by asking the file
    // whether they are holes. It decides "preallocated" once: more clusters have a refcount
    // than the file really allocates.
    Status check_preallocation() {
        std::lock_guard lock(prealloc_mu_);
        if (prealloc_checked_) return {};
        prealloc_checked_ = true;
        auto alloc = file_->allocated_file_size();
        if (!alloc) return {};
        const uint64_t cs = h_.cluster_size();
        const uint64_t real_clusters = *alloc / cs;
        const uint64_t threshold = std::max(real_clusters * 10 / 9, real_clusters + 2);
        const uint64_t end_cluster = (file_->size() + cs - 1) / cs;
        const uint64_t bits = 1ull << h_.refcount_order;
        const uint64_t per_block = cs * 8 / bits;
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
            const uint64_t idx = i % per_block;
            uint64_t rc = 0;
            switch (bits) {
                case 1: case 2: case 4: {
                    const uint64_t bit = idx * bits;
                    rc = (std::to_integer<uint64_t>(block[bit / 8]) >> (bit % 8)) & ((1u << bits) - 1);
                    break;
                }
                case 8: rc = std::to_integer<uint64_t>(block[idx]); break;
                case 16: rc = load_be16(block.data() + idx * 2); break;
                case 32: rc = load_be32(block.data() + idx * 4); break;
                default: rc = load_be64(block.data() + idx * 8); break;
            }
            count += rc != 0;
        }
        metadata_prealloc_ = count >= threshold;
        return {};
    }

    // Reads the snapshot table for info's snapshot list; every entry is bounds-checked and
    // the whole table is capped at kMaxSnapshotTableBytes.
    Status load_snapshots() {
        constexpr uint64_t kEntryHeader = 40;
        uint64_t off = h_.snapshots_offset;
        const uint64_t fsize = file_->size();
        for (uint32_t i = 0; i < h_.nb_snapshots; ++i) {
            const std::string where = name_ + ": snapshot " + std::to_string(i) + " at " + hex(off);
            if (off - h_.snapshots_offset > kMaxSnapshotTableBytes) return make_error(EINVAL, name_ + ": snapshot table too large");
            if (off > fsize || kEntryHeader > fsize - off) return make_error(EINVAL, where + " lies past the end of the file");
            std::byte hdr[kEntryHeader];
            BLK_TRY(file_->read(off, hdr).context(where));
            const uint16_t id_size = load_be16(hdr + 12);
            const uint16_t name_size = load_be16(hdr + 14);
            const uint32_t date_sec = load_be32(hdr + 16);
            const uint32_t date_nsec = load_be32(hdr + 20);
            const uint64_t vm_clock = load_be64(hdr + 24);
            const uint32_t vm_state32 = load_be32(hdr + 32);
            const uint32_t extra_size = load_be32(hdr + 36);
            if (extra_size > kMaxSnapshotExtraData) return make_error(EINVAL, where + ": extra data too large");
            const uint64_t rest = uint64_t{extra_size} + id_size + name_size;
            if (off + kEntryHeader > fsize || rest > fsize - off - kEntryHeader) {
                return make_error(EINVAL, where + " lies past the end of the file");
            }
            std::vector<std::byte> body(rest);
            BLK_TRY(file_->read(off + kEntryHeader, body).context(where));
            uint64_t vm_state = vm_state32;
            if (extra_size >= 8) vm_state = load_be64(body.data());
            std::optional<uint64_t> icount;
            if (extra_size >= 24) {
                const uint64_t ic = load_be64(body.data() + 16);
                if (ic != UINT64_MAX) icount = ic;
            }
            const char* str = reinterpret_cast<const char*>(body.data() + extra_size);
            Json sn = Json::object();
            sn["id"] = std::string(str, id_size);
            sn["name"] = std::string(str + id_size, name_size);
            sn["vm-state-size"] = vm_state;
            sn["date-sec"] = date_sec;
            sn["date-nsec"] = date_nsec;
            sn["vm-clock-sec"] = vm_clock / 1000000000ull;
            sn["vm-clock-nsec"] = vm_clock % 1000000000ull;
            if (icount) sn["icount"] = *icount;
            snapshots_.push_back(std::move(sn));
            off += (kEntryHeader + rest + 7) & ~7ull;
        }
        return {};
    }

    // Reads the bitmap directory for info's "bitmaps" list.
    Status load_bitmaps() {
        const uint64_t cs = h_.cluster_size();
        const uint32_t nb = h_.nb_bitmaps;
        const uint64_t dir_size = h_.bitmap_dir_size;
        const uint64_t dir_off = h_.bitmap_dir_offset;
        if (nb == 0) return {};
        if (nb > kMaxBitmaps || dir_size > kBitmapDirMaxBytes || dir_off % cs != 0 || dir_off > file_->size() ||
            dir_size > file_->size() - dir_off) {
            return make_error(EINVAL, name_ + ": bitmap directory is invalid");
        }
        std::vector<std::byte> dir(dir_size);
        BLK_TRY(file_->read(dir_off, dir).context(name_ + ": reading the bitmap directory"));
        uint64_t p = 0;
        for (uint32_t i = 0; i < nb; ++i) {
            if (p + 24 > dir.size()) return make_error(EINVAL, name_ + ": bitmap directory is truncated");
            const uint32_t flags = load_be32(dir.data() + p + 12);
            const uint8_t gran_bits = std::to_integer<uint8_t>(dir[p + 17]);
            const uint16_t name_size = load_be16(dir.data() + p + 18);
            const uint32_t extra = load_be32(dir.data() + p + 20);
            if (p + 24 + extra + name_size > dir.size() || gran_bits > 63) {
                return make_error(EINVAL, name_ + ": bitmap directory entry " + std::to_string(i) + " is invalid");
            }
            Json b = Json::object();
            Json fl = Json::array();
            if (flags & 1) fl.push_back("in-use");
            if (flags & 2) fl.push_back("auto");
            b["flags"] = fl;
            b["name"] = std::string(reinterpret_cast<const char*>(dir.data() + p + 24 + extra), name_size);
            b["granularity"] = 1ull << gran_bits;
            bitmaps_.push_back(std::move(b));
            p += (24ull + extra + name_size + 7) & ~7ull;
        }
        return {};
    }

    Header h_;
    Node* file_ = nullptr;
    Node* data_ = nullptr;
    std::string name_;
    std::vector<uint64_t> l1_;
    Json bitmaps_ = Json::array();
    Json snapshots_ = Json::array();

    std::mutex mu_;  // guards the L2 cache
    size_t cache_max_;
    std::list<std::pair<uint64_t, Table>> lru_;
    std::unordered_map<uint64_t, std::list<std::pair<uint64_t, Table>>::iterator> cache_index_;

    std::mutex prealloc_mu_;
    bool prealloc_checked_ = false;
    bool metadata_prealloc_ = false;
};

Result<std::shared_ptr<Node>> open_qcow2(OpenContext& ctx, const Json& opts) {
    BLK_TRY_ASSIGN(std::shared_ptr<Node> file, ctx.open_child_unattached(opts, "file", true));
    const std::string name = file->filename();
    std::vector<std::byte> head(std::min<uint64_t>(file->size(), kProbeHeadBytes));
    BLK_TRY(file->read(0, head).context(name));
    if (head.size() >= 24) {
        const uint32_t cb = load_be32(head.data() + 20);
        if (cb >= kMinClusterBits && cb <= kMaxClusterBits && (1ull << cb) > head.size() && file->size() > head.size()) {
            head.resize(std::min<uint64_t>(file->size(), 1ull << cb));
            BLK_TRY(file->read(0, head).context(name));
        }
    }
    auto h = parse_header(head, file->size());
    if (!h) return std::move(h).error().with_context(name);
    if (h->crypt_method != 0) {
        return make_error(ENOTSUP, name + ": encrypted qcow2 images are not supported yet");
    }
    auto node = std::make_shared<Qcow2Node>(opts, std::move(*h));
    BLK_TRY(node->init(ctx, opts, std::move(file)));
    return std::shared_ptr<Node>(node);
}

}  // namespace

DriverSpec qcow2_driver() {
    DriverSpec d;
    d.name = "qcow2";
    d.kind = DriverKind::Format;
    d.description = "QEMU copy-on-write image, version 2 and 3";
    d.options = {
        {"file", OptType::Child, "the file holding the image"},
        {"backing", OptType::Child, "backing image (null: none; default: the name stored in the image)"},
        {"data-file", OptType::Child, "external data file"},
        {"lazy-refcounts", OptType::Bool, "accepted for compatibility (read-only)"},
        {"pass-discard-request", OptType::Bool, "accepted for compatibility"},
        {"pass-discard-snapshot", OptType::Bool, "accepted for compatibility"},
        {"pass-discard-other", OptType::Bool, "accepted for compatibility"},
        {"discard-no-unref", OptType::Bool, "accepted for compatibility"},
        {"overlap-check", OptType::String, "accepted for compatibility"},
        {"overlap-check.template", OptType::String, "accepted for compatibility"},
        {"cache-size", OptType::Size, "accepted for compatibility"},
        {"l2-cache-size", OptType::Size, "accepted for compatibility (the L2 cache is bounded at 4 MiB)"},
        {"l2-cache-entry-size", OptType::Size, "accepted for compatibility"},
        {"refcount-cache-size", OptType::Size, "accepted for compatibility"},
        {"cache-clean-interval", OptType::Int, "accepted for compatibility"},
        {"encrypt.format", OptType::String, "encryption is not supported yet"},
        {"encrypt.key-secret", OptType::String, "encryption is not supported yet"},
    };
    d.probe = [](std::span<const std::byte> head, const std::string&) {
        return head.size() >= 4 && load_be32(head.data()) == kMagic ? 100 : 0;
    };
    d.open = open_qcow2;
    d.create_options = create_schema();
    d.create = create;
    return d;
}

}  // namespace blk
