// Block status over a backing chain: the walk map, convert, commit and compare build on.
#pragma once

#include <cstdint>

#include "blk/node.h"
#include "blk/result.h"

namespace blk {

struct ChainStatus {
    BlockStatus status;   // the answer of the layer that decided (or the last one asked)
    unsigned depth = 0;   // cow edges crossed to reach that layer
    Node* layer = nullptr;  // the layer that answered (filters skipped)
};

// From `top`, skipping filters, asks each layer of the cow chain in turn until one reports
// data or zero for `off` (or the chain ends, or `base` is reached: `base` and below are not
// asked). The run length shrinks to what every asked layer agreed on.
// Requires off < top->size(), bytes > 0.
Result<ChainStatus> block_status_above(Node* top, const Node* base, uint64_t off, uint64_t bytes);

}  // namespace blk
