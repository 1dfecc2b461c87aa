// The map walk behind `blkimg map`: block status over the chain, merged into entries.
#include "blk/map.h"

#include <algorithm>

#include "blk/block_status.h"

namespace blk {

namespace {

constexpr uint64_t kMapProbeBytes = 1ull << 30;

Result<MapEntry> probe(Node* top, uint64_t off, uint64_t bytes) {
    BLK_TRY_ASSIGN(ChainStatus cs, block_status_above(top, nullptr, off, bytes));
    const BlockStatus& st = cs.status;
    MapEntry e;
    e.start = off;
    e.length = st.bytes;
    e.depth = cs.depth;
    e.present = st.flags & kStatusAllocated;
    e.zero = st.flags & kStatusZero;
    e.data = st.flags & kStatusData;
    e.compressed = st.flags & kStatusCompressed;
    e.has_offset = (st.flags & kStatusOffsetValid) && st.file;
    if (e.has_offset) {
        e.offset = st.offset;
        e.filename = st.file->filename();
    }
    return e;
}

}  // namespace

bool map_entries_mergeable(const MapEntry& cur, const MapEntry& next) {
    if (cur.length == 0) return false;
    // `compressed` is not compared: qemu-img 7.2 neither prints nor merges on it.
    if (cur.zero != next.zero || cur.data != next.data ||
        cur.depth != next.depth || cur.present != next.present || cur.has_offset != next.has_offset) {
        return false;
    }
    if (cur.has_offset && (cur.filename != next.filename || cur.offset + cur.length != next.offset)) return false;
    return true;
}

Status map_image(Node* top, uint64_t start, uint64_t end,
                 const std::function<Status(const MapEntry& entry, MapEntry* next)>& emit) {
    end = std::min(end, top->size());
    MapEntry cur;
    cur.start = start;
    while (cur.start + cur.length < end) {
        const uint64_t off = cur.start + cur.length;
        const uint64_t n = std::min(kMapProbeBytes, end - off);
        auto next = probe(top, off, n);
        if (!next) return std::move(next).error().with_context("Could not read file metadata");
        if (map_entries_mergeable(cur, *next)) {
            cur.length += next->length;
            continue;
        }
        if (cur.length > 0) BLK_TRY(emit(cur, &*next));
        cur = std::move(*next);
    }
    return emit(cur, nullptr);
}

}  // namespace blk
