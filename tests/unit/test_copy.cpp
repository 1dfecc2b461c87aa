// Unit tests for the copy engine: the exact operations it sends the target, and the bytes.
#include <doctest/doctest.h>

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <fcntl.h>
#include <unistd.h>

#include "blk/fd.h"

#include "../../libblock/jobs/zero_scan.h"
#include "blk/copy.h"
#include "record_node.h"
#include "temp_files.h"

using namespace blk;
using blktest::ExtentNode;
using blktest::Rec;
using blktest::RecordNode;
using blktest::TempDir;
using blktest::read_file;
using blktest::write_file;

namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * 1024;
constexpr unsigned kUnmap = kZeroMayUnmap;

CopyOptions options(std::vector<Node*> srcs, Node* target) {
    CopyOptions o;
    o.sources = std::move(srcs);
    o.target = target;
    o.threads = 1;
    return o;
}

Rec W(uint64_t off, uint64_t len) { return {Rec::Write, off, len, 0}; }
Rec Z(uint64_t off, uint64_t len) { return {Rec::Zero, off, len, kUnmap}; }
Rec C(uint64_t off, uint64_t len, bool compressed = true) { return {Rec::Compressed, off, len, compressed ? 1u : 0u}; }
Rec F() { return {Rec::Flush, 0, 0, 0}; }

std::string dump(const std::vector<Rec>& v) {
    std::string s;
    for (const Rec& r : v) s += to_string(r) + " ";
    return s;
}

#define CHECK_LOG(node, ...)                                        \
    do {                                                            \
        std::vector<Rec> want_ = {__VA_ARGS__};                     \
        auto got_ = (node).log();                                   \
        INFO("got:  " << dump(got_));                               \
        INFO("want: " << dump(want_));                              \
        CHECK(got_ == want_);                                       \
    } while (0)

// The guest content of a source, read through the node.
std::vector<std::byte> content(Node& n) {
    std::vector<std::byte> b(n.size());
    REQUIRE(n.read(0, b));
    return b;
}

CopyStats copy_ok(const CopyOptions& o) {
    auto r = copy_image(o);
    if (!r) FAIL_CHECK(r.error().message);
    REQUIRE(r);
    CHECK(r->data_written + r->zeroed + r->skipped == r->total);
    return *r;
}

// A source of any size that reads as zeroes and says so, without memory behind it.
class SparseNode : public Node {
public:
    explicit SparseNode(uint64_t size) : Node("sparse", Json::object()) { size_ = size; }
    std::vector<std::pair<uint64_t, uint64_t>> data;  // (offset, length) ranges of data
    std::atomic<uint64_t> status_queries{0};

protected:
    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        for (size_t i = 0; i < buf.size(); ++i) buf[i] = std::byte(uint8_t((off + i) % 251 + 1));
        return {};
    }
    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override {
        ++status_queries;
        BlockStatus st;
        st.bytes = bytes;
        st.flags = kStatusZero;
        for (auto [o, l] : data) {
            if (off >= o && off < o + l) {
                st.bytes = std::min(bytes, o + l - off);
                st.flags = kStatusData;
                return st;
            }
            if (o > off) st.bytes = std::min(st.bytes, o - off);
        }
        return st;
    }
};

// A target that keeps nothing and counts what it is asked to do.
class NullTarget : public Node {
public:
    explicit NullTarget(uint64_t size) : Node("nulltarget", Json::object()) {
        size_ = size;
        read_only_ = false;
    }
    std::atomic<uint64_t> written{0}, zeroed{0}, ops{0};

protected:
    Status do_read(uint64_t, std::span<std::byte> buf) override {
        std::memset(buf.data(), 0, buf.size());
        return {};
    }
    Status do_write(uint64_t, std::span<const std::byte> buf) override {
        written += buf.size();
        ++ops;
        return {};
    }
    Status do_write_zeroes(uint64_t, uint64_t bytes, unsigned) override {
        zeroed += bytes;
        ++ops;
        return {};
    }
};

long max_rss_kib() {
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

}  // namespace

// First in the file, so the process's peak RSS is still the engine's to measure.
TEST_CASE("a 1 TiB sparse source copies quickly with bounded memory") {
    const long rss_before = max_rss_kib();
    const uint64_t size = 1ull << 40;
    SparseNode src(size);
    src.data = {{0, 3 * MiB}, {size / 2, 5 * MiB + 512}, {size - 4 * MiB, 4 * MiB}};
    NullTarget dst(size);
    auto o = options({&src}, &dst);
    o.threads = 0;
    o.requests = 16;
    auto t0 = std::chrono::steady_clock::now();
    CopyStats st = copy_ok(o);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(secs < 10.0);
    CHECK(st.data_written == 12 * MiB + 512);
    CHECK(dst.written == 12 * MiB + 512);
    CHECK(dst.zeroed == size - (12 * MiB + 512));
    CHECK(st.buffer_bytes <= kCopyMaxBufferBytes);
    // Block status is asked per extent, not per request: a handful of queries.
    CHECK(src.status_queries < 20);
    CHECK(max_rss_kib() - rss_before < 64 * 1024);

    // On a target known to be zero, the holes cost nothing at all.
    NullTarget dst2(size);
    o.target = &dst2;
    o.target_is_zero = true;
    st = copy_ok(o);
    CHECK(dst2.zeroed == 0);
    CHECK(dst2.written == 12 * MiB + 512);
    CHECK(st.skipped == size - (12 * MiB + 512));
}

TEST_CASE("the zero scan finds zeroes word-wise at any length and position") {
    std::vector<std::byte> b(8192);
    for (size_t len : {0, 1, 7, 15, 16, 17, 100, 128, 129, 4095, 4096, 8192}) {
        auto s = std::span(b).first(len);
        CHECK(copy_detail::is_zero(s));
        for (size_t pos : {size_t(0), len / 3, len / 2, len > 0 ? len - 1 : 0}) {
            if (pos >= len) continue;
            b[pos] = std::byte{1};
            CHECK_FALSE(copy_detail::is_zero(s));
            b[pos] = std::byte{0};
        }
    }
}

