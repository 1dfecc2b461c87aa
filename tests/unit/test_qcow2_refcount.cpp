// Unit tests for the qcow2 write path's layers: refcount entries of every width, L2 entry
// encoding, the metadata cache and map, and cluster allocation (runs, reuse, compressed
// packing, refcount table growth) over an in-memory file.
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <vector>

#include "../../libblock/formats/qcow2/cache.h"
#include "../../libblock/formats/qcow2/format.h"
#include "../../libblock/formats/qcow2/metamap.h"
#include "../../libblock/formats/qcow2/refcount.h"
#include "blk/endian.h"

using namespace blk;
using namespace blk::qcow2;

namespace {

// A file in memory that grows on truncate, as the file protocol does.
class GrowNode : public Node {
public:
    explicit GrowNode(uint64_t size) : Node("mem", Json::object()), data_(size) {
        size_ = size;
        read_only_ = false;
        refresh_caps();
    }
    std::vector<std::byte>& data() { return data_; }
    unsigned truncates = 0;
    bool fixed = false;  // behaves like a block device
    std::vector<std::pair<uint64_t, uint64_t>> discards;  // (offset, bytes) of each discard

protected:
    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        std::memcpy(buf.data(), data_.data() + off, buf.size());
        return {};
    }
    Status do_write(uint64_t off, std::span<const std::byte> buf) override {
        std::memcpy(data_.data() + off, buf.data(), buf.size());
        return {};
    }
    Capabilities own_caps() const override {
        Capabilities c;
        c.truncate = true;
        c.discard = true;
        return c;
    }
    Status do_discard(uint64_t off, uint64_t bytes) override {
        discards.emplace_back(off, bytes);
        return {};
    }
    Status do_truncate(uint64_t size, Prealloc) override {
        if (fixed) return make_error(ENOTSUP, "mem: cannot resize a device");
        data_.resize(size);
        size_ = size;
        ++truncates;
        return {};
    }

private:
    std::vector<std::byte> data_;
};

// The qcow2 node's place in the graph: a parent whose "file" edge the refcounts follow.
class Parent : public Node {
public:
    Parent() : Node("qcow2", Json::object()) { bind_edge("file", file); }
    EdgeSlot file;

protected:
    Status do_read(uint64_t, std::span<std::byte>) override { return make_error(ENOTSUP, "parent"); }
};

// A fresh image's refcount structures: header in cluster 0, the refcount table in cluster
// 1, the first refcount block in cluster 2, each with refcount 1.
struct Image {
    Header h;
    std::shared_ptr<GrowNode> grow;
    GrowNode& file;
    std::shared_ptr<Parent> parent = std::make_shared<Parent>();
    MetadataMap meta;

    Image(uint32_t cluster_bits, uint32_t order)
        : grow(std::make_shared<GrowNode>(3ull << cluster_bits)), file(*grow) {
        REQUIRE(parent->attach_child("file", grow, kRoleData | kRoleMetadata | kRolePrimary));
        h.version = 3;
        h.cluster_bits = cluster_bits;
        h.refcount_order = order;
        h.refcount_table_offset = h.cluster_size();
        h.refcount_table_clusters = 1;
        store_be64(file.data().data() + h.cluster_size(), 2 * h.cluster_size());
        auto block = std::span(file.data()).subspan(2 * h.cluster_size(), h.cluster_size());
        for (uint64_t c = 0; c < 3; ++c) set_refcount(block, c, order, 1);
        meta.add(0, h.cluster_size());
        meta.add(h.cluster_size(), h.cluster_size());
    }
    // A new Refcounts over the file as the header now describes it.
    std::unique_ptr<Refcounts> open() {
        MetadataMap m;
        m.add(0, h.cluster_size());
        m.add(h.refcount_table_offset, uint64_t{h.refcount_table_clusters} * h.cluster_size());
        meta = m;
        auto r = std::make_unique<Refcounts>(h, parent->file, "mem.qcow2", meta);
        REQUIRE(r->load());
        return r;
    }
};

// Writes everything back and points the header at a moved table, as the engine does.
void write_back(Image& img, Refcounts& r) {
    REQUIRE(r.write_blocks());
    REQUIRE(r.write_table());
    img.h.refcount_table_offset = r.table_offset();
    img.h.refcount_table_clusters = static_cast<uint32_t>(r.table_clusters());
    r.table_move_committed();
    REQUIRE(r.apply_deferred(DiscardPass{}));
    REQUIRE(r.write_blocks());
}

}  // namespace

