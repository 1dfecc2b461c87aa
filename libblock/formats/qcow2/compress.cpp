// qcow2 compressed clusters: raw deflate with a 4 KiB window (ISA-L's igzip, or zlib) and zstd,
// with per-thread codec contexts and a cheap incompressibility probe in front of deflate.
#include "compress.h"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifdef BLK_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace blk::qcow2 {

namespace {

// qcow2 readers inflate raw deflate with a 4 KiB window (qemu: windowBits -12).
constexpr int kDeflateWindowBits = -12;
// qemu's deflate settings, used when ISA-L is missing: level 6 (Z_DEFAULT_COMPRESSION), memLevel 9.
constexpr int kZlibLevel = 6;
constexpr int kZlibMemLevel = 9;

// --- The incompressibility probe ---

// Blocks the byte distribution is judged on: deflate adapts its Huffman codes per block of a
// few thousand symbols, so a compressible stretch must show up in a block of this size.
constexpr size_t kProbeBlock = 4096;
// Chi-square of a block's byte histogram against the uniform distribution. For random data
// it has 255 degrees of freedom: measured over 200,000 random blocks, median 254, 99.9th
// percentile 331, 99.99th 349, maximum 374, for blocks of 512 bytes to 4 KiB alike (the
// tail falls by 10x every 18 or so). A block above the limit may be compressible and goes
// to the encoder; a random block above it only costs encoder time. A cluster of many
// blocks raises the limit a little so that under 1% of random clusters of any size go to
// the encoder: 330 for one block, 346 for 16 (64 KiB), 366 for 512 (2 MiB). Clusters that
// zlib can shrink below cluster_size - 1 scored 332 and more when they held a text island
// (in a 4 KiB cluster; a larger cluster needs a larger island to shrink at all, which
// scores higher), 406 and more with a run of one byte value (runs are also caught
// exactly, below); whole text, zero or pattern blocks score in the thousands.
constexpr uint64_t kProbeChi2Limit = 330;
constexpr uint64_t kProbeChi2PerDoubling = 4;
// Repeats of random-looking data (no skew in the histogram) are found from anchors: each
// position holding one of four byte values (0xa4 to 0xa7) starts an 8-byte key, and a key
// seen again at most kMaxMatchDistance bytes later is a deflate match. One anchor per 64
// random bytes, so a repeated stretch of 512 bytes almost surely (99.97%) holds one.
constexpr uint8_t kAnchorMask = 0xfc;
constexpr uint8_t kAnchorValue = 0xa4;
constexpr size_t kMaxMatchDistance = 4096;
constexpr size_t kAnchorSlots = 256;

bool block_has_skew(const std::byte* p, size_t n, uint64_t chi2_limit) {
    // Two tables, even and odd bytes, so runs of equal bytes do not serialise on one
    // counter; byte loads beat shifting 8-byte words apart here (3.5 against 2 GB/s).
    std::array<std::array<uint32_t, 256>, 2> h{};
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        ++h[0][std::to_integer<uint8_t>(p[i])];
        ++h[1][std::to_integer<uint8_t>(p[i + 1])];
    }
    if (i < n) ++h[0][std::to_integer<uint8_t>(p[i])];
    uint64_t sum_sq = 0;
    for (size_t v = 0; v < 256; ++v) {
        const uint64_t c = uint64_t(h[0][v]) + h[1][v];
        sum_sq += c * c;
    }
    // chi2 = sum (c - n/256)^2 / (n/256) = 256 * sum_sq / n - n, kept in integers.
    return 256 * sum_sq > n * (n + chi2_limit);
}

// For 64 bytes at p: bit i of `anchors` is set if p[i] is an anchor; `equal_words` counts
// the aligned 8-byte words equal to the 8 bytes before them.
struct Scan64 {
    uint64_t anchors;
    unsigned equal_words;
};

Scan64 scan64(const std::byte* p) {
    Scan64 r{0, 0};
#if defined(__SSE2__)
    const __m128i mask = _mm_set1_epi8(char(kAnchorMask)), value = _mm_set1_epi8(char(kAnchorValue));
    for (int k = 0; k < 64; k += 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k));
        const __m128i prev = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k - 8));
        r.anchors |= uint64_t(uint32_t(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(v, mask), value)))) << k;
        const uint32_t eq = uint32_t(_mm_movemask_epi8(_mm_cmpeq_epi8(v, prev)));
        r.equal_words += unsigned((eq & 0xff) == 0xff) + unsigned((eq >> 8) == 0xff);
    }