TEST_CASE("the -S rule: aligned cells, short runs stay in the data, edge runs join the zeroes") {
    using copy_detail::Segment;
    std::vector<std::byte> b(64 * KiB);
    blktest::fill_pattern(b, 7);
    auto zero = [&](uint64_t off, uint64_t len) { std::memset(b.data() + off, 0, len); };
    zero(8 * KiB, 4 * KiB);    // one cell
    zero(20 * KiB, 6 * KiB);   // 20k..26k: only the cell 20k..24k is whole
    zero(40 * KiB, 16 * KiB);  // four cells
    std::vector<Segment> segs;
    copy_detail::SparseRule rule{4 * KiB, 4 * KiB};
    copy_detail::split_sparse(b, 1 * MiB, rule, false, false, segs);
    auto seg = [](uint64_t off, uint64_t len, bool z) { return Segment{1 * MiB + off, len, z}; };
    auto eq = [](const std::vector<Segment>& a, const std::vector<Segment>& w) {
        if (a.size() != w.size()) return false;
        for (size_t i = 0; i < a.size(); ++i)
            if (a[i].off != w[i].off || a[i].len != w[i].len || a[i].zero != w[i].zero) return false;
        return true;
    };
    CHECK(eq(segs, {seg(0, 8 * KiB, false), seg(8 * KiB, 4 * KiB, true), seg(12 * KiB, 8 * KiB, false),
                    seg(20 * KiB, 4 * KiB, true), seg(24 * KiB, 16 * KiB, false), seg(40 * KiB, 16 * KiB, true),
                    seg(56 * KiB, 8 * KiB, false)}));
    // -S 16k: only the run of four cells is long enough.
    rule.min_run = 16 * KiB;
    copy_detail::split_sparse(b, 1 * MiB, rule, false, false, segs);
    CHECK(eq(segs, {seg(0, 40 * KiB, false), seg(40 * KiB, 16 * KiB, true), seg(56 * KiB, 8 * KiB, false)}));
    // A short run at an extent's edge joins the zeroes beyond it; at a cut it does not.
    zero(60 * KiB, 4 * KiB);
    copy_detail::split_sparse(b, 1 * MiB, rule, false, false, segs);
    CHECK(eq(segs, {seg(0, 40 * KiB, false), seg(40 * KiB, 16 * KiB, true), seg(56 * KiB, 8 * KiB, false)}));
    copy_detail::split_sparse(b, 1 * MiB, rule, false, true, segs);
    CHECK(eq(segs, {seg(0, 40 * KiB, false), seg(40 * KiB, 16 * KiB, true), seg(56 * KiB, 4 * KiB, false),
                    seg(60 * KiB, 4 * KiB, true)}));
    // A buffer of zeroes is zeroes, whatever -S says.
    std::vector<std::byte> z(12 * KiB);
    rule.min_run = 1 * MiB;
    copy_detail::split_sparse(z, 0, rule, false, false, segs);
    CHECK(eq(segs, {Segment{0, 12 * KiB, true}}));
    // Cells are aligned to guest offsets, not to the buffer.
    std::vector<std::byte> c(12 * KiB);
    blktest::fill_pattern(c, 3);
    std::memset(c.data() + 2 * KiB, 0, 8 * KiB);  // guest 6k..14k: the cell 8k..12k only
    rule.min_run = 4 * KiB;
    copy_detail::split_sparse(c, 4 * KiB, rule, false, false, segs);
    CHECK(eq(segs, {Segment{4 * KiB, 4 * KiB, false}, Segment{8 * KiB, 4 * KiB, true}, Segment{12 * KiB, 4 * KiB, false}}));
}

namespace {

// data 0..1M, unallocated 1M..2M, data 2M..2M+64k, zero to 4M.
std::shared_ptr<ExtentNode> holey_source() {
    auto s = std::make_shared<ExtentNode>(4 * MiB);
    s->set(0, 1 * MiB, ExtentNode::Data);
    s->set(2 * MiB, 64 * KiB, ExtentNode::Data);
    s->set(2 * MiB + 64 * KiB, 2 * MiB - 64 * KiB, ExtentNode::Zero);
    return s;
}

}  // namespace

TEST_CASE("data and holes to a zero-init target: only the data is written") {
    auto src = holey_source();
    RecordNode dst(4 * MiB);
    auto o = options({src.get()}, &dst);
    o.target_is_zero = true;
    CopyStats st = copy_ok(o);
    CHECK_LOG(dst, W(0, 1 * MiB), W(2 * MiB, 64 * KiB), F());
    CHECK(st.data_written == 1 * MiB + 64 * KiB);
    CHECK(st.skipped == 3 * MiB - 64 * KiB);
    CHECK(dst.data() == content(*src));
}

TEST_CASE("data and holes to a target that is not zero: holes become write_zeroes with unmap") {
    auto src = holey_source();
    RecordNode dst(4 * MiB);
    blktest::fill_pattern(dst.data(), 99);  // old content that must go
    CopyStats st = copy_ok(options({src.get()}, &dst));
    CHECK_LOG(dst, W(0, 1 * MiB), Z(1 * MiB, 1 * MiB), W(2 * MiB, 64 * KiB), Z(2 * MiB + 64 * KiB, 2 * MiB - 64 * KiB), F());
    CHECK(st.zeroed == 3 * MiB - 64 * KiB);
    CHECK(dst.data() == content(*src));
}

TEST_CASE("-S 0 writes everything as data, holes as buffers of zeroes") {
    auto src = holey_source();
    RecordNode dst(4 * MiB);
    blktest::fill_pattern(dst.data(), 5);
    auto o = options({src.get()}, &dst);
    o.min_sparse = 0;
    o.target_is_zero = true;  // even so: -S 0 fully allocates the target
    CopyStats st = copy_ok(o);
    CHECK_LOG(dst, W(0, 1 * MiB), W(1 * MiB, 1 * MiB), W(2 * MiB, 64 * KiB), W(2 * MiB + 64 * KiB, 2 * MiB - 64 * KiB), F());
    CHECK(st.data_written == 4 * MiB);
    CHECK(dst.data() == content(*src));
}

