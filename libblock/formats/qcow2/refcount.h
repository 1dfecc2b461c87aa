// qcow2 refcounts: the refcount table and cached refcount blocks for every entry width
// (1 to 64 bits), allocation of contiguous cluster runs and of bytes for compressed
// clusters, deferred frees, and growth of the refcount table. Not thread-safe: the engine
// calls it under its metadata lock.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blk/node.h"
#include "cache.h"
#include "format.h"
#include "metamap.h"

namespace blk::qcow2 {

constexpr uint64_t kRefblockCacheBytes = 1ull << 20;
constexpr size_t kMinRefblockCacheEntries = 4;
constexpr size_t kMaxDeferredFrees = 1u << 20;  // bounds the memory frees waiting for write-back

// Why a cluster is freed, which decides whether its host range is discarded in the file
// once its refcount reaches zero (qemu's qcow2 discard types and pass-discard-* options).
enum class FreeKind : uint64_t {
    Never = 0,     // space given back after a failed write, data overwritten elsewhere
    Always = 1,    // always passed on (bitmap tables and data)
    Request = 2,   // a discard or an unmapping zero write (pass-discard-request)
    Snapshot = 3,  // emptying the image (pass-discard-snapshot)
    Other = 4,     // metadata moved or dropped: L1, refcount and L2 tables (pass-discard-other)
};

// Which kinds are passed on to the file as discards.
struct DiscardPass {
    bool request = false;
    bool snapshot = true;
    bool other = false;
    bool passes(FreeKind k) const;
};

struct AllocRun {
    uint64_t offset = 0;     // host offset of the first cluster
    uint64_t clusters = 0;   // run length
    uint64_t zero_from = 0;  // host offset from which the run has never been written (reads zero)
};

class Refcounts {
public:
    // `file` holds the image; `meta` learns every refcount block and table placed.
    Refcounts(const Header& h, const EdgeSlot& file, std::string name, MetadataMap& meta);

    // Reads the refcount table. Every block offset is checked (cluster-aligned, inside the
    // file, off the header, L1 and table) and added to `meta`; errors name the entry.
    Status load();

    Result<uint64_t> get(uint64_t cluster);
    // Adds `delta` to one cluster's refcount. Going below 0 or above the entry width's
    // maximum is an error (a corrupt image, or too many references for the width).
    Status update(uint64_t cluster, int64_t delta);

    // Allocates a run of free clusters with refcount 1: up to `n` of them starting at the
    // first free cluster, or exactly `n` if `exact`. New refcount blocks (and a bigger
    // refcount table) are placed as needed and cover themselves. Grows the file to hold
    // the run. Never returns clusters that `meta` knows as metadata (EIO instead).
    Result<AllocRun> allocate(uint64_t n, bool exact);
    // Space for `bytes` bytes of one compressed cluster, packed behind the previous one when
    // its host cluster can take another reference (qemu's layout); every host cluster the
    // bytes touch gets one more reference. Returns the host byte offset.
    Result<uint64_t> allocate_bytes(uint64_t bytes);

    // Drops one reference from `n` clusters at the next apply_deferred(): frees must reach the
    // disk only after the L2 tables that stopped pointing at the clusters, and the clusters
    // must not be reused before that.
    void defer_free(uint64_t cluster, uint64_t n, FreeKind kind);
    bool has_deferred() const { return !deferred_.empty(); }
    // Applies the deferred frees; a cluster whose refcount reaches zero and whose kind
    // `pass` passes is discarded in the file (contiguous clusters in one request) before
    // anything can allocate it again. The caller guarantees that no table on disk points
    // at the freed clusters any more (write-back order), so the discard cannot take data a
    // crash would still show. A failed discard is not an error (qemu ignores them too):
    // the space stays allocated in the file.
    Status apply_deferred(const DiscardPass& pass);

    // --- write-back ---
    bool blocks_dirty() const { return cache_.dirty_count() > 0; }
    bool table_dirty() const { return table_dirty_; }
    // Too many dirty blocks, or too many frees waiting (lazy refcounts defer both).
    bool needs_writeback() const { return cache_.needs_writeback() || deferred_.size() > kMaxDeferredFrees; }
    // Writes the dirty refcount blocks, then the table if it changed (at its new place if it
    // moved). The caller then points the header at a moved table and calls
    // table_move_committed().
    Status write_blocks();
    Status write_table();
    bool table_moved() const { return old_table_clusters_ != 0; }
    void table_move_committed();
    uint64_t table_offset() const { return table_offset_; }
    uint64_t table_clusters() const { return table_clusters_; }
    void trim() { cache_.trim(); }

    // Clusters from here on have never been allocated or written.
    uint64_t end_cluster() const { return hwm_; }
    // Makes sure the file covers every allocated cluster and clusters up to `end_cluster`.
    Status grow_file(uint64_t end_cluster = 0);

private:
    Result<MetaCache::Entry*> block(uint64_t index);
    Status ensure_block(uint64_t index);
    Status grow_table(uint64_t need_index);
    Status set_one(uint64_t cluster, uint64_t value);
    Result<bool> run_free(uint64_t cluster, uint64_t n);
    Status allocate_range(uint64_t first, uint64_t n);
    Error corrupt(const std::string& what) const;

    const Header& h_;
    const EdgeSlot& file_;  // the image's "file" edge (the node owns it), current after graph edits
    std::string name_;
    MetadataMap& meta_;
    MetaCache cache_;
    const uint64_t cs_;
    const uint64_t per_block_;
    const uint64_t max_;

    std::vector<uint64_t> table_;  // entries, as on disk (block offsets)
    uint64_t table_offset_ = 0;
    uint64_t table_clusters_ = 0;
    bool table_dirty_ = false;
    uint64_t old_table_offset_ = 0;  // the table a move replaces, freed once the header moved on
    uint64_t old_table_clusters_ = 0;

    uint64_t free_hint_ = 0;   // no free cluster below this one
    uint64_t hwm_ = 0;         // first cluster never allocated nor holding file data
    uint64_t tail_ = 0;        // next free byte behind the last compressed cluster (0: none)
    std::vector<uint64_t> deferred_;  // cluster | kind << kKindShift
    static constexpr unsigned kKindShift = 60;
};

}  // namespace blk::qcow2