#else
    for (int i = 0; i < 64; ++i) {
        r.anchors |= uint64_t((std::to_integer<uint8_t>(p[i]) & kAnchorMask) == kAnchorValue) << i;
    }
    for (int w = 0; w < 64; w += 8) r.equal_words += std::memcmp(p + w, p + w - 8, 8) == 0;
#endif
    return r;
}

// Repeats a byte histogram does not show: runs of one byte or of a 2, 4 or 8 byte pattern
// (two aligned 8-byte words equal to the word before them: a run of 24 bytes or more, which
// random data never holds), and anchored repeats of random-looking data.
bool has_repeats(const std::byte* p, size_t n) {
    // Position + 1 of the last anchor whose key hashed here (0: none); the key is read back.
    std::array<uint32_t, kAnchorSlots> slots{};
    unsigned equal_words = 0;
    // From byte 8 (the word compare looks 8 back) to 72 bytes before the end (an anchor's
    // key is the 8 bytes after it): a cluster's last 72 bytes are not searched.
    for (size_t base = 8; base + 72 <= n; base += 64) {
        const Scan64 sc = scan64(p + base);
        equal_words += sc.equal_words;
        if (equal_words >= 2) return true;
        for (uint64_t m = sc.anchors; m; m &= m - 1) {
            const size_t pos = base + size_t(__builtin_ctzll(m));
            uint64_t key;
            std::memcpy(&key, p + pos + 1, 8);
            uint32_t& slot = slots[(key * 0x9e3779b97f4a7c15ull) >> 56];
            uint64_t old;
            std::memcpy(&old, p + slot, 8);  // slot 0 (empty) reads the cluster's first bytes
            // One branch, hardly ever taken: the three tests would each be a coin toss.
            if (bool(slot != 0) & bool(pos + 1 - slot <= kMaxMatchDistance) & bool(old == key)) return true;
            slot = uint32_t(pos + 1);
        }
    }
    return false;
}

// --- Per-thread codec contexts ---

struct ZstdCDelete {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct ZstdDDelete {
    void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

// One per thread, created on first use: a codec context costs tens to hundreds of KiB to set
// up, more than compressing a small cluster.
class ThreadCodecs {
public:
    ThreadCodecs() = default;
    ThreadCodecs(const ThreadCodecs&) = delete;
    ThreadCodecs& operator=(const ThreadCodecs&) = delete;
    ~ThreadCodecs() {
        if (zdeflate_ok_) deflateEnd(&zdeflate_);
        if (zinflate_ok_) inflateEnd(&zinflate_);
    }

    z_stream* zlib_deflate() {
        if (!zdeflate_ok_) {
            zdeflate_ = z_stream{};
            if (deflateInit2(&zdeflate_, kZlibLevel, Z_DEFLATED, kDeflateWindowBits, kZlibMemLevel, Z_DEFAULT_STRATEGY) !=
                Z_OK) {
                return nullptr;
            }
            zdeflate_ok_ = true;
        } else if (deflateReset(&zdeflate_) != Z_OK) {
            return nullptr;
        }
        return &zdeflate_;
    }

    z_stream* zlib_inflate() {
        if (!zinflate_ok_) {
            zinflate_ = z_stream{};
            if (inflateInit2(&zinflate_, kDeflateWindowBits) != Z_OK) return nullptr;
            zinflate_ok_ = true;
        } else if (inflateReset(&zinflate_) != Z_OK) {
            return nullptr;
        }
        return &zinflate_;
    }

    ZSTD_CCtx* zstd_compress() {
        if (!zcctx_) zcctx_.reset(ZSTD_createCCtx());
        else ZSTD_CCtx_reset(zcctx_.get(), ZSTD_reset_session_only);
        return zcctx_.get();
    }

    ZSTD_DCtx* zstd_decompress() {
        if (!zdctx_) zdctx_.reset(ZSTD_createDCtx());
        else ZSTD_DCtx_reset(zdctx_.get(), ZSTD_reset_session_only);
        return zdctx_.get();
    }

