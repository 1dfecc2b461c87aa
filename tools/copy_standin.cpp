// TEMPORARY sequential stand-in for blk::copy_image, built only while libblock/jobs/copy.cpp
// (the real, parallel engine) is missing, so the convert CLI and its tests can run. Delete it
// once the engine is merged.
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "blk/block_status.h"
#include "blk/copy.h"

namespace blk {

namespace {

constexpr uint64_t kChunk = 2u << 20;
constexpr uint64_t kSalvageSector = 512;

struct Span {
    Node* node;
    uint64_t local;  // offset in the source
    uint64_t bytes;  // how far this source goes from there (clipped)
};

class StandIn {
public:
    explicit StandIn(const CopyOptions& o) : o_(o) {
        uint64_t base = 0;
        for (Node* s : o.sources) {
            bases_.push_back(base);
            base += s->size();
        }
        total_ = base;
    }

    Result<CopyStats> run() {
        if (!o_.target || o_.sources.empty()) return make_error(EINVAL, "copy_image: no target or no source");
        if (total_ > o_.target->size()) return make_error(EINVAL, "copy_image: the target is smaller than the sources");
        cluster_ = o_.compress ? o_.target->cluster_size().value_or(65536) : 0;
        BLK_TRY(walk(true));
        start_ = std::chrono::steady_clock::now();
        if (o_.progress) o_.progress(0, work_);
        BLK_TRY(walk(false));
        if (auto st = o_.target->flush(); !st) return make_error(st.error().code, "error while flushing: " + std::string(std::strerror(st.error().code)));
        stats_.total = total_;
        return stats_;
    }

private:
    Span at(uint64_t t) const {
        size_t i = bases_.size() - 1;
        while (bases_[i] > t) --i;
        Node* n = o_.sources[i];
        return {n, t - bases_[i], n->size() - (t - bases_[i])};
    }

    // Kind of [t, t+n): 0 skip (backing provides it), 1 zero, 2 data. Shrinks n to the run.
    Result<int> kind(uint64_t t, uint64_t& n) {
        Span s = at(t);
        n = std::min(n, s.bytes);
        if (o_.target_has_backing) {
            BLK_TRY_ASSIGN(ChainStatus top, block_status_above(s.node, backing_chain_next(s.node), s.local, n));
            n = std::min(n, top.status.bytes);
            if (!(top.status.flags & kStatusAllocated)) return 0;
        }
        BLK_TRY_ASSIGN(ChainStatus cs, block_status_above(s.node, nullptr, s.local, n));
        n = std::min(n, cs.status.bytes);
        return (cs.status.flags & kStatusZero) ? 1 : 2;
    }

    Status read(uint64_t t, std::span<std::byte> buf) {
        uint64_t done = 0;
        while (done < buf.size()) {
            Span s = at(t + done);
            uint64_t n = std::min<uint64_t>(buf.size() - done, s.bytes);
            auto st = s.node->read(s.local, buf.subspan(done, n));
            if (!st) {
                if (!o_.salvage) return make_error(st.error().code, "error while reading at byte " + std::to_string(t) + ": " + std::strerror(st.error().code));
                for (uint64_t k = 0; k < n; k += kSalvageSector) {
                    uint64_t m = std::min(kSalvageSector, n - k);
                    if (!s.node->read(s.local + k, buf.subspan(done + k, m))) {
                        std::memset(buf.data() + done + k, 0, m);
                        if (o_.warn) o_.warn("error while reading offset " + std::to_string(t + done + k) + ": " + std::strerror(st.error().code));
                    }
                }
            }
            done += n;
        }
        return {};
    }

    Status wrote(uint64_t t, Status st) {
        if (!st) return make_error(st.error().code, "error while writing at byte " + std::to_string(t) + ": " + std::strerror(st.error().code));
        return {};
    }

    void pace(uint64_t bytes) {
        written_ += bytes;
        if (!o_.rate_limit) return;
        auto due = start_ + std::chrono::duration<double>(static_cast<double>(written_) / static_cast<double>(o_.rate_limit));
        std::this_thread::sleep_until(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(due));
    }

    void advance(uint64_t n) {
        done_ += n;
        if (o_.progress) o_.progress(done_, work_);
    }

    Status zero_range(uint64_t t, uint64_t n) {
        bool past_backing = o_.target_backing_size != UINT64_MAX && t >= o_.target_backing_size;
        if (o_.target_is_zero || (o_.target_has_backing && past_backing)) {
            stats_.skipped += n;
            return {};
        }
        stats_.zeroed += n;
        return wrote(t, o_.target->write_zeroes(t, n, kZeroMayUnmap));
    }

