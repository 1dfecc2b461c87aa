// qcow2 on-disk structures: the header with its extensions, and typed L1/L2 entries.
// Pure functions over bytes; every field is checked against the named limits here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "blk/result.h"

namespace blk {
class Node;
}

namespace blk::qcow2 {

constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
constexpr uint32_t kMinClusterBits = 9;
constexpr uint32_t kMaxClusterBits = 21;
constexpr uint32_t kV2HeaderLength = 72;
constexpr uint32_t kV3MinHeaderLength = 104;
constexpr uint32_t kMaxBackingNameLength = 1023;
constexpr uint64_t kMaxL1Bytes = 32ull << 20;          // qemu's QCOW_MAX_L1_SIZE
constexpr uint64_t kMaxRefcountTableBytes = 8ull << 20;  // qemu's QCOW_MAX_REFTABLE_SIZE
constexpr uint32_t kMaxSnapshots = 65536;
constexpr uint64_t kMaxSnapshotTableBytes = 1024ull * kMaxSnapshots;  // qemu's QCOW_MAX_SNAPSHOTS_SIZE
constexpr uint32_t kMaxSnapshotExtraData = 1024;
constexpr uint32_t kMaxRefcountOrder = 6;
constexpr uint32_t kSubclustersPerCluster = 32;
constexpr uint64_t kMaxVirtualSize = 1ull << 62;  // keeps every offset sum below 2^63

// Header extension types.
constexpr uint32_t kExtEnd = 0;
constexpr uint32_t kExtBackingFormat = 0xe2792aca;
constexpr uint32_t kExtFeatureTable = 0x6803f857;
constexpr uint32_t kExtCryptoHeader = 0x0537be77;
constexpr uint32_t kExtBitmaps = 0x23852875;
constexpr uint32_t kExtDataFile = 0x44415441;

// Feature bits.
constexpr uint64_t kIncompatDirty = 1ull << 0;
constexpr uint64_t kIncompatCorrupt = 1ull << 1;
constexpr uint64_t kIncompatDataFile = 1ull << 2;
constexpr uint64_t kIncompatCompression = 1ull << 3;
constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
constexpr uint64_t kIncompatKnown = 0x1f;
constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;
constexpr uint64_t kAutoclearBitmaps = 1ull << 0;
constexpr uint64_t kAutoclearDataFileRaw = 1ull << 1;

// L1/L2 entry bits.
constexpr uint64_t kEntryCopied = 1ull << 63;
constexpr uint64_t kEntryCompressed = 1ull << 62;
constexpr uint64_t kEntryZero = 1ull << 0;
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55

enum class CompressionType : uint8_t { Zlib = 0, Zstd = 1 };

struct FeatureName {
    uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
    uint8_t bit = 0;
    std::string name;
};

struct Header {
    uint32_t version = 0;
    uint64_t backing_file_offset = 0;
    uint32_t backing_file_size = 0;
    uint32_t cluster_bits = 0;
    uint64_t size = 0;
    uint32_t crypt_method = 0;
    uint32_t l1_size = 0;
    uint64_t l1_table_offset = 0;
    uint64_t refcount_table_offset = 0;
    uint32_t refcount_table_clusters = 0;
    uint32_t nb_snapshots = 0;
    uint64_t snapshots_offset = 0;
    uint64_t incompatible = 0;
    uint64_t compatible = 0;
    uint64_t autoclear = 0;
    uint32_t refcount_order = 4;
    uint32_t header_length = kV2HeaderLength;
    CompressionType compression = CompressionType::Zlib;

    // From extensions.
    std::string backing_file;
    std::string backing_format;
    std::string data_file;
    std::vector<FeatureName> features;
    bool has_bitmaps_ext = false;
    uint32_t nb_bitmaps = 0;           // from the bitmaps extension
    uint64_t bitmap_dir_size = 0;
    uint64_t bitmap_dir_offset = 0;
    bool has_crypto_ext = false;
    uint64_t crypto_offset = 0;        // the LUKS header in the image file (crypt_method 2)
    uint64_t crypto_length = 0;

