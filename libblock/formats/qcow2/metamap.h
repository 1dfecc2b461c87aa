// Where a writable qcow2 image keeps its metadata (header, L1, refcount table and blocks,
// L2 tables), so no data write or cluster allocation ever lands on it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace blk::qcow2 {

// Disjoint, merged host byte ranges kept sorted. New tables are usually allocated at the end
// of the file, so inserting is an append in the common case.
class MetadataMap {
public:
    void add(uint64_t off, uint64_t len) {
        if (len == 0) return;
        uint64_t start = off, end = off + len;
        auto it = std::lower_bound(r_.begin(), r_.end(), start, [](const Range& r, uint64_t v) { return r.second < v; });
        auto first = it;
        while (it != r_.end() && it->first <= end) {
            start = std::min(start, it->first);
            end = std::max(end, it->second);
            ++it;
        }
        it = r_.erase(first, it);
        r_.insert(it, Range{start, end});
    }

    void remove(uint64_t off, uint64_t len) {
        if (len == 0) return;
        const uint64_t end = off + len;
        std::vector<Range> out;
        out.reserve(r_.size() + 1);
        for (const Range& r : r_) {
            if (r.second <= off || r.first >= end) {
                out.push_back(r);
                continue;
            }
            if (r.first < off) out.push_back(Range{r.first, off});
            if (r.second > end) out.push_back(Range{end, r.second});
        }
        r_ = std::move(out);
    }

    bool overlaps(uint64_t off, uint64_t len) const {
        if (len == 0) return false;
        auto it = std::upper_bound(r_.begin(), r_.end(), off, [](uint64_t v, const Range& r) { return v < r.second; });
        return it != r_.end() && it->first < off + len;
    }

    size_t ranges() const { return r_.size(); }

private:
    using Range = std::pair<uint64_t, uint64_t>;  // [first, second)
    std::vector<Range> r_;
};

}  // namespace blk::qcow2
