// blk-mkcompressed: writes a qcow2 image whose clusters are compressed by blkimg's codecs
// (compress_cluster_data), so the interop test can have qemu-img read our streams.
// usage: blk-mkcompressed zlib|zstd CLUSTER_BITS INPUT.raw OUTPUT.qcow2
// The image is minimal but complete: qcow2 v3, 16-bit refcounts, one L1 table, every L2
// table; all-zero clusters unallocated, clusters that do not shrink stored raw, the rest
// compressed and packed byte after byte as qemu packs them. Prints
// "compressed N raw M first_compressed_at OFFSET" (OFFSET: host offset of the first stream).
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../../libblock/formats/qcow2/compress.h"
#include "blk/endian.h"

using namespace blk::qcow2;

namespace {

int fail(const std::string& msg) {
    std::fprintf(stderr, "blk-mkcompressed: %s\n", msg.c_str());
    return 1;
}

uint64_t div_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) return fail("usage: blk-mkcompressed zlib|zstd CLUSTER_BITS INPUT.raw OUTPUT.qcow2");
    const std::string type_name = argv[1];
    if (type_name != "zlib" && type_name != "zstd") return fail("unknown compression type " + type_name);
    const CompressionType type = type_name == "zstd" ? CompressionType::Zstd : CompressionType::Zlib;
    const uint32_t cluster_bits = uint32_t(std::stoul(argv[2]));
    if (cluster_bits < 9 || cluster_bits > 21) return fail("cluster bits must be 9 to 21");
    const uint64_t cs = 1ull << cluster_bits;

    std::ifstream inf(argv[3], std::ios::binary);
    if (!inf) return fail(std::string("cannot read ") + argv[3]);
    std::vector<char> raw((std::istreambuf_iterator<char>(inf)), {});
    const uint64_t size = raw.size();
    const uint64_t clusters = div_up(size, cs);

    // Data area, laid out from offset 0 here and moved behind the metadata below: raw
    // clusters cluster-aligned, compressed streams packed byte after byte.
    std::vector<std::byte> data;
    std::vector<uint64_t> l2(clusters, 0);          // data-relative entries, fixed up later
    std::vector<int> kind(clusters, 0);              // 0 unallocated, 1 raw, 2 compressed
    std::vector<uint64_t> clen(clusters, 0);
    for (uint64_t c = 0; c < clusters; ++c) {
        std::vector<std::byte> cl(cs, std::byte{0});  // the last cluster is padded with zeroes, as qemu does
        std::memcpy(cl.data(), raw.data() + c * cs, std::min(cs, size - c * cs));
        bool zero = true;
        for (std::byte b : cl) zero = zero && b == std::byte{0};
        if (zero) continue;
        auto r = compress_cluster_data(type, cl, cs - 1);
        if (!r) return fail(r.error().message);
        if (*r) {
            kind[c] = 2;
            l2[c] = data.size();
            clen[c] = (*r)->size();
            data.insert(data.end(), (*r)->begin(), (*r)->end());
        } else {
            kind[c] = 1;
            data.resize(div_up(data.size(), cs) * cs);
            l2[c] = data.size();
            data.insert(data.end(), cl.begin(), cl.end());
        }
    }
    data.resize(div_up(data.size(), cs) * cs);
    const uint64_t data_clusters = data.size() / cs;

    const uint64_t l2_entries = cs / 8;
    const uint64_t l1_size = div_up(clusters, l2_entries);
    const uint64_t l1_clusters = div_up(l1_size * 8, cs);
    const uint64_t refs_per_block = cs / 2;
    // Host layout: header | refcount table | refcount blocks | L1 | L2 tables | data.
    uint64_t rt_clusters = 1, rb = 1, host = 0;
    for (;;) {
        host = 1 + rt_clusters + rb + l1_clusters + l1_size + data_clusters;
        const uint64_t need_rb = div_up(host, refs_per_block), need_rt = div_up(need_rb * 8, cs);
        if (need_rb <= rb && need_rt <= rt_clusters) break;
        rb = std::max(rb, need_rb);
        rt_clusters = std::max(rt_clusters, need_rt);
    }
    const uint64_t rt_off = cs, rb_off = rt_off + rt_clusters * cs, l1_off = rb_off + rb * cs;
    const uint64_t l2_off = l1_off + l1_clusters * cs, data_off = l2_off + l1_size * cs;

    std::vector<std::byte> img(host * cs, std::byte{0});
    std::vector<uint64_t> refcount(host, 0);
    for (uint64_t c = 0; c < data_off / cs; ++c) refcount[c] = 1;
    std::memcpy(img.data() + data_off, data.data(), data.size());

    const uint64_t csize_shift = 62 - (cluster_bits - 8);
    uint64_t n_compressed = 0, n_raw = 0, first_compressed_at = 0;
    for (uint64_t c = 0; c < clusters; ++c) {
        uint64_t e = 0;
        if (kind[c] == 1) {
            const uint64_t off = data_off + l2[c];
            e = off | kEntryCopied;
            refcount[off / cs] += 1;
            ++n_raw;
        } else if (kind[c] == 2) {
            const uint64_t off = data_off + l2[c];
            const uint64_t end = off + clen[c];  // one past the last byte
            const uint64_t extra_sectors = (end - 1) / 512 - off / 512;
            e = kEntryCompressed | (extra_sectors << csize_shift) | off;
            if (n_compressed++ == 0) first_compressed_at = off;
            // Every host cluster the stream's sectors touch holds one more reference.
            const uint64_t sectors_end = (off / 512 + extra_sectors + 1) * 512;
            for (uint64_t h = off / cs; h <= (sectors_end - 1) / cs; ++h) refcount[h] += 1;
        }
        blk::store_be64(img.data() + l2_off + c * 8, e);
    }
    for (uint64_t i = 0; i < l1_size; ++i) blk::store_be64(img.data() + l1_off + i * 8, (l2_off + i * cs) | kEntryCopied);
    for (uint64_t i = 0; i < rb; ++i) blk::store_be64(img.data() + rt_off + i * 8, rb_off + i * cs);
    for (uint64_t h = 0; h < host; ++h) {
        if (refcount[h] > 0xffff) return fail("refcount overflow");
        blk::store_be16(img.data() + rb_off + h * 2, uint16_t(refcount[h]));
    }

    std::byte* hd = img.data();
    blk::store_be32(hd + 0, kMagic);
    blk::store_be32(hd + 4, 3);
    blk::store_be32(hd + 20, cluster_bits);
    blk::store_be64(hd + 24, size);
    blk::store_be32(hd + 36, uint32_t(l1_size));
    blk::store_be64(hd + 40, l1_off);
    blk::store_be64(hd + 48, rt_off);
    blk::store_be32(hd + 56, uint32_t(rt_clusters));
    blk::store_be64(hd + 72, type == CompressionType::Zstd ? kIncompatCompression : 0);
    blk::store_be32(hd + 96, 4);    // refcount_order: 16-bit refcounts
    blk::store_be32(hd + 100, 112);  // header length, with the compression type byte
    hd[104] = std::byte(type == CompressionType::Zstd ? 1 : 0);

    std::ofstream out(argv[4], std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(img.data()), std::streamsize(img.size()));
    if (!out) return fail(std::string("cannot write ") + argv[4]);
    std::printf("compressed %llu raw %llu first_compressed_at %llu\n", (unsigned long long)n_compressed,
                (unsigned long long)n_raw, (unsigned long long)first_compressed_at);
    return 0;
}
