// The driver contract, run on every driver and filter stack blkimg opens: bounds, reads of
// what was written, zero writes (with and without unmap), block status that covers the range
// and agrees with the bytes, discard, flush, growth (or its clean refusal), and the same after
// a filter is inserted above the top node and above its primary child, and across a reopen
// to read-only and back. A new driver or filter
// joins by adding a Stack below; everything here then holds for it.
#include <doctest/doctest.h>

#include <functional>

#include "blk/driver.h"
#include "record_node.h"
#include "temp_files.h"

using namespace blk;
using namespace blktest;

namespace {

constexpr uint64_t kSize = 4 << 20;

struct Stack {
    const char* name;
    // Makes the images in `dir` and returns the options that open the stack.
    std::function<Json(const TempDir& dir)> make;
    uint64_t size = kSize;
    bool stores_data = true;  // false: writes vanish (null-co)
    bool can_grow = true;     // truncate to a larger size works
};

void make_raw_file(const std::string& path, uint64_t size) {
    write_file(path, std::vector<std::byte>(size));
}

void make_qcow2(const std::string& path, Json options = Json::object()) {
    CreateRequest req;
    req.format = "qcow2";
    req.filename = path;
    req.size = kSize;
    req.options = std::move(options);
    REQUIRE(create_image(req));
}

Json file_opts(const std::string& path) { return Json{{"driver", "file"}, {"filename", path}}; }

std::vector<Stack> stacks() {
    return {
        {"file", [](const TempDir& d) {
             make_raw_file(d / "a.raw", kSize);
             return file_opts(d / "a.raw");
         }},
        {"raw over file", [](const TempDir& d) {
             make_raw_file(d / "a.raw", kSize);
             return Json{{"driver", "raw"}, {"file", file_opts(d / "a.raw")}};
         }},
        {"raw window over file", [](const TempDir& d) {
             make_raw_file(d / "a.raw", 2 * kSize);
             return Json{{"driver", "raw"}, {"offset", 65536}, {"size", kSize}, {"file", file_opts(d / "a.raw")}};
         }, kSize, true, false},
        {"raw over preallocate over file", [](const TempDir& d) {
             make_raw_file(d / "a.raw", kSize);
             return Json{{"driver", "raw"}, {"file", {{"driver", "preallocate"}, {"file", file_opts(d / "a.raw")}}}};
         }},
        {"qcow2 over file", [](const TempDir& d) {
             make_qcow2(d / "a.qcow2");
             return Json{{"driver", "qcow2"}, {"file", file_opts(d / "a.qcow2")}};
         }},
        {"qcow2 (extended L2, 64k clusters) over file", [](const TempDir& d) {
             make_qcow2(d / "a.qcow2", Json{{"extended_l2", "on"}, {"cluster_size", "64k"}});
             return Json{{"driver", "qcow2"}, {"file", file_opts(d / "a.qcow2")}};
         }},
        {"qcow2 (4k clusters, refcount_bits=1) over file", [](const TempDir& d) {
             make_qcow2(d / "a.qcow2", Json{{"cluster_size", "4k"}, {"refcount_bits", "1"}});
             return Json{{"driver", "qcow2"}, {"file", file_opts(d / "a.qcow2")}};
         }},
        {"qcow2 over preallocate over file", [](const TempDir& d) {
             make_qcow2(d / "a.qcow2");
             return Json{{"driver", "qcow2"}, {"file", {{"driver", "preallocate"}, {"file", file_opts(d / "a.qcow2")}}}};
         }},
        {"qcow2 over inject-error (nothing within reach fails) over file", [](const TempDir& d) {
             make_qcow2(d / "a.qcow2");
             return Json{{"driver", "qcow2"},
                         {"file", {{"driver", "inject-error"}, {"event", "any"}, {"skip", 1000000000}, {"file", file_opts(d / "a.qcow2")}}}};
         }},
        {"qcow2 with an external data file", [](const TempDir& d) {
             make_qcow2(d / "a.qcow2", Json{{"data_file", d / "a.data"}});
             return Json{{"driver", "qcow2"}, {"file", file_opts(d / "a.qcow2")}, {"data-file", file_opts(d / "a.data")}};
         }},
        {"qcow2 over a backing qcow2", [](const TempDir& d) {
             make_qcow2(d / "base.qcow2");
             {
                 OpenFlags fl;
                 fl.read_only = false;
                 auto b = open_image(ImageSpec{d / "base.qcow2", "qcow2", false}, fl);
                 REQUIRE(b);
                 std::vector<std::byte> w(kSize);
                 fill_pattern(w, 77);
                 REQUIRE(b->root->write(0, w));
                 REQUIRE(b->root->flush());
             }
             CreateRequest req;
             req.format = "qcow2";
             req.filename = d / "top.qcow2";
             req.backing_file = d / "base.qcow2";
             req.backing_format = "qcow2";
             REQUIRE(create_image(req));
             return Json{{"driver", "qcow2"}, {"file", file_opts(d / "top.qcow2")}};
         }},
        {"null-co", [](const TempDir&) {
             return Json{{"driver", "null-co"}, {"size", kSize}, {"read-zeroes", true}};
         }, kSize, false, false},
    };
}

std::vector<std::byte> bytes_at(Node& n, uint64_t off, uint64_t len) {
    std::vector<std::byte> b(len);
    REQUIRE(n.read(off, b));
    return b;
}

bool all_zero(const std::vector<std::byte>& b) {
    for (auto c : b) {
        if (c != std::byte{0}) return false;
    }
    return true;
}

// Block status over [0, size): every run is inside, non-empty and contiguous, and a run that
// says it reads as zeroes does.
void check_block_status(Node& n) {
    const uint64_t size = n.size();
    uint64_t off = 0;
    unsigned steps = 0;
    while (off < size) {
        auto bs = n.block_status(off, size - off);
        REQUIRE(bs);
        REQUIRE(bs->bytes > 0);
        REQUIRE(bs->bytes <= size - off);
        if (bs->flags & kStatusZero) {
            const uint64_t probe = std::min<uint64_t>(bs->bytes, 65536);
            CHECK(all_zero(bytes_at(n, off, probe)));
        }
        off += bs->bytes;
        REQUIRE(++steps < 1u << 20);
    }
    CHECK(off == size);
    CHECK_FALSE(n.block_status(size, 1));  // past the end
}

// The contract on a node whose content the test has tracked in `want` (stores_data) or that
// reads as zeroes (null-co).
void exercise(Node& n, const Stack& s, std::vector<std::byte>& want, uint64_t seed) {
    REQUIRE(n.size() == s.size);
    // Bounds: nothing past the end, in any request.
    std::vector<std::byte> one(1);
    CHECK_FALSE(n.read(s.size, one));
    std::vector<std::byte> straddle(1024);
    CHECK_FALSE(n.read(s.size - 512, straddle));
    CHECK_FALSE(n.write(s.size, one));
    CHECK_FALSE(n.write_zeroes(s.size - 4096, 8192));
    CHECK(n.read(s.size - 1, one));  // the last byte is inside
    CHECK(n.read(0, std::span<std::byte>()));  // empty request

    // Writes of several shapes: aligned, sector-aligned but not cluster-aligned, unaligned,
    // across a cluster boundary, the very end.
    const std::pair<uint64_t, uint64_t> writes[] = {
        {0, 65536}, {512 * 3, 1536}, {65536 - 100, 300}, {1 << 20, 200000}, {s.size - 4096, 4096}, {777, 1},
    };
    for (auto [off, len] : writes) {
        std::vector<std::byte> w(len);
        fill_pattern(w, seed + off);
        REQUIRE(n.write(off, w));
        if (s.stores_data) std::copy(w.begin(), w.end(), want.begin() + static_cast<ptrdiff_t>(off));
    }
    // Zero writes, plain and with unmap, aligned and not.
    const std::tuple<uint64_t, uint64_t, unsigned> zeroes[] = {
        {65536, 65536, 0}, {(1 << 20) + 4096, 8192, kZeroMayUnmap}, {1000, 3000, 0}, {2 << 20, 1 << 20, kZeroMayUnmap},
    };
    for (auto [off, len, flags] : zeroes) {
        REQUIRE(n.write_zeroes(off, len, flags));
        if (s.stores_data) std::fill_n(want.begin() + static_cast<ptrdiff_t>(off), len, std::byte{0});
    }
    REQUIRE(n.flush());
    if (s.stores_data) {
        CHECK(bytes_at(n, 0, s.size) == want);
    } else {
        CHECK(all_zero(bytes_at(n, 0, s.size)));
    }
    check_block_status(n);

    // Discard is advisory: afterwards the range reads as before or as zeroes, and nothing
    // outside it changes.
    const uint64_t d0 = 3 << 20, dl = 65536;
    auto ds = n.discard(d0, dl);
    CHECK((ds || ds.error().code == ENOTSUP));
    auto after = bytes_at(n, 0, s.size);
    if (s.stores_data) {
        auto in = std::vector<std::byte>(after.begin() + d0, after.begin() + d0 + dl);
        const bool same = std::equal(in.begin(), in.end(), want.begin() + d0);
        CHECK((same || all_zero(in)));
        std::copy(in.begin(), in.end(), want.begin() + d0);
        CHECK(after == want);
    }
}

// The capabilities a node advertises hold: what it says it lacks is refused with ENOTSUP
// (a read-only node: EACCES, and it advertises no writing), what it says it has works.
void check_caps(Node& n, const Stack& s, std::vector<std::byte>& want) {
    const Capabilities& c = n.caps();
    CHECK(c.write == !n.read_only());
    if (!c.write) {
        CHECK_FALSE((c.flush || c.truncate || c.fast_zero || c.discard || c.make_empty || c.write_compressed));
        std::vector<std::byte> w(512);
        auto st = n.write(0, w);
        REQUIRE_FALSE(st);
        CHECK(st.error().code == EACCES);
        return;
    }
    if (!c.truncate) {
        auto st = n.truncate(n.size());
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ENOTSUP);
    }
    // A whole aligned 64 KiB range: every driver with a zeroing path zeroes it in place.
    const uint64_t z0 = 1 << 20, zl = 65536;
    auto z = n.write_zeroes(z0, zl, kZeroNoFallback);
    if (c.fast_zero) {
        INFO((z ? std::string() : z.error().message));
        CHECK(static_cast<bool>(z));
        if (z && s.stores_data) std::fill_n(want.begin() + static_cast<ptrdiff_t>(z0), zl, std::byte{0});
    } else {
        REQUIRE_FALSE(z);
        CHECK(z.error().code == ENOTSUP);
    }
    if (!c.make_empty) {
        auto st = n.make_empty();
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ENOTSUP);
    }
    auto cs = n.cluster_size();
    auto cc = n.compress_cluster(std::vector<std::byte>(cs.value_or(65536)));
    if (!c.write_compressed) {
        auto st = n.write_compressed(0, cs.value_or(65536), CompressedCluster{});
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ENOTSUP);
    } else {
        CHECK(static_cast<bool>(cc));
    }
    if (s.stores_data) CHECK(bytes_at(n, 0, n.size()) == want);
}

