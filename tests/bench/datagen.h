// Deterministic test data for the codec tests and benchmarks: random, text-like, patterns.
// Header-only so the unit tests, the codec benchmark and the image generator share it.
#pragma once

#include <algorithm>
#include <cmath>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace blkdata {

// xoshiro256** seeded through splitmix64: fast, and the same stream on every machine.
class Rng {
public:
    explicit Rng(uint64_t seed) {
        for (auto& w : s_) {
            seed += 0x9e3779b97f4a7c15ull;
            uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            w = z ^ (z >> 31);
        }
    }
    uint64_t next() {
        const uint64_t r = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return r;
    }
    // Uniform in [0, n) (n > 0); the tiny modulo bias does not matter for test data.
    uint64_t below(uint64_t n) { return next() % n; }

    void fill(std::byte* p, size_t n) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            const uint64_t v = next();
            std::memcpy(p + i, &v, 8);
        }
        if (i < n) {
            const uint64_t v = next();
            std::memcpy(p + i, &v, n - i);
        }
    }

private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    std::array<uint64_t, 4> s_{};
};

// Text-like data: a mix of prose (Zipf-distributed pseudo-words) and log lines (timestamps,
// hosts, levels, key=value pairs with varying numbers). Per 64 KiB cluster it deflates with
// zlib level 6 and a 4 KiB window about 3x, like real documentation text (licences, man
// pages, changelogs measure 3 to 4x; logs 5 to 8x).
class TextGen {
public:
    explicit TextGen(uint64_t seed) : rng_(seed) {
        static constexpr const char* kSyll[] = {"a",  "ba", "be", "ca", "co", "de", "di", "en", "er", "fa", "ge",
                                                "ha", "in", "ion", "ka", "la", "le", "ma", "me", "mo", "na", "ne",
                                                "no", "or", "pa", "pe", "ra", "re", "ro", "sa", "se", "si", "st",
                                                "ta", "te", "th", "ti", "to", "tr", "un", "va", "ve", "wa", "xe",
                                                "y",  "za", "ing", "ed"};
        constexpr size_t kNSyll = sizeof(kSyll) / sizeof(kSyll[0]);
        Rng vr(0x5eed5eedull);
        words_.reserve(kWords);
        for (size_t i = 0; i < kWords; ++i) {
            std::string w;
            const size_t n = 1 + vr.below(i < 64 ? 2 : 4);
            for (size_t k = 0; k < n; ++k) w += kSyll[vr.below(kNSyll)];
            words_.push_back(w);
        }
        // Zipf(1) over the vocabulary, as a lookup table indexed by 16 random bits.
        double h = 0;
        for (size_t i = 1; i <= kWords; ++i) h += 1.0 / double(i);
        size_t slot = 0;
        double acc = 0;
        for (size_t i = 0; i < kWords && slot < zipf_.size(); ++i) {
            acc += 1.0 / (double(i + 1) * h);
            const size_t end = std::min(zipf_.size(), size_t(acc * double(zipf_.size())) + 1);
            while (slot < end) zipf_[slot++] = uint16_t(i);
        }
        while (slot < zipf_.size()) zipf_[slot++] = uint16_t(kWords - 1);
    }

    // Appends text to `out` until it holds `n` bytes (the last line is cut).
    void fill(std::byte* out, size_t n) {
        size_t pos = 0;
        while (pos < n) {
            line_.clear();
            if (rng_.below(3) == 0) prose_line();
            else log_line();
            const size_t k = std::min(line_.size(), n - pos);
            std::memcpy(out + pos, line_.data(), k);
            pos += k;
        }
    }

private:
    static constexpr size_t kWords = 4096;
    static constexpr size_t kCommonWords = 64;

    const std::string& word() { return words_[zipf_[rng_.next() & 0xffff]]; }
    // Log messages come from a few templates: their words are the commonest ones.
    const std::string& common_word() { return words_[zipf_[rng_.next() & 0xffff] % kCommonWords]; }

    void number(uint64_t max) { line_ += std::to_string(rng_.below(max)); }

    void prose_line() {
        const size_t n = 6 + rng_.below(12);
        for (size_t i = 0; i < n; ++i) {
            if (i) line_ += ' ';
            line_ += word();
        }
        line_ += rng_.below(4) ? ".\n" : ",\n";
    }