    // Every compressor writes its stream here first, and the caller copies out what it
    // keeps: the one-shot encoders (igzip, zstd's single pass) want room beyond the stream,
    // and a buffer allocated per cluster would be cleared and faulted in every time. Not
    // zeroed: only the bytes an encoder wrote are ever read.
    std::span<std::byte> scratch(size_t need) {
        if (scratch_size_ < need) {
            scratch_ = std::make_unique_for_overwrite<std::byte[]>(need);
            scratch_size_ = need;
        }
        return {scratch_.get(), need};
    }

#ifdef BLK_HAVE_ISAL
    isal_zstream* isal_deflate() {
        if (!isal_deflate_) {
            isal_deflate_ = std::make_unique<isal_zstream>();
            isal_level_buf_ = std::make_unique<uint8_t[]>(kIsalLevelBufSize);
        }
        isal_zstream* s = isal_deflate_.get();
        isal_deflate_stateless_init(s);
        s->level = kIsalLevel;
        s->level_buf = isal_level_buf_.get();
        s->level_buf_size = kIsalLevelBufSize;
        s->hist_bits = kIsalHistBits;
        s->gzip_flag = IGZIP_DEFLATE;
        s->flush = NO_FLUSH;
        s->end_of_stream = 1;
        return s;
    }

    inflate_state* isal_inflate() {
        if (!isal_inflate_) isal_inflate_ = std::make_unique<inflate_state>();
        isal_inflate_init(isal_inflate_.get());
        isal_inflate_->crc_flag = ISAL_DEFLATE;
        // The window is the output buffer: a distance may reach back to its start, as with
        // qemu's one-call inflate.
        isal_inflate_->hist_bits = 0;
        return isal_inflate_.get();
    }