TEST_CASE("zero runs inside a data extent are found; -S decides how long they must be") {
    auto src = std::make_shared<ExtentNode>(1 * MiB);
    src->set(0, 1 * MiB, ExtentNode::Data);
    auto& d = src->data();
    std::memset(d.data() + 100 * KiB, 0, 4 * KiB);   // one 4k cell
    std::memset(d.data() + 512 * KiB, 0, 32 * KiB);  // half a 64k cell
    std::memset(d.data() + 768 * KiB, 0, 128 * KiB); // two 64k cells

    RecordNode a(1 * MiB);
    auto o = options({src.get()}, &a);
    o.target_is_zero = true;
    copy_ok(o);  // -S 4k (the default)
    CHECK_LOG(a, W(0, 100 * KiB), W(104 * KiB, 408 * KiB), W(544 * KiB, 224 * KiB), W(896 * KiB, 128 * KiB), F());
    CHECK(a.data() == content(*src));

    RecordNode b(1 * MiB);
    o.target = &b;
    o.min_sparse = 64 * KiB;
    copy_ok(o);
    CHECK_LOG(b, W(0, 768 * KiB), W(896 * KiB, 128 * KiB), F());
    CHECK(b.data() == content(*src));

    // On a target that is not zero the same runs are written as zeroes.
    RecordNode c(1 * MiB);
    blktest::fill_pattern(c.data(), 3);
    o.target = &c;
    o.target_is_zero = false;
    copy_ok(o);
    CHECK_LOG(c, W(0, 768 * KiB), Z(768 * KiB, 128 * KiB), W(896 * KiB, 128 * KiB), F());
    CHECK(c.data() == content(*src));
}

TEST_CASE("zero detection works in whole clusters of the target") {
    auto src = std::make_shared<ExtentNode>(512 * KiB);
    src->set(0, 512 * KiB, ExtentNode::Data);
    std::memset(src->data().data() + 4 * KiB, 0, 60 * KiB);    // most of cluster 0
    std::memset(src->data().data() + 128 * KiB, 0, 64 * KiB);  // all of cluster 2
    RecordNode dst(512 * KiB, 64 * KiB, true);
    auto o = options({src.get()}, &dst);
    o.target_is_zero = true;
    copy_ok(o);
    CHECK_LOG(dst, W(0, 128 * KiB), W(192 * KiB, 320 * KiB), F());
    CHECK(dst.data() == content(*src));
}

TEST_CASE("compression: whole clusters, zero clusters skipped, the partial last cluster") {
    const uint64_t cs = 64 * KiB;
    auto src = std::make_shared<ExtentNode>(5 * cs + 8 * KiB);
    src->set(0, cs, ExtentNode::Data);                    // 0: data
    src->set(cs, cs, ExtentNode::Zero);                   // 1: zero
    src->set(2 * cs, 4 * KiB, ExtentNode::Data);          // 2: 4k data, then zero: read whole
    src->set(2 * cs + 4 * KiB, cs - 4 * KiB, ExtentNode::Zero);
    src->set(3 * cs, cs, ExtentNode::Data);               // 3: data that is all zero
    std::memset(src->data().data() + 3 * cs, 0, cs);
    src->set(4 * cs, cs, ExtentNode::Data);               // 4: does not compress
    src->data()[4 * cs] = std::byte{0xFF};
    src->set(5 * cs, 8 * KiB, ExtentNode::Data);          // 5: 8k at the end

    RecordNode dst(src->size(), cs, true);
    auto o = options({src.get()}, &dst);
    o.compress = true;
    o.target_is_zero = true;
    CopyStats st = copy_ok(o);
    CHECK_LOG(dst, C(0, cs), C(2 * cs, cs), C(4 * cs, cs, false), C(5 * cs, 8 * KiB), F());
    CHECK(st.data_written == 3 * cs + 8 * KiB);
    CHECK(dst.data() == content(*src));

    RecordNode dst2(src->size(), cs, false);
    blktest::fill_pattern(dst2.data(), 4);
    o.target = &dst2;
    o.target_is_zero = false;
    copy_ok(o);
    CHECK_LOG(dst2, C(0, cs), Z(cs, cs), C(2 * cs, cs), Z(3 * cs, cs), C(4 * cs, cs, false), C(5 * cs, 8 * KiB), F());
    CHECK(dst2.data() == content(*src));

    // -S 0 with -c: every cluster is compressed, zeroes too.
    RecordNode dst3(src->size(), cs, true);
    o.target = &dst3;
    o.min_sparse = 0;
    copy_ok(o);
    CHECK_LOG(dst3, C(0, cs), C(cs, cs), C(2 * cs, cs), C(3 * cs, cs), C(4 * cs, cs, false), C(5 * cs, 8 * KiB), F());
    CHECK(dst3.data() == content(*src));
}

TEST_CASE("compression batches clusters into requests and keeps guest order with many workers") {
    const uint64_t cs = 64 * KiB;
    auto src = std::make_shared<ExtentNode>(8 * MiB);
    src->set(0, 8 * MiB, ExtentNode::Data);
    src->set(3 * MiB, 1 * MiB, ExtentNode::Zero);
    src->max_delay_us = 300;
    RecordNode dst(8 * MiB, cs, true);
    auto o = options({src.get()}, &dst);
    o.compress = true;
    o.target_is_zero = true;
    o.threads = 4;
    o.requests = 8;
    copy_ok(o);
    auto log = dst.log();
    REQUIRE(log.size() == 7 * MiB / cs + 1);
    uint64_t next = 0;
    for (size_t i = 0; i + 1 < log.size(); ++i) {
        if (next == 3 * MiB) next = 4 * MiB;
        INFO(i << ": " << to_string(log[i]));
        CHECK(log[i] == C(next, cs));
        next += cs;
    }
    CHECK(dst.data() == content(*src));
}

TEST_CASE("compression needs a target that can and a cluster size") {
    auto src = std::make_shared<ExtentNode>(1 * MiB, ExtentNode::Data);
    RecordNode dst(1 * MiB);
    auto o = options({src.get()}, &dst);
    o.compress = true;
    auto r = copy_image(o);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "Compression not supported for this file format");
}

