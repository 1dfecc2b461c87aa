// qcow2 engine: the node class shared by the engine's source files (open and info in
// qcow2.cpp, reads in read.cpp, writes in write.cpp, zeroes and discard in zero.cpp,
// metadata write-back, header updates and resize in meta.cpp).
//
// How writes work:
// - One mutex guards all metadata (L1, the L2 cache, refcounts, header, in-flight list).
//   A request is planned under it (L2 lookups, one contiguous allocation for the clusters
//   that need new space), its data is written without it (COW reads, decompression and
//   pwrites run in parallel across threads), and its L2 entries are updated under it again.
// - Requests touching the same guest cluster are serialized through the in-flight list, so
//   copy-on-write and allocation never race; other requests proceed in parallel.
// - Metadata changes stay in the caches (L2 tables, refcount blocks: bounded, dirty-tracked)
//   and reach the disk at flush, or when dirty tables outgrow a cache, in an order that
//   keeps the image consistent at every step (see writeback_locked()): refcount increments,
//   L2 tables, the L1 table and header, then refcount decrements; freed clusters are reused
//   only after that. A crash leaks clusters at worst.
// - Lazy refcounts: the dirty bit is set before the first metadata change and cleared by a
//   clean flush; refcount write-back then waits for the flush.
// - Internal snapshots: clusters and L2 tables they share (refcount > 1, COPIED clear) are
//   copied before they are written, never written in place (meta.cpp, write.cpp).
// - Persistent bitmaps (bitmap.cpp): flagged in use at the writable open, marked by every
//   write, zero write and discard, stored back when the image closes or goes read-only.
// - Flush writes everything back and flushes the host files (unless cache.no-flush). The
//   destructor does the same, best effort and silently; call flush() to see errors. After
//   corrupt metadata or an I/O error in metadata, nothing more is written (broken_).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "blk/check.h"
#include "blk/driver.h"
#include "cache.h"
#include "format.h"
#include "metamap.h"
#include "refcount.h"

namespace blk::qcow2 {

constexpr uint64_t kL2CacheBytes = 4ull << 20;  // bound on cached L2 tables (qemu: 1 MiB)
constexpr size_t kMinL2CacheTables = 2;
constexpr uint64_t kMaxWriteChunk = 8ull << 20;  // bigger requests are planned in pieces

std::string hex(uint64_t v);

// The check (and repair, on a writable `file`) of the qcow2 image in `file` (check.cpp).
Result<CheckResult> check_qcow2(Node& file, Repair repair);

// Where one run of guest bytes comes from (one L2 table at most).
struct Extent {
    ClusterKind kind = ClusterKind::UnallocatedPlain;
    uint64_t bytes = 0;
    uint64_t host = 0;   // host offset of the first byte (Normal, ZeroAlloc, UnallocatedAlloc)
    uint64_t entry = 0;  // the L2 entry (Compressed)
};

// One guest cluster of a write request.
struct Plan {
    struct Cow {
        uint64_t a = 0, b = 0;  // bytes of the cluster to fill from the old content
        ClusterKind src = ClusterKind::ZeroPlain;
    };
    uint64_t guest = 0;       // guest offset of the cluster
    uint64_t lo = 0, hi = 0;  // bytes of the cluster the request covers
    L2Entry old;              // the entry before the write
    L2Entry next;             // the entry after it
    uint64_t host = 0;        // host cluster written (data file offset with an external data file)
    bool fresh = false;       // needs a new host cluster
    bool allocated = false;   // `host` was allocated for this request
    std::vector<Cow> cow;
    std::vector<std::byte> buf;   // the cluster's bytes, when it has COW ranges
    uint64_t w_lo = 0, w_hi = 0;  // bytes of the cluster written
};

class Qcow2Node final : public Node {
public:
    Qcow2Node(Json opts, Header h, std::vector<std::byte> head);
    ~Qcow2Node() override;

    Status init(OpenContext& ctx, const Json& opts, std::shared_ptr<Node> file);