    // igzip level 3: the best of its levels on text (per 64 KiB cluster, 3 to 12% larger
    // output than zlib level 6 on documentation, changelogs, man pages, C headers, shared
    // libraries and the benchmark's text; levels 1 and 2: 7 to 20%, and 27 times larger on
    // short repeated patterns), at about 10 times zlib's speed; the benchmark image's -c
    // output comes out 0.7% larger than qemu's. tests/bench/bench_codec.cpp measures it.
    static constexpr uint32_t kIsalLevel = 3;
    static constexpr uint32_t kIsalLevelBufSize = ISAL_DEF_LVL3_DEFAULT;
    // Back-references at most 4 KiB, the window qcow2 readers use.
    static constexpr uint16_t kIsalHistBits = 12;
    static constexpr size_t kIsalSlack = 4096;
#endif

private:
    z_stream zdeflate_{};
    z_stream zinflate_{};
    bool zdeflate_ok_ = false;
    bool zinflate_ok_ = false;
    std::unique_ptr<ZSTD_CCtx, ZstdCDelete> zcctx_;
    std::unique_ptr<ZSTD_DCtx, ZstdDDelete> zdctx_;
#ifdef BLK_HAVE_ISAL
    std::unique_ptr<isal_zstream> isal_deflate_;
    std::unique_ptr<uint8_t[]> isal_level_buf_;
    std::unique_ptr<inflate_state> isal_inflate_;
#endif
    std::unique_ptr<std::byte[]> scratch_;
    size_t scratch_size_ = 0;
};

ThreadCodecs& codecs() {
    thread_local ThreadCodecs c;
    return c;
}

Bytef* zin(std::span<const std::byte> s) { return reinterpret_cast<Bytef*>(const_cast<std::byte*>(s.data())); }

// Input past a cluster's worth of compressed bytes is never needed; the clamp keeps the
// 32-bit length fields of zlib and ISA-L exact for any span a caller passes.
constexpr size_t kMaxCodecInput = size_t(1) << 30;
std::span<const std::byte> clamp_input(std::span<const std::byte> in) {
    return in.size() > kMaxCodecInput ? in.first(kMaxCodecInput) : in;
}
Bytef* zout(std::span<std::byte> s) { return reinterpret_cast<Bytef*>(s.data()); }

// --- Deflate ---

// A compressed stream in the calling thread's scratch buffer, valid until the thread
// compresses again; nullopt when the stream does not fit in the caller's max_out bytes.
using Stream = Result<std::optional<std::span<const std::byte>>>;

[[maybe_unused]] Stream deflate_zlib(std::span<const std::byte> in, size_t max_out) {
    ThreadCodecs& c = codecs();
    const std::span<std::byte> out = c.scratch(max_out);
    z_stream* s = c.zlib_deflate();
    if (!s) return make_error(ENOMEM, "zlib: cannot initialise deflate");
    s->next_in = zin(in);
    s->avail_in = static_cast<uInt>(in.size());
    s->next_out = zout(out);
    s->avail_out = static_cast<uInt>(out.size());
    const int ret = deflate(s, Z_FINISH);
    if (ret == Z_STREAM_END) return std::optional(std::span<const std::byte>(out.first(out.size() - s->avail_out)));
    // qemu's test: anything but the end of the stream means it did not fit.
    // Z_OK or Z_BUF_ERROR: the output filled up before the stream ended.
    if (ret == Z_OK || ret == Z_BUF_ERROR) return std::optional<std::span<const std::byte>>();
    return make_error(EIO, "zlib: deflate failed");
}

#ifdef BLK_HAVE_ISAL
// igzip's one-shot deflate refuses a stream that would fill its output exactly: it gets
// kIsalSlack bytes more than max_out, and what comes out longer than max_out does not fit.
Stream deflate_isal(std::span<const std::byte> in, size_t max_out) {
    ThreadCodecs& c = codecs();
    const std::span<std::byte> scratch = c.scratch(max_out + ThreadCodecs::kIsalSlack);
    isal_zstream* s = c.isal_deflate();
    s->next_in = reinterpret_cast<uint8_t*>(const_cast<std::byte*>(in.data()));
    s->avail_in = static_cast<uint32_t>(in.size());
    s->next_out = reinterpret_cast<uint8_t*>(scratch.data());
    s->avail_out = static_cast<uint32_t>(scratch.size());
    const int ret = isal_deflate_stateless(s);
    if (ret == STATELESS_OVERFLOW || (ret == COMP_OK && s->total_out > max_out)) {
        return std::optional<std::span<const std::byte>>();
    }
    if (ret != COMP_OK || s->avail_in != 0) return make_error(EIO, "isa-l: deflate failed (" + std::to_string(ret) + ")");
    return std::optional(std::span<const std::byte>(scratch.first(s->total_out)));
}
#endif

Stream deflate_cluster(std::span<const std::byte> in, size_t max_out) {
#ifdef BLK_HAVE_ISAL
    return deflate_isal(in, max_out);
#else
    return deflate_zlib(in, max_out);
#endif
}

Status inflate_zlib(std::span<const std::byte> in, std::span<std::byte> out) {
    in = clamp_input(in);
    z_stream* s = codecs().zlib_inflate();
    if (!s) return make_error(ENOMEM, "zlib: cannot initialise inflate");
    s->next_in = zin(in);
    s->avail_in = static_cast<uInt>(in.size());
    s->next_out = zout(out);
    s->avail_out = static_cast<uInt>(out.size());
    const int ret = inflate(s, Z_FINISH);
    // The stored size is rounded up to sectors, so input may remain; the output must be full.
    if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && s->avail_out == 0) return {};
    return make_error(EIO, "corrupt compressed data (deflate)");
}

Status inflate_cluster(std::span<const std::byte> in, std::span<std::byte> out) {
#ifdef BLK_HAVE_ISAL
    in = clamp_input(in);
    inflate_state* s = codecs().isal_inflate();
    s->next_in = reinterpret_cast<uint8_t*>(const_cast<std::byte*>(in.data()));
    s->avail_in = static_cast<uint32_t>(in.size());
    s->next_out = reinterpret_cast<uint8_t*>(out.data());
    s->avail_out = static_cast<uint32_t>(out.size());
    const int ret = isal_inflate_stateless(s);
    if ((ret == ISAL_DECOMP_OK || ret == ISAL_END_INPUT || ret == ISAL_OUT_OVERFLOW) && s->total_out == out.size()) {
        return {};
    }
    // Anything else is corrupt data or an edge igzip and zlib judge differently (such as a
    // stream that runs on past the cluster): zlib's verdict is qemu's, so it decides.
#endif
    return inflate_zlib(in, out);
}

// --- zstd ---

// One frame at the default level, as qemu writes it. qemu streams into max_out bytes; here
// zstd gets room for any frame, which lets it compress in one pass straight from `in`
// (streaming into a smaller buffer copies the input and the frame through the context's own
// buffers first), and the frame is kept if it fits. The frame's bytes are the same either
// way (tests/unit/test_compress.cpp compares them with qemu's streaming call).
Stream compress_zstd(std::span<const std::byte> in, size_t max_out) {
    ThreadCodecs& c = codecs();
    ZSTD_CCtx* ctx = c.zstd_compress();
    if (!ctx) return make_error(ENOMEM, "zstd: cannot create a context");
    const std::span<std::byte> out = c.scratch(ZSTD_compressBound(in.size()));
    const size_t n = ZSTD_compress2(ctx, out.data(), out.size(), in.data(), in.size());
    if (ZSTD_isError(n)) return make_error(EIO, std::string("zstd: ") + ZSTD_getErrorName(n));
    if (n > max_out) return std::optional<std::span<const std::byte>>();
    return std::optional(std::span<const std::byte>(out.first(n)));
}

Status decompress_zstd(std::span<const std::byte> in, std::span<std::byte> out) {
    ZSTD_DCtx* ctx = codecs().zstd_decompress();
    if (!ctx) return make_error(ENOMEM, "zstd: cannot create a context");
    // Frame by frame into the output itself: no window buffer, whatever window size a frame
    // asks for. Like qemu's streaming loop, a frame that ends early is followed by the next
    // one, and every frame must end within the output.
    size_t done = 0;
    while (done < out.size()) {
        const size_t frame = ZSTD_findFrameCompressedSize(in.data(), in.size());
        if (ZSTD_isError(frame)) {
            return make_error(EIO, std::string("corrupt compressed data (zstd: ") + ZSTD_getErrorName(frame) + ")");
        }
        const size_t n = ZSTD_decompressDCtx(ctx, out.data() + done, out.size() - done, in.data(), frame);
        if (ZSTD_isError(n)) {
            return make_error(EIO, std::string("corrupt compressed data (zstd: ") + ZSTD_getErrorName(n) + ")");
        }
        done += n;
        in = in.subspan(frame);
    }
    return {};
}

Stream compress_stream(CompressionType type, std::span<const std::byte> in, size_t max_out) {
    if (type == CompressionType::Zstd) return compress_zstd(in, max_out);
    // The probe runs first: random clusters cost no encoder run.
    if (cluster_looks_incompressible(in)) return std::optional<std::span<const std::byte>>();
    return deflate_cluster(in, max_out);
}

}  // namespace