    uint64_t cluster_size() const { return 1ull << cluster_bits; }
    bool extended_l2() const { return incompatible & kIncompatExtendedL2; }
    uint64_t l2_entry_size() const { return extended_l2() ? 16 : 8; }
    uint64_t l2_entries() const { return cluster_size() / l2_entry_size(); }
    uint64_t subcluster_size() const { return extended_l2() ? cluster_size() / kSubclustersPerCluster : cluster_size(); }
};

// Parses and checks the header (`head` holds at least the first cluster, or the whole
// file if it is shorter). `file_size` bounds every table. Errors name the problem.
Result<Header> parse_header(std::span<const std::byte> head, uint64_t file_size);

// Reads what parse_header needs: the first 64 KiB, then, if the cluster size field asks for
// more (and it is a valid size), the first cluster; never more than the file holds. So a
// 2 MiB-cluster image costs one more read and every other image one 64 KiB read (check used
// to read 2 MiB for every image: most of a small check's CPU time went to faulting it in).
Result<std::vector<std::byte>> read_header_cluster(Node& file);

// The kind of one (sub)cluster, as the L2 entry says.
enum class ClusterKind {
    UnallocatedPlain,  // read from the backing file
    UnallocatedAlloc,  // extended L2: host cluster allocated, subcluster not: backing
    ZeroPlain,         // reads zeroes, nothing allocated
    ZeroAlloc,         // reads zeroes, host cluster allocated
    Normal,            // data at the host offset
    Compressed,        // compressed data at the host offset
};

struct L2Entry {
    uint64_t entry = 0;
    uint64_t bitmap = 0;  // extended L2 only
};

// Kind of subcluster `sc` (0 without extended L2). Invalid combinations are errors.
Result<ClusterKind> subcluster_kind(const Header& h, const L2Entry& e, unsigned sc);

// Host offset of a standard (non-compressed) entry.
inline uint64_t standard_offset(uint64_t entry) { return entry & kOffsetMask; }

// Location of a compressed cluster's bytes.
struct CompressedRef {
    uint64_t offset = 0;
    uint64_t size = 0;  // bytes to read (may run past the end of the file)
};
CompressedRef compressed_ref(const Header& h, uint64_t entry);

// Names of the unknown incompatible features set in `h`, from its feature table.
std::string unknown_incompatible_names(const Header& h);

// ---------------------------------------------------------------------------------------
// Write path (refcounts, L2 entry encoding). Kept apart from the header code above so the
// header serialization for `create` can grow beside it without merge conflicts.
// ---------------------------------------------------------------------------------------

constexpr uint64_t kRefTableEntryMask = ~511ull;              // refcount table entry: bits 9-63
constexpr uint64_t kL2BitmapAllZero = 0xffffffff00000000ull;  // extended L2: every subcluster reads zero
constexpr uint64_t kMaxHostOffset = 1ull << 56;               // L1/L2 entries hold bits 9-55

// Largest refcount a block entry of 2^order bits holds.
constexpr uint64_t refcount_max(uint32_t order) { return order >= 6 ? UINT64_MAX : (1ull << (1u << order)) - 1; }
// Entries in one refcount block.
inline uint64_t refcount_block_entries(const Header& h) { return (h.cluster_size() * 8) >> h.refcount_order; }

// Entry `index` of a refcount block of 2^order-bit entries (sub-byte widths: bit 0 is the
// least significant bit of the byte, as the spec says; wider ones are big-endian).
uint64_t get_refcount(std::span<const std::byte> block, uint64_t index, uint32_t order);
// Sets entry `index`; `value` must fit (refcount_max(order)).
void set_refcount(std::span<std::byte> block, uint64_t index, uint32_t order, uint64_t value);

// L2 entry `index` of an L2 table (16-byte entries with extended L2).
L2Entry load_l2_entry(const Header& h, std::span<const std::byte> table, uint64_t index);
void store_l2_entry(const Header& h, std::span<std::byte> table, uint64_t index, const L2Entry& e);

// A standard cluster descriptor for a host cluster (`zero`: v3 "reads as zero" flag).
inline uint64_t standard_entry(uint64_t host, bool copied, bool zero = false) {
    return (host & kOffsetMask) | (copied ? kEntryCopied : 0) | (zero ? kEntryZero : 0);
}

// Sectors field of a compressed descriptor: 512-byte sectors beyond the one holding the
// first byte, for `bytes` bytes at host offset `host`.
inline uint64_t compressed_extra_sectors(uint64_t host, uint64_t bytes) { return ((host + bytes - 1) >> 9) - (host >> 9); }
// The compressed descriptor for `bytes` bytes at `host`; an error if the offset or the size
// does not fit the descriptor's fields for this cluster size.
Result<uint64_t> compressed_entry(const Header& h, uint64_t host, uint64_t bytes);
// Host clusters [first, last] holding a compressed cluster's sectors (what refcounts count).
struct ClusterSpan {
    uint64_t first = 0;
    uint64_t last = 0;
};
ClusterSpan compressed_clusters(const Header& h, uint64_t entry);

}  // namespace blk::qcow2

// ---- Header serialization (image creation): the inverse of parse_header ----
namespace blk::qcow2 {

constexpr uint32_t kV3HeaderLength = 112;  // the v3 fields, the compression type byte, padding to 8
constexpr uint64_t kFeatureNameBytes = 46;  // a feature table entry is type, bit and a 46-byte name
// qemu leaves the feature table out of images with clusters of 4 KiB or less, so that a
// backing file name still fits into a 512-byte header cluster.
constexpr uint64_t kMinClusterForFeatureTable = 8192;

// The feature name table qemu writes into version 3 images (every feature it knows).
std::vector<FeatureName> qemu_feature_table();

// Bytes the serialized header occupies: fields, extensions, end marker, backing file name.
uint64_t serialized_header_bytes(const Header& h);

// Writes `h` into `cluster` (the image's first cluster; zero-filled first): the fields of
// its version (header_length for v3, with the compression type byte when header_length
// exceeds 104), then the extensions in qemu's order (backing format, external data file,
// feature table from h.features, end marker) and the backing file name right after the
// end marker; backing_file_offset/backing_file_size are computed here, not taken from `h`.
// Errors: EINVAL for a backing file name longer than 1023 bytes or a field parse_header
// would refuse; ENOSPC if it does not fit into `cluster`.
Status serialize_header(const Header& h, std::span<std::byte> cluster);

}  // namespace blk::qcow2
