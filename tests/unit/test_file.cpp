// Unit tests for the file protocol's cache.direct mode (O_DIRECT with bounce buffers and
// read-modify-write of partial blocks) and for cache options passing to children.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "blk/driver.h"
#include "../../libblock/protocols/flush_behind.h"
#include "temp_files.h"

using namespace blk;
using blktest::TempDir;

namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;

std::vector<std::byte> pattern(size_t n, unsigned seed) {
    std::vector<std::byte> b(n);
    uint32_t x = seed * 2654435761u + 1;
    for (auto& c : b) {
        x = x * 1103515245u + 12345u;
        c = std::byte(x >> 23);
    }
    return b;
}

bool o_direct_works(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
    if (fd < 0) return false;
    ::close(fd);
    return true;
}

uint64_t file_length(const std::string& path) {
    struct stat st;
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return static_cast<uint64_t>(st.st_size);
}

// How many pages of [off, off + len) the page cache holds.
size_t resident_pages(const std::string& path, uint64_t off, uint64_t len) {
    int fd = ::open(path.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(off));
    ::close(fd);
    REQUIRE(p != MAP_FAILED);
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> vec((len + page - 1) / page);
    REQUIRE(::mincore(p, len, vec.data()) == 0);
    ::munmap(p, len);
    size_t n = 0;
    for (unsigned char v : vec) n += v & 1;
    return n;
}

Result<Graph> open_rw(const std::string& opts) {
    return open_image(ImageSpec{opts, "", true}, OpenFlags{.read_only = false});
}

}  // namespace

TEST_CASE("cache.direct: unaligned requests read and write exactly, and a merge never grows the file") {
    TempDir dir;
    const std::string path = dir / "d.raw";
    const uint64_t len = 4 * MiB + 1000;  // a partial last block
    std::vector<std::byte> want = pattern(len, 1);
    blktest::write_file(path, want);
    if (!o_direct_works(path)) {
        MESSAGE("O_DIRECT is not supported here; skipped");
        return;
    }
    auto g = open_rw("driver=file,cache.direct=on,filename=" + path);
    REQUIRE_MESSAGE(g, (g ? "" : g.error().message));
    Node& n = *g->root;
    CHECK(n.size() == (len + 511) / 512 * 512);

    SUBCASE("reads of any offset, length and memory") {
        for (auto [off, cnt] : {std::pair<uint64_t, uint64_t>{0, 8192}, {1000, 3000}, {4095, 2}, {100, 2 * MiB + 12345},
                                {len - 1000, 1000}, {len - 10, 10}}) {
            std::vector<std::byte> got(cnt + 1);
            std::span<std::byte> dst(got.data() + 1, cnt);  // memory off by one byte
            REQUIRE(n.read(off, dst));
            CHECK(std::memcmp(dst.data(), want.data() + off, cnt) == 0);
        }
        // Past the real end, up to the sector-rounded size: zeroes.
        std::vector<std::byte> tail(n.size() - (len - 8));
        REQUIRE(n.read(len - 8, tail));
        CHECK(std::memcmp(tail.data(), want.data() + len - 8, 8) == 0);
        for (size_t i = 8; i < tail.size(); ++i) CHECK(tail[i] == std::byte{0});
    }

    SUBCASE("writes of any offset, length and memory") {
        struct W {
            uint64_t off, cnt;
        };
        unsigned seed = 10;
        for (W w : {W{4000, 300}, W{8192, 8192}, W{5000, 1}, W{100, 2 * MiB + 12345}, W{3 * MiB - 7, 14}, W{len - 10, 10}}) {
            std::vector<std::byte> data = pattern(w.cnt + 1, seed++);
            std::span<const std::byte> src(data.data() + 1, w.cnt);  // memory off by one byte
            REQUIRE(n.write(w.off, src));
            std::memcpy(want.data() + w.off, src.data(), w.cnt);
        }
        CHECK(file_length(path) == len);  // the last block was merged and the length kept
        CHECK(blktest::read_file(path) == want);

        // Past the real end (within the sector-rounded size) the file grows to the request's end.
        std::vector<std::byte> more = pattern(20, 99);
        REQUIRE(n.write(len + 2, more));
        CHECK(file_length(path) == len + 22);
        auto back = blktest::read_file(path);
        REQUIRE(back.size() == len + 22);
        CHECK(std::memcmp(back.data(), want.data(), len) == 0);
        CHECK(back[len] == std::byte{0});
        CHECK(back[len + 1] == std::byte{0});
        CHECK(std::memcmp(back.data() + len + 2, more.data(), 20) == 0);
    }

    SUBCASE("direct requests stay out of the page cache") {
        // The test wrote the file through the page cache: a direct write drops those pages
        // and puts none back; a buffered node leaves its write in the cache.
        std::vector<std::byte> data = pattern(1 * MiB, 5);
        REQUIRE(n.write(1 * MiB, data));
        CHECK(resident_pages(path, 1 * MiB, 1 * MiB) == 0);
        std::vector<std::byte> back(1 * MiB);
        REQUIRE(n.read(1 * MiB, back));
        CHECK(back == data);
        CHECK(resident_pages(path, 1 * MiB, 1 * MiB) == 0);

        auto buffered = open_rw("driver=file,locking=off,filename=" + path);
        REQUIRE(buffered);
        REQUIRE(buffered->root->write(1 * MiB, data));
        CHECK(resident_pages(path, 1 * MiB, 1 * MiB) > 0);
    }
}

