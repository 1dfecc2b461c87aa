// blk-bench-codec: speed and ratio of the qcow2 cluster codecs, side by side with qemu's way
// of calling zlib and zstd, and the incompressibility probe's accuracy. Not a test.
// usage: blk-bench-codec [--mib N] [--cluster BYTES] [--probe-clusters N]
// Speeds are MB/s of input per core, from the thread's CPU time (less noisy than wall time
// on a shared machine, still not quiet).
#include <time.h>
#include <zlib.h>
#include <zstd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#ifdef BLK_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#include "../../libblock/formats/qcow2/compress.h"
#include "datagen.h"

using namespace blk::qcow2;

namespace {

double cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// A compressor: writes into out (capacity = max_out), returns the length or 0 if it does not fit.
using Codec = std::function<size_t(std::span<const std::byte>, std::span<std::byte>)>;

size_t qemu_zlib(std::span<const std::byte> in, std::span<std::byte> out) {
    // qemu: a new stream per cluster, level 6, raw deflate, 4 KiB window, memLevel 9.
    z_stream s{};
    if (deflateInit2(&s, 6, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
    s.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
    s.avail_in = uInt(in.size());
    s.next_out = reinterpret_cast<Bytef*>(out.data());
    s.avail_out = uInt(out.size());
    const int r = deflate(&s, Z_FINISH);
    const size_t n = r == Z_STREAM_END ? out.size() - s.avail_out : 0;
    deflateEnd(&s);
    return n;
}

size_t qemu_zstd(std::span<const std::byte> in, std::span<std::byte> out) {
    // qemu: a new context per cluster, default level, streaming into max_out bytes.
    ZSTD_CCtx* c = ZSTD_createCCtx();
    ZSTD_outBuffer ob{out.data(), out.size(), 0};
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    size_t n = 0;
    for (;;) {
        const size_t r = ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_end);
        if (ZSTD_isError(r) || ob.pos + r > ob.size) break;
        if (r == 0) {
            n = ob.pos;
            break;
        }
    }
    ZSTD_freeCCtx(c);
    return n;
}

size_t ours(CompressionType t, std::span<const std::byte> in, std::span<std::byte> out) {
    auto r = compress_cluster_into(t, in, out);
    if (!r) std::abort();
    return *r ? **r : 0;
}

#ifdef BLK_HAVE_ISAL
size_t isal_level(uint32_t level, std::span<const std::byte> in, std::span<std::byte> out) {
    static const uint32_t sizes[] = {0, ISAL_DEF_LVL1_DEFAULT, ISAL_DEF_LVL2_DEFAULT, ISAL_DEF_LVL3_DEFAULT};
    thread_local std::vector<uint8_t> level_buf(ISAL_DEF_LVL3_DEFAULT);
    thread_local std::vector<std::byte> scratch;
    thread_local isal_zstream s;
    if (scratch.size() < out.size() + 4096) scratch.resize(out.size() + 4096);
    isal_deflate_stateless_init(&s);
    s.level = level;
    s.level_buf = level_buf.data();
    s.level_buf_size = sizes[level];
    s.hist_bits = 12;
    s.end_of_stream = 1;
    s.next_in = reinterpret_cast<uint8_t*>(const_cast<std::byte*>(in.data()));
    s.avail_in = uint32_t(in.size());
    s.next_out = reinterpret_cast<uint8_t*>(scratch.data());
    s.avail_out = uint32_t(out.size() + 4096);
    if (isal_deflate_stateless(&s) != COMP_OK || s.total_out > out.size()) return 0;
    std::memcpy(out.data(), scratch.data(), s.total_out);
    return s.total_out;
}
#endif

struct Clusters {
    std::string name;
    size_t cluster;
    std::vector<std::vector<std::byte>> data;
    uint64_t bytes() const { return uint64_t(data.size()) * cluster; }
};

Clusters make_set(const std::string& name, blkdata::Kind k, size_t cs, uint64_t total) {
    Clusters c{name, cs, {}};
    for (uint64_t i = 0; i < total / cs; ++i) c.data.push_back(blkdata::make(k, cs, 1000 + i));
    return c;
}

// The convert benchmark's image (datagen.h's layout), cut into clusters; all-zero clusters
// are left out, as convert -c skips them.
Clusters make_image_mix(size_t cs, uint64_t total) {
    Clusters c{"image mix (40% random, 20% text, 40% zero/hole; zero clusters skipped)", cs, {}};
    std::vector<std::byte> img(total);
    blkdata::ImageLayout layout(1);
    blkdata::Rng rng(2);
    blkdata::TextGen text(3);
    for (uint64_t off = 0; off < total;) {
        blkdata::Run r = layout.next();
        r.length = std::min(r.length, total - off);
        if (r.kind == blkdata::RunKind::Random) rng.fill(img.data() + off, r.length);
        else if (r.kind == blkdata::RunKind::Text) text.fill(img.data() + off, r.length);
        off += r.length;
    }
    for (uint64_t off = 0; off + cs <= total; off += cs) {
        std::span<const std::byte> s(img.data() + off, cs);
        bool zero = true;
        for (std::byte b : s) zero = zero && b == std::byte{0};
        if (!zero) c.data.emplace_back(s.begin(), s.end());
    }
    return c;
}

struct Outcome {
    double mbps;
    uint64_t stored;  // bytes qcow2 stores: the stream if it fits, else the raw cluster
    uint64_t compressed_clusters;
    std::vector<std::vector<std::byte>> streams;  // kept for the decompression runs
};

Outcome run_compress(const Clusters& set, const Codec& codec, bool keep) {
    Outcome o{0, 0, 0, {}};
    std::vector<std::byte> out(set.cluster - 1);
    const double t0 = cpu_seconds();
    for (const auto& c : set.data) {
        const size_t n = codec(c, out);
        if (n) {
            o.stored += n;
            ++o.compressed_clusters;
            if (keep) o.streams.emplace_back(out.begin(), out.begin() + long(n));
        } else {
            o.stored += set.cluster;
            if (keep) o.streams.emplace_back();
        }
    }
    o.mbps = double(set.bytes()) / (cpu_seconds() - t0) / 1e6;
    return o;
}

void row(const char* what, const Outcome& o, const Clusters& set, const Outcome* ref) {
    std::printf("| %s | %.0f | %.4f | %llu/%zu |", what, o.mbps, double(set.bytes()) / double(o.stored),
                (unsigned long long)o.compressed_clusters, set.data.size());
    if (ref) std::printf(" %+.2f%% |\n", 100.0 * (double(o.stored) / double(ref->stored) - 1));
    else std::printf(" |\n");
}

double run_decompress(const Clusters& set, const std::vector<std::vector<std::byte>>& streams,
                      const std::function<bool(std::span<const std::byte>, std::span<std::byte>)>& dec) {
    std::vector<std::byte> out(set.cluster);
    uint64_t bytes = 0;
    const double t0 = cpu_seconds();
    for (size_t i = 0; i < streams.size(); ++i) {
        if (streams[i].empty()) continue;
        if (!dec(streams[i], out) || std::memcmp(out.data(), set.data[i].data(), set.cluster) != 0) {
            std::fprintf(stderr, "decompression mismatch in cluster %zu\n", i);
            std::exit(1);
        }
        bytes += set.cluster;
    }
    return double(bytes) / (cpu_seconds() - t0) / 1e6;
}

bool qemu_inflate(std::span<const std::byte> in, std::span<std::byte> out) {
    z_stream s{};
    if (inflateInit2(&s, -12) != Z_OK) return false;
    s.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
    s.avail_in = uInt(in.size());
    s.next_out = reinterpret_cast<Bytef*>(out.data());
    s.avail_out = uInt(out.size());
    const int r = inflate(&s, Z_FINISH);
    inflateEnd(&s);
    return (r == Z_STREAM_END || r == Z_BUF_ERROR) && s.avail_out == 0;
}

bool qemu_unzstd(std::span<const std::byte> in, std::span<std::byte> out) {
    ZSTD_DCtx* d = ZSTD_createDCtx();
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    ZSTD_outBuffer ob{out.data(), out.size(), 0};
    size_t r = 0;
    while (ob.pos < ob.size) {
        r = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(r)) break;
    }
    ZSTD_freeDCtx(d);
    return !ZSTD_isError(r) && r == 0;
}

void bench_set(const Clusters& set) {
    std::printf("\n### %s, %zu-byte clusters, %llu MiB\n\n", set.name.c_str(), set.cluster,
                (unsigned long long)(set.bytes() >> 20));
    std::printf("| codec | MB/s per core | stored ratio | clusters compressed | size vs qemu |\n|---|---:|---:|---:|---:|\n");
    const Outcome qz = run_compress(set, qemu_zlib, true);
    row("zlib level 6, window 4 KiB (qemu: a new stream per cluster)", qz, set, nullptr);
    const Outcome oz = run_compress(set, [](auto in, auto out) { return ours(CompressionType::Zlib, in, out); }, true);
    const std::string name = std::string("blkimg deflate: probe + ") + deflate_encoder_name();
    row(name.c_str(), oz, set, &qz);
#ifdef BLK_HAVE_ISAL
    for (uint32_t l = 1; l <= 3; ++l) {
        const Outcome oi = run_compress(set, [l](auto in, auto out) { return isal_level(l, in, out); }, false);
        const std::string n = "isa-l igzip level " + std::to_string(l) + ", history 4 KiB, no probe";
        row(n.c_str(), oi, set, &qz);
    }
#endif
    {
        uint64_t rejected = 0;
        const double t0 = cpu_seconds();
        for (const auto& c : set.data) rejected += cluster_looks_incompressible(c);
        const double mbps = double(set.bytes()) / (cpu_seconds() - t0) / 1e6;
        std::printf("| probe only: %llu of %zu clusters judged incompressible | %.0f | | | |\n",
                    (unsigned long long)rejected, set.data.size(), mbps);
    }
    const Outcome qs = run_compress(set, qemu_zstd, true);
    row("zstd default level (qemu: a new context per cluster, streaming)", qs, set, nullptr);
    const Outcome os = run_compress(set, [](auto in, auto out) { return ours(CompressionType::Zstd, in, out); }, false);
    row("blkimg zstd (reused context, one pass from the input)", os, set, &qs);

    std::printf("\n| decompression | MB/s per core |\n|---|---:|\n");
    std::printf("| zlib inflate (qemu: a new stream per cluster) | %.0f |\n", run_decompress(set, qz.streams, qemu_inflate));
    std::printf("| blkimg inflate of qemu's streams | %.0f |\n", run_decompress(set, qz.streams, [](auto in, auto out) {
                    return bool(decompress_cluster(CompressionType::Zlib, in, out));
                }));
    std::printf("| zstd streaming (qemu: a new context per cluster) | %.0f |\n", run_decompress(set, qs.streams, qemu_unzstd));
    std::printf("| blkimg zstd of qemu's frames | %.0f |\n", run_decompress(set, qs.streams, [](auto in, auto out) {
                    return bool(decompress_cluster(CompressionType::Zstd, in, out));
                }));
}

// Random clusters with one island that may make them compressible: a run of one byte,
// text, an earlier stretch repeated, or a short pattern; log-uniform 16 bytes to 16 KiB.
void probe_accuracy(size_t cs, uint64_t n) {
    blkdata::Rng rng(4242);
    blkdata::TextGen text(4343);
    static const char* kIsland[] = {"run of one byte", "text", "repeat of earlier data", "short pattern"};
    uint64_t zlib_compressed[4] = {}, wrong[4] = {}, lost[4] = {}, qemu_bytes[4] = {}, random_flagged = 0;
    std::vector<std::byte> out(cs - 1);
    for (uint64_t i = 0; i < n; ++i) {
        auto d = blkdata::make(blkdata::Kind::Random, cs, 500000 + i);
        if (!cluster_looks_incompressible(d)) ++random_flagged;
        const int kind = int(i % 4);
        const size_t len = std::min<size_t>(cs - 1, size_t(16 * std::exp2(double(rng.below(1001)) / 1000.0 * 10)));
        const size_t at = rng.below(cs - len);
        if (kind == 0) {
            std::memset(d.data() + at, int(rng.below(256)), len);
        } else if (kind == 1) {
            text.fill(d.data() + at, len);
        } else if (kind == 2) {
            if (at < 1) continue;
            const size_t back = 1 + rng.below(std::min<size_t>(at, 4096));
            for (size_t k = 0; k < len; ++k) d[at + k] = d[at + k - back];
        } else {
            const size_t period = 2 + rng.below(15);
            for (size_t k = period; k < len; ++k) d[at + k] = d[at + k - period];
        }
        const size_t q = qemu_zlib(d, out);
        qemu_bytes[kind] += q ? q : cs;
        if (!q) continue;
        ++zlib_compressed[kind];
        if (cluster_looks_incompressible(d)) {
            ++wrong[kind];
            lost[kind] += cs - q;
        }
    }
    std::printf("\n### probe accuracy, %zu-byte clusters: random data with one island of 16 bytes to 16 KiB\n\n", cs);
    std::printf("| island | clusters zlib compresses | probe says incompressible (wrong) | bytes lost vs qemu's output |\n|---|---:|---:|---:|\n");
    for (int k = 0; k < 4; ++k) {
        std::printf("| %s | %llu | %llu | %llu (%.4f%%) |\n", kIsland[k], (unsigned long long)zlib_compressed[k],
                    (unsigned long long)wrong[k], (unsigned long long)lost[k], 100.0 * double(lost[k]) / double(qemu_bytes[k]));
    }
    std::printf("\nPure random clusters the probe sends to the encoder anyway: %llu of %llu.\n",
                (unsigned long long)random_flagged, (unsigned long long)n);
}

}  // namespace

