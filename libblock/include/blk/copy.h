// The copy engine behind convert (and later commit): block-status driven, parallel, with
// zero detection, compression on the workers, guest-order writes and bounded memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "blk/node.h"
#include "blk/result.h"

namespace blk {

struct CopyOptions {
    // Sources, concatenated in this order into the target's guest address space.
    std::vector<Node*> sources;
    Node* target = nullptr;

    // -S: a run of zeroes in data that was read, at least this long and aligned to it, is
    // written as zeroes (or skipped) instead of as data. 0: never; the target ends up
    // fully allocated (zero ranges are written as data too).
    uint64_t min_sparse = 4096;
    // The target reads as zeroes already (a new image with zero init, or
    // --target-is-zero): zero ranges need no write at all.
    bool target_is_zero = false;
    // -B: the target has a backing file that holds what the source's backing chain holds,
    // so only the sources' top layers are copied; `target_backing_size` is the backing
    // file's size (beyond it, zero ranges also need no write). UINT64_MAX: unknown.
    bool target_has_backing = false;
    uint64_t target_backing_size = UINT64_MAX;
    // -c: the target stores whole compressed clusters (compress_cluster on the workers,
    // write_compressed in guest order).
    bool compress = false;
    // !-W: writes reach the target in guest order, so a qcow2 target is not fragmented.
    bool in_order = true;
    // -m: requests in flight (qemu's coroutines, 1..16).
    unsigned requests = 8;
    // Worker threads; 0: one per core.
    unsigned threads = 0;
    // -r: bytes per second, 0 for no limit.
    uint64_t rate_limit = 0;
    // -C: offload copies to the host (copy_file_range) where both ends allow it.
    bool copy_range = false;
    // --salvage: unreadable sectors become zeroes, each reported through `warn`.
    bool salvage = false;

    // Called with the bytes done so far and the total to do; serialized, from any thread.
    std::function<void(uint64_t done, uint64_t total)> progress;
    // Called for each --salvage warning ("error while reading offset N: ...").
    std::function<void(const std::string&)> warn;
    // Set (e.g. by a signal handler) to stop the copy; it then fails with ECANCELED.
    const std::atomic<bool>* cancel = nullptr;
};

struct CopyStats {
    uint64_t total = 0;          // guest bytes covered
    uint64_t data_written = 0;   // bytes written as data (before compression)
    uint64_t zeroed = 0;         // bytes written as zeroes
    uint64_t skipped = 0;        // bytes left alone (zero init, backing)
};

// Copies the sources into the target. Errors read as qemu-img's: "error while reading at
// byte N: REASON", "error while writing at byte N: REASON". The target is flushed at the end.
Result<CopyStats> copy_image(const CopyOptions& opts);

}  // namespace blk
