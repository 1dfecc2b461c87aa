// Unit tests for the map walk: merging, depth through filters and backing files, ranges.
#include <doctest/doctest.h>

#include <vector>

#include "blk/map.h"
#include "mem_node.h"

using namespace blk;
using blktest::MemNode;
using blktest::PassFilter;

namespace {

std::vector<MapEntry> walk(Node* top, uint64_t start, uint64_t end) {
    std::vector<MapEntry> out;
    auto st = map_image(top, start, end, [&](const MapEntry& e, MapEntry*) -> Status {
        out.push_back(e);
        return {};
    });
    REQUIRE(st);
    return out;
}

}  // namespace

TEST_CASE("entries merge only when every flag and the host offset continue") {
    MapEntry a{0, 4096, 0, true, false, true, false, true, 8192, "f"};
    MapEntry b{4096, 4096, 0, true, false, true, false, true, 12288, "f"};
    CHECK(map_entries_mergeable(a, b));
    b.offset = 16384;
    CHECK_FALSE(map_entries_mergeable(a, b));
    b.offset = 12288;
    b.filename = "g";
    CHECK_FALSE(map_entries_mergeable(a, b));
    b.filename = "f";
    b.depth = 1;
    CHECK_FALSE(map_entries_mergeable(a, b));
    MapEntry z1{0, 4096, 0, false, true, false, false, false, 0, ""};
    MapEntry z2{4096, 9999, 0, false, true, false, false, false, 0, ""};
    CHECK(map_entries_mergeable(z1, z2));
    MapEntry empty{0, 0, 0, false, true, false, false, false, 0, ""};
    CHECK_FALSE(map_entries_mergeable(empty, z2));
}

TEST_CASE("map walks through a filter and down the backing chain with depth") {
    auto base = std::make_shared<MemNode>(1 << 20, true);  // a format without a backing file
    base->allocated_ = 65536;
    auto top = std::make_shared<MemNode>(2 << 20, true);
    top->allocated_ = 4096;
    REQUIRE(top->attach_child("backing", base, kRoleCow));
    auto f = std::make_shared<PassFilter>();
    REQUIRE(f->take(top));

    auto e = walk(f.get(), 0, 2 << 20);
    REQUIRE(e.size() == 4);
    CHECK((e[0].start == 0 && e[0].length == 4096 && e[0].depth == 0 && e[0].data && e[0].present));
    CHECK((e[1].start == 4096 && e[1].length == 61440 && e[1].depth == 1 && e[1].data));
    // Unallocated in both layers below the backing file's end: the bottom layer says zero.
    CHECK((e[2].start == 65536 && e[2].depth == 1 && e[2].zero && !e[2].present));
    // Past the backing file's end the top layer itself reads as zeroes.
    CHECK((e[3].start == (1 << 20) && e[3].length == (1 << 20) && e[3].depth == 0 && e[3].zero));
}

TEST_CASE("a chain ending in a layer that says nothing reports no flags, as qemu does") {
    auto base = std::make_shared<MemNode>(8192);  // no backing support: unallocated is not zero
    auto top = std::make_shared<MemNode>(8192, true);
    REQUIRE(top->attach_child("backing", base, kRoleCow));
    auto e = walk(top.get(), 0, 8192);
    REQUIRE(e.size() == 1);
    CHECK((e[0].depth == 1 && !e[0].zero && !e[0].data && !e[0].present && !e[0].has_offset));
}

TEST_CASE("map honours the range and reports an empty range as one empty entry") {
    auto n = std::make_shared<MemNode>(1 << 20);
    n->allocated_ = 8192;
    auto e = walk(n.get(), 4096, 12288);
    REQUIRE(e.size() == 2);
    CHECK((e[0].start == 4096 && e[0].length == 4096));
    CHECK((e[1].start == 8192 && e[1].length == 4096));
    auto none = walk(n.get(), 2 << 20, 3 << 20);
    REQUIRE(none.size() == 1);
    CHECK(none[0].length == 0);
}
