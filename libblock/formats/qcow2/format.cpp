// qcow2 on-disk structures: header parsing with bounds checks, L2 entry decoding.
#include "format.h"

#include <algorithm>
#include <cstdio>

#include "blk/endian.h"

namespace blk::qcow2 {

namespace {

constexpr uint64_t kMinSnapshotEntryBytes = 40;
constexpr uint64_t kFeatureEntryBytes = 48;

Error bad(const std::string& msg) { return make_error(EINVAL, msg); }

std::string hex(uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

// Checks that a table of `bytes` at `offset` is cluster-aligned and inside the file.
Status check_table(const Header& h, uint64_t offset, uint64_t bytes, uint64_t file_size, const char* what) {
    if (offset % h.cluster_size() != 0) return bad(std::string(what) + " offset " + hex(offset) + " is not cluster-aligned");
    if (offset == 0 && bytes != 0) return bad(std::string(what) + " overlaps the header");
    if (offset > file_size || bytes > file_size - offset) {
        return bad(std::string(what) + " at " + hex(offset) + " (" + std::to_string(bytes) +
                   " bytes) lies past the end of the file (" + std::to_string(file_size) + " bytes)");
    }
    return {};
}

Status parse_extensions(Header& h, std::span<const std::byte> head, uint64_t start, uint64_t end) {
    uint64_t off = start;
    while (off + 8 <= end) {
        uint32_t type = load_be32(head.data() + off);
        uint32_t len = load_be32(head.data() + off + 4);
        off += 8;
        if (type == kExtEnd) return {};
        if (len > end - off) {
            return bad("header extension " + hex(type) + " (" + std::to_string(len) + " bytes) runs past the header cluster");
        }
        const std::byte* p = head.data() + off;
        auto str = [&] { return std::string(reinterpret_cast<const char*>(p), len); };
        switch (type) {
            case kExtBackingFormat:
                if (len > kMaxBackingNameLength) return bad("backing format name too long");
                h.backing_format = str();
                break;
            case kExtDataFile:
                if (len > kMaxBackingNameLength) return bad("data file name too long");
                h.data_file = str();
                break;
            case kExtFeatureTable:
                for (uint64_t i = 0; i + kFeatureEntryBytes <= len; i += kFeatureEntryBytes) {
                    FeatureName f;
                    f.type = std::to_integer<uint8_t>(p[i]);
                    f.bit = std::to_integer<uint8_t>(p[i + 1]);
                    const char* name = reinterpret_cast<const char*>(p + i + 2);
                    size_t n = 0;
                    while (n < kFeatureEntryBytes - 2 && name[n] != '\0') ++n;
                    f.name.assign(name, n);
                    h.features.push_back(std::move(f));
                }
                break;
            case kExtBitmaps:
                h.has_bitmaps_ext = true;
                if (len >= 24) {
                    h.nb_bitmaps = load_be32(p);
                    h.bitmap_dir_size = load_be64(p + 8);
                    h.bitmap_dir_offset = load_be64(p + 16);
                }
                break;
            case kExtCryptoHeader:
                h.has_crypto_ext = true;
                if (len >= 16) {
                    h.crypto_offset = load_be64(p);
                    h.crypto_length = load_be64(p + 8);
                }
                break;
            default:
                break;  // unknown extensions are ignored, as the spec allows
        }
        uint64_t padded = (static_cast<uint64_t>(len) + 7) & ~7ull;
        if (padded > end - off) return {};
        off += padded;
    }
    return {};
}

}  // namespace

Result<Header> parse_header(std::span<const std::byte> head, uint64_t file_size) {
    Header h;
    if (head.size() < kV2HeaderLength) {
        return bad("qcow2 header truncated: the file has " + std::to_string(file_size) + " bytes, the header needs " +
                   std::to_string(kV2HeaderLength));
    }
    const std::byte* b = head.data();
    if (load_be32(b) != kMagic) return bad("Image is not in qcow2 format");
    h.version = load_be32(b + 4);
    if (h.version < 2 || h.version > 3) return bad("Unsupported qcow2 version " + std::to_string(h.version));
    h.backing_file_offset = load_be64(b + 8);
    h.backing_file_size = load_be32(b + 16);
    h.cluster_bits = load_be32(b + 20);
    h.size = load_be64(b + 24);
    h.crypt_method = load_be32(b + 32);
    h.l1_size = load_be32(b + 36);
    h.l1_table_offset = load_be64(b + 40);
    h.refcount_table_offset = load_be64(b + 48);
    h.refcount_table_clusters = load_be32(b + 56);
    h.nb_snapshots = load_be32(b + 60);
    h.snapshots_offset = load_be64(b + 64);

    if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
        return bad("Unsupported cluster size: 2^" + std::to_string(h.cluster_bits) + " (must be 2^" +
                   std::to_string(kMinClusterBits) + " to 2^" + std::to_string(kMaxClusterBits) + ")");
    }
    const uint64_t cs = h.cluster_size();

