// Unit tests for lent bytes: file mappings, their SIGBUS guard, and Node::map_range.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "blk/driver.h"
#include "blk/fd.h"
#include "blk/mapped.h"
#include "temp_files.h"

using namespace blk;

namespace {

// One file in its own temporary directory.
struct TempFile {
    blktest::TempDir dir;
    std::filesystem::path path;
    explicit TempFile(const std::vector<std::byte>& bytes) : path(dir.p / "f") { blktest::write_file(path, bytes); }
    Fd open_ro() const { return Fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)); }
};

std::vector<std::byte> pattern(size_t n) {
    std::vector<std::byte> b(n);
    for (size_t i = 0; i < n; ++i) b[i] = std::byte(uint8_t(i * 7 + 1 + i / 4096));
    return b;
}

const long kPage = ::sysconf(_SC_PAGESIZE);

}  // namespace

TEST_CASE("a mapping lends the file's bytes from any offset, and moves like a unique_ptr") {
    auto b = pattern(5 * kPage);
    TempFile f(b);
    Fd fd = f.open_ro();
    auto m = MappedBytes::map(fd.get(), kPage + 123, 3 * kPage);
    REQUIRE(m);
    REQUIRE(m->bytes().size() == size_t(3 * kPage));
    CHECK(std::memcmp(m->bytes().data(), b.data() + kPage + 123, 3 * kPage) == 0);
    CHECK(m->intact());
    MappedBytes moved = std::move(*m);
    CHECK(m->empty());
    CHECK(moved.bytes().size() == size_t(3 * kPage));
    CHECK(moved.bytes()[0] == b[kPage + 123]);
    moved.reset();
    CHECK(moved.empty());
    CHECK(moved.intact());

    auto none = MappedBytes::map(fd.get(), 0, 0);
    REQUIRE(none);
    CHECK(none->empty());
}

TEST_CASE("a page lost to truncation reads as zeroes and marks only its own mapping broken") {
    auto b = pattern(4 * kPage);
    TempFile f(b);
    Fd fd = f.open_ro();
    auto lost = MappedBytes::map(fd.get(), 0, 4 * kPage);
    auto kept = MappedBytes::map(fd.get(), 0, kPage);
    REQUIRE(lost);
    REQUIRE(kept);
    REQUIRE(::truncate(f.path.c_str(), kPage) == 0);
    // Without the guard this read would end the process with SIGBUS.
    const volatile std::byte* p = lost->bytes().data();
    CHECK(p[0] == b[0]);
    CHECK(p[2 * kPage + 5] == std::byte{0});
    CHECK(p[3 * kPage] == std::byte{0});
    CHECK_FALSE(lost->intact());
    CHECK(kept->intact());
    CHECK(kept->bytes()[kPage - 1] == b[kPage - 1]);
}

TEST_CASE("a SIGBUS outside every mapping still ends the process") {
    auto b = pattern(2 * kPage);
    TempFile f(b);
    Fd fd = f.open_ro();
    auto m = MappedBytes::map(fd.get(), 0, kPage);  // installs the handler
    REQUIRE(m);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        void* raw = ::mmap(nullptr, 2 * kPage, PROT_READ, MAP_SHARED, fd.get(), 0);
        if (raw == MAP_FAILED) ::_exit(2);
        if (::ftruncate(::open(f.path.c_str(), O_RDWR), 0) != 0) ::_exit(3);
        volatile char c = static_cast<const char*>(raw)[kPage];
        (void)c;
        ::_exit(0);  // the guard swallowed a fault it does not own
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    // SIGBUS by default; a sanitizer's own handler ends it with SIGABRT or its exit code.
    CHECK_FALSE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    if (WIFSIGNALED(status)) CHECK((WTERMSIG(status) == SIGBUS || WTERMSIG(status) == SIGABRT));
}

TEST_CASE("live mappings are bounded: past the limit map() says EBUSY, and a freed slot is reused") {
    auto b = pattern(kPage);
    TempFile f(b);
    Fd fd = f.open_ro();
    std::vector<MappedBytes> live;
    for (;;) {
        auto m = MappedBytes::map(fd.get(), 0, kPage);
        if (!m) {
            CHECK(m.error().code == EBUSY);
            break;
        }
        live.push_back(std::move(*m));
        REQUIRE(live.size() <= size_t(kMaxLiveMappings));
    }
    CHECK(live.size() == size_t(kMaxLiveMappings));
    live.pop_back();
    auto again = MappedBytes::map(fd.get(), 0, kPage);
    REQUIRE(again);
    CHECK(again->bytes()[0] == b[0]);
}