TEST_CASE("refcount entries of every width read back what was set and leave neighbours alone") {
    for (uint32_t order = 0; order <= 6; ++order) {
        CAPTURE(order);
        const uint64_t bits = 1ull << order;
        std::vector<std::byte> block(64);
        const uint64_t entries = block.size() * 8 / bits;
        std::mt19937_64 rng(order);
        std::vector<uint64_t> want(entries);
        for (uint64_t i = 0; i < entries; ++i) {
            want[i] = i % 3 == 0 ? refcount_max(order) : rng() & refcount_max(order);
            set_refcount(block, i, order, want[i]);
        }
        for (uint64_t i = 0; i < entries; ++i) CHECK(get_refcount(block, i, order) == want[i]);
        // Clearing one entry changes only that one.
        set_refcount(block, 5, order, 0);
        for (uint64_t i = 0; i < entries; ++i) CHECK(get_refcount(block, i, order) == (i == 5 ? 0 : want[i]));
    }
}

TEST_CASE("refcount entries are laid out as the spec says") {
    std::vector<std::byte> b(8);
    set_refcount(b, 0, 0, 1);
    set_refcount(b, 7, 0, 1);
    CHECK(std::to_integer<unsigned>(b[0]) == 0x81);  // sub-byte widths: bit 0 is the least significant
    std::fill(b.begin(), b.end(), std::byte{0});
    set_refcount(b, 1, 1, 3);
    CHECK(std::to_integer<unsigned>(b[0]) == 0x0c);
    std::fill(b.begin(), b.end(), std::byte{0});
    set_refcount(b, 1, 4, 0x1234);  // 16 bits, big-endian
    CHECK(std::to_integer<unsigned>(b[2]) == 0x12);
    CHECK(std::to_integer<unsigned>(b[3]) == 0x34);
    CHECK(refcount_max(0) == 1);
    CHECK(refcount_max(3) == 255);
    CHECK(refcount_max(5) == 0xffffffffull);
    CHECK(refcount_max(6) == UINT64_MAX);
}

TEST_CASE("L2 entries encode normal, zero, compressed and subcluster states") {
    Header h;
    h.version = 3;
    h.cluster_bits = 16;
    CHECK(standard_entry(0x50000, true) == (kEntryCopied | 0x50000));
    CHECK(standard_entry(0x50000, true, true) == (kEntryCopied | 0x50000 | kEntryZero));
    CHECK(*subcluster_kind(h, L2Entry{standard_entry(0x50000, true)}, 0) == ClusterKind::Normal);
    CHECK(*subcluster_kind(h, L2Entry{standard_entry(0x50000, true, true)}, 0) == ClusterKind::ZeroAlloc);
    CHECK(*subcluster_kind(h, L2Entry{kEntryZero}, 0) == ClusterKind::ZeroPlain);

    // Compressed: offset in bits 0..x-1, additional sectors above (x = 62 - (16 - 8) = 54).
    auto e = compressed_entry(h, 0x12345, 1000);
    REQUIRE(e);
    CHECK((*e & kEntryCompressed) != 0);
    CHECK((*e & kEntryCopied) == 0);
    CHECK(((*e >> 54) & 0xff) == compressed_extra_sectors(0x12345, 1000));
    CHECK(compressed_extra_sectors(0x12345, 1000) == ((0x12345 + 999) >> 9) - (0x12345 >> 9));
    const CompressedRef ref = compressed_ref(h, *e);
    CHECK(ref.offset == 0x12345);
    CHECK(ref.offset + ref.size >= 0x12345 + 1000);
    CHECK(*subcluster_kind(h, L2Entry{*e}, 0) == ClusterKind::Compressed);
    // Bytes running into the next host cluster count for both.
    auto span_e = compressed_entry(h, 0x1ff00, 0x200);
    REQUIRE(span_e);
    CHECK(compressed_clusters(h, *span_e).first == 1);
    CHECK(compressed_clusters(h, *span_e).last == 2);
    CHECK(compressed_clusters(h, *e).first == 1);
    CHECK(compressed_clusters(h, *e).last == 1);
    CHECK_FALSE(compressed_entry(h, 1ull << 54, 100));  // beyond the offset field
    CHECK_FALSE(compressed_entry(h, 0x10000, 0));

    // Extended L2: 16-byte entries, the bitmap decides per subcluster.
    h.incompatible = kIncompatExtendedL2;
    std::vector<std::byte> table(h.cluster_size());
    const L2Entry ext{standard_entry(0x70000, true), 0x1ull | (0x2ull << 32)};
    store_l2_entry(h, table, 3, ext);
    const L2Entry back = load_l2_entry(h, table, 3);
    CHECK(back.entry == ext.entry);
    CHECK(back.bitmap == ext.bitmap);
    CHECK(load_be64(table.data() + 3 * 16) == ext.entry);
    CHECK(*subcluster_kind(h, back, 0) == ClusterKind::Normal);
    CHECK(*subcluster_kind(h, back, 1) == ClusterKind::ZeroAlloc);
    CHECK(*subcluster_kind(h, back, 2) == ClusterKind::UnallocatedAlloc);
    CHECK(*subcluster_kind(h, L2Entry{0, kL2BitmapAllZero}, 31) == ClusterKind::ZeroPlain);
}

