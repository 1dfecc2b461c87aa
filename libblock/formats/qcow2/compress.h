// Decompression of one qcow2 compressed cluster (raw deflate with a 4 KiB window, or zstd).
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "blk/result.h"
#include "format.h"

namespace blk::qcow2 {

// Inflates `in` into exactly `out.size()` bytes; anything else is corrupt data.
Status decompress_cluster(CompressionType type, std::span<const std::byte> in, std::span<std::byte> out);

// Compresses one whole cluster for a qcow2 image: raw deflate whose back-references stay
// within 4 KiB (readers inflate with windowBits -12), or one zstd frame. Returns the
// compressed bytes if they fit in `max_out` bytes, or nullopt when the cluster does not
// shrink enough (the caller stores it uncompressed, as qemu does). Thread-safe.
Result<std::optional<std::vector<std::byte>>> compress_cluster_data(CompressionType type, std::span<const std::byte> in,
                                                                    size_t max_out);

}  // namespace blk::qcow2