    if (h.version >= 3) {
        if (head.size() < kV3MinHeaderLength) {
            return bad("qcow2 v3 header truncated: the file has " + std::to_string(file_size) + " bytes");
        }
        h.incompatible = load_be64(b + 72);
        h.compatible = load_be64(b + 80);
        h.autoclear = load_be64(b + 88);
        h.refcount_order = load_be32(b + 96);
        h.header_length = load_be32(b + 100);
        if (h.header_length < kV3MinHeaderLength) {
            return bad("qcow2 header too short (header_length " + std::to_string(h.header_length) + ")");
        }
        if (h.header_length > cs) return bad("qcow2 header exceeds cluster size (header_length " + std::to_string(h.header_length) + ")");
        if (h.header_length > head.size()) return bad("qcow2 header truncated (header_length " + std::to_string(h.header_length) + ")");
        if (h.header_length > kV3MinHeaderLength) {
            uint8_t ct = std::to_integer<uint8_t>(b[104]);
            if (ct > 1) return bad("Unknown compression type " + std::to_string(ct));
            h.compression = static_cast<CompressionType>(ct);
        }
    }

    // Extensions lie between the header and the backing file name (or the cluster end).
    uint64_t ext_end = std::min<uint64_t>(cs, head.size());
    if (h.backing_file_offset != 0) {
        if (h.backing_file_offset > cs) return bad("Invalid backing file offset " + hex(h.backing_file_offset));
        ext_end = std::min<uint64_t>(ext_end, h.backing_file_offset);
    }
    if (ext_end > h.header_length) BLK_TRY(parse_extensions(h, head, h.header_length, ext_end));

    if (h.incompatible & ~kIncompatKnown) {
        return bad("Unsupported qcow2 feature(s): " + unknown_incompatible_names(h));
    }
    if ((h.incompatible & kIncompatCompression) && h.compression == CompressionType::Zlib) {
        return bad("compression type feature bit set with the zlib compression type");
    }
    if (!(h.incompatible & kIncompatCompression) && h.compression != CompressionType::Zlib) {
        return bad("compression type " + std::to_string(static_cast<int>(h.compression)) + " without its feature bit");
    }
    if (h.extended_l2() && h.cluster_bits < 14) {
        return bad("Extended L2 entries need a cluster size of at least 16384 bytes");
    }
    if (h.refcount_order > kMaxRefcountOrder) {
        return bad("Reference count entry width too large; may not exceed 64 bits (refcount_order " +
                   std::to_string(h.refcount_order) + ")");
    }
    if (h.crypt_method > 2) return bad("Unsupported encryption method " + std::to_string(h.crypt_method));

    if (h.size > kMaxVirtualSize) return bad("Image is too big (virtual size " + std::to_string(h.size) + ")");
    // L1 table: within the limit, large enough for the virtual size, inside the file.
    if (static_cast<uint64_t>(h.l1_size) * 8 > kMaxL1Bytes) {
        return bad("Active L1 table too large (" + std::to_string(h.l1_size) + " entries)");
    }
    const uint64_t bytes_per_l2 = h.l2_entries() * cs;
    const uint64_t l1_needed = (h.size + bytes_per_l2 - 1) / bytes_per_l2;
    if (h.l1_size < l1_needed) {
        return bad("L1 table is too small (" + std::to_string(h.l1_size) + " entries for a virtual size of " +
                   std::to_string(h.size) + " bytes)");
    }
    if (h.l1_size > 0) BLK_TRY(check_table(h, h.l1_table_offset, uint64_t{h.l1_size} * 8, file_size, "L1 table"));