namespace {

// A two-layer source: base has data everywhere; top as given.
struct Chain {
    std::shared_ptr<ExtentNode> base, top;
};

Chain chain_source() {
    Chain c;
    c.base = std::make_shared<ExtentNode>(4 * MiB, ExtentNode::Data);
    c.base->set(0, 4 * MiB, ExtentNode::Data, 77);
    c.top = std::make_shared<ExtentNode>(4 * MiB);
    c.top->set(0, 64 * KiB, ExtentNode::Data);
    c.top->set(1 * MiB, 64 * KiB, ExtentNode::Zero);
    c.top->set(3 * MiB, 1 * MiB, ExtentNode::Zero);
    c.top->set(3 * MiB + 512 * KiB, 64 * KiB, ExtentNode::Data);
    REQUIRE(c.top->attach_child("backing", c.base, kRoleCow));
    return c;
}

}  // namespace

TEST_CASE("-B: only the top layer is copied; zeroes are written below the backing file's end only") {
    Chain c = chain_source();
    RecordNode dst(4 * MiB);
    auto o = options({c.top.get()}, &dst);
    o.target_has_backing = true;
    o.target_backing_size = 2 * MiB;
    copy_ok(o);
    CHECK_LOG(dst, W(0, 64 * KiB), Z(1 * MiB, 64 * KiB), W(3 * MiB + 512 * KiB, 64 * KiB), F());
    CHECK(c.base->reads == 0);  // the backing chain is not read

    // The backing file's size unknown: every zero range is written.
    RecordNode dst2(4 * MiB);
    o.target = &dst2;
    o.target_backing_size = UINT64_MAX;
    copy_ok(o);
    CHECK_LOG(dst2, W(0, 64 * KiB), Z(1 * MiB, 64 * KiB), Z(3 * MiB, 512 * KiB), W(3 * MiB + 512 * KiB, 64 * KiB),
              Z(3 * MiB + 576 * KiB, 448 * KiB), F());

    // A zero range across the backing file's end is split there.
    RecordNode dst3(4 * MiB);
    o.target = &dst3;
    o.target_backing_size = 3 * MiB + 256 * KiB;
    copy_ok(o);
    CHECK_LOG(dst3, W(0, 64 * KiB), Z(1 * MiB, 64 * KiB), Z(3 * MiB, 256 * KiB), W(3 * MiB + 512 * KiB, 64 * KiB), F());

    // Without -B the whole chain is copied.
    RecordNode dst4(4 * MiB);
    auto o4 = options({c.top.get()}, &dst4);
    o4.target_is_zero = true;
    copy_ok(o4);
    CHECK_LOG(dst4, W(0, 1 * MiB), W(1 * MiB + 64 * KiB, 960 * KiB), W(2 * MiB, 1 * MiB), W(3 * MiB + 512 * KiB, 64 * KiB), F());
    CHECK(dst4.data() == content(*c.top));
}

TEST_CASE("-B excludes a target known to be zero") {
    Chain c = chain_source();
    RecordNode dst(4 * MiB);
    auto o = options({c.top.get()}, &dst);
    o.target_has_backing = true;
    o.target_is_zero = true;
    auto r = copy_image(o);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "Cannot use --target-is-zero when the destination image has a backing file");
    CHECK(dst.log().empty());
}

TEST_CASE("-B with compression: a cluster the top layer only partly allocates is read whole") {
    Chain c = chain_source();
    c.top->set(2 * MiB, 4 * KiB, ExtentNode::Data, 5);
    const uint64_t cs = 64 * KiB;
    RecordNode dst(4 * MiB, cs);
    auto o = options({c.top.get()}, &dst);
    o.compress = true;
    o.target_has_backing = true;
    o.target_backing_size = 4 * MiB;
    copy_ok(o);
    CHECK_LOG(dst, C(0, cs), Z(1 * MiB, cs), C(2 * MiB, cs), Z(3 * MiB, 512 * KiB), C(3 * MiB + 512 * KiB, cs),
              Z(3 * MiB + 576 * KiB, 448 * KiB), F());
    // The widened cluster holds the top's 4k and the backing's bytes after it.
    std::vector<std::byte> want(cs);
    REQUIRE(c.top->read(2 * MiB, want));
    CHECK(std::equal(want.begin(), want.end(), dst.data().begin() + 2 * MiB));
}

TEST_CASE("several sources are concatenated, whatever their sizes") {
    std::vector<std::shared_ptr<ExtentNode>> srcs;
    for (uint64_t size : {3 * 512 * KiB + 512, 1 * MiB + 1024, 700 * KiB, uint64_t{512}}) {
        auto s = std::make_shared<ExtentNode>(size);
        s->set(0, size, ExtentNode::Data, size);
        srcs.push_back(s);
    }
    srcs[1]->set(0, 64 * KiB, ExtentNode::Zero);  // a hole right where source 1 starts
    uint64_t total = 0;
    std::vector<Node*> nodes;
    std::vector<std::byte> want;
    for (auto& s : srcs) {
        nodes.push_back(s.get());
        total += s->size();
        auto c = content(*s);
        want.insert(want.end(), c.begin(), c.end());
    }
    RecordNode dst(total);
    auto o = options(nodes, &dst);
    o.target_is_zero = true;
    o.request_size = 1 * MiB;
    CopyStats st = copy_ok(o);
    CHECK(st.total == total);
    const uint64_t s1 = srcs[0]->size();
    // Requests end at multiples of the request size in the target, across source boundaries.
    CHECK_LOG(dst, W(0, 1 * MiB), W(1 * MiB, s1 - 1 * MiB), W(s1 + 64 * KiB, 2 * MiB - s1 - 64 * KiB),
              W(2 * MiB, 1 * MiB), W(3 * MiB, total - 3 * MiB), F());
    CHECK(dst.data() == want);
}

TEST_CASE("in order: writes reach the target in guest order for 1..16 requests and several threads") {
    auto src = std::make_shared<ExtentNode>(6 * MiB + 4 * KiB);
    src->set(0, src->size(), ExtentNode::Data);
    src->set(1 * MiB, 256 * KiB, ExtentNode::Zero);
    src->set(4 * MiB, 8 * KiB, ExtentNode::Unalloc);
    src->max_delay_us = 400;
    for (unsigned req : {1u, 2u, 3u, 8u, 16u}) {
        for (unsigned threads : {1u, 2u, 4u}) {
            CAPTURE(req);
            CAPTURE(threads);
            RecordNode dst(src->size());
            blktest::fill_pattern(dst.data(), 1);
            auto o = options({src.get()}, &dst);
            o.requests = req;
            o.threads = threads;
            o.request_size = 256 * KiB;
            copy_ok(o);
            auto log = dst.log();
            REQUIRE(!log.empty());
            CHECK(log.back() == F());
            uint64_t pos = 0;
            for (size_t i = 0; i + 1 < log.size(); ++i) {
                CHECK(log[i].off == pos);  // contiguous and increasing
                pos = log[i].off + log[i].len;
            }
            CHECK(pos == src->size());
            CHECK(dst.data() == content(*src));
        }
    }
}