    Status data_range(uint64_t t, std::span<const std::byte> buf) {
        const uint64_t blk = o_.min_sparse;
        if (!blk) {
            stats_.data_written += buf.size();
            BLK_TRY(wrote(t, o_.target->write(t, buf)));
            pace(buf.size());
            return {};
        }
        uint64_t i = 0;
        while (i < buf.size()) {
            uint64_t end = std::min<uint64_t>(buf.size(), (t + i) / blk * blk + blk - t);
            bool zero = std::all_of(buf.begin() + i, buf.begin() + end, [](std::byte b) { return b == std::byte{0}; });
            uint64_t j = end;
            while (j < buf.size()) {
                uint64_t e = std::min<uint64_t>(buf.size(), j + blk);
                bool z = std::all_of(buf.begin() + j, buf.begin() + e, [](std::byte b) { return b == std::byte{0}; });
                if (z != zero) break;
                j = e;
            }
            if (zero) {
                BLK_TRY(zero_range(t + i, j - i));
            } else {
                stats_.data_written += j - i;
                BLK_TRY(wrote(t + i, o_.target->write(t + i, buf.subspan(i, j - i))));
                pace(j - i);
            }
            i = j;
        }
        return {};
    }

    Status compressed_cluster(uint64_t t, uint64_t len, std::vector<std::byte>& buf) {
        // A cluster partly outside the top layer still gets written whole (read through the chain).
        bool all_skip = true, all_zero = true;
        for (uint64_t p = t; p < t + len;) {
            uint64_t n = t + len - p;
            BLK_TRY_ASSIGN(int k, kind(p, n));
            if (k != 0) all_skip = false;
            if (k == 2) all_zero = false;
            p += n;
        }
        if (all_skip) return {};
        std::span<std::byte> b(buf.data(), len);
        if (!all_zero) BLK_TRY(read(t, b));
        if (all_zero || std::all_of(b.begin(), b.end(), [](std::byte x) { return x == std::byte{0}; })) {
            return o_.min_sparse ? zero_range(t, len) : wrote(t, o_.target->write_zeroes(t, len, 0));
        }
        BLK_TRY_ASSIGN(CompressedCluster cc, o_.target->compress_cluster(b));
        stats_.data_written += len;
        BLK_TRY(wrote(t, o_.target->write_compressed(t, len, cc)));
        pace(cc.bytes.size());
        return {};
    }

    // One pass over the whole guest range: counting the work (dry) or copying.
    Status walk(bool dry) {
        std::vector<std::byte> buf(dry ? 0 : std::max<uint64_t>(kChunk, cluster_));
        uint64_t t = 0;
        while (t < total_) {
            if (!dry && o_.cancel && o_.cancel->load()) return make_error(ECANCELED, "interrupted");
            if (cluster_ && !dry) {
                uint64_t len = std::min(cluster_, total_ - t);
                BLK_TRY(compressed_cluster(t, len, buf));
                advance(len);
                t += len;
                continue;
            }
            uint64_t n = std::min(kChunk, total_ - t);
            auto k = kind(t, n);
            if (!k) {
                if (dry) return {};  // the copy pass reports it
                return make_error(k.error().code, "error while reading at byte " + std::to_string(t) + ": " + std::strerror(k.error().code));
            }
            const bool counts = *k == 2 || (*k == 1 && !o_.min_sparse);
            if (dry) {
                if (counts) work_ += n;
            } else if (*k == 2) {
                std::span<std::byte> b(buf.data(), n);
                BLK_TRY(read(t, b));
                BLK_TRY(data_range(t, b));
            } else if (*k == 1) {
                if (o_.min_sparse) {
                    BLK_TRY(zero_range(t, n));
                } else {
                    std::memset(buf.data(), 0, n);
                    BLK_TRY(data_range(t, std::span<const std::byte>(buf.data(), n)));
                }
            }
            if (!dry && counts) advance(n);
            t += n;
        }
        if (cluster_ && dry) work_ = total_;
        return {};
    }

    const CopyOptions& o_;
    std::vector<uint64_t> bases_;
    uint64_t total_ = 0;
    uint64_t cluster_ = 0;
    uint64_t work_ = 0;
    uint64_t done_ = 0;
    uint64_t written_ = 0;
    std::chrono::steady_clock::time_point start_;
    CopyStats stats_;
};

}  // namespace

Result<CopyStats> copy_image(const CopyOptions& opts) {
    StandIn s(opts);
    return s.run();
}

}  // namespace blk
