// The check job: a consistency check of an image's metadata (qemu-img check's counters and
// report lines), made by the format's structure walker, and its repair (qemu-img check -r).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blk/node.h"
#include "blk/result.h"

namespace blk {

struct CheckResult {
    uint64_t corruptions = 0;
    uint64_t leaks = 0;
    uint64_t check_errors = 0;
    uint64_t image_end_offset = 0;
    uint64_t total_clusters = 0;
    uint64_t allocated_clusters = 0;
    uint64_t fragmented_clusters = 0;
    uint64_t compressed_clusters = 0;
    // What a repair fixed (qemu-img's corruptions-fixed / leaks-fixed).
    uint64_t corruptions_fixed = 0;
    uint64_t leaks_fixed = 0;
    // A repair that had to stop (qemu-img's "Check failed: <strerror>"): the errno, else 0.
    int failed = 0;
    // A repair met metadata it must not touch and marked the image corrupt, as qemu does;
    // qemu cannot check such an image again ("Check failed: No medium found").
    bool disabled = false;
    // What qemu prints to stderr while checking ("ERROR ...", "Leaked cluster ..."), in order.
    std::vector<std::string> lines;
};

// What a check may repair, as qemu-img check -r: nothing, leaked clusters only, or
// everything it can (refcounts too low or too high, COPIED flags, a refcount structure that
// must be rebuilt).
enum class Repair { None, Leaks, All };

// Checks the format node under `root` (filters above it are skipped). ENOTSUP for a format
// without checks (raw); other errors for an image the walker cannot read at all, or (with a
// repair) a repair that could not be done (EIO after "ERROR need to rebuild refcount
// structures", as qemu). A repair writes to check_target(root), which the caller reopens
// read-write first; `lines` then also holds qemu's "Repairing ..." lines, and the counters
// are those of the repair pass (run check_image again without repair for the final report,
// as qemu-img's "Double checking the fixed image now...").
Result<CheckResult> check_image(Node* root, Repair repair = Repair::None);

// The node a check reads and a repair writes: the image's file under the format node. Null
// for a format without checks.
Node* check_target(Node* root);

}  // namespace blk