int main(int argc, char** argv) {
    uint64_t mib = 64, probe_n = 4000;
    size_t cs = 65536;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--mib")) mib = std::strtoull(argv[i + 1], nullptr, 0);
        else if (!std::strcmp(argv[i], "--cluster")) cs = std::strtoull(argv[i + 1], nullptr, 0);
        else if (!std::strcmp(argv[i], "--probe-clusters")) probe_n = std::strtoull(argv[i + 1], nullptr, 0);
        else {
            std::fprintf(stderr, "usage: blk-bench-codec [--mib N] [--cluster BYTES] [--probe-clusters N]\n");
            return 2;
        }
    }
    if (cs < 512 || (cs & (cs - 1)) || cs > (2u << 20)) {
        std::fprintf(stderr, "blk-bench-codec: cluster size must be a power of two from 512 to 2M\n");
        return 2;
    }
    const uint64_t total = mib << 20;
    std::printf("deflate encoder: %s; zstd %s; zlib %s\n", deflate_encoder_name(), ZSTD_versionString(), zlibVersion());
    bench_set(make_image_mix(cs, total));
    bench_set(make_set("random", blkdata::Kind::Random, cs, total));
    bench_set(make_set("text", blkdata::Kind::Text, cs, total));
    bench_set(make_set("half random, half zero", blkdata::Kind::HalfRandomHalfZero, cs, total));
    bench_set(make_set("short repeated pattern", blkdata::Kind::Pattern, cs, total / 4));
    probe_accuracy(cs, probe_n);
    if (cs != 4096) probe_accuracy(4096, probe_n);
    return 0;
}