    const uint64_t rt_bytes = uint64_t{h.refcount_table_clusters} * cs;
    if (rt_bytes > kMaxRefcountTableBytes) {
        return bad("Reference count table too large (" + std::to_string(h.refcount_table_clusters) + " clusters)");
    }
    if (rt_bytes == 0) return bad("Image does not contain a reference count table");
    BLK_TRY(check_table(h, h.refcount_table_offset, rt_bytes, file_size, "Reference count table"));

    if (h.nb_snapshots > kMaxSnapshots) return bad("Too many snapshots (" + std::to_string(h.nb_snapshots) + ")");
    if (h.nb_snapshots > 0) {
        BLK_TRY(check_table(h, h.snapshots_offset, uint64_t{h.nb_snapshots} * kMinSnapshotEntryBytes, file_size,
                            "Snapshot table"));
    }

    if (h.backing_file_offset != 0 && h.backing_file_size != 0) {
        if (h.backing_file_size > kMaxBackingNameLength) {
            return bad("Backing file name too long (" + std::to_string(h.backing_file_size) + " bytes, at most " +
                       std::to_string(kMaxBackingNameLength) + ")");
        }
        if (h.backing_file_offset + h.backing_file_size > head.size()) {
            return bad("Backing file name at " + hex(h.backing_file_offset) + " lies past the end of the header");
        }
        h.backing_file.assign(reinterpret_cast<const char*>(b + h.backing_file_offset), h.backing_file_size);
    }
    if ((h.incompatible & kIncompatDataFile) && h.version < 3) return bad("External data file needs a version 3 image");
    return h;
}

Result<ClusterKind> subcluster_kind(const Header& h, const L2Entry& e, unsigned sc) {
    if (e.entry & kEntryCompressed) {
        if (h.extended_l2() && e.bitmap != 0) return bad("compressed cluster with a non-zero subcluster bitmap");
        return ClusterKind::Compressed;
    }
    // Offset 0 is a real host cluster only in an external data file, marked by the copied bit.
    const bool host = standard_offset(e.entry) != 0 ||
                      ((h.incompatible & kIncompatDataFile) && (e.entry & kEntryCopied));
    if (!h.extended_l2()) {
        if (e.entry & kEntryZero) return host ? ClusterKind::ZeroAlloc : ClusterKind::ZeroPlain;
        return host ? ClusterKind::Normal : ClusterKind::UnallocatedPlain;
    }
    const bool alloc = (e.bitmap >> sc) & 1;
    const bool zero = (e.bitmap >> (sc + 32)) & 1;
    if (alloc && zero) return bad("subcluster both allocated and zero");
    if (host) {
        if (alloc) return ClusterKind::Normal;
        return zero ? ClusterKind::ZeroAlloc : ClusterKind::UnallocatedAlloc;
    }
    if (alloc) return bad("subcluster allocated in an unallocated cluster");
    return zero ? ClusterKind::ZeroPlain : ClusterKind::UnallocatedPlain;
}

CompressedRef compressed_ref(const Header& h, uint64_t entry) {
    const unsigned x = 62 - (h.cluster_bits - 8);
    const uint64_t offset = entry & ((1ull << x) - 1);
    const uint64_t sectors = ((entry >> x) & ((1ull << (h.cluster_bits - 8)) - 1)) + 1;
    return CompressedRef{offset, sectors * 512 - (offset & 511)};
}

// As qemu words it: the names the image's feature table gives, in table order (the table
// ends at the first entry without a name; a bit is named once), then whatever bits are left
// as one hex mask without "0x".
std::string unknown_incompatible_names(const Header& h) {
    std::string out;
    uint64_t mask = h.incompatible & ~kIncompatKnown;
    for (const FeatureName& f : h.features) {
        if (f.name.empty()) break;
        if (f.type != 0 || f.bit >= 64 || !((mask >> f.bit) & 1)) continue;
        if (!out.empty()) out += ", ";
        out += f.name;
        mask &= ~(1ull << f.bit);
    }
    if (mask) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(mask));
        if (!out.empty()) out += ", ";
        out += std::string("Unknown incompatible feature: ") + buf;
    }
    return out;
}

// ---------------------------------------------------------------------------------------
// Write path: refcount entries and L2 entry encoding.
// ---------------------------------------------------------------------------------------