TEST_CASE("cache.direct: a file system without O_DIRECT is an error naming the file") {
    // /dev/shm is tmpfs, which refuses O_DIRECT before Linux 6.6; elsewhere this only checks
    // that the open works.
    char tmpl[] = "/dev/shm/blk-direct-XXXXXX";
    int fd = ::mkstemp(tmpl);
    if (fd < 0) {
        MESSAGE("no /dev/shm; skipped");
        return;
    }
    ::close(fd);
    const std::string path = tmpl;
    auto g = open_rw("driver=file,cache.direct=on,filename=" + path);
    if (o_direct_works(path)) {
        CHECK(g);
    } else {
        REQUIRE_FALSE(g);
        CHECK(g.error().message == "Could not open '" + path + "': Invalid argument");
    }
    ::unlink(tmpl);
}

TEST_CASE("cache options pass to children and backing files unless they set their own") {
    TempDir dir;
    const std::string base = dir / "base.qcow2";
    const std::string top = dir / "top.qcow2";
    for (auto [file, backing] : {std::pair<std::string, std::string>{base, ""}, {top, "base.qcow2"}}) {
        CreateRequest req;
        req.format = "qcow2";
        req.filename = file;
        req.options = Json{{"size", "1M"}};
        if (!backing.empty()) {
            req.options["backing_file"] = backing;
            req.options["backing_fmt"] = "qcow2";
        }
        req.open_backing = false;
        auto st = create_image(req);
        REQUIRE_MESSAGE(st, (st ? "" : st.error().message));
    }
    auto g = open_image(ImageSpec{"driver=qcow2,cache.direct=on,cache.no-flush=on,file.cache.no-flush=off,file.filename=" + top, "", true},
                        OpenFlags{.read_only = true});
    REQUIRE_MESSAGE(g, (g ? "" : g.error().message));
    auto cache_of = [](const Node* node, const char* key) -> std::string {
        REQUIRE(node);
        const Json& o = node->options();
        if (!o.contains("cache") || !o["cache"].contains(key)) return "";
        const Json& v = o["cache"][key];
        return v.is_string() ? v.get<std::string>() : v.dump();
    };
    Node* file = primary_child(*g->root);
    CHECK(cache_of(file, "direct") == "on");
    CHECK(cache_of(file, "no-flush") == "off");  // its own setting wins
    Node* backing = cow_child(*g->root);
    CHECK(cache_of(backing, "direct") == "on");
    CHECK(cache_of(backing, "no-flush") == "on");
    CHECK(cache_of(primary_child(*backing), "direct") == "on");
    std::vector<std::byte> buf(4096);
    CHECK(g->root->read(0, buf));  // the direct backing chain reads
}

