// Test nodes for the copy engine: a source with chosen extents and faults, and a target that
// records every operation it receives (DESIGN.md §7: the recording filter pins what the
// engine does, not only the bytes it leaves).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "blk/driver.h"

namespace blktest {

using namespace blk;

// Deterministic bytes that are never zero (zero detection finds nothing in them) and never
// 0xFF (RecordNode stores clusters starting with 0xFF uncompressed).
inline void fill_pattern(std::span<std::byte> b, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (auto& c : b) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c = std::byte(uint8_t(x % 254 + 1));  // never 0, never 0xFF
    }
}

// A format-like source over memory: each byte range is Data (this layer's bytes), Zero
// (reads as zeroes) or unallocated (reads from the backing child, or zeroes without one).
// Reads and block status can fail at chosen places; reads can be slowed at random.
class ExtentNode : public Node {
public:
    enum Kind : uint8_t { Unalloc, Data, Zero };

    explicit ExtentNode(uint64_t size, Kind initial = Unalloc) : Node("extent", Json::object()), data_(size) {
        size_ = size;
        kinds_.assign(blocks(size), initial);
        refresh_caps();
    }

    // Marks [off, off+len) (multiples of kBlock) as `k`; Data ranges get pattern bytes.
    void set(uint64_t off, uint64_t len, Kind k, uint64_t seed = 1) {
        for (uint64_t b = off / kBlock; b < (off + len + kBlock - 1) / kBlock; ++b) kinds_[b] = k;
        auto span = std::span(data_).subspan(off, std::min(len, size_ - off));
        if (k == Data) fill_pattern(span, seed + off);
        else std::fill(span.begin(), span.end(), std::byte{0});
    }
    std::vector<std::byte>& data() { return data_; }

    // Reads touching these offsets fail with EIO.
    std::set<uint64_t> bad_bytes;
    // Block status queries starting at these offsets fail with EIO.
    std::set<uint64_t> bad_status;
    // Each read sleeps 0..max_delay_us microseconds (shakes out ordering bugs).
    unsigned max_delay_us = 0;
    std::atomic<uint64_t> reads{0};
    std::atomic<uint64_t> status_queries{0};
    // Called before each read (e.g. to set a cancel flag after a number of reads).
    std::function<void()> on_read;

    static constexpr uint64_t kBlock = 512;

protected:
    static uint64_t blocks(uint64_t size) { return (size + kBlock - 1) / kBlock; }

    Capabilities own_caps() const override {
        Capabilities c;
        c.backing = true;
        c.block_status = true;
        return c;
    }
    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        ++reads;
        if (on_read) on_read();
        if (max_delay_us) {
            thread_local std::minstd_rand rng(std::hash<std::thread::id>{}(std::this_thread::get_id()));
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % max_delay_us));
        }
        auto it = bad_bytes.lower_bound(off);
        if (it != bad_bytes.end() && *it < off + buf.size()) return errno_error(EIO, "extent: read");
        Node* cow = cow_child(*this);
        for (uint64_t done = 0; done < buf.size();) {
            uint64_t p = off + done;
            Kind k = kinds_[p / kBlock];
            uint64_t n = std::min<uint64_t>(buf.size() - done, kBlock - p % kBlock);
            auto dst = buf.subspan(done, n);
            if (k == Data) {
                std::memcpy(dst.data(), data_.data() + p, n);
            } else if (k == Unalloc && cow && p < cow->size()) {
                uint64_t m = std::min<uint64_t>(n, cow->size() - p);
                BLK_TRY(cow->read(p, dst.first(m)));
                std::memset(dst.data() + m, 0, n - m);
            } else {
                std::memset(dst.data(), 0, n);
            }
            done += n;
        }
        return {};
    }

    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override {
        ++status_queries;
        if (bad_status.count(off)) return errno_error(EIO, "extent: block status");
        Kind k = kinds_[off / kBlock];
        uint64_t end = off + bytes;
        uint64_t p = (off / kBlock + 1) * kBlock;
        while (p < end && kinds_[p / kBlock] == k) p += kBlock;
        BlockStatus st;
        st.bytes = std::min(p, end) - off;
        st.flags = k == Data ? kStatusData : k == Zero ? kStatusZero : 0u;
        return st;
    }

private:
    std::vector<std::byte> data_;
    std::vector<Kind> kinds_;
};

