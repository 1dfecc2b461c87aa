// Decompression of one qcow2 compressed cluster (raw deflate with a 4 KiB window, or zstd).
#pragma once

#include <cstddef>
#include <span>

#include "blk/result.h"
#include "format.h"

namespace blk::qcow2 {

// Inflates `in` into exactly `out.size()` bytes; anything else is corrupt data.
Status decompress_cluster(CompressionType type, std::span<const std::byte> in, std::span<std::byte> out);

}  // namespace blk::qcow2
