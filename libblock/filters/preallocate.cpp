// The `preallocate` filter (qemu's): grows the file below in large, allocated steps.
//
// A format that allocates as it goes (qcow2) grows its file a little at a time, and the
// file system then allocates blocks behind every write (ext4's delayed allocation: a
// reservation and an extent-tree update per write). Here a growth past the space already
// set aside extends the file by prealloc-size more, rounded up to prealloc-align, and
// allocates that space at once (FALLOC_FL_ZERO_RANGE through write_zeroes, which leaves
// unwritten extents that read as zeroes), so the writes that follow fill blocks that
// exist. The node above sees only the length it asked for; the space beyond is cut off
// when the node closes. Where the file below cannot allocate that way, or has no room,
// growth passes through unchanged.
#include <algorithm>
#include <mutex>

#include "blk/driver.h"

namespace blk {

namespace {

constexpr uint64_t kDefaultAlign = 1ull << 20;   // qemu's prealloc-align default
constexpr uint64_t kDefaultStep = 128ull << 20;  // qemu's prealloc-size default
constexpr uint64_t kAlignUnit = 512;             // the file's sector: lengths stay whole sectors
constexpr uint64_t kMaxStep = 1ull << 40;        // a step beyond this is a typo, not a plan

class PreallocateNode final : public FilterNode {
public:
    PreallocateNode(Json opts, uint64_t align, uint64_t step)
        : FilterNode("preallocate", std::move(opts)), align_(align), step_(step) {}

    ~PreallocateNode() override {
        std::lock_guard lk(mu_);
        (void)trim_locked();  // best effort: a longer file only holds zeroes past the end
    }

protected:
    // A new child (at open or by a graph edit): nothing is set aside in it yet.
    void children_changed() override {
        FilterNode::children_changed();
        std::lock_guard lk(mu_);
        file_end_ = size_;
        reserve_ = true;
    }

    Status do_truncate(uint64_t size, Prealloc prealloc) override {
        std::lock_guard lk(mu_);
        if (prealloc == Prealloc::Off && size >= size_ && size <= file_end_) {
            size_ = std::min(file_end_, (size + kAlignUnit - 1) / kAlignUnit * kAlignUnit);  // inside the space set aside
            return {};
        }
        if (prealloc != Prealloc::Off || size < size_ || step_ == 0 || !reserve_) {
            BLK_TRY(below().truncate(size, prealloc));
            size_ = below().size();
            file_end_ = size_;
            return {};
        }
        return grow_locked(size);
    }

private:
    // Grows to `size` with a step of allocated space behind it, or to `size` alone when the
    // space cannot be set aside.
    Status grow_locked(uint64_t size) {
        const uint64_t want = size > UINT64_MAX - step_ - align_ ? size : (size + step_ + align_ - 1) / align_ * align_;
        const uint64_t from = file_end_;
        // A file without a zeroing path of its own cannot set space aside (asked, not tried).
        if (!below().caps().fast_zero) reserve_ = false;
        if (want > size && reserve_) {
            if (auto st = below().truncate(want); st) {
                auto zeroed = below().write_zeroes(from, want - from, kZeroNoFallback);
                if (zeroed) {
                    file_end_ = want;
                    size_ = (size + kAlignUnit - 1) / kAlignUnit * kAlignUnit;  // whole sectors, as the file's
                    return {};
                }
                // ENOTSUP: this file cannot allocate ahead after all (a file system without
                // fallocate), never try again; anything else
                // (no room for the step): grow exactly, and try the next time.
                if (zeroed.error().code == ENOTSUP) reserve_ = false;
            }
        }
        BLK_TRY(below().truncate(size));
        size_ = below().size();
        file_end_ = size_;
        return {};
    }

    Status trim_locked() {
        if (file_end_ <= size_) return {};
        BLK_TRY(below().truncate(size_));
        file_end_ = below().size();
        return {};
    }

    const uint64_t align_;
    const uint64_t step_;
    std::mutex mu_;  // guards file_end_, reserve_ and growth
    uint64_t file_end_ = 0;
    bool reserve_ = true;
};

// The node alone, from its options: what the opener and Graph::insert_filter_above use.
Result<std::shared_ptr<Node>> make_preallocate(const Json& opts) {
    BLK_TRY_ASSIGN(auto align, opt_size(opts, "prealloc-align"));
    BLK_TRY_ASSIGN(auto step, opt_size(opts, "prealloc-size"));
    const uint64_t a = align.value_or(kDefaultAlign);
    const uint64_t s = step.value_or(kDefaultStep);
    if (a == 0 || a % kAlignUnit != 0) {
        return make_error(EINVAL, "prealloc-align must be a positive multiple of " + std::to_string(kAlignUnit) + " (got " +
                                      std::to_string(a) + ")");
    }
    if (s > kMaxStep) return make_error(EINVAL, "prealloc-size must be at most 1 TiB (got " + std::to_string(s) + ")");
    return std::shared_ptr<Node>(std::make_shared<PreallocateNode>(opts, a, s));
}

}  // namespace

DriverSpec preallocate_driver() {
    DriverSpec d;
    d.name = "preallocate";
    d.kind = DriverKind::Filter;
    d.description = "grows the file below in large allocated steps, cut back at close";
    d.options = {
        {"file", OptType::Child, "the file to grow"},
        {"prealloc-align", OptType::Size, "align the grown file's length to this (a multiple of 512)", {}, "1M"},
        {"prealloc-size", OptType::Size, "how much to set aside beyond the length asked for", {}, "128M"},
    };
    d.make_filter = make_preallocate;
    d.open = open_filter_with(make_preallocate);
    return d;
}

}  // namespace blk