    std::vector<SnapshotFacts> snapshots() const override { return snapshots_; }
    std::string backing_file_name() const override { return h_.backing_file; }
    std::string backing_format() const override { return h_.backing_format; }
    std::optional<uint64_t> cluster_size() const override { return h_.cluster_size(); }
    std::optional<bool> dirty() const override;
    FormatFacts format_specific() const override;
    bool encrypted() const override { return encrypt_.has_value(); }
    // An encrypted image opened for its metadata only: how it is encrypted.
    void set_encrypt_info(EncryptFacts info) { encrypt_ = std::move(info); }

    Result<CompressedCluster> compress_cluster(std::span<const std::byte> data) const override;
    Status set_incomplete(bool incomplete) override;
    bool incomplete() const override;

protected:
    Capabilities own_caps() const override;
    Status do_read(uint64_t off, std::span<std::byte> buf) override;
    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override;
    Status do_write(uint64_t off, std::span<const std::byte> buf) override;
    Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) override;
    Status do_discard(uint64_t off, uint64_t bytes) override;
    Status do_flush() override;
    Status do_truncate(uint64_t size, Prealloc prealloc) override;
    Status do_write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c) override;
    Status do_reopen(bool writable) override;
    Status do_make_empty() override;

private:
    // qemu's has_zero_init for the image as it stands (Capabilities::zero_init).
    bool zero_init() const;
    std::optional<EncryptFacts> encrypt_;  // set when encrypted
    using Lock = std::unique_lock<std::mutex>;

    // --- open (qcow2.cpp) ---
    Status load_l1();
    Status load_snapshots();
    Status load_bitmaps();
    Status open_writable(const Json& opts);
    Status map_snapshots();
    Status open_bitmaps();
    void mark_bitmaps(uint64_t off, uint64_t len);
    void resize_bitmaps(uint64_t size);
    Status store_bitmaps_locked();
    Status repair_dirty();

    // --- lookup and reads (read.cpp) ---
    Result<Extent> lookup_locked(uint64_t off, uint64_t max);
    Result<MetaCache::Entry*> l2_load_locked(uint64_t l2_off, uint64_t l1_index);
    bool in_metadata(uint64_t off, uint64_t len) const;
    Status check_host(uint64_t host_cluster, uint64_t guest) const;
    Status read_backing(uint64_t off, std::span<std::byte> buf);
    Status read_compressed_cluster(uint64_t guest, uint64_t entry, std::span<std::byte> cluster);
    Status check_preallocation();
    bool backing_reads_zero(uint64_t off, uint64_t len) const;

    // --- writes (write.cpp) ---
    Status write_chunk(uint64_t off, std::span<const std::byte> buf);
    Status classify_locked(Plan& p);
    void plan_cow(Plan& p);
    Status fill_cow(Plan& p, std::span<const std::byte> user, uint64_t req_off);
    Status write_plans(std::vector<Plan>& plans, std::span<const std::byte> user, uint64_t req_off);
    Status commit_locked(std::vector<Plan>& plans, bool ok);
    // Drops the references an L2 entry held (at the next write-back), freed as `kind`.
    Status release_locked(const L2Entry& old, FreeKind kind);
    // Which freed clusters are discarded in the file: pass-discard-request defaults to the
    // node's own discard mode, -snapshot to on, -other to off (qemu's defaults).
    DiscardPass discard_pass() const {
        return DiscardPass{pass_request_.value_or(discard_unmap()), pass_snapshot_, pass_other_};
    }
    Status check_write_host(uint64_t host, uint64_t guest) const;

    // --- zeroes and discard (zero.cpp) ---
    // `full` (make_empty): every cluster becomes unallocated, whatever lies below.
    Status zero_clusters(uint64_t off, uint64_t bytes, unsigned flags, bool discard, bool full = false);
    Result<bool> reads_zero(uint64_t off, uint64_t bytes);

    // --- metadata (meta.cpp) ---
    Status writable_locked() const;
    Error meta_error_locked(Error e);
    Result<MetaCache::Entry*> l2_for_write_locked(uint64_t l1_index);
    void l1_dirty_locked(uint64_t index);
    Status mark_dirty_locked();
    Status write_header_locked();
    Status barrier_locked();
    Status writeback_locked(bool final);
    Status maybe_writeback_locked();
    void begin_inflight_locked(Lock& lk, uint64_t first, uint64_t end);
    void end_inflight_locked(uint64_t first, uint64_t end);
    Status grow_data_file(uint64_t end);
    Status preallocate_locked(uint64_t from, uint64_t to, Prealloc mode);

    Header h_;
    std::vector<std::byte> hdr_;  // the fixed header fields as on disk, patched for updates
    EdgeSlot file_;  // the "file" edge: metadata (and data, without a data file)
    EdgeSlot data_;  // where guest data lives: the "data-file" edge, or "file"
    bool external_ = false;
    std::string name_;
    std::vector<uint64_t> l1_;
    std::vector<BitmapFacts> bitmaps_;
    std::vector<SnapshotFacts> snapshots_;
    // Where each internal snapshot's L1 table lives (offset, entries), and the bytes the
    // snapshot table takes: a writable open keeps them, and the L2 tables they name, off
    // limits to data writes and allocation.
    std::vector<std::pair<uint64_t, uint32_t>> snapshot_l1s_;
    // Persistent bitmaps of a writable open (bitmap.cpp).
    struct PersistentBitmap {
        uint64_t dir_pos = 0;  // its entry's byte offset in bitmap_dir_
        uint64_t table_off = 0;
        uint32_t table_size = 0;
        uint32_t flags = 0;  // as on disk before the open flagged it in-use
        uint8_t gran_bits = 16;
        bool enabled = false;  // "auto": writes mark it
        std::vector<uint64_t> table;
        std::vector<uint8_t> bits;  // bit i of byte k: granule 8k+i, as on disk
        uint64_t bits_for(uint64_t size) const;
    };
    std::mutex bitmap_mu_;  // guards the bits of bitmaps_rw_ (writes mark them without mu_)
    std::vector<PersistentBitmap> bitmaps_rw_;
    std::vector<std::byte> bitmap_dir_;
    std::atomic<bool> bitmaps_in_use_{false};  // flagged in-use on disk, to be stored back
    uint64_t snapshot_table_bytes_ = 0;

    mutable std::mutex mu_;  // guards everything below: L1, caches, refcounts, header, in-flight
    MetaCache l2_cache_;

    // --- the write path's state ---
    bool writable_ = false;
    std::optional<bool> pass_request_;  // pass-discard-request, when given
    bool pass_snapshot_ = true;          // pass-discard-snapshot
    bool pass_other_ = false;            // pass-discard-other
    bool lazy_ = false;           // lazy refcounts in use: dirty bit, deferred refcount writes
    bool no_flush_ = false;       // cache.no-flush (qemu-img convert's default cache=unsafe)
    bool dirty_on_disk_ = false;  // the dirty bit is set in the header on disk
    bool broken_ = false;         // corrupt metadata met while writing: no more writes
    std::string broken_msg_;
    MetadataMap meta_;
    std::unique_ptr<Refcounts> refs_;
    uint64_t l1_dirty_lo_ = UINT64_MAX;  // L1 entries [lo, hi) changed since the last write-back
    uint64_t l1_dirty_hi_ = 0;
    uint64_t l1_moved_to_ = 0;  // a resize moved the L1 table here; the header follows at write-back
    bool header_dirty_ = false;
    bool unsynced_file_ = false;  // written to file_ since the last host flush
    bool unsynced_data_ = false;  // guest data written since the last host flush
    std::condition_variable inflight_cv_;
    std::vector<std::pair<uint64_t, uint64_t>> inflight_;  // guest cluster ranges being written

    std::mutex prealloc_mu_;
    bool prealloc_checked_ = false;
    bool metadata_prealloc_ = false;
};

}  // namespace blk::qcow2
