// blk-genimage: writes the convert benchmark's raw image (and the chain's top-layer delta)
// from a seed, fast and the same on every machine.
// usage: blk-genimage [--seed N] SIZE IMAGE.raw [DELTA.raw]
//   IMAGE.raw: SIZE bytes in runs of 64 KiB to 8 MiB: 40% random, 20% text-like, 20% zeroes
//              written out, 20% holes (see datagen.h).
//   DELTA.raw: a sparse file of SIZE bytes holding new data (random or text) in 10% of the
//              64 KiB clusters, in runs of 1 to 16 clusters, holes elsewhere: converted to
//              qcow2 and rebased onto the image's qcow2 form it is the chain's top layer.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "datagen.h"

namespace {

constexpr uint64_t kBuf = 8 << 20;
constexpr uint64_t kCluster = 64 << 10;
constexpr uint64_t kDeltaPercent = 10;
constexpr uint64_t kMaxDeltaRun = 16;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "blk-genimage: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(1);
}

uint64_t parse_size(const char* s) {
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(s, &end);
    if (errno || end == s || v <= 0) {
        std::fprintf(stderr, "blk-genimage: bad size '%s'\n", s);
        std::exit(2);
    }
    switch (*end) {
        case 'k': case 'K': v *= 1024; ++end; break;
        case 'm': case 'M': v *= 1024.0 * 1024; ++end; break;
        case 'g': case 'G': v *= 1024.0 * 1024 * 1024; ++end; break;
        case 't': case 'T': v *= 1024.0 * 1024 * 1024 * 1024; ++end; break;
        default: break;
    }
    if (*end) {
        std::fprintf(stderr, "blk-genimage: bad size '%s'\n", s);
        std::exit(2);
    }
    return uint64_t(v) / 512 * 512;
}

class Writer {
public:
    Writer(const char* path, uint64_t size) : path_(path) {
        fd_ = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd_ < 0) die(path_);
        if (ftruncate(fd_, off_t(size)) != 0) die(path_);
    }
    ~Writer() {
        if (close(fd_) != 0) die(path_);
    }
    void write(uint64_t off, const std::byte* p, uint64_t n) {
        while (n) {
            const ssize_t r = pwrite(fd_, p, n, off_t(off));
            if (r < 0) {
                if (errno == EINTR) continue;
                die(path_);
            }
            p += r;
            off += uint64_t(r);
            n -= uint64_t(r);
        }
    }

private:
    std::string path_;
    int fd_ = -1;
};

}  // namespace

int main(int argc, char** argv) {
    uint64_t seed = 1;
    std::vector<const char*> args;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 0);
        else args.push_back(argv[i]);
    }
    if (args.size() < 2 || args.size() > 3) {
        std::fprintf(stderr, "usage: blk-genimage [--seed N] SIZE IMAGE.raw [DELTA.raw]\n");
        return 2;
    }
    const uint64_t size = parse_size(args[0]);
    std::vector<std::byte> buf(kBuf);
    blkdata::Rng rng(seed * 3 + 1);
    blkdata::TextGen text(seed * 3 + 2);
    uint64_t bytes[4] = {};

    {
        Writer img(args[1], size);
        blkdata::ImageLayout layout(seed);
        for (uint64_t off = 0; off < size;) {
            blkdata::Run run = layout.next();
            run.length = std::min(run.length, size - off);
            bytes[int(run.kind)] += run.length;
            if (run.kind == blkdata::RunKind::Hole) {
                off += run.length;
                continue;
            }
            for (uint64_t done = 0; done < run.length;) {
                const uint64_t n = std::min(kBuf, run.length - done);
                if (run.kind == blkdata::RunKind::Random) rng.fill(buf.data(), n);
                else if (run.kind == blkdata::RunKind::Text) text.fill(buf.data(), n);
                else std::memset(buf.data(), 0, n);
                img.write(off + done, buf.data(), n);
                done += n;
            }
            off += run.length;
        }
    }
    std::fprintf(stderr, "%s: %llu bytes: random %.1f%%, text %.1f%%, zero %.1f%%, hole %.1f%%\n", args[1],
                 (unsigned long long)size, 100.0 * double(bytes[0]) / double(size), 100.0 * double(bytes[1]) / double(size),
                 100.0 * double(bytes[2]) / double(size), 100.0 * double(bytes[3]) / double(size));

    if (args.size() == 3) {
        // Runs of 1 to 16 clusters at random places until 10% of the clusters are marked.
        const uint64_t clusters = (size + kCluster - 1) / kCluster;
        std::vector<bool> marked(clusters);
        uint64_t want = clusters * kDeltaPercent / 100, have = 0;
        blkdata::Rng pick(seed * 3 + 3);
        while (have < want) {
            const uint64_t start = pick.below(clusters);
            const uint64_t len = 1 + pick.below(kMaxDeltaRun);
            for (uint64_t c = start; c < std::min(clusters, start + len) && have < want; ++c) {
                if (!marked[c]) {
                    marked[c] = true;
                    ++have;
                }
            }
        }
        Writer delta(args[2], size);
        for (uint64_t c = 0; c < clusters;) {
            if (!marked[c]) {
                ++c;
                continue;
            }
            uint64_t e = c;
            while (e < clusters && marked[e] && e - c < kBuf / kCluster) ++e;
            const uint64_t off = c * kCluster, n = std::min(e * kCluster, size) - off;
            if (pick.below(10) < 6) rng.fill(buf.data(), n);
            else text.fill(buf.data(), n);
            delta.write(off, buf.data(), n);
            c = e;
        }
        std::fprintf(stderr, "%s: %llu of %llu clusters rewritten\n", args[2], (unsigned long long)have,
                     (unsigned long long)clusters);
    }
    return 0;
}
