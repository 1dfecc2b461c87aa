// Unit tests for qcow2's on-disk structures: header checks and L2 entry decoding.
#include <doctest/doctest.h>

#include <vector>

#include "../../libblock/formats/qcow2/format.h"
#include "blk/endian.h"

using namespace blk::qcow2;

namespace {

// A valid v3 header: 64 KiB clusters, 1 GiB, L1 at 0x30000, refcount table at 0x10000.
std::vector<std::byte> v3_header() {
    std::vector<std::byte> b(65536);
    blk::store_be32(b.data(), kMagic);
    blk::store_be32(b.data() + 4, 3);
    blk::store_be32(b.data() + 20, 16);
    blk::store_be64(b.data() + 24, 1ull << 30);
    blk::store_be32(b.data() + 36, 2);
    blk::store_be64(b.data() + 40, 0x30000);
    blk::store_be64(b.data() + 48, 0x10000);
    blk::store_be32(b.data() + 56, 1);
    blk::store_be32(b.data() + 96, 4);
    blk::store_be32(b.data() + 100, 112);
    return b;
}

constexpr uint64_t kFile = 0x50000;

}  // namespace

TEST_CASE("a valid v3 header parses") {
    auto h = parse_header(v3_header(), kFile);
    REQUIRE(h);
    CHECK(h->version == 3);
    CHECK(h->cluster_size() == 65536);
    CHECK(h->l2_entries() == 8192);
    CHECK_FALSE(h->extended_l2());
}

TEST_CASE("qcow2 refuses bad magic, versions and cluster sizes") {
    auto b = v3_header();
    b[0] = std::byte{0};
    CHECK_FALSE(parse_header(b, kFile));
    b = v3_header();
    blk::store_be32(b.data() + 4, 4);
    CHECK_FALSE(parse_header(b, kFile));
    for (uint32_t bits : {0u, 8u, 22u, 63u, 0xffffffffu}) {
        b = v3_header();
        blk::store_be32(b.data() + 20, bits);
        CHECK_FALSE(parse_header(b, kFile));
    }
}

TEST_CASE("qcow2 refuses an L1 table past the end of the file or too large") {
    auto b = v3_header();
    blk::store_be64(b.data() + 40, 0x40000000);
    auto r = parse_header(b, kFile);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("L1 table") != std::string::npos);
    b = v3_header();
    blk::store_be32(b.data() + 36, 0x7fffffff);
    CHECK_FALSE(parse_header(b, kFile));
    b = v3_header();
    blk::store_be32(b.data() + 36, 0);
    CHECK_FALSE(parse_header(b, kFile));  // too small for 1 GiB
}

TEST_CASE("qcow2 refuses a truncated header") {
    auto b = v3_header();
    b.resize(60);
    CHECK_FALSE(parse_header(b, 60));
    b = v3_header();
    blk::store_be32(b.data() + 100, 90);
    CHECK_FALSE(parse_header(b, kFile));
}

TEST_CASE("unknown incompatible features are named from the feature table") {
    auto b = v3_header();
    blk::store_be64(b.data() + 72, 1ull << 20);
    auto r = parse_header(b, kFile);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "Unsupported qcow2 feature(s): Unknown incompatible feature: 100000");

    // A feature name table extension naming bit 20.
    blk::store_be32(b.data() + 112, kExtFeatureTable);
    blk::store_be32(b.data() + 116, 48);
    b[120] = std::byte{0};
    b[121] = std::byte{20};
    const char name[] = "frobnication";
    for (size_t i = 0; i < sizeof name - 1; ++i) b[122 + i] = std::byte(name[i]);
    r = parse_header(b, kFile);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "Unsupported qcow2 feature(s): frobnication");
}

TEST_CASE("a header extension longer than the cluster is refused") {
    auto b = v3_header();
    blk::store_be32(b.data() + 112, kExtBackingFormat);
    blk::store_be32(b.data() + 116, 0x7ffffff0);
    CHECK_FALSE(parse_header(b, kFile));
}

