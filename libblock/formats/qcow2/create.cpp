// qcow2 image creation: qemu-img 7.2's options and checks, the layout, and a writer that
// streams the metadata (memory stays bounded however large the image is).
#include "create.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "blk/endian.h"

namespace blk::qcow2 {

namespace {

constexpr uint64_t kDefaultClusterSize = 65536;
constexpr uint64_t kReftableEntryBytes = 8;
constexpr uint64_t kL1EntryBytes = 8;
constexpr uint64_t kWriteChunkBytes = 4ull << 20;  // bound on the writer's buffer

// qemu 7.2's BlockdevDriver enum: the values backing_fmt accepts (qemu checks the name even
// with -u, when the backing file is not opened).
constexpr const char* kQemuDrivers[] = {
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop", "compress",
    "copy-before-write", "copy-on-read", "dmg", "file", "snapshot-access", "ftp", "ftps",
    "gluster", "host_cdrom", "host_device", "http", "https", "iscsi", "luks", "nbd", "nfs",
    "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow", "qcow2", "qed",
    "quorum", "raw", "rbd", "replication", "ssh", "throttle", "vdi", "vhdx", "vmdk", "vpc",
    "vvfat",
};

uint64_t div_up(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

Error not_accepted(const std::string& param, const std::string& value) {
    return make_error(EINVAL, "Parameter '" + param + "' does not accept value '" + value + "'");
}

std::string text_opt(const Json& o, const char* key) {
    auto it = o.find(key);
    return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool bool_opt(const Json& o, const char* key) {
    auto it = o.find(key);
    return it != o.end() && it->is_boolean() && it->get<bool>();
}

std::string strip_file_prefix(const std::string& name) { return name.rfind("file:", 0) == 0 ? name.substr(5) : name; }

}  // namespace

const Schema& create_schema() {
    static const Schema s = {
        {"encryption", OptType::Bool, "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"},
        {"encrypt.format", OptType::String, "Encrypt the image, format choices: 'aes', 'luks'"},
        {"encrypt.key-secret", OptType::String, "ID of secret providing qcow AES key or LUKS passphrase"},
        {"encrypt.cipher-alg", OptType::String, "Name of encryption cipher algorithm"},
        {"encrypt.cipher-mode", OptType::String, "Name of encryption cipher mode"},
        {"encrypt.ivgen-alg", OptType::String, "Name of IV generator algorithm"},
        {"encrypt.ivgen-hash-alg", OptType::String, "Name of IV generator hash algorithm"},
        {"encrypt.hash-alg", OptType::String, "Name of encryption hash algorithm"},
        {"encrypt.iter-time", OptType::Int, "Time to spend in PBKDF in milliseconds"},
        {"cluster_size", OptType::Size, "qcow2 cluster size", {}, "65536"},
        {"extended_l2", OptType::Bool, "Extended L2 tables", {}, "off"},
        {"preallocation", OptType::Enum, "Preallocation mode (allowed values: off, metadata, falloc, full)",
         {"off", "metadata", "falloc", "full"}},
        {"compression_type", OptType::Enum, "Compression method used for image cluster compression", {"zlib", "zstd"}, "zlib"},
        {"size", OptType::Size, "Virtual disk size"},
        {"compat", OptType::Enum, "Compatibility level (v2 [0.10] or v3 [1.1])", {"0.10", "1.1", "v2", "v3"}},
        {"backing_file", OptType::String, "File name of a base image"},
        {"backing_fmt", OptType::String, "Image format of the base image"},
        {"data_file", OptType::String, "File name of an external data file"},
        {"data_file_raw", OptType::Bool, "The external data file must stay valid as a raw image"},
        {"lazy_refcounts", OptType::Bool, "Postpone refcount updates", {}, "off"},
        {"refcount_bits", OptType::Int, "Width of a reference count entry in bits", {}, "16"},
    };
    return s;
}

Result<CreateParams> parse_create_params(const Json& o) {
    CreateParams p;
    bool encrypt = bool_opt(o, "encryption");
    for (auto it = o.begin(); it != o.end(); ++it)
        if (it.key().rfind("encrypt.", 0) == 0) encrypt = true;
    if (encrypt) return make_error(ENOTSUP, "Creating encrypted qcow2 images is not supported yet");

    // The values qemu's QAPI visitor checks, in the order of its BlockdevCreateOptionsQcow2.
    const std::string compat = text_opt(o, "compat");
    if (o.contains("compat")) {
        if (compat == "0.10" || compat == "v2") p.version = 2;
        else if (compat == "1.1" || compat == "v3") p.version = 3;
        else return not_accepted("version", compat);
    }
    if (o.contains("backing_fmt")) {
        p.backing_format = text_opt(o, "backing_fmt");
        if (std::none_of(std::begin(kQemuDrivers), std::end(kQemuDrivers), [&](const char* d) { return p.backing_format == d; })) {
            return not_accepted("backing-fmt", p.backing_format);
        }
    }
    if (o.contains("preallocation")) {
        const std::string mode = text_opt(o, "preallocation");
        auto m = parse_prealloc(mode);
        if (!m) return not_accepted("preallocation", mode);
        p.prealloc = *m;
    }
    if (o.contains("compression_type")) {
        const std::string ct = text_opt(o, "compression_type");
        if (ct == "zstd") p.compression = CompressionType::Zstd;
        else if (ct != "zlib") return not_accepted("compression-type", ct);
    }

    // qcow2_co_create's checks, in its order.
    p.size = o.value("size", uint64_t{0});
    p.size = p.size > UINT64_MAX - 511 ? p.size : (p.size + 511) / 512 * 512;
    if (p.size > static_cast<uint64_t>(INT64_MAX)) return make_error(EINVAL, "Could not resize image: Image size cannot be negative");
    p.extended_l2 = bool_opt(o, "extended_l2");
    if (p.extended_l2 && p.version < 3) {
        return make_error(EINVAL, "Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
    }
    const uint64_t cs = o.value("cluster_size", kDefaultClusterSize);
    if (cs < (1u << kMinClusterBits) || cs > (1u << kMaxClusterBits) || (cs & (cs - 1)) != 0) {
        return make_error(EINVAL, "Cluster size must be a power of two between 512 and 2048k");
    }
    p.cluster_bits = static_cast<uint32_t>(__builtin_ctzll(cs));
    if (p.extended_l2 && cs < (1u << kMinClusterBits) * kSubclustersPerCluster) {
        return make_error(EINVAL, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
    }
    p.backing_file = text_opt(o, "backing_file");
    if (o.contains("backing_file") && p.prealloc != Prealloc::Off && !p.extended_l2) {
        return make_error(EINVAL, "Backing file and preallocation can only be used at the same time if extended_l2 is on");
    }
    if (o.contains("backing_fmt") && !o.contains("backing_file")) {
        return make_error(EINVAL, "Backing format cannot be used without backing file");
    }
    p.lazy_refcounts = bool_opt(o, "lazy_refcounts");
    if (p.version < 3 && p.lazy_refcounts) {
        return make_error(EINVAL, "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)");
    }
    const auto bits = static_cast<uint64_t>(o.value("refcount_bits", int64_t{16}));
    if (bits > 64 || bits == 0 || (bits & (bits - 1)) != 0) {
        return make_error(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
    }
    if (p.version < 3 && bits != 16) {
        return make_error(EINVAL, "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)");
    }
    p.refcount_order = static_cast<uint32_t>(__builtin_ctzll(bits));
    p.data_file_raw = bool_opt(o, "data_file_raw");
    const bool has_data_file = o.contains("data_file");
    if (p.data_file_raw && !has_data_file) return make_error(EINVAL, "data-file-raw requires data-file");
    if (p.data_file_raw && o.contains("backing_file")) {
        return make_error(EINVAL, "Backing file and data-file-raw cannot be used at the same time");
    }
    // The metadata must map the data file 1:1 so both views agree.
    if (p.data_file_raw && p.prealloc == Prealloc::Off) p.prealloc = Prealloc::Metadata;
    if (has_data_file) {
        if (p.version < 3) {
            return make_error(EINVAL, "External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
        }
        p.data_file = strip_file_prefix(text_opt(o, "data_file"));
    }
    if (p.compression != CompressionType::Zlib && p.version < 3) {
        return make_error(EINVAL, "Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)");
    }
    return p;
}

uint64_t Layout::l2_offset(uint64_t table) const {
    return prealloc_offset + (interleaved ? table * (1 + l2_entries) : table) * cluster_size;
}

uint64_t Layout::data_offset(uint64_t k) const {
    if (!internal_data) return k * cluster_size;  // an external data file maps 1:1
    if (interleaved) return l2_offset(k / l2_entries) + (1 + k % l2_entries) * cluster_size;
    return prealloc_offset + (l2_tables + k) * cluster_size;
}

Result<Layout> plan_layout(const CreateParams& p) {
    Layout l;
    l.cluster_size = 1ull << p.cluster_bits;
    const uint64_t cs = l.cluster_size;
    l.subcluster_size = p.extended_l2 ? cs / kSubclustersPerCluster : cs;
    l.l2_entries = cs / (p.extended_l2 ? 16 : 8);
    l.data_clusters = div_up(p.size, cs);
    const uint64_t l1_entries = div_up(l.data_clusters, l.l2_entries);
    if (l1_entries * kL1EntryBytes > kMaxL1Bytes) {
        return make_error(EFBIG, "the L1 table would need " + std::to_string(l1_entries) + " entries");
    }
    l.l1_size = static_cast<uint32_t>(l1_entries);
    l.l1_clusters = div_up(l1_entries * kL1EntryBytes, cs);
    const bool prealloc = p.prealloc != Prealloc::Off;
    const bool external = !p.data_file.empty();
    l.l2_tables = prealloc ? l1_entries : 0;
    l.internal_data = prealloc && !external;
    l.interleaved = l.internal_data && p.prealloc == Prealloc::Metadata;
    const uint64_t data_in_file = l.internal_data ? l.data_clusters : 0;

    // Refcount structures for everything, themselves included: the fixed point qemu finds.
    const uint64_t base = 1 + l.l1_clusters + l.l2_tables + data_in_file;
    l.refcounts_per_block = cs * 8 >> p.refcount_order;
    const uint64_t entries_per_table_cluster = cs / kReftableEntryBytes;
    uint64_t blocks = 0, table = 0, last = UINT64_MAX;
    for (uint64_t n = 0; n != last;) {
        last = n;
        blocks = div_up(base + table + blocks, l.refcounts_per_block);
        table = div_up(blocks, entries_per_table_cluster);
        n = base + blocks + table;
    }
    if (table * cs > kMaxRefcountTableBytes) {
        return make_error(EFBIG, "the refcount table would need " + std::to_string(table) + " clusters");
    }
    l.reftable_clusters = table;
    l.refblock_count = blocks;
    l.reftable_offset = cs;
    l.refblocks_offset = (1 + table) * cs;
    const uint64_t after_refcounts = 1 + table + blocks;
    l.l1_offset = l.l1_size ? after_refcounts * cs : 0;
    l.prealloc_offset = (after_refcounts + l.l1_clusters) * cs;
    l.total_clusters = base + table + blocks;
    if (l.total_clusters > kMaxHostOffset / cs) {
        return make_error(EFBIG, "the image file would need " + std::to_string(l.total_clusters) + " clusters");
    }

    // Where the files end. qemu writes only the L1 table's bytes, so without preallocation
    // the file ends inside the L1 cluster; preallocated data ends at the last guest byte,
    // rounded up to a subcluster (metadata) or a cluster (falloc/full, which allocate whole
    // clusters).
    l.metadata_end = l.l2_tables ? l.l2_offset(l.l2_tables - 1) + cs
                                 : (l.l1_size ? l.l1_offset + l.l1_size * kL1EntryBytes : after_refcounts * cs);
    l.file_size = l.metadata_end;
    l.data_file_size = p.size;
    if (prealloc && l.data_clusters > 0) {
        const uint64_t last_cluster = l.data_clusters - 1;
        const uint64_t rest = p.size - last_cluster * cs;  // guest bytes in the last cluster
        // qemu maps metadata preallocation, and any preallocation into a data file, cluster
        // by cluster, copying the partial last (sub)cluster; falloc/full allocate whole clusters.
        const bool mapped = p.prealloc == Prealloc::Metadata || external;
        const uint64_t rounded = mapped ? div_up(rest, l.subcluster_size) * l.subcluster_size : cs;
        const uint64_t end = l.data_offset(last_cluster) + rounded;
        if (mapped && rest % l.subcluster_size != 0) {
            l.tail_zero_offset = l.data_offset(last_cluster) + rest;
            l.tail_zero_bytes = rounded - rest;
        }
        if (external) l.data_file_size = end;
        else l.file_size = end;
    }
    return l;
}

Header make_header(const CreateParams& p, const Layout& l) {
    Header h;
    h.version = p.version;
    h.cluster_bits = p.cluster_bits;
    h.size = p.size;
    h.l1_size = l.l1_size;
    h.l1_table_offset = l.l1_offset;
    h.refcount_table_offset = l.reftable_offset;
    h.refcount_table_clusters = static_cast<uint32_t>(l.reftable_clusters);
    h.refcount_order = p.refcount_order;
    h.backing_file = p.backing_file;
    h.backing_format = p.backing_format;
    if (p.version >= 3) {
        h.header_length = kV3HeaderLength;
        h.compression = p.compression;
        if (p.compression != CompressionType::Zlib) h.incompatible |= kIncompatCompression;
        if (p.extended_l2) h.incompatible |= kIncompatExtendedL2;
        if (p.lazy_refcounts) h.compatible |= kCompatLazyRefcounts;
        if (!p.data_file.empty()) {
            h.incompatible |= kIncompatDataFile;
            h.data_file = p.data_file;
        }
        if (p.data_file_raw) h.autoclear |= kAutoclearDataFileRaw;
        if (l.cluster_size >= kMinClusterForFeatureTable) h.features = qemu_feature_table();
    } else {
        h.header_length = kV2HeaderLength;
    }
    return h;
}

void refblock_set_ones(std::span<std::byte> block, uint32_t refcount_order, uint64_t first, uint64_t count) {
    const unsigned bits = 1u << refcount_order;
    if (bits >= 8) {
        const uint64_t width = bits / 8;  // big-endian entries: 1 is the last byte set
        for (uint64_t i = first; i < first + count; ++i) {
            std::fill_n(block.data() + i * width, width - 1, std::byte{0});
            block[i * width + width - 1] = std::byte{1};
        }
        return;
    }
    // Sub-byte entries fill each byte from its least significant bits.
    const uint64_t per_byte = 8 / bits;
    uint64_t i = first;
    const uint64_t end = first + count;
    auto set_one = [&](uint64_t e) {
        const unsigned shift = static_cast<unsigned>((e % per_byte) * bits);
        const auto mask = static_cast<uint8_t>(((1u << bits) - 1) << shift);
        auto& byte = block[e / per_byte];
        byte = std::byte{static_cast<uint8_t>((std::to_integer<uint8_t>(byte) & ~mask) | (1u << shift))};
    };
    for (; i < end && i % per_byte != 0; ++i) set_one(i);
    static constexpr uint8_t kOnes[] = {0xff, 0x55, 0x11};  // every entry of a byte set to 1
    const uint64_t full = (end - i) / per_byte;
    std::fill_n(block.data() + i / per_byte, full, std::byte{kOnes[refcount_order]});
    for (i += full * per_byte; i < end; ++i) set_one(i);
}

}  // namespace blk::qcow2

// ---- The writer ----
namespace blk::qcow2 {

namespace {

// `buf` with room for `n` bytes. It grows as needed, up to kWriteChunkBytes: the metadata
// of a small image is a few clusters, and a buffer of the full bound would cost more to
// fault in than writing them (10 ms of a 24 ms convert of a 1 MiB image, measured).
std::span<std::byte> room(std::vector<std::byte>& buf, uint64_t n) {
    if (buf.size() < n) buf.resize(n);
    return std::span(buf).first(n);
}

// Writes [offset, offset + bytes) of `node` in bounded pieces; `fill` gets the piece's
// position relative to `offset` and a zeroed buffer to fill.
template <class Fill>
Status stream(Node& node, std::vector<std::byte>& buf, uint64_t offset, uint64_t bytes, Fill&& fill) {
    for (uint64_t pos = 0; pos < bytes;) {
        const uint64_t n = std::min<uint64_t>(kWriteChunkBytes, bytes - pos);
        auto piece = room(buf, n);
        std::fill(piece.begin(), piece.end(), std::byte{0});
        fill(pos, piece);
        BLK_TRY(node.write(offset + pos, piece));
        pos += n;
    }
    return {};
}

Status write_zeroes_at(Node& node, uint64_t offset, uint64_t bytes) {
    std::vector<std::byte> zeroes(bytes);
    return node.write(offset, zeroes);
}

// The L2 table `table` of a preallocated image into `out` (one cluster, zeroed).
void fill_l2(const Layout& l, uint64_t table, std::span<std::byte> out) {
    const uint64_t first = table * l.l2_entries;
    const uint64_t n = std::min(l.l2_entries, l.data_clusters - first);
    const uint64_t entry_bytes = out.size() / l.l2_entries;
    // A preallocated cluster is allocated, its subclusters are not: reads see zeroes (or the
    // backing file), exactly as in an image qemu preallocates.
    for (uint64_t j = 0; j < n; ++j) store_be64(out.data() + j * entry_bytes, l.data_offset(first + j) | kEntryCopied);
}

Status write_metadata(Node& file, const CreateParams& p, const Layout& l) {
    std::vector<std::byte> buf;
    const uint64_t cs = l.cluster_size;
    BLK_TRY(stream(file, buf, l.reftable_offset, l.reftable_clusters * cs, [&](uint64_t pos, std::span<std::byte> out) {
        for (uint64_t i = 0; i < out.size() / kReftableEntryBytes; ++i) {
            const uint64_t block = pos / kReftableEntryBytes + i;
            if (block < l.refblock_count) store_be64(out.data() + i * kReftableEntryBytes, l.refblocks_offset + block * cs);
        }
    }));
    BLK_TRY(stream(file, buf, l.refblocks_offset, l.refblock_count * cs, [&](uint64_t pos, std::span<std::byte> out) {
        for (uint64_t b = 0; b < out.size() / cs; ++b) {
            const uint64_t first = (pos / cs + b) * l.refcounts_per_block;
            if (first >= l.total_clusters) break;
            const uint64_t count = std::min(l.refcounts_per_block, l.total_clusters - first);
            refblock_set_ones(out.subspan(b * cs, cs), p.refcount_order, 0, count);
        }
    }));
    BLK_TRY(stream(file, buf, l.l1_offset, uint64_t{l.l1_size} * kL1EntryBytes, [&](uint64_t pos, std::span<std::byte> out) {
        for (uint64_t i = 0; i < out.size() / kL1EntryBytes; ++i) {
            const uint64_t table = pos / kL1EntryBytes + i;
            if (table < l.l2_tables) store_be64(out.data() + i * kL1EntryBytes, l.l2_offset(table) | kEntryCopied);
        }
    }));
    if (l.interleaved) {
        for (uint64_t t = 0; t < l.l2_tables; ++t) {
            auto table = room(buf, cs);
            std::fill(table.begin(), table.end(), std::byte{0});
            fill_l2(l, t, table);
            BLK_TRY(file.write(l.l2_offset(t), table));
        }
    } else {
        BLK_TRY(stream(file, buf, l.prealloc_offset, l.l2_tables * cs, [&](uint64_t pos, std::span<std::byte> out) {
            for (uint64_t t = 0; t < out.size() / cs; ++t) fill_l2(l, pos / cs + t, out.subspan(t * cs, cs));
        }));
    }
    return {};
}

// Grows a regular file to `size` (devices keep theirs), allocating as `mode` asks.
Status grow(Node& node, uint64_t size, Prealloc mode) {
    if (!node.caps().zero_init) {
        if (node.size() < size) return make_error(ENOSPC, "Cannot grow device files");
        return {};
    }
    return node.truncate(size, mode == Prealloc::Metadata ? Prealloc::Off : mode).context("Could not resize image");
}

}  // namespace

namespace {

// What both phases need: the parameters, the layout and the header, checked.
struct Plan {
    CreateParams p;
    Layout l;
    Header h;
    std::vector<std::byte> head;  // the serialized header cluster
};

Result<Plan> plan_create(const FormatCreateContext& ctx) {
    Plan plan;
    BLK_TRY_ASSIGN(plan.p, parse_create_params(ctx.options));
    BLK_TRY_ASSIGN(plan.l, plan_layout(plan.p));
    plan.h = make_header(plan.p, plan.l);
    const Header& h = plan.h;

    // The header must fit before anything is written: first without the backing file
    // (qemu's "Could not update qcow2 header"), then with it ("Could not assign ...").
    plan.head.resize(plan.l.cluster_size);
    Header plain = h;
    plain.backing_file.clear();
    plain.backing_format.clear();
    if (h.data_file.size() > kMaxBackingNameLength) {
        return make_error(ENAMETOOLONG, "Could not update qcow2 header: the data file name is longer than " +
                                            std::to_string(kMaxBackingNameLength) + " bytes");
    }
    if (!serialize_header(plain, plan.head)) return make_error(ENOSPC, "Could not update qcow2 header: No space left on device");
    if (!h.backing_file.empty()) {
        const std::string what = "Could not assign backing file '" + h.backing_file + "' with format '" + h.backing_format + "'";
        if (h.backing_file.size() > kMaxBackingNameLength) return make_error(EINVAL, what + ": Invalid argument");
        if (!serialize_header(h, plan.head)) return make_error(ENOSPC, what + ": No space left on device");
    }
    return plan;
}

}  // namespace

Status check_create(const FormatCreateContext& ctx) {
    BLK_TRY_ASSIGN(Plan plan, plan_create(ctx));
    if (!plan.p.data_file.empty() && ctx.check_extra_file) {
        BLK_TRY(ctx.check_extra_file(text_opt(ctx.options, "data_file"), "data file"));
    }
    return {};
}

Status create(Node& file, const FormatCreateContext& ctx) {
    BLK_TRY_ASSIGN(Plan plan, plan_create(ctx));
    const CreateParams& p = plan.p;
    const Layout& l = plan.l;
    std::vector<std::byte>& head = plan.head;

    // Born flagged: the corrupt bit in the header (qemu refuses the image read-write, `info`
    // says "corrupt: true") only where the file also carries our mark, which is what lets
    // our own read-write open tell the flag from real corruption.
    if (ctx.incomplete && plan.h.version >= 3 && file.incomplete()) {
        Header flagged = plan.h;
        flagged.incompatible |= kIncompatCorrupt;
        if (!serialize_header(flagged, head)) return make_error(ENOSPC, "Could not update qcow2 header: No space left on device");
    }
    // The data file is named as qemu names it: relative to the working directory.
    std::shared_ptr<Node> data;
    if (!p.data_file.empty()) {
        if (!ctx.create_extra_file) return make_error(ENOTSUP, "An external data file cannot be created here");
        BLK_TRY_ASSIGN(data, ctx.create_extra_file(text_opt(ctx.options, "data_file")));
    }

    // Metadata first and flushed, the header last: until it is written the file is no
    // qcow2 image at all, so an interrupted create never leaves one that looks whole.
    if (l.interleaved) BLK_TRY(grow(file, l.file_size, Prealloc::Off));
    else BLK_TRY(grow(file, l.metadata_end, Prealloc::Off));
    BLK_TRY(write_metadata(file, p, l));
    if (l.internal_data && !l.interleaved) BLK_TRY(grow(file, l.file_size, p.prealloc));
    if (l.tail_zero_bytes && l.internal_data) BLK_TRY(write_zeroes_at(file, l.tail_zero_offset, l.tail_zero_bytes));
    if (data) {
        BLK_TRY(grow(*data, l.data_file_size, p.prealloc));
        if (l.tail_zero_bytes) BLK_TRY(write_zeroes_at(*data, l.tail_zero_offset, l.tail_zero_bytes));
        BLK_TRY(data->flush());
    }
    BLK_TRY(file.flush());
    BLK_TRY(file.write(0, head));
    BLK_TRY(file.flush());
    return {};
}

}  // namespace blk::qcow2
