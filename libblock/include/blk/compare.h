// The compare job: do two images read the same? qemu-img compare's rules and verdicts, found
// with parallel reads.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "blk/node.h"
#include "blk/result.h"

namespace blk {

struct CompareOptions {
    // qemu-img compare -s: sizes must match and so must each range's block status
    // (allocated, zero, data, offset valid, end of image), not only what it reads.
    bool strict = false;
    // Differing ranges to collect. 0: stop at the first mismatch, as qemu-img does.
    uint64_t max_diffs = 0;
    // Worker threads; 0: one per core.
    unsigned threads = 0;
    // Called on the calling thread with bytes settled so far out of max(size a, size b).
    std::function<void(uint64_t done, uint64_t total)> progress;
};

struct DiffRange {
    uint64_t offset = 0;
    uint64_t length = 0;
};

enum class CompareVerdict {
    Identical,       // same content (a longer image's tail reads as zeroes)
    Differ,          // content differs at `offset` (qemu: "Content mismatch at offset N!")
    SizeMismatch,    // strict mode: the sizes differ ("Strict mode: Image size mismatch!")
    StatusMismatch,  // strict mode: block status differs at `offset`
    StatusError,     // block status of image `image` failed at `offset` (qemu-img exit 3)
    ReadError,       // reading image `image` failed in the request at `offset` (exit 4)
};

struct CompareResult {
    CompareVerdict verdict = CompareVerdict::Identical;
    uint64_t size[2] = {0, 0};
    // The range both images have was compared and found equal, and the sizes differ: qemu-img
    // prints "Warning: Image size mismatch!" before it looks at the longer image's tail.
    bool tail_checked = false;
    uint64_t offset = 0;  // Differ: first differing byte as qemu-img reports it (a 512-byte
                          // sector of its request); StatusMismatch/StatusError/ReadError: where
    unsigned image = 0;   // StatusError/ReadError: 0 for the first image, 1 for the second
    Error error;          // StatusError/ReadError: the cause
    // With max_diffs > 0: the differing ranges in order, merged, at most max_diffs of them;
    // `diffs_truncated` when there were more (the scan stopped at the first one beyond).
    std::vector<DiffRange> diffs;
    bool diffs_truncated = false;
};

// Compares the guest content of `a` and `b` (each the top of its graph). The first verdict in
// offset order is the one qemu-img would give: its rules for unallocated and zero ranges, its
// request boundaries and sector granularity for the offset it names. Ranges both sides report
// as zero or unallocated are never read; the rest is read in large requests on every core.
// Errors of the images themselves are verdicts (StatusError, ReadError), not failures.
CompareResult compare_images(Node* a, Node* b, const CompareOptions& o = {});

}  // namespace blk
