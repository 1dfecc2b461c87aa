// Unit tests for the inject-error filter: which requests it counts, which of them fail and
// with what, and that everything else passes through untouched.
#include <doctest/doctest.h>

#include <cerrno>
#include <string>
#include <vector>

#include "blk/driver.h"
#include "temp_files.h"

using namespace blk;
using namespace blktest;

namespace {

constexpr uint64_t kSize = 1 << 20;

Result<Graph> open_filter(const TempDir& d, const std::string& extra) {
    write_file(d / "a.raw", std::vector<std::byte>(kSize));
    // discard=unmap: the top node passes discards on (its default, as qemu's, is ignore).
    return open_image(ImageSpec{"driver=raw,discard=unmap,file.driver=inject-error" + extra + ",file.file.filename=" + d / "a.raw", "", true},
                      OpenFlags{.read_only = false});
}

}  // namespace

TEST_CASE("inject-error fails the requests [skip, skip+count) of its event, and only those") {
    TempDir d;
    auto g = open_filter(d, ",file.skip=2,file.count=2");
    REQUIRE_MESSAGE(g, (g ? "" : g.error().message));
    Node& n = *g->root;
    std::vector<std::byte> buf(4096, std::byte{0x5a});
    CHECK(n.write(0, buf));
    CHECK(n.write_zeroes(4096, 4096, 0));  // zero writes count as writes
    auto third = n.write(8192, buf);
    REQUIRE_FALSE(third);
    CHECK(third.error().code == EIO);
    CHECK(third.error().message.find("inject-error: write #2 at byte 8192") != std::string::npos);
    CHECK_FALSE(n.discard(0, 4096));
    CHECK(n.write(8192, buf));  // count reached: writes pass again
    CHECK(n.flush());           // flushes are not counted by event=write
    std::vector<std::byte> back(4096);
    CHECK(n.read(8192, back));  // reads never fail
    CHECK(back == buf);
    CHECK(n.read(0, back));
    CHECK(back == buf);  // the failed requests changed nothing, the passed ones did
}

TEST_CASE("inject-error: flush event, count 0 means every one from skip on, errno ENOSPC") {
    TempDir d;
    auto g = open_filter(d, ",file.event=flush,file.skip=1,file.errno=ENOSPC");
    REQUIRE_MESSAGE(g, (g ? "" : g.error().message));
    Node& n = *g->root;
    std::vector<std::byte> buf(512, std::byte{1});
    CHECK(n.flush());
    for (int i = 0; i < 3; ++i) {
        CHECK(n.write(0, buf));
        auto st = n.flush();
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ENOSPC);
    }
}

TEST_CASE("inject-error refuses options it does not know") {
    TempDir d;
    auto bad_event = open_filter(d, ",file.event=read");
    REQUIRE_FALSE(bad_event);
    auto bad_errno = open_filter(d, ",file.errno=EBUSY");
    REQUIRE_FALSE(bad_errno);
    auto negative = open_filter(d, ",file.skip=-1");
    REQUIRE_FALSE(negative);
}
