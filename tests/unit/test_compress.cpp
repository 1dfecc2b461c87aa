// Unit tests for the qcow2 cluster codecs: streams every qcow2 reader can inflate, the size
// limit, the incompressibility probe, and decoders that refuse bad input without overruns.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../../libblock/formats/qcow2/compress.h"
#include "../bench/datagen.h"

using namespace blk::qcow2;
using blkdata::Kind;

namespace {

constexpr size_t kClusterSizes[] = {512, 4096, 65536, 2u << 20};
constexpr Kind kKinds[] = {Kind::Zeros,      Kind::Random,     Kind::Text,         Kind::Pattern,
                           Kind::HalfRandomHalfZero, Kind::HalfZeroHalfRandom, Kind::Period4096,
                           Kind::Period4097, Kind::MostlyRandom};

// Inflates like a reader whose window really is 4 KiB: one output byte per call, so zlib
// keeps only the last 4096 bytes and refuses any distance beyond them ("invalid distance
// too far back"). A one-call inflate would accept any distance within the output so far.
bool inflate_with_4k_window(std::span<const std::byte> in, std::span<const std::byte> expect) {
    z_stream s{};
    if (inflateInit2(&s, -12) != Z_OK) return false;
    s.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
    s.avail_in = static_cast<uInt>(in.size());
    // One spare byte: a stream that goes on past the cluster writes it and fails below.
    std::vector<std::byte> out(expect.size() + 1);
    int ret = Z_OK;
    while (ret == Z_OK && s.total_out <= expect.size()) {
        s.next_out = reinterpret_cast<Bytef*>(out.data() + s.total_out);
        s.avail_out = 1;
        ret = inflate(&s, Z_NO_FLUSH);
    }
    inflateEnd(&s);
    return ret == Z_STREAM_END && s.total_out == expect.size() && std::memcmp(out.data(), expect.data(), expect.size()) == 0;
}

// qemu's deflate: zlib level 6, raw, 4 KiB window, memLevel 9, into cluster_size - 1 bytes.
std::optional<size_t> qemu_deflate_size(std::span<const std::byte> in, size_t max_out) {
    z_stream s{};
    REQUIRE(deflateInit2(&s, 6, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) == Z_OK);
    std::vector<std::byte> out(max_out);
    s.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
    s.avail_in = static_cast<uInt>(in.size());
    s.next_out = reinterpret_cast<Bytef*>(out.data());
    s.avail_out = static_cast<uInt>(out.size());
    const int ret = deflate(&s, Z_FINISH);
    deflateEnd(&s);
    if (ret != Z_STREAM_END) return std::nullopt;
    return max_out - s.avail_out;
}

// qemu's zstd: a fresh context at the default level, streaming into max_out bytes; the
// frame, or nullopt when it does not fit.
std::optional<std::vector<std::byte>> qemu_zstd(std::span<const std::byte> in, size_t max_out) {
    ZSTD_CCtx* c = ZSTD_createCCtx();
    std::vector<std::byte> out(max_out);
    ZSTD_outBuffer ob{out.data(), out.size(), 0};
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    std::optional<std::vector<std::byte>> res;
    for (;;) {
        const size_t r = ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_end);
        REQUIRE_FALSE(ZSTD_isError(r));
        if (ob.pos + r > ob.size) break;  // qemu: does not fit
        if (r == 0) {
            out.resize(ob.pos);
            res = std::move(out);
            break;
        }
    }
    ZSTD_freeCCtx(c);
    return res;
}

// qemu's reading of a deflate cluster: one inflate call into the whole cluster; the cluster
// must be full, whatever follows.
bool qemu_inflate(std::span<const std::byte> in, std::span<std::byte> out) {
    z_stream s{};
    REQUIRE(inflateInit2(&s, -12) == Z_OK);
    s.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
    s.avail_in = static_cast<uInt>(in.size());
    s.next_out = reinterpret_cast<Bytef*>(out.data());
    s.avail_out = static_cast<uInt>(out.size());
    const int ret = inflate(&s, Z_FINISH);
    inflateEnd(&s);
    return (ret == Z_STREAM_END || ret == Z_BUF_ERROR) && s.avail_out == 0;
}

// qemu's reading of a zstd cluster: stream until the cluster is full, stop when no progress
// is made, and the last frame must be complete.
bool qemu_zstd_decompress(std::span<const std::byte> in, std::span<std::byte> out) {
    ZSTD_DCtx* d = ZSTD_createDCtx();
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    ZSTD_outBuffer ob{out.data(), out.size(), 0};
    size_t r = 0;
    bool ok = true;
    while (ob.pos < ob.size) {
        const size_t ip = ib.pos, op = ob.pos;
        r = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(r) || (ib.pos <= ip && ob.pos <= op)) {
            ok = false;
            break;
        }
    }
    ZSTD_freeDCtx(d);
    return ok && r == 0;
}