TEST_CASE("the metadata map merges ranges and answers overlaps") {
    MetadataMap m;
    m.add(0x10000, 0x10000);
    m.add(0x30000, 0x10000);
    CHECK(m.ranges() == 2);
    m.add(0x20000, 0x10000);  // bridges the two
    CHECK(m.ranges() == 1);
    CHECK(m.overlaps(0x2ffff, 1));
    CHECK_FALSE(m.overlaps(0x40000, 0x10000));
    CHECK_FALSE(m.overlaps(0, 0x10000));
    m.remove(0x20000, 0x10000);
    CHECK(m.ranges() == 2);
    CHECK_FALSE(m.overlaps(0x20000, 0x10000));
    CHECK(m.overlaps(0x1ffff, 2));
}

TEST_CASE("the metadata cache keeps dirty tables until written back and stays bounded") {
    MetaCache c(2);
    c.insert(0x1000, std::vector<std::byte>(16), true);
    c.insert(0x2000, std::vector<std::byte>(16), false);
    c.insert(0x3000, std::vector<std::byte>(16), false);  // evicts the clean 0x2000, never the dirty one
    CHECK(c.find(0x1000) != nullptr);
    CHECK(c.find(0x2000) == nullptr);
    CHECK(c.size() == 2);
    c.insert(0x4000, std::vector<std::byte>(16), true);
    c.insert(0x5000, std::vector<std::byte>(16), true);
    CHECK(c.dirty_count() == 3);
    CHECK(c.needs_writeback());
    auto dirty = c.dirty_entries();
    REQUIRE(dirty.size() == 3);
    CHECK(dirty[0]->offset == 0x1000);  // in offset order
    CHECK(dirty[2]->offset == 0x5000);
    for (auto* e : dirty) c.mark_clean(e);
    c.trim();
    CHECK(c.size() == 2);
    CHECK(c.dirty_count() == 0);
}

TEST_CASE("allocation hands out contiguous runs with refcount 1 and grows the file") {
    Image img(16, 4);
    auto r = img.open();
    auto run = r->allocate(3, true);
    REQUIRE(run);
    CHECK(run->offset == 3 * 0x10000);
    CHECK(run->clusters == 3);
    CHECK(run->zero_from == run->offset);
    CHECK(img.file.size() == 6 * 0x10000);
    for (uint64_t c = 3; c < 6; ++c) CHECK(*r->get(c) == 1);
    CHECK(*r->get(6) == 0);
}

TEST_CASE("freed clusters are reused only after the deferred frees are applied") {
    Image img(16, 4);
    auto r = img.open();
    REQUIRE(r->allocate(4, true));  // clusters 3..6
    r->defer_free(4, 1, FreeKind::Never);
    auto next = r->allocate(1, true);
    REQUIRE(next);
    CHECK(next->offset == 7 * 0x10000);  // 4 still counts until the free is applied
    REQUIRE(r->apply_deferred(DiscardPass{}));
    CHECK(*r->get(4) == 0);
    auto reuse = r->allocate(3, false);  // a run may be shorter than asked
    REQUIRE(reuse);
    CHECK(reuse->offset == 4 * 0x10000);
    CHECK(reuse->clusters == 1);
    CHECK(reuse->zero_from > reuse->offset);  // old space: its bytes must be overwritten
    r->defer_free(5, 1, FreeKind::Never);
    REQUIRE(r->apply_deferred(DiscardPass{}));
    auto exact = r->allocate(2, true);  // an exact run skips the one-cluster hole
    REQUIRE(exact);
    CHECK(exact->offset == 8 * 0x10000);
    CHECK(*r->get(5) == 0);
}

