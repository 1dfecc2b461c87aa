// The map walk: where each range of an image's guest data comes from, merged as qemu-img map does.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "blk/node.h"
#include "blk/result.h"

namespace blk {

struct MapEntry {
    uint64_t start = 0;
    uint64_t length = 0;
    unsigned depth = 0;      // backing edges crossed to the layer that holds the range
    bool present = false;    // allocated in that layer
    bool zero = false;
    bool data = false;
    bool compressed = false;
    bool has_offset = false;
    uint64_t offset = 0;     // host offset in `filename`
    std::string filename;    // the host node's filename, when has_offset
};

// Two entries merge when every flag agrees, the host file is the same and host offsets
// continue (qemu-img map's rule).
bool map_entries_mergeable(const MapEntry& cur, const MapEntry& next);

// Walks [start, end) of `top` in probes of at most 1 GiB, merges adjacent entries and hands
// each finished entry to `emit` together with the one that follows (null for the last).
// `emit` may change the following entry (qemu's human format does, to coalesce more).
// An empty range yields one zero-length entry at `start`, as qemu-img prints it.
Status map_image(Node* top, uint64_t start, uint64_t end,
                 const std::function<Status(const MapEntry& entry, MapEntry* next)>& emit);

}  // namespace blk