uint64_t get_refcount(std::span<const std::byte> block, uint64_t index, uint32_t order) {
    const uint32_t bits = 1u << order;
    switch (bits) {
        case 1: case 2: case 4: {
            const uint64_t bit = index * bits;
            return (std::to_integer<uint64_t>(block[bit / 8]) >> (bit % 8)) & ((1u << bits) - 1);
        }
        case 8: return std::to_integer<uint64_t>(block[index]);
        case 16: return load_be16(block.data() + index * 2);
        case 32: return load_be32(block.data() + index * 4);
        default: return load_be64(block.data() + index * 8);
    }
}

void set_refcount(std::span<std::byte> block, uint64_t index, uint32_t order, uint64_t value) {
    const uint32_t bits = 1u << order;
    switch (bits) {
        case 1: case 2: case 4: {
            const uint64_t bit = index * bits;
            const unsigned mask = ((1u << bits) - 1) << (bit % 8);
            const unsigned old = std::to_integer<unsigned>(block[bit / 8]);
            block[bit / 8] = std::byte((old & ~mask) | ((static_cast<unsigned>(value) << (bit % 8)) & mask));
            break;
        }
        case 8: block[index] = std::byte(value); break;
        case 16: store_be16(block.data() + index * 2, static_cast<uint16_t>(value)); break;
        case 32: store_be32(block.data() + index * 4, static_cast<uint32_t>(value)); break;
        default: store_be64(block.data() + index * 8, value); break;
    }
}

L2Entry load_l2_entry(const Header& h, std::span<const std::byte> table, uint64_t index) {
    const std::byte* p = table.data() + index * h.l2_entry_size();
    L2Entry e;
    e.entry = load_be64(p);
    if (h.extended_l2()) e.bitmap = load_be64(p + 8);
    return e;
}

void store_l2_entry(const Header& h, std::span<std::byte> table, uint64_t index, const L2Entry& e) {
    std::byte* p = table.data() + index * h.l2_entry_size();
    store_be64(p, e.entry);
    if (h.extended_l2()) store_be64(p + 8, e.bitmap);
}

Result<uint64_t> compressed_entry(const Header& h, uint64_t host, uint64_t bytes) {
    const unsigned x = 62 - (h.cluster_bits - 8);
    const uint64_t max_sectors = (1ull << (h.cluster_bits - 8)) - 1;
    if (bytes == 0) return bad("empty compressed cluster");
    if (host >= (1ull << x) || host >= kMaxHostOffset) {
        return make_error(EFBIG, "compressed cluster at host offset " + hex(host) + " lies beyond what its descriptor can address");
    }
    const uint64_t extra = compressed_extra_sectors(host, bytes);
    if (extra > max_sectors) return bad("compressed cluster of " + std::to_string(bytes) + " bytes is too large");
    return kEntryCompressed | (extra << x) | host;
}

ClusterSpan compressed_clusters(const Header& h, uint64_t entry) {
    const CompressedRef ref = compressed_ref(h, entry);
    const uint64_t start = ref.offset & ~511ull;
    const uint64_t end = ref.offset + ref.size;  // ref.size runs to the end of the last sector
    return ClusterSpan{start >> h.cluster_bits, (end - 1) >> h.cluster_bits};
}

}  // namespace blk::qcow2

