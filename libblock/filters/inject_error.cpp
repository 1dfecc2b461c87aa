// The `inject-error` filter (blkimg's own, for tests): passes every request through to its
// `file` child, except that chosen requests fail with a chosen errno.
//
// Why it exists: what a job leaves behind when the disk fails half-way (commit's "never
// loses data") can only be tested if a write can be made to fail at a chosen point. QEMU's
// blkdebug keys its rules on events the qcow2 driver raises; this filter counts requests
// instead, which needs nothing from the formats: put it under a format (its `file`) and
// sweep `skip` over 0, 1, 2, ... to fail each write the format makes in turn (data,
// L2 tables, refcount blocks, the header), or fail its flushes.
//
// Options: `event` = write (write, write-zeroes, discard, compressed write: default),
// flush, truncate, any (all of these; reads never fail); `skip` = how many matching
// requests pass before the first failure (default 0); `count` = how many fail then
// (default 0: every one from then on); `errno` = EIO (default), ENOSPC, EPERM, EROFS.
#include <atomic>
#include <cerrno>
#include <string>

#include "blk/driver.h"

namespace blk {

namespace {

enum class Event { Write, Flush, Truncate, Any };

class InjectErrorNode final : public FilterNode {
public:
    InjectErrorNode(Json opts, Event ev, uint64_t skip, uint64_t count, int err)
        : FilterNode("inject-error", std::move(opts)), event_(ev), skip_(skip), count_(count), errno_(err) {}

protected:
    Status do_write(uint64_t off, std::span<const std::byte> buf) override {
        BLK_TRY(hit(Event::Write, "write", off));
        return FilterNode::do_write(off, buf);
    }
    Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) override {
        BLK_TRY(hit(Event::Write, "write-zeroes", off));
        return FilterNode::do_write_zeroes(off, bytes, flags);
    }
    Status do_discard(uint64_t off, uint64_t bytes) override {
        BLK_TRY(hit(Event::Write, "discard", off));
        return FilterNode::do_discard(off, bytes);
    }
    Status do_write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c) override {
        BLK_TRY(hit(Event::Write, "compressed write", off));
        return FilterNode::do_write_compressed(off, len, c);
    }
    Status do_flush() override {
        BLK_TRY(hit(Event::Flush, "flush", 0));
        return FilterNode::do_flush();
    }
    Status do_truncate(uint64_t size, Prealloc prealloc) override {
        BLK_TRY(hit(Event::Truncate, "truncate", size));
        return FilterNode::do_truncate(size, prealloc);
    }

private:
    // Counts a request of kind `ev`; fails it if it falls in [skip, skip + count).
    Status hit(Event ev, const char* what, uint64_t off) {
        if (event_ != Event::Any && event_ != ev) return {};
        const uint64_t n = seen_.fetch_add(1, std::memory_order_relaxed);
        if (n < skip_ || (count_ != 0 && n - skip_ >= count_)) return {};
        return errno_error(errno_, "inject-error: " + std::string(what) + " #" + std::to_string(n) + " at byte " +
                                       std::to_string(off));
    }

    const Event event_;
    const uint64_t skip_;
    const uint64_t count_;
    const int errno_;
    std::atomic<uint64_t> seen_{0};
};

Result<std::shared_ptr<Node>> make_inject_error(const Json& opts) {
    BLK_TRY_ASSIGN(auto event, opt_string(opts, "event"));
    BLK_TRY_ASSIGN(auto skip, opt_int(opts, "skip"));
    BLK_TRY_ASSIGN(auto count, opt_int(opts, "count"));
    BLK_TRY_ASSIGN(auto err, opt_string(opts, "errno"));
    Event ev = Event::Write;
    const std::string e = event.value_or("write");
    if (e == "flush") ev = Event::Flush;
    else if (e == "truncate") ev = Event::Truncate;
    else if (e == "any") ev = Event::Any;
    else if (e != "write") return make_error(EINVAL, "inject-error: event must be write, flush, truncate or any (got '" + e + "')");
    if (skip.value_or(0) < 0 || count.value_or(0) < 0) return make_error(EINVAL, "inject-error: skip and count must not be negative");
    int code = EIO;
    const std::string en = err.value_or("EIO");
    if (en == "ENOSPC") code = ENOSPC;
    else if (en == "EPERM") code = EPERM;
    else if (en == "EROFS") code = EROFS;
    else if (en != "EIO") return make_error(EINVAL, "inject-error: errno must be EIO, ENOSPC, EPERM or EROFS (got '" + en + "')");
    return std::shared_ptr<Node>(std::make_shared<InjectErrorNode>(opts, ev, static_cast<uint64_t>(skip.value_or(0)),
                                                                   static_cast<uint64_t>(count.value_or(0)), code));
}

}  // namespace

DriverSpec inject_error_driver() {
    DriverSpec d;
    d.name = "inject-error";
    d.kind = DriverKind::Filter;
    d.description = "fails chosen requests to the file below (for tests)";
    d.options = {
        {"file", OptType::Child, "the node below"},
        {"event", OptType::Enum, "which requests fail", {"write", "flush", "truncate", "any"}, "write"},
        {"skip", OptType::Int, "matching requests that pass before the first failure", {}, "0"},
        {"count", OptType::Int, "how many fail (0: all from then on)", {}, "0"},
        {"errno", OptType::Enum, "the error", {"EIO", "ENOSPC", "EPERM", "EROFS"}, "EIO"},
    };
    d.make_filter = make_inject_error;
    d.open = open_filter_with(make_inject_error);
    return d;
}

}  // namespace blk