TEST_CASE("-W: every byte arrives, in any order") {
    auto src = std::make_shared<ExtentNode>(5 * MiB);
    src->set(0, 5 * MiB, ExtentNode::Data);
    src->set(2 * MiB, 512 * KiB, ExtentNode::Zero);
    src->max_delay_us = 500;
    RecordNode dst(5 * MiB);
    blktest::fill_pattern(dst.data(), 1);
    auto o = options({src.get()}, &dst);
    o.in_order = false;
    o.threads = 4;
    o.requests = 8;
    o.request_size = 128 * KiB;
    copy_ok(o);
    auto log = dst.log();
    std::sort(log.begin(), log.end() - 1, [](const Rec& a, const Rec& b) { return a.off < b.off; });
    uint64_t pos = 0;
    for (size_t i = 0; i + 1 < log.size(); ++i) {
        CHECK(log[i].off == pos);
        pos += log[i].len;
    }
    CHECK(pos == 5 * MiB);
    CHECK(dst.data() == content(*src));
}

TEST_CASE("salvage: unreadable sectors become zeroes, each reported as qemu does") {
    auto src = std::make_shared<ExtentNode>(1 * MiB, ExtentNode::Data);
    src->set(0, 1 * MiB, ExtentNode::Data);
    src->bad_bytes = {4096, 4097, 600 * KiB + 10};
    RecordNode dst(1 * MiB);
    auto o = options({src.get()}, &dst);
    o.salvage = true;
    o.target_is_zero = true;
    std::vector<std::string> warnings;
    o.warn = [&](const std::string& w) { warnings.push_back(w); };
    copy_ok(o);
    CHECK(warnings == std::vector<std::string>{"error while reading offset 4096: Input/output error",
                                               "error while reading offset 614400: Input/output error"});
    auto want = src->data();
    std::memset(want.data() + 4096, 0, 512);
    std::memset(want.data() + 614400, 0, 512);
    CHECK(dst.data() == want);
    // The zeroed sectors are holes now (a 4k cell holding one bad sector is still data).
    CHECK_LOG(dst, W(0, 1 * MiB), F());
}

TEST_CASE("salvage: block status errors narrow down to the sector, which is then read") {
    auto src = std::make_shared<ExtentNode>(64 * KiB, ExtentNode::Data);
    src->set(0, 64 * KiB, ExtentNode::Data);
    src->bad_status = {0};
    RecordNode dst(64 * KiB);
    auto o = options({src.get()}, &dst);
    std::vector<std::string> warnings;
    o.warn = [&](const std::string& w) { warnings.push_back(w); };
    auto r = copy_image(o);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "error while reading block status at offset 0: Input/output error (extent: block status: Input/output error)");
    o.salvage = true;
    copy_ok(o);
    CHECK(warnings == std::vector<std::string>{"error while reading block status at offset 0: Input/output error"});
    CHECK(dst.data() == src->data());
}

TEST_CASE("a read error names the failing request's offset and stops the copy") {
    auto src = std::make_shared<ExtentNode>(8 * MiB, ExtentNode::Data);
    src->set(0, 8 * MiB, ExtentNode::Data);
    src->bad_bytes = {5 * MiB + 12345};
    for (unsigned threads : {1u, 3u}) {
        RecordNode dst(8 * MiB);
        auto o = options({src.get()}, &dst);
        o.threads = threads;
        auto r = copy_image(o);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == EIO);
        CHECK(r.error().message == "error while reading at byte 4194304: Input/output error (extent: read: Input/output error)");
        for (const Rec& w : dst.log()) {
            CHECK(w.kind != Rec::Flush);  // a failed copy is not flushed as if complete
            CHECK(w.off < 4 * MiB);       // in order: nothing past the failed request
        }
    }
}

TEST_CASE("a write error names the failing request's offset") {
    auto src = std::make_shared<ExtentNode>(8 * MiB, ExtentNode::Data);
    src->set(0, 8 * MiB, ExtentNode::Data);
    for (bool in_order : {true, false}) {
        RecordNode dst(8 * MiB);
        dst.bad_bytes = {6 * MiB + 1};
        auto o = options({src.get()}, &dst);
        o.threads = 2;
        o.in_order = in_order;
        auto r = copy_image(o);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == ENOSPC);
        CHECK(r.error().message == "error while writing at byte 6291456: No space left on device");
    }
    RecordNode dst(8 * MiB);
    dst.bad_bytes = {3 * MiB};
    auto o = options({src.get()}, &dst);
    o.target_is_zero = false;
    src->set(2 * MiB, 2 * MiB, ExtentNode::Zero);
    auto r = copy_image(o);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "error while writing at byte 2097152: No space left on device");
}

TEST_CASE("cancel stops the copy between requests with ECANCELED") {
    auto src = std::make_shared<ExtentNode>(16 * MiB, ExtentNode::Data);
    src->set(0, 16 * MiB, ExtentNode::Data);
    std::atomic<bool> cancel{false};
    src->on_read = [&] {
        if (src->reads >= 3) cancel = true;
    };
    RecordNode dst(16 * MiB);
    auto o = options({src.get()}, &dst);
    o.threads = 2;
    o.cancel = &cancel;
    auto r = copy_image(o);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ECANCELED);
    CHECK(r.error().message == "interrupted");
    CHECK(src->reads < 8);
    CHECK(dst.log().size() < 8);
}

