// Zero detection for the copy engine (see zero_scan.h).
#include "zero_scan.h"

#include <algorithm>
#include <cstring>

namespace blk::copy_detail {

namespace {

// Bytes tested per step of the main loop: OR-ing this many bytes of vector loads keeps the
// loads pipelined, and one branch per step is cheap next to them.
constexpr size_t kZeroStep = 128;

// Two words at once: GCC and Clang map this vector type onto SSE2/NEON registers.
typedef uint64_t Vec __attribute__((vector_size(16)));

inline Vec load_vec(const std::byte* p) {
    Vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline uint64_t load64(const std::byte* p) {
    uint64_t w;
    std::memcpy(&w, p, sizeof w);
    return w;
}

}  // namespace

bool is_zero(std::span<const std::byte> buf) {
    const std::byte* p = buf.data();
    size_t n = buf.size();
    if (n < 16) {
        for (size_t i = 0; i < n; ++i)
            if (p[i] != std::byte{0}) return false;
        return true;
    }
    // Data usually shows itself in its first or last bytes: test them before the long loop.
    if ((load64(p) | load64(p + 8) | load64(p + n - 16) | load64(p + n - 8)) != 0) return false;
    size_t i = 0;
    for (; i + kZeroStep <= n; i += kZeroStep) {
        Vec acc = load_vec(p + i);
        for (size_t k = sizeof(Vec); k < kZeroStep; k += sizeof(Vec)) acc |= load_vec(p + i + k);
        if ((acc[0] | acc[1]) != 0) return false;
    }
    for (; i + sizeof(uint64_t) <= n; i += sizeof(uint64_t))
        if (load64(p + i) != 0) return false;
    // The last partial word lies within the last 16 bytes, tested above.
    return true;
}

void split_sparse(std::span<const std::byte> buf, uint64_t off, const SparseRule& rule, bool head_edge,
                  bool tail_edge, std::vector<Segment>& out) {
    out.clear();
    const uint64_t len = buf.size();
    if (len == 0) return;
    const uint64_t end = off + len;
    const uint64_t g = std::max<uint64_t>(rule.granule, 1);
    const uint64_t min_run = std::min(std::max<uint64_t>(rule.min_run, 1), len);

    uint64_t data_start = off;  // start of the data not yet emitted
    auto close_zero_run = [&](uint64_t zs, uint64_t ze) {
        bool keep = ze - zs >= min_run || (zs == off && head_edge) || (ze == end && tail_edge);
        if (!keep) return;  // a short gap: it stays inside the data write
        if (data_start < zs) out.push_back({data_start, zs - data_start, false});
        out.push_back({zs, ze - zs, true});
        data_start = ze;
    };

    bool in_zero = false;
    uint64_t zs = 0;
    for (uint64_t p = off; p < end;) {
        uint64_t ce = std::min(p - p % g + g, end);
        bool z = is_zero(buf.subspan(p - off, ce - p));
        if (z && !in_zero) {
            zs = p;
            in_zero = true;
        } else if (!z && in_zero) {
            close_zero_run(zs, p);
            in_zero = false;
        }
        p = ce;
    }
    if (in_zero) close_zero_run(zs, end);
    if (data_start < end) out.push_back({data_start, end - data_start, false});
}

}  // namespace blk::copy_detail
