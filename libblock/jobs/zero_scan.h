// Zero detection for the copy engine: a fast all-zero test and the -S rule that splits a
// buffer of data into runs to write and runs to leave sparse.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace blk::copy_detail {

// True if every byte of `buf` is zero. Word-wise, stops at the first non-zero word, so data
// costs almost nothing and zeroes cost one pass at memory speed.
bool is_zero(std::span<const std::byte> buf);

struct Segment {
    uint64_t off = 0;   // guest offset
    uint64_t len = 0;
    bool zero = false;  // reads as zeroes: write zeroes (or nothing) instead of data
};

struct SparseRule {
    // Zero detection works on cells of `granule` bytes aligned to guest offsets (a power of
    // two: the largest of 512, pow2floor(-S), the target's request alignment and the
    // target's cluster size), so every boundary between data and zeroes that it makes is
    // aligned and a cluster of the target is never split.
    uint64_t granule = 4096;
    // A run of zero cells in the middle of the buffer must be at least this long (-S) to
    // become zeroes; shorter runs stay in the data write, so one small gap does not break
    // up a large write. Capped at the buffer's length (a buffer of zeroes is zeroes).
    uint64_t min_run = 4096;
};

// Splits `buf`, the data at guest offset `off`, into alternating data and zero segments.
// A zero run that touches the start (end) of the buffer becomes zeroes whatever its length
// when `head_edge` (`tail_edge`) says the buffer starts (ends) where the source's data
// extent does: there it joins the zeroes or hole beside it. Appends to `out` (cleared first).
void split_sparse(std::span<const std::byte> buf, uint64_t off, const SparseRule& rule, bool head_edge,
                  bool tail_edge, std::vector<Segment>& out);

}  // namespace blk::copy_detail
