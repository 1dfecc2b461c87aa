// qcow2: opening an image (read-only or writable), the facts info prints, and the driver's
// registration. The engine lives beside it: read.cpp, write.cpp, zero.cpp, meta.cpp.
#include <algorithm>
#include <cstdio>

#include "blk/driver.h"
#include "blk/endian.h"
#include "compress.h"
#include "create.h"
#include "engine.h"
#include "format.h"
#include "../luks_header.h"

namespace blk {

namespace qcow2 {

namespace {

constexpr uint64_t kProbeHeadBytes = 64 * 1024;
constexpr uint64_t kBitmapDirMaxBytes = 64ull << 20;  // qemu's QCOW2_MAX_BITMAP_DIRECTORY_SIZE
constexpr uint32_t kMaxBitmaps = 65535;

}  // namespace

std::string hex(uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

Qcow2Node::Qcow2Node(Json opts, Header h, std::vector<std::byte> head)
    : Node("qcow2", std::move(opts)),
      h_(std::move(h)),
      l2_cache_(std::max<size_t>(kMinL2CacheTables, kL2CacheBytes / h_.cluster_size())) {
    size_ = h_.size;
    head.resize(h_.version >= 3 ? kV3MinHeaderLength : kV2HeaderLength);
    hdr_ = std::move(head);
}

Status Qcow2Node::init(OpenContext& ctx, const Json& opts, std::shared_ptr<Node> file) {
    name_ = base_filename(*file);  // the host file, also under a filter (convert's preallocate)
    external_ = h_.incompatible & kIncompatDataFile;
    // Every request reaches the children through these slots, so a node a graph edit puts
    // under the image later (a filter above its file) sees all of them.
    // Metadata only with skip_data_file (info): the data file is not opened, as qemu-img
    // 7.2(.x) does since the fix for CVE-2024-4467, so that info can vet an untrusted image
    // without touching the files it names, and shows an image whose data file is missing.
    // Nothing reads data under no_io; data_ then follows the metadata file only so that it
    // is never empty.
    const bool open_data_file = external_ && !(ctx.flags().no_io && ctx.flags().skip_data_file);
    bind_edge("file", file_);
    bind_edge(open_data_file ? "data-file" : "file", data_);
    BLK_TRY(attach_child("file", file, kRoleMetadata | kRolePrimary | (external_ ? 0u : unsigned{kRoleData})));
    if (external_ && !open_data_file) {
        // nothing: see above
    } else if (external_) {
        std::shared_ptr<Node> df;
        if (opts.contains("data-file")) {
            BLK_TRY_ASSIGN(df, ctx.open_child(*this, opts, "data-file", kRoleData, true));
        } else if (!h_.data_file.empty()) {
            // qemu 7.2 opens the stored name as it is: a relative name is relative to the
            // working directory, not to the image (unlike backing files), and qemu-img
            // create makes the file there too. Resolving it from the image's directory
            // would open another file than qemu does, or none.
            auto r = ctx.open(Json{{"driver", "file"}, {"filename", h_.data_file}});
            if (!r) return std::move(r).error();
            df = *r;
            BLK_TRY(attach_child("data-file", df, kRoleData));
        } else {
            return make_error(EINVAL, "'data-file' is required for this image");
        }
    } else if (opts.contains("data-file") && !opts["data-file"].is_null()) {
        return make_error(EINVAL, "'data-file' can only be set for images with an external data file");
    }
    read_only_ = file_->read_only() || data_->read_only();
    BLK_TRY(load_l1());
    BLK_TRY(ctx.open_backing(*this, opts, h_.backing_file, h_.backing_format, name_));
    if (h_.has_bitmaps_ext && h_.version >= 3) BLK_TRY(load_bitmaps());
    if (h_.nb_snapshots > 0) BLK_TRY(load_snapshots());
    if (!read_only_) BLK_TRY(open_writable(opts));
    return {};
}

// Refuses what the write path cannot keep consistent, learns where every table lives and
// checks the tables a write may touch before anything is written.
Status Qcow2Node::open_writable(const Json& opts) {
    const uint64_t cs = h_.cluster_size();
    if ((h_.incompatible & kIncompatCorrupt) && !file_->incomplete()) {
        return make_error(EACCES, name_ + ": Image is corrupt; cannot be opened read/write");
    }
    if (h_.incompatible & kIncompatDirty) BLK_TRY(repair_dirty());
    if ((h_.autoclear & kAutoclearDataFileRaw) && !h_.backing_file.empty()) {
        return make_error(EINVAL, name_ + ": an image with a raw external data file cannot have a backing file");
    }
    BLK_TRY_ASSIGN(auto lazy_opt, opt_bool(opts, "lazy-refcounts"));
    if (lazy_opt.value_or(false) && h_.version < 3) {
        return make_error(EINVAL, name_ + ": Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level");
    }
    lazy_ = lazy_opt.value_or(static_cast<bool>(h_.compatible & kCompatLazyRefcounts));
    BLK_TRY_ASSIGN(pass_request_, opt_bool(opts, "pass-discard-request"));
    BLK_TRY_ASSIGN(auto pass_snapshot, opt_bool(opts, "pass-discard-snapshot"));
    BLK_TRY_ASSIGN(auto pass_other, opt_bool(opts, "pass-discard-other"));
    pass_snapshot_ = pass_snapshot.value_or(true);
    pass_other_ = pass_other.value_or(false);
    // cache.no-flush (cache=unsafe, qemu-img convert's default for targets): metadata is
    // still written back in order, but nothing asks the host to make it durable.
    if (opts.contains("cache") && opts["cache"].is_object()) {
        BLK_TRY_ASSIGN(auto nf, opt_bool(opts["cache"], "no-flush"));
        no_flush_ = nf.value_or(false);
    }

    meta_.add(0, cs);
    const uint64_t l1_bytes = (uint64_t{h_.l1_size} * 8 + cs - 1) / cs * cs;
    const uint64_t rt_bytes = uint64_t{h_.refcount_table_clusters} * cs;
    if (meta_.overlaps(h_.refcount_table_offset, rt_bytes)) {
        return make_error(EIO, name_ + ": the refcount table at " + hex(h_.refcount_table_offset) + " overlaps the header");
    }
    meta_.add(h_.refcount_table_offset, rt_bytes);
    if (l1_bytes && meta_.overlaps(h_.l1_table_offset, l1_bytes)) {
        return make_error(EIO, name_ + ": the L1 table at " + hex(h_.l1_table_offset) + " overlaps the header or the refcount table");
    }
    meta_.add(h_.l1_table_offset, l1_bytes);
    refs_ = std::make_unique<Refcounts>(h_, file_, name_, meta_);
    BLK_TRY(refs_->load());
    const uint64_t fsize = file_->size();
    for (uint64_t i = 0; i < l1_.size(); ++i) {
        const uint64_t off = l1_[i] & kOffsetMask;
        if (off == 0) continue;
        const std::string what = name_ + ": L1 entry " + std::to_string(i) + " points at " + hex(off);
        if (off % cs != 0) return make_error(EIO, what + ", which is not cluster-aligned");
        if (off >= fsize || cs > fsize - off) return make_error(EIO, what + ", past the end of the file");
        if (meta_.overlaps(off, cs)) return make_error(EIO, what + ", which holds other qcow2 metadata");
        meta_.add(off, cs);
    }
    BLK_TRY(map_snapshots());
    BLK_TRY(open_bitmaps());
    writable_ = true;
    // A writer that does not maintain an autoclear feature must clear its bit first (the
    // bitmaps' is kept: they are maintained).
    const uint64_t kept = kAutoclearDataFileRaw | (h_.has_bitmaps_ext ? kAutoclearBitmaps : 0);
    if (h_.version >= 3 && (h_.autoclear & ~kept)) {
        std::lock_guard lock(mu_);
        h_.autoclear &= kept;
        BLK_TRY(write_header_locked());
    }
    return {};
}

// Internal snapshots: their table, their L1 tables and the L2 tables those name are
// metadata a write must never land on (the refcounts keep them from being allocated; the
// map also catches an L2 entry that points into them). L2 tables the active L1 shares are
// in the map already. Clusters shared with a snapshot are copied before they are written
// (their refcount is above 1, so their L2 entries and L1 entries lack the COPIED flag).
Status Qcow2Node::map_snapshots() {
    const uint64_t cs = h_.cluster_size();
    const uint64_t fsize = file_->size();
    if (h_.nb_snapshots == 0) return {};
    const uint64_t tbytes = (snapshot_table_bytes_ + cs - 1) / cs * cs;
    if (h_.snapshots_offset % cs != 0 || meta_.overlaps(h_.snapshots_offset, tbytes)) {
        return make_error(EIO, name_ + ": the snapshot table at " + hex(h_.snapshots_offset) + " overlaps other qcow2 metadata");
    }
    meta_.add(h_.snapshots_offset, tbytes);
    for (size_t i = 0; i < snapshot_l1s_.size(); ++i) {
        const auto [l1_off, l1_size] = snapshot_l1s_[i];
        const std::string what = name_ + ": snapshot " + std::to_string(i) + "'s L1 table at " + hex(l1_off);
        const uint64_t bytes = uint64_t{l1_size} * 8;
        if (bytes == 0) continue;
        if (bytes > kMaxL1Bytes) return make_error(EIO, what + " is too large");
        if (l1_off % cs != 0 || l1_off >= fsize || bytes > fsize - l1_off) {
            return make_error(EIO, what + " is not cluster-aligned or lies past the end of the file");
        }
        const uint64_t span = (bytes + cs - 1) / cs * cs;
        if (meta_.overlaps(l1_off, span)) return make_error(EIO, what + " overlaps other qcow2 metadata");
        std::vector<std::byte> raw(bytes);
        BLK_TRY(file_->read(l1_off, raw).context(what));
        meta_.add(l1_off, span);
        for (uint32_t k = 0; k < l1_size; ++k) {
            const uint64_t l2 = load_be64(raw.data() + 8ull * k) & kOffsetMask;
            if (l2 == 0) continue;
            if (l2 % cs != 0 || l2 >= fsize || cs > fsize - l2) {
                return make_error(EIO, what + ": entry " + std::to_string(k) + " points at " + hex(l2) + ", not a cluster of the file");
            }
            // Shared with the active L1 or another snapshot: already known.
            if (!meta_.overlaps(l2, cs)) meta_.add(l2, cs);
        }
    }
    return {};
}

// An image whose dirty bit is set (lazy refcounts, not closed cleanly) may have refcounts
// too low: writing to it could reuse a cluster still in use. As qemu does when it opens such
// an image for writing, its refcounts are repaired first (check -r all, silently: the
// repair's own order of writes keeps the image safe if it stops), which clears the bit; an
// image the repair cannot make whole is refused. Read-only opens never get here.
Status Qcow2Node::repair_dirty() {
    auto r = check_qcow2(*file_, Repair::All);
    if (!r) return make_error(r.error().code, name_ + ": Could not repair dirty image: " + r.error().message);
    if (r->failed || r->check_errors || r->corruptions) {
        const std::string why = r->corruptions ? std::to_string(r->corruptions) + " corruptions remain"
                                               : "the repair could not complete";
        return make_error(EIO, name_ + ": Could not repair dirty image (" + why + "); see 'qemu-img check " + name_ + "'");
    }
    // The repair may have moved the refcount table, fixed L1 COPIED flags and cleared the
    // dirty bit: take them from the disk.
    BLK_TRY_ASSIGN(std::vector<std::byte> head,
                   read_header_cluster(*file_).context(name_ + ": reading the repaired header"));
    BLK_TRY_ASSIGN(Header fresh, parse_header(head, file_->size()));
    h_.refcount_table_offset = fresh.refcount_table_offset;
    h_.refcount_table_clusters = fresh.refcount_table_clusters;
    h_.incompatible = fresh.incompatible;
    BLK_TRY(load_l1());
    std::lock_guard lock(mu_);
    l2_cache_ = MetaCache(l2_cache_.max_entries());  // tables read before the repair
    return {};
}

// A reopen to writable does what a writable open does after reading the tables: the same
// refusals (snapshots, bitmaps, dirty or corrupt images), the metadata map and the
// refcounts. Going back to read-only writes every cache back first.
Status Qcow2Node::do_reopen(bool writable) {
    if (writable) {
        read_only_ = file_->read_only() || data_->read_only();
        if (read_only_) return make_error(EACCES, name_ + ": its file is still read-only");
        meta_ = MetadataMap{};
        Status st = open_writable(options_);
        if (!st) {
            read_only_ = true;
            writable_ = false;
            refs_.reset();
            meta_ = MetadataMap{};
        }
        return st;
    }
    {
        std::lock_guard lock(mu_);
        if (writable_ && !broken_) {
            BLK_TRY(store_bitmaps_locked());
            BLK_TRY(writeback_locked(true));
        }
        writable_ = false;
    }
    bitmaps_rw_.clear();
    refs_.reset();
    meta_ = MetadataMap{};
    read_only_ = true;
    return {};
}

Qcow2Node::~Qcow2Node() {
    // Best effort: what a caller wrote without flushing still reaches the disk, in the safe
    // order; errors go unreported (call flush() to see them). Corrupt images get nothing.
    if (!writable_) return;
    std::lock_guard lock(mu_);
    if (!broken_ && store_bitmaps_locked()) (void)writeback_locked(true);
}

std::optional<bool> Qcow2Node::dirty() const {
    std::lock_guard lock(mu_);
    return static_cast<bool>(h_.incompatible & kIncompatDirty);
}

FormatFacts Qcow2Node::format_specific() const {
    std::lock_guard lock(mu_);
    Qcow2Facts f;
    f.v3 = h_.version >= 3;
    f.compression_type = h_.compression == CompressionType::Zstd ? "zstd" : "zlib";
    f.refcount_bits = 1u << h_.refcount_order;
    if (f.v3) {
        f.has_data_file = (h_.incompatible & kIncompatDataFile) != 0;
        if (f.has_data_file && !h_.data_file.empty()) f.data_file = h_.data_file;
        f.data_file_raw = (h_.autoclear & kAutoclearDataFileRaw) != 0;
        f.extended_l2 = h_.extended_l2();
        f.lazy_refcounts = (h_.compatible & kCompatLazyRefcounts) != 0;
        f.corrupt = (h_.incompatible & kIncompatCorrupt) != 0;
        f.bitmaps = bitmaps_;
    }
    f.encrypt = encrypt_;
    return f;
}

Status Qcow2Node::load_l1() {
    l1_.resize(h_.l1_size);
    if (h_.l1_size == 0) return {};
    std::vector<std::byte> raw(uint64_t{h_.l1_size} * 8);
    BLK_TRY(file_->read(h_.l1_table_offset, raw).context(name_ + ": reading the L1 table"));
    for (uint32_t i = 0; i < h_.l1_size; ++i) l1_[i] = load_be64(raw.data() + 8ull * i);
    return {};
}

// Reads the snapshot table for info's snapshot list; every entry is bounds-checked and
// the whole table is capped at kMaxSnapshotTableBytes.
Status Qcow2Node::load_snapshots() {
    constexpr uint64_t kEntryHeader = 40;
    uint64_t off = h_.snapshots_offset;
    const uint64_t fsize = file_->size();
    for (uint32_t i = 0; i < h_.nb_snapshots; ++i) {
        const std::string where = name_ + ": snapshot " + std::to_string(i) + " at " + hex(off);
        if (off - h_.snapshots_offset > kMaxSnapshotTableBytes) return make_error(EINVAL, name_ + ": snapshot table too large");
        if (off > fsize || kEntryHeader > fsize - off) return make_error(EINVAL, where + " lies past the end of the file");
        std::byte hdr[kEntryHeader];
        BLK_TRY(file_->read(off, hdr).context(where));
        snapshot_l1s_.emplace_back(load_be64(hdr), load_be32(hdr + 8));
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
        SnapshotFacts sn;
        sn.id = std::string(str, id_size);
        sn.name = std::string(str + id_size, name_size);
        sn.vm_state_size = vm_state;
        sn.date_sec = date_sec;
        sn.date_nsec = date_nsec;
        sn.vm_clock_ns = vm_clock;
        sn.icount = icount;
        snapshots_.push_back(std::move(sn));
        off += (kEntryHeader + rest + 7) & ~7ull;
    }
    snapshot_table_bytes_ = off - h_.snapshots_offset;
    return {};
}

// Reads the bitmap directory for info's "bitmaps" list.
Status Qcow2Node::load_bitmaps() {
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
        BitmapFacts b;
        b.in_use = (flags & 1) != 0;
        b.auto_flag = (flags & 2) != 0;
        b.name = std::string(reinterpret_cast<const char*>(dir.data() + p + 24 + extra), name_size);
        b.granularity = 1ull << gran_bits;
        bitmaps_.push_back(std::move(b));
        p += (24ull + extra + name_size + 7) & ~7ull;
    }
    return {};
}

Result<std::vector<std::byte>> read_header_cluster(Node& file) {
    std::vector<std::byte> head(std::min<uint64_t>(file.size(), kProbeHeadBytes));
    BLK_TRY(file.read(0, head));
    if (head.size() >= 24) {
        const uint32_t cb = load_be32(head.data() + 20);
        if (cb >= kMinClusterBits && cb <= kMaxClusterBits && (1ull << cb) > head.size() && file.size() > head.size()) {
            const size_t have = head.size();
            head.resize(std::min<uint64_t>(file.size(), 1ull << cb));
            BLK_TRY(file.read(have, std::span(head).subspan(have)));
        }
    }
    return head;
}

namespace {

Result<std::shared_ptr<Node>> open_qcow2(OpenContext& ctx, const Json& opts) {
    BLK_TRY_ASSIGN(std::shared_ptr<Node> file, ctx.open_child_unattached(opts, "file", true));
    const std::string name = file->filename();
    BLK_TRY_ASSIGN(std::vector<std::byte> head, read_header_cluster(*file).context(name));
    // Header errors read as qemu's, without the file's name: the caller's "Could not open
    // 'NAME': " already says which image.
    auto h = parse_header(head, file->size());
    if (!h) return std::move(h).error();
    // An encrypted image opens for its metadata only (info), as qemu opens it without a key
    // under BDRV_O_NO_IO; anything that reads guest data needs the key, and then decryption,
    // which blkimg does not have yet: never hand out ciphertext as data.
    std::optional<EncryptFacts> encrypt;
    if (h->crypt_method != 0) {
        if (!ctx.flags().no_io) {
            if (!opts.contains("encrypt.key-secret") &&
                !(opts.contains("encrypt") && opts["encrypt"].is_object() && opts["encrypt"].contains("key-secret"))) {
                return make_error(ENOTSUP, "Parameter 'encrypt.key-secret' is required for cipher");
            }
            return make_error(ENOTSUP, "encrypted qcow2 images are not supported yet (blkimg cannot decrypt their data)");
        }
        if (h->crypt_method == 1) {
            encrypt.emplace();
            encrypt->format = "aes";
        } else {
            if (!h->has_crypto_ext) return make_error(EINVAL, "LUKS encryption without its header extension");
            auto info = luks_header_info(*file, h->crypto_offset);
            if (!info) return std::move(info).error();
            encrypt = std::move(*info);
        }
    }
    auto node = std::make_shared<Qcow2Node>(opts, std::move(*h), std::move(head));
    if (encrypt) node->set_encrypt_info(std::move(*encrypt));
    BLK_TRY(node->init(ctx, opts, std::move(file)));
    return std::shared_ptr<Node>(node);
}

}  // namespace

}  // namespace qcow2

DriverSpec qcow2_driver() {
    DriverSpec d;
    d.name = "qcow2";
    d.kind = DriverKind::Format;
    d.description = "QEMU copy-on-write image, version 2 and 3";
    d.options = {
        {"file", OptType::Child, "the file holding the image"},
        {"backing", OptType::Child, "backing image (null: none; default: the name stored in the image)"},
        {"data-file", OptType::Child, "external data file"},
        {"lazy-refcounts", OptType::Bool, "postpone refcount updates, marking the image dirty (default: the image's lazy_refcounts bit)"},
        {"pass-discard-request", OptType::Bool, "discard the file's space a discard or unmapping zero write frees (default: the node's discard mode)"},
        {"pass-discard-snapshot", OptType::Bool, "discard the file's space emptying the image frees, as commit does (default: on)"},
        {"pass-discard-other", OptType::Bool, "discard the file's space freed metadata tables held (default: off)"},
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
        // Version 1 is qcow, not qcow2 (qemu's qcow2 probe wants version 2 or later).
        return head.size() >= 104 && load_be32(head.data()) == qcow2::kMagic && load_be32(head.data() + 4) >= 2 ? 100 : 0;
    };
    d.open = qcow2::open_qcow2;
    d.create_options = qcow2::create_schema();
    d.check_create = qcow2::check_create;
    d.create = qcow2::create;
    return d;
}

}  // namespace blk