// Flush-behind (protocols/flush_behind.h): background flushes after every so many bytes
// written, their errors kept for the caller's next flush.
namespace {

// Waits up to 10 s for `pred`.
template <class Pred>
bool eventually(Pred pred) {
    for (int i = 0; i < 1000; ++i) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
}

}  // namespace

TEST_CASE("flush-behind: a flush starts in the background once enough was written") {
    std::atomic<int> calls{0};
    FlushBehind fb(1000, [&] {
        ++calls;
        return 0;
    });
    fb.wrote(600);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(calls == 0);  // not yet 1000 bytes
    fb.wrote(600);
    CHECK(eventually([&] { return calls == 1; }));
    fb.wrote(999);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(calls == 1);  // the count started again after the flush was asked for
    fb.wrote(1);
    CHECK(eventually([&] { return calls == 2; }));
    CHECK(fb.take_error() == 0);
}

TEST_CASE("flush-behind: an error is kept for the next take_error, once; EINVAL is none") {
    std::atomic<int> calls{0};
    std::atomic<int> result{EIO};
    FlushBehind fb(10, [&] {
        ++calls;
        return result.load();
    });
    fb.wrote(10);
    REQUIRE(eventually([&] { return calls == 1; }));
    int seen = 0;  // the error is kept just after the flush returns
    CHECK(eventually([&] {
        if (!seen) seen = fb.take_error();
        return seen == EIO;
    }));
    CHECK(fb.take_error() == 0);  // reported once
    result = EINVAL;              // a file that cannot be flushed
    fb.wrote(10);
    REQUIRE(eventually([&] { return calls == 2; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(fb.take_error() == 0);
}

TEST_CASE("flush-behind: take_error waits for a flush under way and gets its error") {
    std::atomic<bool> started{false};
    FlushBehind fb(1, [&] {
        started = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        return EIO;
    });
    fb.wrote(1);
    REQUIRE(eventually([&] { return started.load(); }));
    CHECK(fb.take_error() == EIO);  // not 0: the caller's own flush may have found nothing
}

TEST_CASE("flush-behind: destroying it waits for a flush under way") {
    std::atomic<bool> started{false};
    std::atomic<bool> finished{false};
    {
        FlushBehind fb(1, [&] {
            started = true;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            finished = true;
            return 0;
        });
        fb.wrote(1);
        REQUIRE(eventually([&] { return started.load(); }));
    }
    CHECK(finished);
}

TEST_CASE("flush-behind: a file node written past the threshold flushes, reopens and closes cleanly") {
    TempDir dir;
    const std::string path = dir / "img.raw";
    blktest::write_file(path, {});
    auto g = open_image(ImageSpec{"driver=raw,file.filename=" + path, "", true}, OpenFlags{.read_only = false});
    REQUIRE_MESSAGE(g, (g ? "" : g.error().message));
    Node& n = *g->root;
    const uint64_t total = kFlushBehindBytes + 4 * MiB;
    REQUIRE(n.truncate(total, Prealloc::Off));
    const auto chunk = pattern(4 * MiB, 7);
    for (uint64_t off = 0; off < total; off += chunk.size()) REQUIRE(n.write(off, chunk));
    CHECK(n.flush());
    REQUIRE(g->reopen_read_only(n));
    REQUIRE(g->reopen_read_write(n));
    REQUIRE(n.write(0, chunk));
    CHECK(n.flush());
    std::vector<std::byte> back(chunk.size());
    REQUIRE(n.read(total - chunk.size(), back));
    CHECK(back == chunk);
}