TEST_CASE("progress counts what is read, serialized, ending at the total") {
    auto src = holey_source();
    RecordNode dst(4 * MiB);
    auto o = options({src.get()}, &dst);
    o.threads = 3;
    o.request_size = 256 * KiB;
    std::vector<std::pair<uint64_t, uint64_t>> calls;
    std::mutex mu;
    o.progress = [&](uint64_t done, uint64_t total) {
        std::unique_lock lk(mu, std::try_to_lock);
        CHECK(lk.owns_lock());  // never two calls at once
        calls.emplace_back(done, total);
    };
    copy_ok(o);
    REQUIRE(calls.size() >= 3);
    CHECK(calls.front() == std::pair<uint64_t, uint64_t>{0, 1 * MiB + 64 * KiB});
    CHECK(calls.back() == std::pair<uint64_t, uint64_t>{1 * MiB + 64 * KiB, 1 * MiB + 64 * KiB});
    for (size_t i = 1; i < calls.size(); ++i) CHECK(calls[i].first >= calls[i - 1].first);
}

TEST_CASE("the rate limit slows the writes down") {
    auto src = std::make_shared<ExtentNode>(1 * MiB, ExtentNode::Data);
    src->set(0, 1 * MiB, ExtentNode::Data);
    RecordNode dst(1 * MiB);
    auto o = options({src.get()}, &dst);
    o.request_size = 128 * KiB;
    o.rate_limit = 4 * MiB;  // 1 MiB: 7 waits of 1/32 s after the first request
    auto t0 = std::chrono::steady_clock::now();
    copy_ok(o);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(secs > 0.2);
    CHECK(dst.data() == src->data());
}

TEST_CASE("random data survives any request size, alignment, source split and thread count") {
    std::minstd_rand rng(42);
    for (int iter = 0; iter < 60; ++iter) {
        std::vector<std::shared_ptr<ExtentNode>> srcs;
        std::vector<Node*> nodes;
        std::vector<std::byte> want;
        const int nsrc = rng() % 3 + 1;
        for (int i = 0; i < nsrc; ++i) {
            const uint64_t size = (rng() % (2 * MiB / 512) + 1) * 512;
            auto src = std::make_shared<ExtentNode>(size);
            for (uint64_t off = 0; off < size;) {
                uint64_t len = std::min<uint64_t>(size - off, (rng() % 256 + 1) * 512);
                auto k = ExtentNode::Kind(rng() % 3);
                src->set(off, len, k, rng());
                if (k == ExtentNode::Data && rng() % 4 == 0) {
                    uint64_t z = std::min<uint64_t>(len, (rng() % 32 + 1) * 512);
                    std::memset(src->data().data() + off, 0, z);  // zeroes inside data
                }
                off += len;
            }
            auto c = content(*src);
            want.insert(want.end(), c.begin(), c.end());
            nodes.push_back(src.get());
            srcs.push_back(std::move(src));
        }
        const bool compress = rng() % 4 == 0;
        RecordNode dst(want.size(), compress ? 4096u << (rng() % 4) : 0, true);
        const bool zero_target = rng() % 2;
        if (!zero_target) blktest::fill_pattern(dst.data(), rng());
        auto o = options(nodes, &dst);
        o.threads = rng() % 4 + 1;
        o.requests = rng() % 8 + 1;
        o.request_size = 4096u << (rng() % 8);
        o.min_sparse = (rng() % 3) * 4096;
        o.in_order = rng() % 2;
        o.compress = compress;
        o.target_is_zero = zero_target;
        CAPTURE(iter);
        copy_ok(o);
        CHECK(dst.data() == want);
    }
}

namespace {

Graph open_rw(const std::filesystem::path& p, bool rw) {
    auto g = open_image(ImageSpec{p.string(), "raw", false}, OpenFlags{.read_only = !rw});
    REQUIRE(g);
    return *g;
}

}  // namespace

TEST_CASE("raw files: a sparse copy, and -C offloads to copy_file_range") {
    TempDir t;
    std::vector<std::byte> b(3 * MiB + 1536);
    blktest::fill_pattern(b, 11);
    std::memset(b.data() + 1 * MiB, 0, 1 * MiB);
    write_file(t.p / "src.raw", b);
    for (bool offload : {false, true}) {
        CAPTURE(offload);
        auto dst_path = t.p / (offload ? "c.raw" : "d.raw");
        REQUIRE(create_image(CreateRequest{.format = "raw", .filename = dst_path.string(), .options = Json{{"size", std::to_string(b.size())}}}));
        Graph src = open_rw(t.p / "src.raw", false);
        Graph dst = open_rw(dst_path, true);
        auto o = options({src.root.get()}, dst.root.get());
        o.target_is_zero = dst.root->caps().zero_init;
        o.copy_range = offload;
        o.threads = 2;
        CopyStats st = copy_ok(o);
        CHECK(read_file(dst_path) == b);
        if (offload) {
            CHECK(st.offloaded == st.data_written);
            CHECK(st.offloaded >= 2 * MiB);
            CHECK(st.buffer_bytes == 0);
        } else {
            CHECK(st.offloaded == 0);
            CHECK(st.skipped == 1 * MiB);
            CHECK(st.buffer_bytes > 0);  // read into the slots' buffers
        }
    }
}

namespace {

// A data source whose block status says where its bytes lie on a host node: each piece
// of `layout` (guest start, host offset; UINT64_MAX: not said) runs to the next piece.
class HostedNode : public ExtentNode {
public:
    explicit HostedNode(uint64_t size) : ExtentNode(size) { set(0, size, Data); }
    std::vector<std::pair<uint64_t, uint64_t>> layout;

protected:
    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override {
        BLK_TRY_ASSIGN(BlockStatus st, ExtentNode::do_block_status(off, bytes));
        for (size_t i = 0; i < layout.size(); ++i) {
            const uint64_t start = layout[i].first;
            const uint64_t end = i + 1 < layout.size() ? layout[i + 1].first : size();
            if (off < start || off >= end) continue;
            st.bytes = std::min(st.bytes, end - off);
            if (layout[i].second != UINT64_MAX) {
                st.flags |= kStatusOffsetValid;
                st.file = this;
                st.offset = layout[i].second + (off - start);
            }
        }
        return st;
    }
};

}  // namespace

