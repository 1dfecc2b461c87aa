// Temporary files for the unit tests: a directory removed with all it holds, and whole-file
// reads and writes.
#pragma once

#include <doctest/doctest.h>

#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace blktest {

struct TempDir {
    std::filesystem::path p;
    TempDir() {
        char tmpl[] = "/tmp/blk-test-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        p = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(p); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    // The path of `name` inside, as a string (what ImageSpec and open() take).
    std::string operator/(const std::string& name) const { return (p / name).string(); }
};

inline void write_file(const std::filesystem::path& p, const std::vector<std::byte>& b) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    REQUIRE(f.good());
}

inline std::vector<std::byte> read_file(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::vector<std::byte> b(c.size());
    std::memcpy(b.data(), c.data(), c.size());
    return b;
}

}  // namespace blktest