    void log_line() {
        static constexpr const char* kLevel[] = {"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"};
        static constexpr const char* kHost[] = {"web-01", "web-02", "db-01", "cache-3", "worker-7"};
        // The clock only moves forward, as in a real log.
        clock_ += rng_.below(2000);
        const uint64_t ms = clock_ % 1000, s = clock_ / 1000;
        char ts[48];
        std::snprintf(ts, sizeof ts, "2024-03-%02u %02u:%02u:%02u.%03u ", unsigned(1 + s / 86400 % 28),
                      unsigned(s / 3600 % 24), unsigned(s / 60 % 60), unsigned(s % 60), unsigned(ms));
        line_ += ts;
        line_ += kHost[rng_.below(5)];
        line_ += ' ';
        line_ += kLevel[rng_.below(6)];
        line_ += " [";
        line_ += word();
        line_ += "] ";
        const size_t n = 2 + rng_.below(6);
        for (size_t i = 0; i < n; ++i) {
            line_ += common_word();
            line_ += ' ';
        }
        line_ += "id=";
        number(1000000);
        line_ += " took=";
        number(5000);
        line_ += "ms\n";
    }

    Rng rng_;
    std::vector<std::string> words_;
    std::array<uint16_t, 65536> zipf_{};
    std::string line_;
    uint64_t clock_ = 0;
};

enum class Kind { Zeros, Random, Text, Pattern, HalfRandomHalfZero, HalfZeroHalfRandom, Period4096, Period4097, MostlyRandom };

inline const char* kind_name(Kind k) {
    switch (k) {
        case Kind::Zeros: return "zeros";
        case Kind::Random: return "random";
        case Kind::Text: return "text";
        case Kind::Pattern: return "pattern";
        case Kind::HalfRandomHalfZero: return "half-random-half-zero";
        case Kind::HalfZeroHalfRandom: return "half-zero-half-random";
        case Kind::Period4096: return "period-4096";
        case Kind::Period4097: return "period-4097";
        case Kind::MostlyRandom: return "random-with-1k-zeros";
    }
    return "?";
}

// One buffer of `n` bytes of the given kind.
inline std::vector<std::byte> make(Kind k, size_t n, uint64_t seed) {
    std::vector<std::byte> b(n);
    Rng r(seed);
    switch (k) {
        case Kind::Zeros: break;
        case Kind::Random: r.fill(b.data(), n); break;
        case Kind::Text: TextGen(seed).fill(b.data(), n); break;
        case Kind::Pattern: {
            // A short random pattern (3 to 300 bytes) repeated: deflate matches at small distances.
            std::vector<std::byte> p(3 + r.below(298));
            r.fill(p.data(), p.size());
            for (size_t i = 0; i < n; ++i) b[i] = p[i % p.size()];
            break;
        }
        case Kind::HalfRandomHalfZero: r.fill(b.data(), n / 2); break;
        case Kind::HalfZeroHalfRandom: r.fill(b.data() + n / 2, n - n / 2); break;
        case Kind::Period4096:
        case Kind::Period4097: {
            // Random bytes repeating with that period: the only matches lie exactly that far
            // back, so a deflate stream that uses them must reach 4096 (or 4097) bytes back.
            const size_t period = k == Kind::Period4096 ? 4096 : 4097;
            const size_t head = std::min(n, period);
            r.fill(b.data(), head);
            for (size_t i = head; i < n; ++i) b[i] = b[i - period];
            break;
        }
        case Kind::MostlyRandom: {
            // Random but for one 1 KiB run of zeros: deflate saves about 1 KiB, so qemu would
            // store the cluster compressed whenever it is larger than 1 KiB or so.
            r.fill(b.data(), n);
            if (n > 2048) std::memset(b.data() + r.below(n - 1024), 0, 1024);
            break;
        }
    }
    return b;
}

// The benchmark image's layout: runs of 64 KiB to 8 MiB (log-uniform, 4 KiB multiples) of
// random data (40% of runs, so of bytes), text (20%), written zeroes (20%) and holes (20%).
enum class RunKind { Random, Text, Zero, Hole };

struct Run {
    RunKind kind;
    uint64_t length;
};

class ImageLayout {
public:
    static constexpr uint64_t kMinRun = 64 << 10;
    static constexpr uint64_t kRunAlign = 4 << 10;
    static constexpr int kRunDoublings = 7;  // 64 KiB * 2^7 = 8 MiB

    explicit ImageLayout(uint64_t seed) : rng_(seed) {}

    Run next() {
        const uint64_t k = rng_.below(10);
        const RunKind kind = k < 4 ? RunKind::Random : k < 6 ? RunKind::Text : k < 8 ? RunKind::Zero : RunKind::Hole;
        // Log-uniform length: 2^(7u) scaled, from 53 random bits.
        const double u = double(rng_.next() >> 11) / double(1ull << 53);
        uint64_t len = uint64_t(double(kMinRun) * std::exp2(u * kRunDoublings));
        len = std::max(kMinRun, len / kRunAlign * kRunAlign);
        return {kind, len};
    }

private:
    Rng rng_;
};

}  // namespace blkdata
