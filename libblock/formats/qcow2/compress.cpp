// Decompression of one qcow2 compressed cluster (raw deflate with a 4 KiB window, or zstd).
#include "compress.h"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <memory>

namespace blk::qcow2 {

namespace {

// qcow2 writers deflate with a 4 KiB window and no zlib header.
constexpr int kDeflateWindowBits = -12;

Status inflate_zlib(std::span<const std::byte> in, std::span<std::byte> out) {
    z_stream s{};
    if (inflateInit2(&s, kDeflateWindowBits) != Z_OK) return make_error(ENOMEM, "zlib: cannot initialise inflate");
    auto end = std::unique_ptr<z_stream, int (*)(z_stream*)>(&s, inflateEnd);
    s.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
    s.avail_in = static_cast<uInt>(in.size());
    s.next_out = reinterpret_cast<Bytef*>(out.data());
    s.avail_out = static_cast<uInt>(out.size());
    int ret = inflate(&s, Z_FINISH);
    // The stored size is rounded up to sectors, so input may remain; the output must be full.
    if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && s.avail_out == 0) return {};
    return make_error(EIO, "corrupt compressed data (deflate)");
}

Status inflate_zstd(std::span<const std::byte> in, std::span<std::byte> out) {
    std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
    if (!ctx) return make_error(ENOMEM, "zstd: cannot create a context");
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    ZSTD_outBuffer ob{out.data(), out.size(), 0};
    while (ob.pos < ob.size) {
        size_t r = ZSTD_decompressStream(ctx.get(), &ob, &ib);
        if (ZSTD_isError(r)) return make_error(EIO, std::string("corrupt compressed data (zstd: ") + ZSTD_getErrorName(r) + ")");
        if (ib.pos == ib.size && ob.pos < ob.size && r != 0) {
            return make_error(EIO, "corrupt compressed data (zstd: truncated)");
        }
        if (r == 0 && ob.pos < ob.size) break;
    }
    if (ob.pos != ob.size) return make_error(EIO, "corrupt compressed data (zstd: short output)");
    return {};
}

Result<std::optional<std::vector<std::byte>>> deflate_zlib(std::span<const std::byte> in, size_t max_out) {
    z_stream s{};
    if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, kDeflateWindowBits, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
        return make_error(ENOMEM, "zlib: cannot initialise deflate");
    }
    auto end = std::unique_ptr<z_stream, int (*)(z_stream*)>(&s, deflateEnd);
    std::vector<std::byte> out(max_out);
    s.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
    s.avail_in = static_cast<uInt>(in.size());
    s.next_out = reinterpret_cast<Bytef*>(out.data());
    s.avail_out = static_cast<uInt>(out.size());
    int ret = deflate(&s, Z_FINISH);
    if (ret == Z_STREAM_END) {
        out.resize(max_out - s.avail_out);
        return std::optional<std::vector<std::byte>>(std::move(out));
    }
    if (ret == Z_OK || ret == Z_BUF_ERROR) return std::optional<std::vector<std::byte>>();
    return make_error(EIO, "zlib: deflate failed");
}

Result<std::optional<std::vector<std::byte>>> compress_zstd(std::span<const std::byte> in, size_t max_out) {
    std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> ctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
    if (!ctx) return make_error(ENOMEM, "zstd: cannot create a context");
    std::vector<std::byte> out(max_out);
    size_t n = ZSTD_compress2(ctx.get(), out.data(), out.size(), in.data(), in.size());
    if (ZSTD_isError(n)) {
        if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) return std::optional<std::vector<std::byte>>();
        return make_error(EIO, std::string("zstd: ") + ZSTD_getErrorName(n));
    }
    out.resize(n);
    return std::optional<std::vector<std::byte>>(std::move(out));
}

}  // namespace

Result<std::optional<std::vector<std::byte>>> compress_cluster_data(CompressionType type, std::span<const std::byte> in,
                                                                    size_t max_out) {
    return type == CompressionType::Zstd ? compress_zstd(in, max_out) : deflate_zlib(in, max_out);
}

Status decompress_cluster(CompressionType type, std::span<const std::byte> in, std::span<std::byte> out) {
    return type == CompressionType::Zstd ? inflate_zstd(in, out) : inflate_zlib(in, out);
}

}  // namespace blk::qcow2
