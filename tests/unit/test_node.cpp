// Unit tests for child roles, accessors, graph edits and the request contract.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "blk/block_status.h"
#include "blk/driver.h"

#include "mem_node.h"

using namespace blk;
using blktest::MemNode;
using blktest::PassFilter;

TEST_CASE("a filtered child excludes data, metadata and cow roles") {
    auto n = std::make_shared<MemNode>(4096);
    auto c = std::make_shared<MemNode>(4096);
    CHECK_FALSE(n->attach_child("file", c, kRoleFiltered | kRoleData));
    CHECK(n->attach_child("file", c, kRoleFiltered | kRolePrimary));
    auto d = std::make_shared<MemNode>(4096);
    CHECK_FALSE(n->attach_child("data-file", d, kRoleData));
    CHECK_FALSE(n->attach_child("other", d, kRoleFiltered));
}

TEST_CASE("at most one cow child and one primary child") {
    auto n = std::make_shared<MemNode>(4096, true);
    CHECK(n->attach_child("backing", std::make_shared<MemNode>(4096), kRoleCow));
    CHECK_FALSE(n->attach_child("backing2", std::make_shared<MemNode>(4096), kRoleCow));
    CHECK(n->attach_child("file", std::make_shared<MemNode>(4096), kRoleData | kRoleMetadata | kRolePrimary));
    CHECK_FALSE(n->attach_child("file2", std::make_shared<MemNode>(4096), kRoleData | kRolePrimary));
    CHECK_FALSE(n->attach_child("file", std::make_shared<MemNode>(4096), kRoleData));  // name taken
    CHECK_FALSE(n->attach_child("self", n, kRoleData));
}

TEST_CASE("a filter's filtered child must be primary") {
    PassFilter f;
    CHECK_FALSE(f.attach_child("file", std::make_shared<MemNode>(512), kRoleFiltered));
    CHECK(f.take(std::make_shared<MemNode>(512)));
    CHECK(f.size() == 512);
}

TEST_CASE("accessors find children by role and skip filters") {
    auto base = std::make_shared<MemNode>(8192);
    auto top = std::make_shared<MemNode>(8192, true);
    auto file = std::make_shared<MemNode>(8192);
    auto f1 = std::make_shared<PassFilter>();
    auto f2 = std::make_shared<PassFilter>();
    REQUIRE(f2->take(base));
    REQUIRE(f1->take(top));
    REQUIRE(top->attach_child("file", file, kRoleData | kRoleMetadata | kRolePrimary));
    REQUIRE(top->attach_child("backing", f2, kRoleCow));
    CHECK(filtered_child(*f1) == top.get());
    CHECK(primary_child(*top) == file.get());
    CHECK(cow_child(*top) == f2.get());
    CHECK(data_children(*top) == std::vector<Node*>{file.get()});
    CHECK(skip_filters(f1.get()) == top.get());
    CHECK(skip_filters(top.get()) == top.get());
    CHECK(backing_chain_next(f1.get()) == base.get());
    CHECK(backing_chain_next(base.get()) == nullptr);
}

TEST_CASE("insert_filter_above redirects every parent and the root") {
    auto x = std::make_shared<MemNode>(4096);
    auto top = std::make_shared<MemNode>(4096, true);
    REQUIRE(top->attach_child("backing", x, kRoleCow));
    Graph g{top};
    auto f = std::make_shared<PassFilter>();
    REQUIRE(insert_filter_above(g, x, f));
    CHECK(cow_child(*top) == f.get());
    CHECK(filtered_child(*f) == x.get());
    CHECK(g.root == top);

    auto f2 = std::make_shared<PassFilter>();
    REQUIRE(insert_filter_above(g, top, f2));
    CHECK(g.root == f2);
    CHECK(g.nodes().size() == 4);
}

TEST_CASE("remove_filter and replace_node repoint parents") {
    auto x = std::make_shared<MemNode>(4096);
    auto f = std::make_shared<PassFilter>();
    REQUIRE(f->take(x));
    auto top = std::make_shared<MemNode>(4096, true);
    REQUIRE(top->attach_child("backing", f, kRoleCow));
    Graph g{top};
    REQUIRE(remove_filter(g, f));
    CHECK(cow_child(*top) == x.get());
    CHECK_FALSE(remove_filter(g, x));  // not a filter

    auto y = std::make_shared<MemNode>(4096);
    REQUIRE(replace_node(g, x, y));
    CHECK(cow_child(*top) == y.get());
    REQUIRE(replace_node(g, top, y));
    CHECK(g.root == y);
}

TEST_CASE("requests outside the node are refused before the driver sees them") {
    MemNode n(4096);
    std::vector<std::byte> buf(512);
    CHECK(n.read(0, buf));
    CHECK(n.read(3584, buf));
    CHECK_FALSE(n.read(3585, buf));
    CHECK_FALSE(n.read(UINT64_MAX - 10, buf));
    CHECK(n.read(4096, std::span<std::byte>()));
    CHECK_FALSE(n.block_status(4096, 1));
    CHECK_FALSE(n.block_status(0, 0));
}

TEST_CASE("block status: unallocated without backing reads as zero; with backing asks it") {
    auto base = std::make_shared<MemNode>(8192);
    base->allocated_ = 4096;
    auto top = std::make_shared<MemNode>(16384, true);
    top->allocated_ = 1024;
    REQUIRE(top->attach_child("backing", base, kRoleCow));

    auto a = block_status_above(top.get(), nullptr, 0, 16384);
    REQUIRE(a);
    CHECK(a->depth == 0);
    CHECK(a->status.bytes == 1024);
    CHECK((a->status.flags & kStatusAllocated));

    auto b = block_status_above(top.get(), nullptr, 1024, 16384);
    REQUIRE(b);
    CHECK(b->depth == 1);
    CHECK(b->status.bytes == 3072);
    CHECK((b->status.flags & kStatusData));

    // Past the backing file's end, the top layer itself reports zeroes.
    auto c = block_status_above(top.get(), nullptr, 8192, 16384);
    REQUIRE(c);
    CHECK(c->depth == 0);
    CHECK((c->status.flags & kStatusZero));
    CHECK_FALSE((c->status.flags & kStatusAllocated));

    MemNode lone(4096, true);
    auto d = lone.block_status(0, 4096);
    REQUIRE(d);
    CHECK((d->flags & kStatusZero));
}

TEST_CASE("a filter is exactly as writable as its child") {
    std::vector<std::byte> buf(512);
    auto ro = std::make_shared<MemNode>(512);
    ro->make_read_only();
    auto f = std::make_shared<PassFilter>();
    REQUIRE(f->take(ro));
    CHECK(f->read_only());
    CHECK_FALSE(f->write(0, buf));
    CHECK_FALSE(f->write_zeroes(0, 512));
    CHECK_FALSE(f->discard(0, 512));

    auto rw = std::make_shared<MemNode>(512);
    auto g = std::make_shared<PassFilter>();
    REQUIRE(g->take(rw));
    buf[7] = std::byte{0x42};
    CHECK(g->write(0, buf));
    CHECK(rw->data()[7] == std::byte{0x42});
    CHECK(g->write_zeroes(0, 512));
    CHECK(rw->data()[7] == std::byte{0});
}

TEST_CASE("write_zeroes without a fallback is refused by drivers that cannot do better") {
    MemNode n(4096);
    CHECK(n.write_zeroes(0, 4096, kZeroNoFallback).error().code == ENOTSUP);
    CHECK_FALSE(n.write_zeroes(4000, 200));  // past the end
}