bool qemu_decompress(CompressionType t, std::span<const std::byte> in, std::span<std::byte> out) {
    return t == CompressionType::Zstd ? qemu_zstd_decompress(in, out) : qemu_inflate(in, out);
}

std::vector<std::byte> zlib_deflate(std::span<const std::byte> in, int window_bits) {
    z_stream s{};
    REQUIRE(deflateInit2(&s, 6, Z_DEFLATED, window_bits, 9, Z_DEFAULT_STRATEGY) == Z_OK);
    std::vector<std::byte> out(deflateBound(&s, in.size()));
    s.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
    s.avail_in = static_cast<uInt>(in.size());
    s.next_out = reinterpret_cast<Bytef*>(out.data());
    s.avail_out = static_cast<uInt>(out.size());
    REQUIRE(deflate(&s, Z_FINISH) == Z_STREAM_END);
    out.resize(s.total_out);
    deflateEnd(&s);
    return out;
}

std::vector<std::byte> compress(CompressionType t, std::span<const std::byte> in, size_t max_out) {
    auto r = compress_cluster_data(t, in, max_out);
    REQUIRE(r);
    REQUIRE(*r);
    return std::move(**r);
}

// Memory that ends at an inaccessible page, so reading or writing one byte past `n` faults:
// the decoders are C and assembly that the sanitizers do not see.
class Guarded {
public:
    explicit Guarded(size_t n) : n_(n) {
        const size_t page = size_t(sysconf(_SC_PAGESIZE));
        map_ = (n + page - 1) / page * page + page;
        base_ = static_cast<std::byte*>(mmap(nullptr, map_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        REQUIRE(base_ != MAP_FAILED);
        REQUIRE(mprotect(base_ + map_ - page, page, PROT_NONE) == 0);
    }
    explicit Guarded(std::span<const std::byte> init) : Guarded(init.size()) {
        if (!init.empty()) std::memcpy(span().data(), init.data(), init.size());
    }
    ~Guarded() { munmap(base_, map_); }
    Guarded(const Guarded&) = delete;
    Guarded& operator=(const Guarded&) = delete;
    std::span<std::byte> span() { return {base_ + map_ - sysconf(_SC_PAGESIZE) - n_, n_}; }

private:
    size_t n_, map_;
    std::byte* base_;
};

}  // namespace

TEST_CASE("every deflated cluster inflates through a 4 KiB window to the original bytes") {
    for (size_t cs : kClusterSizes) {
        for (Kind k : kKinds) {
            CAPTURE(cs);
            CAPTURE(std::string(blkdata::kind_name(k)));
            const auto data = blkdata::make(k, cs, cs + size_t(k));
            auto r = compress_cluster_data(CompressionType::Zlib, data, cs - 1);
            REQUIRE(r);
            if (!*r) continue;
            CHECK((*r)->size() <= cs - 1);
            CHECK(inflate_with_4k_window(**r, data));
        }
    }
}

TEST_CASE("the 4 KiB window check refuses a match 4097 bytes back") {
    // zlib with an 8 KiB window uses the 4097-byte distances of this data; a real 4 KiB
    // window reader fails on them, so the check above can fail.
    const auto data = blkdata::make(Kind::Period4097, 65536, 1);
    const auto wide = zlib_deflate(data, -13);
    REQUIRE(wide.size() < 20000);
    CHECK_FALSE(inflate_with_4k_window(wide, data));
    // Distances of exactly 4096 are inside the window.
    const auto d4096 = blkdata::make(Kind::Period4096, 65536, 1);
    const auto ok = zlib_deflate(d4096, -13);
    REQUIRE(ok.size() < 20000);
    CHECK(inflate_with_4k_window(ok, d4096));
}

TEST_CASE("deflate uses matches exactly 4096 bytes back but none 4097 back") {
    const auto d4096 = blkdata::make(Kind::Period4096, 65536, 3);
    const auto d4097 = blkdata::make(Kind::Period4097, 65536, 3);
    auto a = compress_cluster_data(CompressionType::Zlib, d4096, 65535);
    auto b = compress_cluster_data(CompressionType::Zlib, d4097, 65535);
    REQUIRE(a);
    REQUIRE(b);
    // qemu's zlib reaches at most 3834 bytes back and stores both raw; ISA-L may use 4096.
    if (*a) CHECK(inflate_with_4k_window(**a, d4096));
    CHECK_FALSE(*b);
}

TEST_CASE("every zstd cluster is the frame qemu writes, and decompresses with plain ZSTD_decompress") {
    for (size_t cs : kClusterSizes) {
        for (Kind k : kKinds) {
            CAPTURE(cs);
            CAPTURE(std::string(blkdata::kind_name(k)));
            const auto data = blkdata::make(k, cs, 7 * cs + size_t(k));
            auto r = compress_cluster_data(CompressionType::Zstd, data, cs - 1);
            REQUIRE(r);
            const auto qemu = qemu_zstd(data, cs - 1);
            CHECK(bool(*r) == bool(qemu));
            if (!*r || !qemu) continue;
            CHECK(**r == *qemu);
            std::vector<std::byte> back(cs);
            CHECK(ZSTD_decompress(back.data(), back.size(), (*r)->data(), (*r)->size()) == cs);
            CHECK(back == data);
        }
    }
}

TEST_CASE("a zstd frame that fills max_out exactly is kept, one byte less is stored plain, as qemu does") {
    for (Kind k : {Kind::Text, Kind::Pattern, Kind::HalfRandomHalfZero, Kind::HalfZeroHalfRandom}) {
        CAPTURE(std::string(blkdata::kind_name(k)));
        const auto data = blkdata::make(k, 65536, 3 + size_t(k));
        const auto frame = qemu_zstd(data, 65535);
        REQUIRE(frame);
        for (size_t max_out : {frame->size() + 1, frame->size(), frame->size() - 1}) {
            CAPTURE(max_out);
            auto r = compress_cluster_data(CompressionType::Zstd, data, max_out);
            REQUIRE(r);
            const auto qemu = qemu_zstd(data, max_out);
            REQUIRE(bool(*r) == bool(qemu));
            CHECK(bool(*r) == (max_out >= frame->size()));
            if (*r) CHECK(**r == *qemu);
        }
    }
}

TEST_CASE("deflate output stays close to qemu's zlib and compresses whatever zlib compresses well") {
    for (size_t cs : kClusterSizes) {
        for (Kind k : kKinds) {
            CAPTURE(cs);
            CAPTURE(std::string(blkdata::kind_name(k)));
            const auto data = blkdata::make(k, cs, 11 * cs + size_t(k));
            auto ours = compress_cluster_data(CompressionType::Zlib, data, cs - 1);
            REQUIRE(ours);
            const auto qemu = qemu_deflate_size(data, cs - 1);
            // A cluster zlib shrinks by more than 2% must be compressed by us too.
            if (qemu && *qemu < cs - cs / 50) REQUIRE(*ours);
            // Within 15% of zlib's size, plus an allowance for streams of a few hundred bytes.
            if (qemu && *ours) CHECK((*ours)->size() <= *qemu + *qemu * 15 / 100 + cs / 1000 + 64);
        }
    }
}

TEST_CASE("compressed output never exceeds max_out") {
    const auto text = blkdata::make(Kind::Text, 65536, 5);
    for (CompressionType t : {CompressionType::Zlib, CompressionType::Zstd}) {
        const auto full = compress(t, text, 65535);
        for (size_t max_out : {full.size() + 1, full.size(), full.size() - 1, full.size() / 2, size_t(16), size_t(1)}) {
            CAPTURE(max_out);
            std::vector<std::byte> out(max_out + 64, std::byte{0x5a});
            auto r = compress_cluster_into(t, text, std::span(out).first(max_out));
            REQUIRE(r);
            if (max_out > full.size()) {
                REQUIRE(*r);
                CHECK(**r == full.size());
            } else if (*r) {
                // An exact fit may count as too big: zlib, like qemu's one deflate call,
                // needs a spare byte to report the end of the stream.
                CHECK(**r <= max_out);
            }
            // Nothing written past max_out.
            for (size_t i = max_out; i < out.size(); ++i) REQUIRE(out[i] == std::byte{0x5a});
        }
    }
}

TEST_CASE("random clusters are stored raw and zero, text and pattern clusters compressed") {
    for (size_t cs : kClusterSizes) {
        CAPTURE(cs);
        for (uint64_t seed = 0; seed < (cs > 65536 ? 4u : 64u); ++seed) {
            const auto r = blkdata::make(Kind::Random, cs, seed);
            CHECK(cluster_looks_incompressible(r));
        }
        for (Kind k : {Kind::Zeros, Kind::Text, Kind::Pattern, Kind::HalfRandomHalfZero, Kind::HalfZeroHalfRandom}) {
            CAPTURE(std::string(blkdata::kind_name(k)));
            const auto d = blkdata::make(k, cs, 99);
            CHECK_FALSE(cluster_looks_incompressible(d));
            auto c = compress_cluster_data(CompressionType::Zlib, d, cs - 1);
            REQUIRE(c);
            CHECK(*c);
        }
        if (cs >= 4096) CHECK_FALSE(cluster_looks_incompressible(blkdata::make(Kind::MostlyRandom, cs, 5)));
    }
}

TEST_CASE("the probe passes every random cluster with an island that makes zlib compress it") {
    // Islands of one repeated byte, text, or an earlier stretch of the same cluster repeated
    // (a flat byte histogram: only the anchored repeat search sees it, and surely only from
    // 512 bytes on; tests/bench/bench_codec measures the rest), of 16 bytes to 4 KiB.
    blkdata::Rng rng(77);
    blkdata::TextGen text(78);
    int compressible = 0;
    for (size_t cs : {size_t(4096), size_t(65536)}) {
        for (size_t island : {16u, 64u, 256u, 512u, 1024u, 4096u}) {
            if (island >= cs) continue;
            for (int kind = 0; kind < (island >= 512 ? 3 : 2); ++kind) {
                for (int i = 0; i < 20; ++i) {
                    auto d = blkdata::make(Kind::Random, cs, 1000 + i);
                    const size_t at = rng.below(cs - island);
                    if (kind == 0) {
                        std::memset(d.data() + at, int(rng.below(256)), island);
                    } else if (kind == 1) {
                        text.fill(d.data() + at, island);
                    } else if (at >= island) {
                        const size_t from = at - island - rng.below(std::min<size_t>(at - island, 3000) + 1);
                        std::memcpy(d.data() + at, d.data() + from, island);
                    }
                    const auto qemu = qemu_deflate_size(d, cs - 1);
                    if (!qemu) continue;
                    ++compressible;
                    CAPTURE(cs);
                    CAPTURE(island);
                    CAPTURE(kind);
                    CHECK_FALSE(cluster_looks_incompressible(d));
                }
            }
        }
    }
    CHECK(compressible > 200);
}

TEST_CASE("clusters written by qemu's zlib and zstd decompress") {
    for (size_t cs : kClusterSizes) {
        for (Kind k : {Kind::Text, Kind::Pattern, Kind::HalfRandomHalfZero, Kind::Zeros}) {
            CAPTURE(cs);
            CAPTURE(std::string(blkdata::kind_name(k)));
            const auto data = blkdata::make(k, cs, 3 * cs + size_t(k));
            auto z = zlib_deflate(data, -12);
            z.resize((z.size() + 511) / 512 * 512, std::byte{0xee});  // sector slack after the stream
            std::vector<std::byte> out(cs);
            REQUIRE(decompress_cluster(CompressionType::Zlib, z, out));
            CHECK(out == data);
            std::vector<std::byte> zs(ZSTD_compressBound(cs));
            const size_t n = ZSTD_compress(zs.data(), zs.size(), data.data(), data.size(), 3);
            REQUIRE_FALSE(ZSTD_isError(n));
            zs.resize((n + 511) / 512 * 512);
            std::fill(zs.begin() + long(n), zs.end(), std::byte{0});
            std::fill(out.begin(), out.end(), std::byte{1});
            REQUIRE(decompress_cluster(CompressionType::Zstd, zs, out));
            CHECK(out == data);
        }
    }
}

TEST_CASE("decompress takes a truncated stream exactly when qemu does, without reading past it") {
    const auto data = blkdata::make(Kind::Text, 65536, 8);
    for (CompressionType t : {CompressionType::Zlib, CompressionType::Zstd}) {
        CAPTURE(int(t));
        const auto c = compress(t, data, 65535);
        Guarded out(65536);
        std::vector<std::byte> ref(65536);
        size_t refused = 0;
        for (size_t len = 0; len < c.size(); len += (len < 64 || len + 64 > c.size() ? 1 : 37)) {
            CAPTURE(len);
            Guarded in{std::span<const std::byte>(c).first(len)};
            auto st = decompress_cluster(t, in.span(), out.span());
            const bool qemu = qemu_decompress(t, in.span(), ref);
            REQUIRE(bool(st) == qemu);
            if (st) {
                // Only the end-of-stream marker was cut: every byte is there.
                CHECK(std::memcmp(out.span().data(), data.data(), data.size()) == 0);
            } else {
                ++refused;
                CHECK(st.error().code == EIO);
                CHECK(st.error().message.find("corrupt compressed data") != std::string::npos);
            }
        }
        CHECK(refused > 100);
        Guarded whole(c);
        REQUIRE(decompress_cluster(t, whole.span(), out.span()));
        CHECK(std::memcmp(out.span().data(), data.data(), data.size()) == 0);
    }
}

TEST_CASE("decompress refuses streams that fill less or more than the cluster") {
    const auto small = blkdata::make(Kind::Text, 2048, 9);
    const auto big = blkdata::make(Kind::Text, 8192, 9);
    Guarded out(4096);
    for (CompressionType t : {CompressionType::Zlib, CompressionType::Zstd}) {
        CAPTURE(int(t));
        Guarded s(compress(t, small, 2047));
        CHECK_FALSE(decompress_cluster(t, s.span(), out.span()));
        Guarded b(compress(t, big, 8191));
        auto st = decompress_cluster(t, b.span(), out.span());
        if (t == CompressionType::Zstd) {
            CHECK_FALSE(st);  // qemu requires the frame to end with the cluster
        } else {
            // qemu's inflate stops when the cluster is full and takes it; so do we.
            REQUIRE(st);
            CHECK(std::memcmp(out.span().data(), big.data(), 4096) == 0);
        }
    }
}

TEST_CASE("decompress judges corrupt streams as qemu does and survives hostile ones") {
    blkdata::Rng rng(31337);
    const auto data = blkdata::make(Kind::Text, 65536, 10);
    for (CompressionType t : {CompressionType::Zlib, CompressionType::Zstd}) {
        CAPTURE(int(t));
        const auto c = compress(t, data, 65535);
        Guarded out(65536);
        std::vector<std::byte> ref(65536);
        int refused = 0;
        for (int i = 0; i < 400; ++i) {
            auto bad = c;
            const int flips = 1 + int(rng.below(8));
            for (int f = 0; f < flips; ++f) bad[rng.below(bad.size())] ^= std::byte(1u << rng.below(8));
            CAPTURE(i);
            Guarded in(bad);
            auto st = decompress_cluster(t, in.span(), out.span());
            const bool qemu = qemu_decompress(t, bad, ref);
            CHECK(bool(st) == qemu);
            if (st && qemu) CHECK(std::memcmp(out.span().data(), ref.data(), ref.size()) == 0);
            if (!st) {
                ++refused;
                CHECK(st.error().code == EIO);
            }
        }
        // Most flips are caught (neither format carries a checksum here).
        CHECK(refused > 100);
        // Pure noise, and empty input.
        for (size_t len : {size_t(0), size_t(1), size_t(7), size_t(512), size_t(65536)}) {
            std::vector<std::byte> noise(len);
            rng.fill(noise.data(), noise.size());
            Guarded in(noise);
            CHECK_FALSE(decompress_cluster(t, in.span(), out.span()));
        }
    }
    // A zstd frame header announcing a 128 MiB window and then nothing: refused.
    std::vector<std::byte> hdr = {std::byte{0x28}, std::byte{0xb5}, std::byte{0x2f}, std::byte{0xfd},
                                  std::byte{0x04}, std::byte{0x88}};
    Guarded out(65536);
    CHECK_FALSE(decompress_cluster(CompressionType::Zstd, hdr, out.span()));
}

TEST_CASE("threads compress at the same time with the results of one thread") {
    std::vector<std::vector<std::byte>> inputs;
    for (int i = 0; i < 16; ++i) inputs.push_back(blkdata::make(i % 2 ? Kind::Text : Kind::Pattern, 65536, 40 + i));
    for (CompressionType t : {CompressionType::Zlib, CompressionType::Zstd}) {
        std::vector<std::vector<std::byte>> expect;
        for (auto& in : inputs) expect.push_back(compress(t, in, 65535));
        std::vector<std::thread> threads;
        std::vector<int> bad(4, 0);
        for (int th = 0; th < 4; ++th) {
            threads.emplace_back([&, th] {
                for (int round = 0; round < 3; ++round) {
                    for (size_t i = 0; i < inputs.size(); ++i) {
                        auto r = compress_cluster_data(t, inputs[(i + size_t(th)) % inputs.size()], 65535);
                        if (!r || !*r || **r != expect[(i + size_t(th)) % inputs.size()]) ++bad[size_t(th)];
                        std::vector<std::byte> back(65536);
                        if (!r || !*r || !decompress_cluster(t, **r, back) || back != inputs[(i + size_t(th)) % inputs.size()]) {
                            ++bad[size_t(th)];
                        }
                    }
                }
            });
        }
        for (auto& th : threads) th.join();
        CHECK(bad == std::vector<int>(4, 0));
    }
}

TEST_CASE("the deflate encoder is named") {
    const std::string name = deflate_encoder_name();
    CHECK((name == "isa-l igzip level 3" || name == "zlib level 6"));
}