TEST_CASE("a data request ends where the source's bytes jump on the host, and only there") {
    HostedNode src(4 * MiB);
    // 0: host 0; 1M: host 1M (contiguous, only a new block-status run); 1.5M: host 8M
    // (a jump); 3M: nowhere said.
    src.layout = {{0, 0}, {1 * MiB, 1 * MiB}, {1 * MiB + 512 * KiB, 8 * MiB}, {3 * MiB, UINT64_MAX}};
    std::memset(src.data().data() + 512 * KiB, 0, 256 * KiB);  // a zero run inside the data
    RecordNode dst(4 * MiB);
    blktest::fill_pattern(dst.data(), 7);
    auto o = options({&src}, &dst);
    copy_ok(o);
    // The first 2 MiB request is cut at the jump (and not at 1M); 3M cuts the second.
    CHECK_LOG(dst, W(0, 512 * KiB), Z(512 * KiB, 256 * KiB), W(768 * KiB, 768 * KiB), W(1 * MiB + 512 * KiB, 512 * KiB),
              W(2 * MiB, 1 * MiB), W(3 * MiB, 1 * MiB), F());
    CHECK(dst.data() == content(src));
}

TEST_CASE("nothing to copy: the target is flushed and progress ends at 0 of 0") {
    auto src = std::make_shared<ExtentNode>(0);
    RecordNode dst(4096);
    auto o = options({src.get()}, &dst);
    std::vector<std::pair<uint64_t, uint64_t>> calls;
    o.progress = [&](uint64_t d, uint64_t t) { calls.emplace_back(d, t); };
    CopyStats st = copy_ok(o);
    CHECK(st.total == 0);
    CHECK_LOG(dst, F());
    REQUIRE_FALSE(calls.empty());
    CHECK(calls.back() == std::pair<uint64_t, uint64_t>{0, 0});
}

TEST_CASE("a target smaller than the sources is refused before anything is written") {
    auto src = std::make_shared<ExtentNode>(64 * KiB, ExtentNode::Data);
    RecordNode dst(32 * KiB);
    auto r = copy_image(options({src.get()}, &dst));
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "output file is smaller than input file");
    CHECK(dst.log().empty());
}

TEST_CASE("with -c every thread compresses, even beyond the requests, within the memory bound") {
    const uint64_t cs = 64 * KiB;
    auto src = std::make_shared<ExtentNode>(4 * MiB);
    src->set(0, 4 * MiB, ExtentNode::Data);
    RecordNode dst(4 * MiB, cs, true);
    dst.compress_delay_us = 2000;
    auto o = options({src.get()}, &dst);
    o.compress = true;
    o.target_is_zero = true;
    o.threads = 6;
    o.requests = 2;
    o.request_size = 256 * KiB;  // 16 requests of 4 clusters
    CopyStats st = copy_ok(o);
    CHECK(dst.compress_calls == 4 * MiB / cs);
    CHECK(dst.max_in_compress > 2);  // more workers compressing than requests
    CHECK(st.buffer_bytes <= kCopyMaxBufferBytes / 2);
    auto log = dst.log();
    REQUIRE(log.size() == 4 * MiB / cs + 1);
    for (size_t i = 0; i + 1 < log.size(); ++i) CHECK(log[i] == C(i * cs, cs));
    CHECK(dst.data() == src->data());
}

TEST_CASE("with -c the default requests hold 128 KiB of clusters, keeping peak memory below qemu-img's") {
    const uint64_t cs = 64 * KiB;
    auto src = std::make_shared<ExtentNode>(8 * MiB);
    src->set(0, 8 * MiB, ExtentNode::Data);
    RecordNode dst(8 * MiB, cs, true);
    dst.compress_delay_us = 200;
    auto o = options({src.get()}, &dst);
    o.compress = true;
    o.target_is_zero = true;
    o.threads = 3;
    o.requests = 8;  // convert's default -m, with the default 2 MiB request size
    CopyStats st = copy_ok(o);
    // Every worker holds a slot at once: 512 KiB batches took 1.5 MiB or more here.
    CHECK(st.buffer_bytes > 0);
    CHECK(st.buffer_bytes <= 8 * 128 * KiB);
    CHECK(dst.compress_calls == 8 * MiB / cs);
    CHECK(dst.data() == src->data());
}

TEST_CASE("2 MiB clusters with -c and -m 16 stay within the memory bound") {
    const uint64_t cs = 2 * MiB;
    auto src = std::make_shared<ExtentNode>(40 * MiB);
    src->set(0, 40 * MiB, ExtentNode::Data);
    RecordNode dst(40 * MiB, cs, true);
    auto o = options({src.get()}, &dst);
    o.compress = true;
    o.target_is_zero = true;
    o.threads = 16;
    o.requests = 16;
    CopyStats st = copy_ok(o);
    // Each slot holds a 2 MiB cluster and its compressed copy: at most 8 slots.
    CHECK(st.buffer_bytes <= kCopyMaxBufferBytes / 2);
    CHECK(dst.data() == src->data());
}

// --- Real qcow2 targets (the qcow2 write path and create) ---

namespace {

// A raw file of `size` bytes (> 3 MiB): compressible text in [0, 1M), random bytes in
// [1M, 2M), a hole in [2M, 3M), written zeroes after that but for the last sector.
std::vector<std::byte> make_raw_source(const std::filesystem::path& p, uint64_t size) {
    std::vector<std::byte> b(size);
    const char* text = "the quick brown fox jumps over the lazy dog, block images and clusters ";
    for (uint64_t i = 0; i < 1 * MiB; ++i) b[i] = std::byte(text[i % std::strlen(text)]);
    std::mt19937_64 rng(9);
    for (uint64_t i = 1 * MiB; i < 2 * MiB; i += 8) {
        uint64_t r = rng();
        std::memcpy(b.data() + i, &r, 8);
    }
    blktest::fill_pattern(std::span(b).subspan(size - 512, 512), 4);
    Fd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644));
    REQUIRE(fd.valid());
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
    REQUIRE(::pwrite(fd.get(), b.data(), 2 * MiB, 0) == static_cast<ssize_t>(2 * MiB));
    REQUIRE(::pwrite(fd.get(), b.data() + 3 * MiB, size - 3 * MiB, static_cast<off_t>(3 * MiB)) ==
            static_cast<ssize_t>(size - 3 * MiB));
    return b;
}

Graph new_qcow2(const std::filesystem::path& p, uint64_t size, Json opts = Json::object()) {
    opts["size"] = std::to_string(size);
    auto st = create_image(CreateRequest{.format = "qcow2", .filename = p.string(), .options = opts});
    if (!st) FAIL(st.error().message);
    auto g = open_image(ImageSpec{p.string(), "qcow2", false}, OpenFlags{.read_only = false});
    if (!g) FAIL(g.error().message);
    return *g;
}

