// The compare job: verdicts, the offsets qemu-img names, differing ranges, and ordering when
// many workers finish out of order.
#include <doctest/doctest.h>

#include "blk/compare.h"
#include "mem_node.h"

using namespace blktest;

namespace {

constexpr uint64_t MiB = 1 << 20;

std::shared_ptr<MemNode> data_node(uint64_t size, int seed) {
    auto n = std::make_shared<MemNode>(size);
    n->allocated_ = size;
    for (uint64_t i = 0; i < size; ++i) n->data()[i] = std::byte(static_cast<uint8_t>((i * 131 + seed) >> 3));
    return n;
}

// Reads of [bad_from, bad_to) fail with EIO.
class FailingNode : public MemNode {
public:
    FailingNode(uint64_t size, uint64_t from, uint64_t to) : MemNode(size), from_(from), to_(to) { allocated_ = size; }

protected:
    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        if (off < to_ && off + buf.size() > from_) return make_error(EIO, "injected read error");
        return MemNode::do_read(off, buf);
    }

private:
    uint64_t from_, to_;
};

}  // namespace

TEST_CASE("compare: identical images, and the first mismatch at qemu-img's sector") {
    auto a = data_node(9 * MiB, 1);
    auto b = data_node(9 * MiB, 1);
    for (unsigned threads : {1u, 4u}) {
        CompareOptions o;
        o.threads = threads;
        CHECK(compare_images(a.get(), b.get(), o).verdict == CompareVerdict::Identical);
        b->data()[5 * MiB + 1000] ^= std::byte{1};
        b->data()[7 * MiB + 3] ^= std::byte{1};
        auto r = compare_images(a.get(), b.get(), o);
        CHECK(r.verdict == CompareVerdict::Differ);
        CHECK(r.offset == 5 * MiB + 512);  // the sector that holds the byte
        CHECK(r.diffs.empty());             // first-only mode collects no list
        b->data()[5 * MiB + 1000] ^= std::byte{1};
        b->data()[7 * MiB + 3] ^= std::byte{1};
    }
}

TEST_CASE("compare: every differing range, merged and in order, up to max_diffs") {
    auto a = data_node(16 * MiB, 2);
    auto b = data_node(16 * MiB, 2);
    // Three runs: one sector, two neighbouring sectors (merged), and one across 2 MiB requests.
    b->data()[100] ^= std::byte{1};
    b->data()[3 * MiB + 10] ^= std::byte{1};
    b->data()[3 * MiB + 600] ^= std::byte{1};
    for (uint64_t i = 6 * MiB - 1024; i < 6 * MiB + 1024; ++i) b->data()[i] ^= std::byte{0x80};
    CompareOptions o;
    o.threads = 4;
    o.max_diffs = 100;
    auto r = compare_images(a.get(), b.get(), o);
    REQUIRE(r.verdict == CompareVerdict::Differ);
    CHECK(r.offset == 0);
    REQUIRE(r.diffs.size() == 3);
    CHECK(r.diffs[0].offset == 0);
    CHECK(r.diffs[0].length == 512);
    CHECK(r.diffs[1].offset == 3 * MiB);
    CHECK(r.diffs[1].length == 1024);
    CHECK(r.diffs[2].offset == 6 * MiB - 1024);
    CHECK(r.diffs[2].length == 2048);
    CHECK_FALSE(r.diffs_truncated);
    o.max_diffs = 2;
    r = compare_images(a.get(), b.get(), o);
    CHECK(r.diffs.size() == 2);
    CHECK(r.diffs_truncated);
}

TEST_CASE("compare: sizes differ") {
    auto a = data_node(4 * MiB, 3);
    auto b = std::make_shared<MemNode>(6 * MiB);
    b->allocated_ = 6 * MiB;
    std::copy(a->data().begin(), a->data().end(), b->data().begin());
    // The longer image's tail reads as zeroes: identical, after qemu-img's warning.
    auto r = compare_images(a.get(), b.get());
    CHECK(r.verdict == CompareVerdict::Identical);
    CHECK(r.tail_checked);
    b->data()[5 * MiB + 7] = std::byte{1};
    r = compare_images(b.get(), a.get());
    CHECK(r.verdict == CompareVerdict::Differ);
    CHECK(r.offset == 5 * MiB);
    CHECK(r.tail_checked);
    CompareOptions strict;
    strict.strict = true;
    CHECK(compare_images(a.get(), b.get(), strict).verdict == CompareVerdict::SizeMismatch);
}

TEST_CASE("compare: a read error is reported at the start of qemu-img's request, after earlier mismatches") {
    auto a = data_node(8 * MiB, 4);
    auto b = std::make_shared<FailingNode>(8 * MiB, 5 * MiB + 4096, 5 * MiB + 8192);
    std::copy(a->data().begin(), a->data().end(), b->data().begin());
    for (unsigned threads : {1u, 3u}) {
        CompareOptions o;
        o.threads = threads;
        auto r = compare_images(a.get(), b.get(), o);
        CHECK(r.verdict == CompareVerdict::ReadError);
        CHECK(r.image == 1);
        CHECK(r.offset == 4 * MiB);  // requests are 2 MiB from the start of the status run
        CHECK(r.error.code == EIO);
        b->data()[1 * MiB] ^= std::byte{1};
        r = compare_images(a.get(), b.get(), o);
        CHECK(r.verdict == CompareVerdict::Differ);
        CHECK(r.offset == 1 * MiB);
        b->data()[1 * MiB] ^= std::byte{1};
    }
}