// ---- Header serialization (image creation) ----
namespace blk::qcow2 {

namespace {

constexpr uint64_t kExtHeaderBytes = 8;

uint64_t ext_bytes(uint64_t len) { return kExtHeaderBytes + ((len + 7) & ~7ull); }

uint64_t header_fields_bytes(const Header& h) { return h.version >= 3 ? h.header_length : kV2HeaderLength; }

uint64_t extensions_bytes(const Header& h) {
    uint64_t n = 0;
    if (!h.backing_format.empty()) n += ext_bytes(h.backing_format.size());
    if (!h.data_file.empty()) n += ext_bytes(h.data_file.size());
    if (!h.features.empty()) n += ext_bytes(h.features.size() * kFeatureEntryBytes);
    return n + kExtHeaderBytes;  // the end marker
}

void put_ext(std::span<std::byte> out, uint64_t& off, uint32_t type, std::span<const std::byte> data) {
    store_be32(out.data() + off, type);
    store_be32(out.data() + off + 4, static_cast<uint32_t>(data.size()));
    std::copy(data.begin(), data.end(), out.begin() + static_cast<ptrdiff_t>(off + kExtHeaderBytes));
    off += ext_bytes(data.size());
}

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

}  // namespace

std::vector<FeatureName> qemu_feature_table() {
    return {
        {0, 0, "dirty bit"},
        {0, 1, "corrupt bit"},
        {0, 2, "external data file"},
        {0, 3, "compression type"},
        {0, 4, "extended L2 entries"},
        {1, 0, "lazy refcounts"},
        {2, 0, "bitmaps"},
        {2, 1, "raw external data"},
    };
}

uint64_t serialized_header_bytes(const Header& h) {
    return header_fields_bytes(h) + extensions_bytes(h) + h.backing_file.size();
}

Status serialize_header(const Header& h, std::span<std::byte> cluster) {
    if (h.version < 2 || h.version > 3) return bad("Unsupported qcow2 version " + std::to_string(h.version));
    if (h.version >= 3 && (h.header_length < kV3MinHeaderLength || h.header_length % 8 != 0)) {
        return bad("Invalid qcow2 header length " + std::to_string(h.header_length));
    }
    if (h.backing_file.size() > kMaxBackingNameLength) {
        return bad("Backing file name too long (" + std::to_string(h.backing_file.size()) + " bytes, at most " +
                   std::to_string(kMaxBackingNameLength) + ")");
    }
    if (h.backing_format.size() > kMaxBackingNameLength || h.data_file.size() > kMaxBackingNameLength) {
        return bad("Backing format or data file name too long");
    }
    for (const FeatureName& f : h.features) {
        if (f.name.size() > kFeatureNameBytes) return bad("Feature name too long: " + f.name);
    }
    if (serialized_header_bytes(h) > cluster.size()) {
        return make_error(ENOSPC, "the qcow2 header (" + std::to_string(serialized_header_bytes(h)) +
                                      " bytes) does not fit into the first cluster (" + std::to_string(cluster.size()) +
                                      " bytes)");
    }
    std::fill(cluster.begin(), cluster.end(), std::byte{0});
    std::byte* b = cluster.data();
    store_be32(b, kMagic);
    store_be32(b + 4, h.version);
    store_be32(b + 20, h.cluster_bits);
    store_be64(b + 24, h.size);
    store_be32(b + 32, h.crypt_method);
    store_be32(b + 36, h.l1_size);
    store_be64(b + 40, h.l1_table_offset);
    store_be64(b + 48, h.refcount_table_offset);
    store_be32(b + 56, h.refcount_table_clusters);
    store_be32(b + 60, h.nb_snapshots);
    store_be64(b + 64, h.snapshots_offset);
    if (h.version >= 3) {
        store_be64(b + 72, h.incompatible);
        store_be64(b + 80, h.compatible);
        store_be64(b + 88, h.autoclear);
        store_be32(b + 96, h.refcount_order);
        store_be32(b + 100, h.header_length);
        if (h.header_length > kV3MinHeaderLength) b[104] = std::byte{static_cast<uint8_t>(h.compression)};
    }
    uint64_t off = header_fields_bytes(h);
    if (!h.backing_format.empty()) put_ext(cluster, off, kExtBackingFormat, bytes_of(h.backing_format));
    if (!h.data_file.empty()) put_ext(cluster, off, kExtDataFile, bytes_of(h.data_file));
    if (!h.features.empty()) {
        std::vector<std::byte> table(h.features.size() * kFeatureEntryBytes);
        for (size_t i = 0; i < h.features.size(); ++i) {
            std::byte* e = table.data() + i * kFeatureEntryBytes;
            e[0] = std::byte{h.features[i].type};
            e[1] = std::byte{h.features[i].bit};
            std::copy_n(reinterpret_cast<const std::byte*>(h.features[i].name.data()), h.features[i].name.size(), e + 2);
        }
        put_ext(cluster, off, kExtFeatureTable, table);
    }
    put_ext(cluster, off, kExtEnd, {});
    if (!h.backing_file.empty()) {
        store_be64(b + 8, off);
        store_be32(b + 16, static_cast<uint32_t>(h.backing_file.size()));
        std::copy(h.backing_file.begin(), h.backing_file.end(), reinterpret_cast<char*>(b + off));
    }
    return {};
}

}  // namespace blk::qcow2
