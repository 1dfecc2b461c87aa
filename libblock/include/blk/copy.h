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

    // -S: a run of zeroes in data that was read, at least this long, is written as zeroes
    // (or skipped) instead of as data. Zeroes are found in aligned cells of the largest of
    // 512, pow2floor(min_sparse), the target's request alignment and its cluster size, so
    // a cluster of the target is never split (a run at the edge of the source's data joins
    // the zeroes beside it whatever its length). 0 (or anything below 512): never; the
    // target ends up fully allocated (zero ranges are written as data too, -c compresses
    // them), whatever target_is_zero says.
    uint64_t min_sparse = 4096;
    // The target reads as zeroes already: zero ranges need no write at all. Set it for a
    // new target whose caps().zero_init is true (when min_sparse != 0 and there is no
    // backing file, as qemu does), or for --target-is-zero. Not with target_has_backing.
    bool target_is_zero = false;
    // -B: the target has a backing file that holds what the source's backing chain holds,
    // so only the sources' top layers are copied (what they do not allocate is left
    // unallocated in the target); `target_backing_size` is the new backing file's size:
    // beyond it a new target reads as zeroes, so zero ranges need no write there.
    // UINT64_MAX: unknown (zero ranges are written everywhere).
    bool target_has_backing = false;
    uint64_t target_backing_size = UINT64_MAX;
    // An explicit base (commit): only what the source's layers above `base` allocate is
    // copied; ranges unallocated down to it are left alone in the target, as with
    // target_has_backing (which stops each source at its own backing file instead), and
    // target_backing_size says the same. `base` must be a node of the backing chain of
    // the single source, below it (filters in between are skipped, as block status does).
    Node* base = nullptr;
    // -c: the target stores whole compressed clusters (compress_cluster on the workers,
    // write_compressed in guest order).
    bool compress = false;
    // !-W: writes reach the target in guest order, so a qcow2 target is not fragmented.
    bool in_order = true;
    // -m: requests in flight (qemu's coroutines, 1..16): each holds one buffer of
    // `request_size` bytes, so memory is about requests * request_size (twice that with
    // -c, for the compressed copies), never more than kCopyMaxBufferBytes in all; larger
    // products shrink the buffers. Values above kCopyMaxRequests are clamped.
    unsigned requests = 8;
    // Worker threads; 0: one per core (std::thread::hardware_concurrency). Workers read,
    // detect zeroes and compress in parallel; with in_order one of them at a time writes,
    // in guest order, while the others go on reading ahead into free buffers. Without -c
    // never more than `requests` (a worker without a buffer has nothing to do; copies
    // from the page cache are bound by memory bandwidth, not by cores). With -c every
    // thread gets a buffer even beyond `requests` (compression wants every core busy),
    // and the buffers shrink to keep the memory bound.
    unsigned threads = 0;
    // Bytes per read (qemu's 2 MiB buffer). Requests are cut at multiples of it in the
    // target's address space, so they stay aligned to the target's clusters whatever the
    // source's extents look like. With -c: batches of whole clusters, at most 128 KiB
    // unless a cluster is larger (each slot also holds the compressed copies).
    uint64_t request_size = 2u << 20;
    // -r: bytes per second, 0 for no limit.
    uint64_t rate_limit = 0;
    // -C: offload copies to the host (copy_file_range) where every source and the target
    // have a host file at the same offsets (Node::host_fd: raw over file); elsewhere, and
    // after the first failed offload, the normal copy runs. Ignored with -c and --salvage.
    bool copy_range = false;
    // --salvage: unreadable sectors become zeroes, each reported through `warn`.
    bool salvage = false;

    // Called with the bytes done so far and the total to do, serialized, from any worker
    // thread, after each request, and once more with done == total at the end. As with
    // qemu-img's -p, the total counts what must be read (data, and zeroes with -S 0),
    // not holes or zeroes; setting it costs a block-status pass over the sources first.
    std::function<void(uint64_t done, uint64_t total)> progress;
    // Called for each --salvage warning ("error while reading offset N: ...", N within
    // that source); serialized, from any worker thread.
    std::function<void(const std::string&)> warn;
    // Set (e.g. by a signal handler) to stop the copy; checked between requests, it then
    // fails with ECANCELED, "interrupted".
    const std::atomic<bool>* cancel = nullptr;
};

struct CopyStats {
    uint64_t total = 0;          // guest bytes covered
    uint64_t data_written = 0;   // bytes written as data (before compression)
    uint64_t zeroed = 0;         // bytes written as zeroes
    uint64_t skipped = 0;        // bytes left alone (zero init, backing)
    uint64_t offloaded = 0;      // of data_written: bytes copied by copy_file_range (-C)
    uint64_t buffer_bytes = 0;   // memory the engine allocated for request buffers
};

// Bounds of the engine's memory (see CopyOptions::requests).
inline constexpr unsigned kCopyMaxRequests = 64;
inline constexpr uint64_t kCopyMaxBufferBytes = 32u << 20;

// Copies the sources into the target. Errors read as qemu-img's: "error while reading at
// byte N: REASON", "error while writing at byte N: REASON" (N the guest offset where the
// failing request starts, REASON strerror's text), "error while reading block status at
// offset N: REASON" (N within that source). The first error stops every worker; all of
// them have ended when this returns. On success the target has been flushed.
Result<CopyStats> copy_image(const CopyOptions& opts);

}  // namespace blk
