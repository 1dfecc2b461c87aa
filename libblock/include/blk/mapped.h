// Bytes lent in place: a read-only mapping of part of a host file's page cache, safe
// against the file shrinking (or failing to read) underneath it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "blk/result.h"

namespace blk {

// A read-only shared mapping of [off, off+len) of a host file. Touching a page that has
// gone away (the file was truncated meanwhile, or reading the page failed) would raise
// SIGBUS and kill the process; here the page reads as zeroes instead and intact() turns
// false, so whoever used the bytes knows to throw the result away and read again.
// Move-only; unmapped when destroyed or reset.
class MappedBytes {
public:
    MappedBytes() = default;
    // The range must lie within the file (past its end there are no pages to map); the
    // caller checks. EBUSY when kMaxLiveMappings mappings are live already (read
    // instead), mmap's errors otherwise.
    static Result<MappedBytes> map(int fd, uint64_t off, uint64_t len);

    MappedBytes(MappedBytes&& o) noexcept;
    MappedBytes& operator=(MappedBytes&& o) noexcept;
    MappedBytes(const MappedBytes&) = delete;
    MappedBytes& operator=(const MappedBytes&) = delete;
    ~MappedBytes() { reset(); }

    std::span<const std::byte> bytes() const { return {data_, len_}; }
    bool empty() const { return len_ == 0; }
    // False once a page of the range could not be read (see above). Check it after the
    // last use of bytes(): until then it can still change.
    bool intact() const;
    void reset();

private:
    void* base_ = nullptr;  // the mapping, page-aligned
    size_t map_len_ = 0;
    const std::byte* data_ = nullptr;
    size_t len_ = 0;
    int slot_ = -1;  // its entry in the SIGBUS guard's table
};

// Mappings live at once, process-wide (the engine holds one per request in flight).
inline constexpr int kMaxLiveMappings = 256;

}  // namespace blk