TEST_CASE("map_range: read-only files lend their real bytes; raw windows shift; others say ENOTSUP") {
    auto b = pattern(3 * kPage + 100);  // a partial last sector
    TempFile f(b);
    {
        // A writable file lends nothing: a mapping could go stale under its own writes.
        auto rw = open_image(ImageSpec{f.path.string(), "raw", false}, OpenFlags{.read_only = false});
        REQUIRE(rw);
        auto r = rw->root->map_range(0, 4096);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == ENOTSUP);
    }
    auto ro = open_image(ImageSpec{f.path.string(), "raw", false}, OpenFlags{.read_only = true});
    REQUIRE(ro);
    Node* raw = ro->root.get();
    auto m = raw->map_range(10, 2 * kPage);
    REQUIRE(m);
    CHECK(std::memcmp(m->bytes().data(), b.data() + 10, 2 * kPage) == 0);
    // The node's last sector runs past the file's end: read() pads it, a mapping cannot.
    auto tail = raw->map_range(raw->size() - 512, 512);
    REQUIRE_FALSE(tail);
    CHECK(tail.error().code == ENOTSUP);
    auto past = raw->map_range(raw->size(), 1);
    REQUIRE_FALSE(past);
    CHECK(past.error().code == EINVAL);

    auto win = open_image(ImageSpec{"driver=raw,offset=4096,size=4096,file.filename=" + f.path.string(), "", true},
                          OpenFlags{.read_only = true});
    REQUIRE(win);
    auto w = win->root->map_range(100, 200);
    REQUIRE(w);
    CHECK(std::memcmp(w->bytes().data(), b.data() + 4096 + 100, 200) == 0);

}

namespace {

Graph open_qcow2(const std::string& path, bool rw) {
    auto g = open_image(ImageSpec{path, "qcow2", false}, OpenFlags{.read_only = !rw});
    REQUIRE_MESSAGE(g, (g ? "" : g.error().message));
    return *g;
}

}  // namespace

TEST_CASE("qcow2 lends one run of data clusters from its file, and what it leaves to a backing file that lends") {
    constexpr uint64_t cs = 64 * 1024;
    blktest::TempDir t;
    REQUIRE(create_image(CreateRequest{.format = "qcow2", .filename = t / "base.qcow2", .size = 32 * cs}));
    REQUIRE(create_image(CreateRequest{.format = "qcow2",
                                       .filename = t / "top.qcow2",
                                       .backing_file = "base.qcow2",
                                       .backing_format = "qcow2"}));
    auto base_bytes = pattern(8 * cs);
    auto top_bytes = pattern(3 * cs);
    for (auto& b : top_bytes) b = ~b;
    {
        Graph base = open_qcow2(t / "base.qcow2", true);
        REQUIRE(base.root->write(0, base_bytes));
        REQUIRE(base.root->flush());
    }
    {
        Graph top = open_qcow2(t / "top.qcow2", true);
        Node& n = *top.root;
        REQUIRE(n.write(2 * cs, std::span(top_bytes).first(2 * cs)));
        REQUIRE(n.write_zeroes(5 * cs, cs, 0));
        auto cc = n.compress_cluster(std::span(top_bytes).subspan(2 * cs, cs));
        REQUIRE(cc);
        REQUIRE(n.write_compressed(6 * cs, cs, *cc));
        REQUIRE(n.flush());
    }
    Graph top = open_qcow2(t / "top.qcow2", false);
    Node& n = *top.root;

    auto own = n.map_range(2 * cs + 100, 2 * cs - 200);  // this layer's two clusters
    REQUIRE_MESSAGE(own, (own ? "" : own.error().message));
    CHECK(std::memcmp(own->bytes().data(), top_bytes.data() + 100, 2 * cs - 200) == 0);

    auto below = n.map_range(cs, cs);  // left to the backing file, which holds it
    REQUIRE(below);
    CHECK(std::memcmp(below->bytes().data(), base_bytes.data() + cs, cs) == 0);

    auto not_lent = [&](uint64_t off, uint64_t len) {
        CAPTURE(off);
        CAPTURE(len);
        auto r = n.map_range(off, len);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == ENOTSUP);
    };
    not_lent(cs, 2 * cs);       // crosses from the backing file into this layer
    not_lent(5 * cs, cs);       // a zero cluster
    not_lent(6 * cs, cs);       // a compressed cluster
    not_lent(16 * cs, cs);      // unallocated all the way down: zeroes
}
