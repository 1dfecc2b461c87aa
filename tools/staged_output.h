// Output that reaches stdout only once the command knows it succeeded, in bounded memory.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace blkimg {

// A command's stdout, held back until commit(): an error part way never leaves a partial
// result (an empty "[]" map, half a table) for a script that ignores the exit code. Up to
// kMemoryLimit bytes stay in memory; beyond that the text goes to an unlinked temporary file
// (in $TMPDIR, else /tmp), so a map of millions of extents costs disk, not resident memory.
// Without a temporary file it falls back to memory.
class StagedOutput {
public:
    static constexpr size_t kMemoryLimit = 1 << 20;

    StagedOutput() = default;
    StagedOutput(const StagedOutput&) = delete;
    StagedOutput& operator=(const StagedOutput&) = delete;
    ~StagedOutput();

    void append(std::string_view text);
    void append(char c) { append(std::string_view(&c, 1)); }
    // printf into the output.
    template <class... A>
    void printf(const char* fmt, A... args) {
        char buf[512];
        const int n = std::snprintf(buf, sizeof buf, fmt, args...);
        if (n < 0) return;
        if (static_cast<size_t>(n) < sizeof buf) {
            append(std::string_view(buf, static_cast<size_t>(n)));
        } else {
            std::string big(static_cast<size_t>(n) + 1, '\0');
            std::snprintf(big.data(), big.size(), fmt, args...);
            append(std::string_view(big.data(), static_cast<size_t>(n)));
        }
    }
    // Writes everything to stdout. False (with errno set) if the temporary file could not
    // be written or read back, or stdout refused it.
    bool commit();

private:
    bool spill();

    std::string mem_;
    int fd_ = -1;         // the temporary file, once memory is full
    bool failed_ = false;  // a write to the temporary file failed: commit() reports it
    int error_ = 0;
};

}  // namespace blkimg
