// qcow2 compressed clusters: raw deflate with a 4 KiB window (ISA-L's igzip, or zlib) and zstd.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "blk/result.h"
#include "format.h"

namespace blk::qcow2 {

// Inflates `in` into exactly `out.size()` bytes, as qemu reads a compressed cluster: `in`
// may run past the end of the stream (the stored size is rounded up to sectors). Anything
// that does not fill `out` is corrupt data (EIO). Deflate: a stream that would produce
// more than `out.size()` bytes is cut there, as qemu's inflate does. zstd: the frame must
// end exactly at `out.size()` bytes, as qemu requires. Thread-safe; uses per-thread
// decoder contexts.
Status decompress_cluster(CompressionType type, std::span<const std::byte> in, std::span<std::byte> out);

// Compresses one whole cluster into `out`: raw deflate whose back-references reach at most
// 4096 bytes back (qcow2 readers inflate with windowBits -12), or one zstd frame at zstd's
// default level, as qemu writes them. The caller passes the whole cluster (qemu pads an
// image's last, short cluster with zeroes to a full cluster before compressing, and reads
// every compressed cluster back as a full cluster). The stream must fit in `out.size()`
// bytes (qemu: cluster_size - 1); returns its length, or nullopt when it does not fit and
// the caller stores the cluster uncompressed. Thread-safe, with per-thread encoder contexts
// and no heap allocation after a thread's first call.
Result<std::optional<size_t>> compress_cluster_into(CompressionType type, std::span<const std::byte> in,
                                                    std::span<std::byte> out);

// The same, returning the compressed bytes in a new vector (nullopt: store uncompressed).
Result<std::optional<std::vector<std::byte>>> compress_cluster_data(CompressionType type, std::span<const std::byte> in,
                                                                    size_t max_out);

// The cheap incompressibility test compress_cluster_into() runs before deflating: true only
// for data with no exploitable redundancy (a flat byte distribution in every 4 KiB block
// and no repeated strings that a content-anchored sample finds), which deflate could not
// store in fewer bytes than the raw cluster either. It reads the data once, at several
// GB/s, where deflating random data runs at a few hundred MB/s.
bool cluster_looks_incompressible(std::span<const std::byte> in);

// Which deflate encoder this build uses, for benchmarks and --version style reports:
// "isa-l igzip level 3" or "zlib level 6".
const char* deflate_encoder_name();

}  // namespace blk::qcow2
