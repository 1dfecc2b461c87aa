// blk-readimg: writes an image's whole guest content to stdout through libblock.
// Tests compare it with `qemu-img convert -O raw` to prove we read what qemu wrote.
// usage: blk-readimg [-f FMT] [--image-opts] IMAGE
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "blk/driver.h"

int main(int argc, char** argv) {
    blk::ImageSpec spec;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "-f" && i + 1 < argc) spec.format = argv[++i];
        else if (a == "--image-opts") spec.image_opts = true;
        else spec.filename = a;
    }
    if (spec.filename.empty()) {
        std::fprintf(stderr, "usage: blk-readimg [-f FMT] [--image-opts] IMAGE\n");
        return 2;
    }
    blk::OpenFlags flags;
    auto g = blk::open_image(spec, flags);
    if (!g) {
        std::fprintf(stderr, "blk-readimg: Could not open '%s': %s\n", spec.filename.c_str(), g.error().message.c_str());
        return 1;
    }
    blk::Node& n = *g->root;
    constexpr uint64_t kChunk = 1 << 20;
    std::vector<std::byte> buf(kChunk);
    for (uint64_t off = 0; off < n.size(); off += kChunk) {
        uint64_t len = std::min(kChunk, n.size() - off);
        auto r = n.read(off, std::span(buf).first(len));
        if (!r) {
            std::fprintf(stderr, "blk-readimg: error while reading at byte %llu: %s\n",
                         static_cast<unsigned long long>(off), r.error().message.c_str());
            return 1;
        }
        if (std::fwrite(buf.data(), 1, len, stdout) != len) return 1;
    }
    return 0;
}
