// qcow2 image creation: qemu-img 7.2's create options and checks, the layout of a new image
// (pure and unit-tested), and the writer that streams it to disk.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "blk/driver.h"
#include "format.h"

namespace blk::qcow2 {

// The create options qemu-img 7.2 has for qcow2, in qemu's order (the Formatting line's).
const Schema& create_schema();

// DriverSpec::check_create for qcow2: qemu's option checks, the layout's limits, whether the
// header fits, and the data file's name.
Status check_create(const FormatCreateContext& ctx);
// DriverSpec::create for qcow2: writes the image into `file` (and the external data file,
// which it gets from ctx.create_extra_file), metadata first and the header last.
Status create(Node& file, const FormatCreateContext& ctx);

// What the options ask for, after qemu's checks.
struct CreateParams {
    uint32_t version = 3;
    uint32_t cluster_bits = 16;
    uint32_t refcount_order = 4;
    uint64_t size = 0;  // virtual size, rounded up to 512 bytes
    bool extended_l2 = false;
    bool lazy_refcounts = false;
    CompressionType compression = CompressionType::Zlib;
    std::string backing_file;
    std::string backing_format;
    std::string data_file;  // external data file name as stored in the header ("" for none)
    bool data_file_raw = false;
    Prealloc prealloc = Prealloc::Off;  // metadata when data_file_raw asks for it
};

// Checks typed create options (as create_image() passes them) with qemu's rules, order and
// messages, and turns them into parameters.
Result<CreateParams> parse_create_params(const Json& opts);

// Where everything of a new image goes. Every cluster of the image file below
// `total_clusters` is in use (refcount 1); nothing above it is.
//   header | refcount table | refcount blocks | L1 table | preallocated area
// The preallocated area holds the L2 tables and, without an external data file, the data
// clusters: with preallocation=metadata each L2 table is followed by its data clusters (as
// qemu lays it out); with falloc/full, or with an external data file, the L2 tables come
// first and the data follows in one run, so guest order is host order.
struct Layout {
    uint64_t cluster_size = 0;
    uint64_t subcluster_size = 0;
    uint64_t l2_entries = 0;         // entries per L2 table
    uint64_t reftable_offset = 0;
    uint64_t reftable_clusters = 0;
    uint64_t refblocks_offset = 0;
    uint64_t refblock_count = 0;
    uint64_t refcounts_per_block = 0;
    uint32_t l1_size = 0;            // L1 entries (0: no L1 table, offset 0, as qemu does)
    uint64_t l1_offset = 0;
    uint64_t l1_clusters = 0;
    uint64_t data_clusters = 0;      // guest clusters: size rounded up to clusters
    uint64_t l2_tables = 0;          // preallocated L2 tables (0 without preallocation)
    bool interleaved = false;        // metadata preallocation inside the image file
    bool internal_data = false;      // preallocated data clusters live in the image file
    uint64_t prealloc_offset = 0;    // the first L2 table
    uint64_t total_clusters = 0;
    uint64_t metadata_end = 0;       // end of the last metadata byte written
    uint64_t file_size = 0;          // final length of the image file
    uint64_t data_file_size = 0;     // final length of the external data file
    // The tail of the last data cluster beyond the guest size, up to the (sub)cluster end:
    // qemu writes it as zeroes when it preallocates metadata (its copy-on-write of the
    // partial cluster), so the same blocks are allocated. In the data file if external.
    uint64_t tail_zero_offset = 0;
    uint64_t tail_zero_bytes = 0;

    uint64_t l2_offset(uint64_t table) const;
    // Host offset of guest cluster `k` (image file, or the data file's guest offset).
    uint64_t data_offset(uint64_t k) const;
};

// Plans a new image. EFBIG when a table would exceed qemu's limits (L1 32 MiB, refcount
// table 8 MiB) or an offset would not fit into an L2 entry.
Result<Layout> plan_layout(const CreateParams& p);

// The header of a planned image (feature table as qemu writes it).
Header make_header(const CreateParams& p, const Layout& l);

// Sets `count` refcount entries starting at entry `first` of a refcount block to 1.
void refblock_set_ones(std::span<std::byte> block, uint32_t refcount_order, uint64_t first, uint64_t count);

}  // namespace blk::qcow2