// A filter has its filtered child's capabilities but for what names the child's kind.
void check_filter_caps(const Node& filter, const Node& child) {
    Capabilities want = child.caps();
    want.protocol = false;
    want.backing = false;
    CHECK(filter.caps() == want);
}

void grow(Node& n, const Stack& s, std::vector<std::byte>& want) {
    const uint64_t before = n.size();
    auto st = n.truncate(before + (1 << 20));
    if (!s.can_grow) {
        CHECK_FALSE(st);
        CHECK(n.size() == before);
        return;
    }
    REQUIRE(st);
    CHECK(n.size() == before + (1 << 20));
    // The new part reads as zeroes, the old part is unchanged.
    CHECK(all_zero(bytes_at(n, before, 1 << 20)));
    if (s.stores_data) CHECK(bytes_at(n, 0, before) == want);
    std::vector<std::byte> w(4096);
    fill_pattern(w, 5);
    REQUIRE(n.write(before + 8192, w));
    CHECK(bytes_at(n, before + 8192, 4096) == w);
}

std::vector<std::byte> initial_content(Node& n) { return bytes_at(n, 0, n.size()); }

}  // namespace

TEST_CASE("every driver and filter stack keeps the node contract") {
    for (const Stack& s : stacks()) {
        const std::string stack = s.name;
        CAPTURE(stack);
        TempDir dir;
        const Json opts = s.make(dir);
        OpenFlags fl;
        fl.read_only = false;
        auto g = open_image(ImageSpec{"json:" + opts.dump(), "", false}, fl);
        INFO((g ? std::string() : g.error().message));
        REQUIRE(static_cast<bool>(g));
        Node& top = *g->root;
        REQUIRE(top.check_roles());
        auto want = initial_content(top);
        exercise(top, s, want, 1);
        check_caps(top, s, want);
        const Capabilities top_caps = top.caps();
        CHECK(top_caps.write);

        // A filter inserted above the top node, then one above the top's primary child:
        // both pass every request, and the content is the same through them.
        auto above = make_filter_node(Json{{"driver", "preallocate"}});
        REQUIRE(above);
        auto ins = g->insert_filter_above(g->root, *above);
        INFO((ins ? std::string() : ins.error().message));
        REQUIRE(static_cast<bool>(ins));
        Node& top2 = *g->root;
        CHECK(&top2 == above->get());
        if (s.stores_data) CHECK(initial_content(top2) == want);
        exercise(top2, s, want, 2);
        check_filter_caps(top2, top);
        check_caps(top2, s, want);
        CHECK(top.caps() == top_caps);
        for (const Child& c : top.children()) {
            if (!(c.roles & kRolePrimary)) continue;
            auto below = make_filter_node(Json{{"driver", "preallocate"}});
            REQUIRE(below);
            std::shared_ptr<Node> child = c.node;
            const Capabilities child_caps = child->caps();
            REQUIRE(g->insert_filter_above(child, *below));
            check_filter_caps(**below, *child);
            CHECK(top.caps() == top_caps);  // what the top can do is the same over the filter
            if (s.stores_data) CHECK(initial_content(top2) == want);
            exercise(top2, s, want, 3);
            REQUIRE(g->remove_filter(*below));
            CHECK(child->caps() == child_caps);
            CHECK(top.caps() == top_caps);
            break;
        }
        // Reopened read-only in place: reads the same, refuses writes; writable again, takes
        // them.
        {
            INFO("reopen");
            auto ro = g->reopen_read_only(top2);
            INFO((ro ? std::string() : ro.error().message));
            REQUIRE(static_cast<bool>(ro));
            CHECK(top2.read_only());
            CHECK_FALSE(top2.caps().write);
            CHECK_FALSE(top.caps().write);
            check_caps(top2, s, want);
            check_filter_caps(top2, top);
            std::vector<std::byte> w(4096);
            fill_pattern(w, 11);
            CHECK_FALSE(top2.write(0, w));
            CHECK_FALSE(top2.write_zeroes(0, 4096));
            if (s.stores_data) CHECK(initial_content(top2) == want);
            auto rw = g->reopen_read_write(top2);
            INFO((rw ? std::string() : rw.error().message));
            REQUIRE(static_cast<bool>(rw));
            CHECK_FALSE(top2.read_only());
            CHECK(top.caps() == top_caps);
            check_filter_caps(top2, top);
            REQUIRE(top2.write(0, w));
            if (s.stores_data) std::copy(w.begin(), w.end(), want.begin());
            REQUIRE(top2.flush());
            if (s.stores_data) CHECK(initial_content(top2) == want);
        }
        grow(top2, s, want);
        // Removed again, the stack reads the same.
        REQUIRE(g->remove_filter(*above));
        CHECK(g->root.get() == &top);
        CHECK(top.caps() == top_caps);
        if (s.stores_data && s.can_grow) {
            CHECK(bytes_at(top, 0, s.size) == want);
        }
        REQUIRE(top.flush());
    }
}
