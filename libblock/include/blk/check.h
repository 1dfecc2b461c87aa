// The check job: a read-only consistency check of an image's metadata (qemu-img check's
// counters and report lines), made by the format's structure walker.
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
    // What qemu prints to stderr while checking ("ERROR ...", "Leaked cluster ..."), in order.
    std::vector<std::string> lines;
};

// Checks the format node under `root` (filters above it are skipped). ENOTSUP for a format
// without checks (raw); other errors for an image the walker cannot read at all.
Result<CheckResult> check_image(Node* root);

}  // namespace blk