// Every allocated range of a node's own layer: (guest offset, length, flags, host offset).
struct Extent {
    uint64_t off, len;
    unsigned flags;
    uint64_t host;
};
std::vector<Extent> layer_map(Node& n) {
    std::vector<Extent> out;
    for (uint64_t off = 0; off < n.size();) {
        auto st = n.block_status(off, n.size() - off);
        REQUIRE(st);
        out.push_back({off, st->bytes, st->flags, st->offset});
        off += st->bytes;
    }
    return out;
}

}  // namespace

TEST_CASE("qcow2 target: data lands in guest order, holes and zeroes stay unallocated") {
    TempDir t;
    const uint64_t size = 8 * MiB;
    auto want = make_raw_source(t.p / "src.raw", size);
    // The same bytes from a source whose reads take random time, so that workers finish
    // out of order: only the write order can keep the clusters in guest order.
    auto src = std::make_shared<ExtentNode>(size);
    src->set(0, 2 * MiB, ExtentNode::Data);
    src->set(3 * MiB, size - 3 * MiB, ExtentNode::Data);
    std::copy(want.begin(), want.end(), src->data().begin());
    src->max_delay_us = 3000;
    for (bool in_order : {true, false}) {
        CAPTURE(in_order);
        auto path = t.p / (in_order ? "o.qcow2" : "w.qcow2");
        {
            Graph dst = new_qcow2(path, size);
            auto o = options({src.get()}, dst.root.get());
            o.target_is_zero = dst.root->caps().zero_init;
            CHECK(o.target_is_zero);
            o.threads = 4;
            o.request_size = 128 * KiB;
            o.in_order = in_order;
            CopyStats st = copy_ok(o);
            CHECK(st.data_written == 2 * MiB + 64 * KiB);  // and the last sector's cluster
        }
        auto g = open_image(ImageSpec{path.string(), "qcow2", false}, OpenFlags{});
        REQUIRE(g);
        CHECK(content(*g->root) == want);
        uint64_t last_host = 0;
        uint64_t data = 0;
        for (const Extent& e : layer_map(*skip_filters(g->root.get()))) {
            if (!(e.flags & kStatusData)) continue;
            data += e.len;
            if (in_order) {
                CHECK(e.host > last_host);  // guest order is host order: not fragmented
                last_host = e.host + e.len - 1;
            }
        }
        CHECK(data == 2 * MiB + 64 * KiB);
    }
}

TEST_CASE("qcow2 target with -c: text compressed, random stored plain, zero clusters left out") {
    TempDir t;
    const uint64_t size = 4 * MiB + 12 * KiB;  // a partial last cluster
    auto want = make_raw_source(t.p / "src.raw", size);
    auto path = t.p / "c.qcow2";
    for (Json opts : {Json::object(), Json{{"compression_type", "zstd"}}}) {
        CAPTURE(opts.dump());
        {
            Graph src = open_rw(t.p / "src.raw", false);
            Graph dst = new_qcow2(path, size, opts);
            auto o = options({src.root.get()}, dst.root.get());
            o.compress = true;
            o.target_is_zero = true;
            o.threads = 2;
            copy_ok(o);
        }
        auto g = open_image(ImageSpec{path.string(), "qcow2", false}, OpenFlags{});
        REQUIRE(g);
        CHECK(content(*g->root) == want);
        uint64_t compressed = 0, plain = 0;
        for (const Extent& e : layer_map(*skip_filters(g->root.get()))) {
            if (!(e.flags & kStatusData)) continue;
            if (e.flags & kStatusCompressed) compressed += e.len;
            else plain += e.len;
            CHECK(e.off + e.len <= size);
        }
        CHECK(compressed == 1 * MiB + 12 * KiB);  // the text, and the last (partial) cluster
        CHECK(plain == 1 * MiB);                  // random bytes do not shrink
    }
}

TEST_CASE("qcow2 target with -B: only the source's top layer is written") {
    TempDir t;
    const uint64_t size = 4 * MiB;
    // base.raw: pattern everywhere; top.qcow2 over it: a few writes and a zeroed range.
    std::vector<std::byte> base(size);
    blktest::fill_pattern(base, 21);
    write_file(t.p / "base.raw", base);
    auto create_over_base = [&](const std::filesystem::path& p) {
        Json o{{"size", std::to_string(size)}, {"backing_file", (t.p / "base.raw").string()}, {"backing_fmt", "raw"}};
        auto st = create_image(CreateRequest{.format = "qcow2", .filename = p.string(), .options = o});
        if (!st) FAIL(st.error().message);
        auto g = open_image(ImageSpec{p.string(), "qcow2", false}, OpenFlags{.read_only = false});
        if (!g) FAIL(g.error().message);
        return *g;
    };
    {
        Graph top = create_over_base(t.p / "top.qcow2");
        std::vector<std::byte> d(192 * KiB);
        blktest::fill_pattern(d, 5);
        REQUIRE(top.root->write(1 * MiB, d));
        REQUIRE(top.root->write_zeroes(3 * MiB, 128 * KiB, 0));
        REQUIRE(top.root->flush());
    }
    auto opened = open_image(ImageSpec{(t.p / "top.qcow2").string(), "qcow2", false}, OpenFlags{});
    REQUIRE(opened);
    Graph src = *opened;
    auto want = content(*src.root);
    {
        Graph dst = create_over_base(t.p / "new.qcow2");
        auto o = options({src.root.get()}, dst.root.get());
        o.target_has_backing = true;
        o.target_backing_size = size;
        CopyStats st = copy_ok(o);
        CHECK(st.data_written == 192 * KiB);
        CHECK(st.zeroed == 128 * KiB);
    }
    auto g = open_image(ImageSpec{(t.p / "new.qcow2").string(), "qcow2", false}, OpenFlags{});
    REQUIRE(g);
    CHECK(content(*g->root) == want);
    uint64_t allocated = 0;
    for (const Extent& e : layer_map(*skip_filters(g->root.get())))
        if (e.flags & kStatusAllocated) allocated += e.len;
    CHECK(allocated == 192 * KiB + 128 * KiB);
}