TEST_CASE("standard L2 entries decode to their kinds") {
    auto h = *parse_header(v3_header(), kFile);
    CHECK(*subcluster_kind(h, {0, 0}, 0) == ClusterKind::UnallocatedPlain);
    CHECK(*subcluster_kind(h, {kEntryZero, 0}, 0) == ClusterKind::ZeroPlain);
    CHECK(*subcluster_kind(h, {kEntryCopied | 0x50000 | kEntryZero, 0}, 0) == ClusterKind::ZeroAlloc);
    CHECK(*subcluster_kind(h, {kEntryCopied | 0x50000, 0}, 0) == ClusterKind::Normal);
    CHECK(*subcluster_kind(h, {kEntryCompressed | 0x50000, 0}, 0) == ClusterKind::Compressed);
    CHECK(standard_offset(kEntryCopied | 0x50000 | kEntryZero) == 0x50000);
}

TEST_CASE("compressed descriptors split offset and sector count by cluster size") {
    auto h = *parse_header(v3_header(), kFile);  // 64 KiB: x = 62 - 8 = 54
    uint64_t e = kEntryCompressed | (3ull << 54) | 0x50123;
    auto ref = compressed_ref(h, e);
    CHECK(ref.offset == 0x50123);
    CHECK(ref.size == 4 * 512 - 0x123);

    auto b = v3_header();
    blk::store_be32(b.data() + 20, 12);  // 4 KiB: x = 58
    blk::store_be32(b.data() + 36, 512);
    blk::store_be64(b.data() + 24, 1ull << 30);
    blk::store_be64(b.data() + 40, 0x3000);
    blk::store_be64(b.data() + 48, 0x1000);
    auto h4 = parse_header(b, kFile);
    REQUIRE(h4);
    ref = compressed_ref(*h4, kEntryCompressed | (1ull << 58) | 0x4200);
    CHECK(ref.offset == 0x4200);
    CHECK(ref.size == 1024);
}

TEST_CASE("extended L2 subclusters: allocated, zero, unallocated, invalid") {
    auto b = v3_header();
    blk::store_be64(b.data() + 72, kIncompatExtendedL2);
    blk::store_be32(b.data() + 36, 4);  // 16-byte entries: 256 MiB per L2 table
    auto h = parse_header(b, kFile);
    REQUIRE(h);
    CHECK(h->subcluster_size() == 2048);
    CHECK(h->l2_entries() == 4096);
    L2Entry alloc{kEntryCopied | 0x50000, (1ull << 3) | (1ull << (32 + 4))};
    CHECK(*subcluster_kind(*h, alloc, 3) == ClusterKind::Normal);
    CHECK(*subcluster_kind(*h, alloc, 4) == ClusterKind::ZeroAlloc);
    CHECK(*subcluster_kind(*h, alloc, 5) == ClusterKind::UnallocatedAlloc);
    L2Entry plain{0, 1ull << 32};
    CHECK(*subcluster_kind(*h, plain, 0) == ClusterKind::ZeroPlain);
    CHECK(*subcluster_kind(*h, plain, 1) == ClusterKind::UnallocatedPlain);
    CHECK_FALSE(subcluster_kind(*h, L2Entry{0, 1}, 0));                              // allocated bit, no cluster
    CHECK_FALSE(subcluster_kind(*h, L2Entry{0x50000, 1ull | (1ull << 32)}, 0));       // both bits
    CHECK_FALSE(subcluster_kind(*h, L2Entry{kEntryCompressed | 0x50000, 1}, 0));      // compressed + bitmap
}

TEST_CASE("extended L2 needs clusters of at least 16 KiB") {
    auto b = v3_header();
    blk::store_be64(b.data() + 72, kIncompatExtendedL2);
    blk::store_be32(b.data() + 20, 12);
    blk::store_be32(b.data() + 36, 1024);
    blk::store_be64(b.data() + 40, 0x3000);
    blk::store_be64(b.data() + 48, 0x1000);
    CHECK_FALSE(parse_header(b, kFile));
}