TEST_CASE("freed clusters are discarded in the file by kind, once nothing references them") {
    Image img(16, 4);
    auto r = img.open();
    REQUIRE(r->allocate(8, true));  // clusters 3..10
    REQUIRE(r->update(9, +1));       // 9 is shared (an internal snapshot holds it too)
    const uint64_t cs = 0x10000;

    SUBCASE("requests pass when pass-discard-request is on, contiguous clusters in one discard") {
        r->defer_free(3, 2, FreeKind::Request);
        r->defer_free(6, 1, FreeKind::Request);
        r->defer_free(9, 1, FreeKind::Request);  // still referenced after the free: kept
        REQUIRE(r->apply_deferred(DiscardPass{true, true, false}));
        CHECK(img.file.discards == std::vector<std::pair<uint64_t, uint64_t>>{{3 * cs, 2 * cs}, {6 * cs, cs}});
        CHECK(*r->get(9) == 1);
        for (uint64_t c : {3, 4, 6}) CHECK(*r->get(c) == 0);
    }
    SUBCASE("each kind follows its own switch") {
        r->defer_free(3, 1, FreeKind::Request);   // off by default (the node's discard=ignore)
        r->defer_free(4, 1, FreeKind::Snapshot);  // on by default
        r->defer_free(5, 1, FreeKind::Other);     // off by default
        r->defer_free(6, 1, FreeKind::Never);
        r->defer_free(7, 1, FreeKind::Always);
        REQUIRE(r->apply_deferred(DiscardPass{}));
        CHECK(img.file.discards == std::vector<std::pair<uint64_t, uint64_t>>{{4 * cs, cs}, {7 * cs, cs}});
        r->defer_free(8, 1, FreeKind::Other);
        r->defer_free(10, 1, FreeKind::Never);
        REQUIRE(r->apply_deferred(DiscardPass{false, false, true}));
        CHECK(img.file.discards.back() == std::pair<uint64_t, uint64_t>{8 * cs, cs});
        CHECK(img.file.discards.size() == 3);
        for (uint64_t c : {3, 4, 5, 6, 7, 8, 10}) CHECK(*r->get(c) == 0);
    }
}

TEST_CASE("refcounts refuse to go below zero or above the width's maximum") {
    Image img(16, 0);  // 1-bit refcounts
    auto r = img.open();
    REQUIRE(r->allocate(1, true));
    CHECK_FALSE(r->update(3, +1));
    CHECK(r->update(3, -1));
    CHECK_FALSE(r->update(3, -1));
}

TEST_CASE("allocation never lands on known metadata, even when refcounts say it is free") {
    Image img(16, 4);
    auto r = img.open();
    img.meta.add(3 * 0x10000, 0x10000);  // a table the refcounts forgot
    auto run = r->allocate(1, true);
    REQUIRE_FALSE(run);
    CHECK(run.error().code == EIO);
}

TEST_CASE("compressed clusters pack behind each other and count every host cluster they touch") {
    Image img(12, 4);  // 4 KiB clusters
    auto r = img.open();
    auto a = r->allocate_bytes(3000);
    REQUIRE(a);
    CHECK(*a == 3 * 4096);
    auto b = r->allocate_bytes(2000);  // runs into the next cluster
    REQUIRE(b);
    CHECK(*b == 3 * 4096 + 3000);
    CHECK(*r->get(3) == 2);
    CHECK(*r->get(4) == 1);
    auto c = r->allocate_bytes(100);
    REQUIRE(c);
    CHECK(*c == 3 * 4096 + 5000);
    CHECK(*r->get(4) == 2);

    Image one(12, 0);  // 1-bit refcounts: a host cluster holds at most one reference
    auto r1 = one.open();
    auto x = r1->allocate_bytes(100);
    auto y = r1->allocate_bytes(100);
    REQUIRE(x);
    REQUIRE(y);
    CHECK(*y / 4096 != *x / 4096);
}

TEST_CASE("the refcount table grows, and the new table and blocks count themselves, for every width") {
    for (uint32_t order = 0; order <= 6; ++order) {
        CAPTURE(order);
        Image img(9, order);  // 512-byte clusters: a table cluster covers 64 blocks
        auto r = img.open();
        const uint64_t per_block = 512 * 8 >> order;
        const uint64_t covered = 64 * per_block;  // clusters the first table can describe
        uint64_t end = 3;
        while (end < covered + 100) {
            auto run = r->allocate(std::min<uint64_t>(500, covered + 100 - end), false);
            REQUIRE(run);
            end = run->offset / 512 + run->clusters;
        }
        CHECK(r->table_moved());
        const uint64_t old_table = img.h.refcount_table_offset / 512;
        write_back(img, *r);
        // Reopen from the bytes: every cluster up to the end is used exactly once, except
        // the old table, which was freed once the header moved on.
        auto fresh = img.open();
        const uint64_t last = img.file.size() / 512;
        for (uint64_t c = 0; c < last; ++c) {
            CAPTURE(c);
            CHECK(*fresh->get(c) == (c == old_table ? 0u : 1u));
        }
        CHECK(fresh->table_clusters() > 1);
    }
}

TEST_CASE("a file that cannot grow gets no refcounts for space it lacks") {
    Image img(16, 4);
    img.file.fixed = true;
    auto r = img.open();
    auto run = r->allocate(2, true);
    REQUIRE_FALSE(run);
    CHECK(run.error().code == ENOTSUP);
    CHECK(*r->get(3) == 0);
    CHECK(*r->get(4) == 0);
    CHECK_FALSE(r->blocks_dirty());
}
