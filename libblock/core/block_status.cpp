// block_status_above: the chain walk behind map, convert, commit and compare.
#include "blk/block_status.h"

#include <algorithm>

namespace blk {

Result<ChainStatus> block_status_above(Node* top, const Node* base, uint64_t off, uint64_t bytes) {
    ChainStatus out;
    Node* n = skip_filters(top);
    unsigned depth = 0;
    for (;;) {
        BLK_TRY_ASSIGN(BlockStatus st, n->block_status(off, bytes));
        bytes = st.bytes;
        out.status = st;
        out.depth = depth;
        out.layer = n;
        if (st.flags & (kStatusData | kStatusZero)) break;
        Node* next = skip_filters(cow_child(*n));
        if (!next || next == base) {
            // The chain ends with nothing said about the range: qemu reports no flags at all.
            out.status.flags = 0;
            break;
        }
        n = next;
        ++depth;
    }
    return out;
}

}  // namespace blk
