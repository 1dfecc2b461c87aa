// Unit tests for the preallocate filter: growth in allocated steps, what the parent sees,
// pass-through where the file cannot allocate ahead, and the cut at close.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "blk/driver.h"

using namespace blk;

namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;

struct TempFile {
    std::string path;
    explicit TempFile(uint64_t size) {
        char tmpl[] = "/tmp/blk-prealloc-XXXXXX";
        int fd = ::mkstemp(tmpl);
        REQUIRE(fd >= 0);
        path = tmpl;
        REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
        // Whether this file system allocates zeroed ranges ahead (ext4, xfs) or not (tmpfs).
        zero_range = ::fallocate(fd, FALLOC_FL_ZERO_RANGE, static_cast<off_t>(size), 4096) == 0;
        REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
        ::close(fd);
    }
    ~TempFile() { std::filesystem::remove(path); }
    uint64_t length() const {
        struct stat st;
        REQUIRE(::stat(path.c_str(), &st) == 0);
        return static_cast<uint64_t>(st.st_size);
    }
    uint64_t allocated() const {
        struct stat st;
        REQUIRE(::stat(path.c_str(), &st) == 0);
        return static_cast<uint64_t>(st.st_blocks) * 512;
    }
    bool zero_range = false;
};

Result<Graph> open_filter(const std::string& path, const std::string& extra = "") {
    return open_image(ImageSpec{"driver=preallocate,prealloc-size=1M,prealloc-align=64k" + extra + ",file.filename=" + path, "", true},
                      OpenFlags{.read_only = false});
}

}  // namespace

TEST_CASE("preallocate grows the file in allocated steps and shows its parent only the length it asked for") {
    TempFile f(64 * KiB);
    {
        auto g = open_filter(f.path);
        REQUIRE_MESSAGE(g, (g ? "" : g.error().message));
        Node& n = *g->root;
        CHECK(n.is_filter());
        CHECK(n.size() == 64 * KiB);
        REQUIRE(n.truncate(100 * KiB));
        CHECK(n.size() == 100 * KiB);
        const uint64_t step_end = (100 * KiB + 1 * MiB + 64 * KiB - 1) / (64 * KiB) * (64 * KiB);
        if (f.zero_range) {
            CHECK(f.length() == step_end);
            CHECK(f.allocated() >= step_end - 64 * KiB);  // the step is allocated, not a hole
        } else {
            CHECK(f.length() == 100 * KiB);  // no way to allocate ahead: plain growth
        }
        std::vector<std::byte> b(4 * KiB, std::byte{7});
        CHECK(n.write(96 * KiB, b));
        auto past = n.write(100 * KiB, b);  // beyond what the parent asked for
        REQUIRE_FALSE(past);
        CHECK(past.error().code == EINVAL);

        // Growth inside the step touches nothing below.
        REQUIRE(n.truncate(300 * KiB + 100));
        CHECK(n.size() == 300 * KiB + 512);
        if (f.zero_range) CHECK(f.length() == step_end);
        REQUIRE(n.flush());
        if (f.zero_range) CHECK(f.length() == step_end);  // a flush keeps the step
    }
    CHECK(f.length() == 300 * KiB + 512);  // cut back when the node closes
}

TEST_CASE("preallocate: shrinking and explicit preallocation pass through") {
    TempFile f(64 * KiB);
    {
        auto g = open_filter(f.path);
        REQUIRE(g);
        Node& n = *g->root;
        REQUIRE(n.truncate(200 * KiB));
        REQUIRE(n.truncate(32 * KiB));
        CHECK(n.size() == 32 * KiB);
        CHECK(f.length() == 32 * KiB);
        REQUIRE(n.truncate(96 * KiB, Prealloc::Full));
        CHECK(n.size() == 96 * KiB);
        CHECK(f.length() == 96 * KiB);
    }
    CHECK(f.length() == 96 * KiB);
}

TEST_CASE("preallocate with prealloc-size=0 grows exactly") {
    TempFile f(0);
    {
        auto g = open_filter(f.path, ",prealloc-size=0");
        REQUIRE(g);
        REQUIRE(g->root->truncate(8 * KiB));
        CHECK(f.length() == 8 * KiB);
    }
    CHECK(f.length() == 8 * KiB);
}

TEST_CASE("preallocate refuses a misaligned or oversized step, naming the option") {
    TempFile f(0);
    auto a = open_filter(f.path, ",prealloc-align=1000");
    REQUIRE_FALSE(a);
    CHECK(a.error().message == "prealloc-align must be a positive multiple of 512 (got 1000)");
    auto z = open_filter(f.path, ",prealloc-align=0");
    REQUIRE_FALSE(z);
    auto s = open_filter(f.path, ",prealloc-size=2T");
    REQUIRE_FALSE(s);
    CHECK(s.error().message == "prealloc-size must be at most 1 TiB (got 2199023255552)");
    auto k = open_filter(f.path, ",prealloc-sise=1M");
    REQUIRE_FALSE(k);
    CHECK(k.error().message.find("prealloc-sise") != std::string::npos);
}