bool cluster_looks_incompressible(std::span<const std::byte> in) {
    uint64_t limit = kProbeChi2Limit;
    for (size_t blocks = (in.size() + kProbeBlock - 1) / kProbeBlock; blocks > 1; blocks /= 2) {
        limit += kProbeChi2PerDoubling;
    }
    for (size_t off = 0; off < in.size(); off += kProbeBlock) {
        if (block_has_skew(in.data() + off, std::min(kProbeBlock, in.size() - off), limit)) return false;
    }
    return !has_repeats(in.data(), in.size());
}

const char* deflate_encoder_name() {
#ifdef BLK_HAVE_ISAL
    return "isa-l igzip level 3";
#else
    return "zlib level 6";
#endif
}

Result<std::optional<size_t>> compress_cluster_into(CompressionType type, std::span<const std::byte> in,
                                                    std::span<std::byte> out) {
    BLK_TRY_ASSIGN(auto stream, compress_stream(type, in, out.size()));
    if (!stream) return std::optional<size_t>();
    std::memcpy(out.data(), stream->data(), stream->size());
    return std::optional<size_t>(stream->size());
}

Result<std::optional<std::vector<std::byte>>> compress_cluster_data(CompressionType type, std::span<const std::byte> in,
                                                                    size_t max_out) {
    BLK_TRY_ASSIGN(auto stream, compress_stream(type, in, max_out));
    if (!stream) return std::optional<std::vector<std::byte>>();
    return std::optional(std::vector<std::byte>(stream->begin(), stream->end()));
}

Status decompress_cluster(CompressionType type, std::span<const std::byte> in, std::span<std::byte> out) {
    return type == CompressionType::Zstd ? decompress_zstd(in, out) : inflate_cluster(in, out);
}

}  // namespace blk::qcow2