// One operation a RecordNode received.
struct Rec {
    enum Kind : uint8_t { Write, Zero, Discard, Compressed, Flush } kind;
    uint64_t off = 0;
    uint64_t len = 0;
    unsigned flags = 0;       // write_zeroes flags; for Compressed: 1 if stored compressed
    bool operator==(const Rec&) const = default;
};

inline std::string to_string(const Rec& r) {
    static const char* names[] = {"write", "zero", "discard", "compressed", "flush"};
    return std::string(names[r.kind]) + "(" + std::to_string(r.off) + "," + std::to_string(r.len) + "," +
           std::to_string(r.flags) + ")";
}

// A writable target over memory that logs every operation, in the order they arrive.
// Optional: a cluster size, zero init, compressed writes ("compression" keeps the bytes
// and marks them compressed, or stores them plain when the cluster starts with 0xFF),
// and write failures at chosen offsets.
class RecordNode : public Node {
public:
    explicit RecordNode(uint64_t size, uint64_t cluster = 0, bool zero_init = false)
        : Node("record", Json::object()), data_(size), cluster_(cluster), zero_init_(zero_init) {
        size_ = size;
        read_only_ = false;
        refresh_caps();
    }
    std::optional<uint64_t> cluster_size() const override {
        return cluster_ ? std::optional<uint64_t>(cluster_) : std::nullopt;
    }
    Result<CompressedCluster> compress_cluster(std::span<const std::byte> d) const override {
        ++compress_calls;
        int now = ++in_compress;
        for (int m = max_in_compress; now > m && !max_in_compress.compare_exchange_weak(m, now);) {
        }
        if (compress_delay_us) std::this_thread::sleep_for(std::chrono::microseconds(compress_delay_us));
        --in_compress;
        CompressedCluster c;
        c.bytes.assign(d.begin(), d.end());
        c.compressed = d.empty() || d[0] != std::byte{0xFF};
        return c;
    }

    std::vector<Rec> log() {
        std::lock_guard lk(mu_);
        return log_;
    }
    std::vector<std::byte>& data() { return data_; }
    // Writes touching these offsets fail with `fail_errno`.
    std::set<uint64_t> bad_bytes;
    int fail_errno = ENOSPC;
    mutable std::atomic<uint64_t> compress_calls{0};
    // compress_cluster sleeps this long; the most calls seen running at once.
    unsigned compress_delay_us = 0;
    mutable std::atomic<int> in_compress{0}, max_in_compress{0};
    NodeLimits& limits_rw() { return limits_; }

protected:
    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        std::memcpy(buf.data(), data_.data() + off, buf.size());
        return {};
    }
    Status check_fail(uint64_t off, uint64_t len) {
        auto it = bad_bytes.lower_bound(off);
        if (it != bad_bytes.end() && *it < off + len) return errno_error(fail_errno, "record: write");
        return {};
    }
    void record(Rec r) {
        std::lock_guard lk(mu_);
        log_.push_back(r);
    }
    Status do_write(uint64_t off, std::span<const std::byte> buf) override {
        BLK_TRY(check_fail(off, buf.size()));
        std::memcpy(data_.data() + off, buf.data(), buf.size());
        record({Rec::Write, off, buf.size(), 0});
        return {};
    }
    Capabilities own_caps() const override {
        Capabilities c;
        c.flush = true;
        c.fast_zero = true;
        c.discard = true;
        c.write_compressed = cluster_ != 0;
        c.zero_init = zero_init_;
        return c;
    }
    Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) override {
        BLK_TRY(check_fail(off, bytes));
        std::memset(data_.data() + off, 0, bytes);
        record({Rec::Zero, off, bytes, flags});
        return {};
    }
    Status do_discard(uint64_t off, uint64_t bytes) override {
        record({Rec::Discard, off, bytes, 0});
        return {};
    }
    Status do_write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c) override {
        BLK_TRY(check_fail(off, len));
        std::memcpy(data_.data() + off, c.bytes.data(), std::min<uint64_t>(len, c.bytes.size()));
        record({Rec::Compressed, off, len, c.compressed ? 1u : 0u});
        return {};
    }
    Status do_flush() override {
        record({Rec::Flush, 0, 0, 0});
        return {};
    }

private:
    std::mutex mu_;
    std::vector<Rec> log_;
    std::vector<std::byte> data_;
    uint64_t cluster_;
    bool zero_init_;
};

}  // namespace blktest
