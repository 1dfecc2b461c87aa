// Unit tests for qcow2 creation: header serialization, option checks, layout and refcount
// math for every cluster size and refcount width, and whole images checked cluster by cluster.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "../../libblock/formats/qcow2/create.h"
#include "blk/driver.h"
#include "blk/endian.h"

using namespace blk::qcow2;

namespace {

Header sample_header(uint32_t version) {
    Header h;
    h.version = version;
    h.cluster_bits = 16;
    h.size = 5ull << 30;
    h.l1_size = 20;
    h.l1_table_offset = 0x30000;
    h.refcount_table_offset = 0x10000;
    h.refcount_table_clusters = 1;
    if (version >= 3) {
        h.header_length = kV3HeaderLength;
        h.incompatible = kIncompatDataFile | kIncompatCompression | kIncompatExtendedL2;
        h.compatible = kCompatLazyRefcounts;
        h.autoclear = kAutoclearDataFileRaw;
        h.refcount_order = 3;
        h.compression = CompressionType::Zstd;
        h.data_file = "data,with,commas.raw";
        h.features = qemu_feature_table();
    }
    h.backing_file = "../base dir/base.qcow2";
    h.backing_format = "qcow2";
    return h;
}

// Reads a whole file (test images are small).
std::vector<std::byte> slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> b(c.size());
    std::memcpy(b.data(), c.data(), c.size());
    return b;
}

uint64_t be(const std::vector<std::byte>& d, uint64_t off) {
    return off + 8 <= d.size() ? blk::load_be64(d.data() + off) : 0;  // past the end reads as zero
}

uint64_t refcount_entry(std::span<const std::byte> block, uint32_t order, uint64_t i) {
    const unsigned bits = 1u << order;
    if (bits >= 8) {
        uint64_t v = 0;
        for (unsigned k = 0; k < bits / 8; ++k) v = (v << 8) | std::to_integer<uint64_t>(block[i * bits / 8 + k]);
        return v;
    }
    const uint64_t bit = i * bits;
    return (std::to_integer<uint64_t>(block[bit / 8]) >> (bit % 8)) & ((1u << bits) - 1);
}

// A small qemu-img check: every cluster the metadata reaches is used once, and the
// refcount of every cluster of the file is 1 if it is used and 0 if not.
void check_image(const std::string& path, const CreateParams& p) {
    auto d = slurp(path);
    auto h = parse_header(d, d.size());
    REQUIRE_MESSAGE(h, (h ? "" : h.error().message));
    CHECK(h->size == p.size);
    CHECK(h->version == p.version);
    CHECK(h->refcount_order == p.refcount_order);
    const uint64_t cs = h->cluster_size();
    std::map<uint64_t, int> used;  // cluster index -> times referenced
    auto use = [&](uint64_t off, uint64_t bytes) {
        for (uint64_t c = off / cs; c < (off + bytes + cs - 1) / cs; ++c) used[c]++;
    };
    use(0, cs);
    use(h->refcount_table_offset, uint64_t{h->refcount_table_clusters} * cs);
    std::vector<uint64_t> refblocks;
    for (uint64_t i = 0; i < uint64_t{h->refcount_table_clusters} * cs / 8; ++i) {
        uint64_t rb = be(d, h->refcount_table_offset + i * 8);
        refblocks.push_back(rb);
        if (rb) use(rb, cs);
    }
    if (h->l1_size) use(h->l1_table_offset, uint64_t{h->l1_size} * 8);
    const bool external = h->incompatible & kIncompatDataFile;
    uint64_t mapped = 0;
    for (uint64_t i = 0; i < h->l1_size; ++i) {
        const uint64_t l1e = be(d, h->l1_table_offset + i * 8);
        if (!l1e) continue;
        CHECK((l1e & kEntryCopied));
        const uint64_t l2 = standard_offset(l1e);
        use(l2, cs);
        size_t bad_entries = 0;
        for (uint64_t j = 0; j < h->l2_entries(); ++j) {
            const uint64_t e = be(d, l2 + j * h->l2_entry_size());
            if (!e) continue;
            const uint64_t guest = (i * h->l2_entries() + j) * cs;
            // Allocated, beyond no guest byte; data files map 1:1; subclusters unallocated.
            if (!(e & kEntryCopied) || guest >= p.size || (external && standard_offset(e) != guest) ||
                (h->extended_l2() && be(d, l2 + j * 16 + 8) != 0)) {
                ++bad_entries;
            }
            if (!external) use(standard_offset(e), cs);
            ++mapped;
        }
        CHECK(bad_entries == 0);
    }
    if (p.prealloc != blk::Prealloc::Off) CHECK(mapped == (p.size + cs - 1) / cs);
    else CHECK(mapped == 0);
    for (auto [cluster, n] : used) {
        if (n != 1) FAIL_CHECK("cluster " << cluster << " used " << n << " times");
    }
    // Every entry of every refcount block, and no refcount block beyond the used clusters.
    const uint64_t per_block = cs * 8 >> h->refcount_order;
    const uint64_t last = std::max<uint64_t>(used.rbegin()->first + 1, (d.size() + cs - 1) / cs);
    size_t bad = 0;
    for (uint64_t b = 0; b < refblocks.size(); ++b) {
        if (!refblocks[b]) {
            bad += b * per_block < last;
            continue;
        }
        REQUIRE(refblocks[b] + cs <= d.size());
        auto block = std::span(d).subspan(refblocks[b], cs);
        for (uint64_t i = 0; i < per_block; ++i) {
            const uint64_t c = b * per_block + i;
            if (refcount_entry(block, h->refcount_order, i) != (used.count(c) ? 1u : 0u) && bad++ < 5) {
                FAIL_CHECK("cluster " << c << " has refcount " << refcount_entry(block, h->refcount_order, i));
            }
        }
    }
    CHECK(bad == 0);
}

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/blk-create-test.XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { (void)std::system(("rm -rf '" + path + "'").c_str()); }
};

blk::Json typed(std::initializer_list<std::pair<const char*, blk::Json>> kv) {
    blk::Json o = blk::Json::object();
    for (auto& [k, v] : kv) o[k] = v;
    return o;
}

}  // namespace

TEST_CASE("serialize_header round-trips every field through parse_header") {
    for (uint32_t version : {2u, 3u}) {
        Header h = sample_header(version);
        std::vector<std::byte> cluster(65536);
        REQUIRE(serialize_header(h, cluster));
        auto p = parse_header(cluster, 1ull << 20);
        REQUIRE_MESSAGE(p, (p ? "" : p.error().message));
        CHECK(p->version == h.version);
        CHECK(p->cluster_bits == h.cluster_bits);
        CHECK(p->size == h.size);
        CHECK(p->l1_size == h.l1_size);
        CHECK(p->l1_table_offset == h.l1_table_offset);
        CHECK(p->refcount_table_offset == h.refcount_table_offset);
        CHECK(p->refcount_table_clusters == h.refcount_table_clusters);
        CHECK(p->incompatible == h.incompatible);
        CHECK(p->compatible == h.compatible);
        CHECK(p->autoclear == h.autoclear);
        CHECK(p->refcount_order == (version >= 3 ? h.refcount_order : 4u));
        CHECK(p->header_length == (version >= 3 ? kV3HeaderLength : kV2HeaderLength));
        CHECK(p->compression == h.compression);
        CHECK(p->backing_file == h.backing_file);
        CHECK(p->backing_format == h.backing_format);
        CHECK(p->data_file == h.data_file);
        REQUIRE(p->features.size() == h.features.size());
        for (size_t i = 0; i < h.features.size(); ++i) {
            CHECK(p->features[i].type == h.features[i].type);
            CHECK(p->features[i].bit == h.features[i].bit);
            CHECK(p->features[i].name == h.features[i].name);
        }
        // The name follows the end marker, right where serialized_header_bytes() says it ends.
        CHECK(p->backing_file_offset + p->backing_file_size == serialized_header_bytes(h));
    }
}

TEST_CASE("serialize_header refuses names that are too long or do not fit the cluster") {
    Header h = sample_header(3);
    std::vector<std::byte> cluster(65536);
    h.backing_file = std::string(1024, 'a');
    CHECK(serialize_header(h, cluster).error().code == EINVAL);
    h.backing_file = std::string(1023, 'a');
    CHECK(serialize_header(h, cluster));
    std::vector<std::byte> small(512);
    h.features.clear();
    h.data_file.clear();
    auto st = serialize_header(h, small);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ENOSPC);
    h.backing_file = std::string(512 - kV3HeaderLength - 8 - 16, 'b');  // end marker, "qcow2" extension
    CHECK(serialized_header_bytes(h) == 512);
    CHECK(serialize_header(h, small));
}

TEST_CASE("qemu writes the feature table only above 4 KiB clusters") {
    CreateParams p;
    p.size = 1 << 20;
    for (uint32_t bits = 9; bits <= 21; ++bits) {
        p.cluster_bits = bits;
        auto l = plan_layout(p);
        REQUIRE(l);
        CHECK(make_header(p, *l).features.size() == (bits > 12 ? 8u : 0u));
    }
    p.version = 2;
    p.cluster_bits = 16;
    CHECK(make_header(p, *plan_layout(p)).features.empty());
}

TEST_CASE("refblock_set_ones sets exactly the asked entries for every refcount width") {
    for (uint32_t order = 0; order <= 6; ++order) {
        std::vector<std::byte> block(512);
        const uint64_t entries = 512 * 8 >> order;
        for (auto [first, count] : std::vector<std::pair<uint64_t, uint64_t>>{{0, 1}, {3, 17}, {1, entries - 2}, {0, entries}}) {
            std::fill(block.begin(), block.end(), std::byte{0});
            refblock_set_ones(block, order, first, count);
            uint64_t wrong = 0;
            for (uint64_t i = 0; i < entries; ++i) {
                wrong += refcount_entry(block, order, i) != (i >= first && i < first + count ? 1u : 0u);
            }
            CHECK(wrong == 0);
        }
    }
}

TEST_CASE("the layout's refcount structures cover every cluster for every cluster size and width") {
    for (uint32_t bits = 9; bits <= 21; ++bits) {
        for (uint32_t order = 0; order <= 6; ++order) {
            for (auto prealloc : {blk::Prealloc::Off, blk::Prealloc::Metadata, blk::Prealloc::Full}) {
                for (uint64_t size : {uint64_t{0}, uint64_t{1} << 20, uint64_t{3} << 30}) {
                    CreateParams p;
                    p.cluster_bits = bits;
                    p.refcount_order = order;
                    p.size = size;
                    p.prealloc = prealloc;
                    auto l = plan_layout(p);
                    if (!l) {
                        CHECK(l.error().code == EFBIG);  // huge tables for tiny clusters
                        continue;
                    }
                    const uint64_t cs = 1ull << bits;
                    INFO("cluster " << cs << " refcount_bits " << (1u << order) << " size " << size);
                    CHECK(l->refblock_count * l->refcounts_per_block >= l->total_clusters);
                    CHECK((l->refblock_count - 1) * l->refcounts_per_block < l->total_clusters);  // no spare block
                    CHECK(l->reftable_clusters * cs / 8 >= l->refblock_count);
                    CHECK(l->l1_size * l->l2_entries * cs >= size);
                    CHECK(l->file_size >= l->metadata_end);
                    CHECK(l->total_clusters * cs >= l->metadata_end);
                    CHECK(l->file_size <= l->total_clusters * cs);
                    if (prealloc != blk::Prealloc::Off && l->data_clusters) {
                        CHECK(l->data_offset(l->data_clusters - 1) + cs == l->total_clusters * cs);
                    }
                }
            }
        }
    }
}

TEST_CASE("plan_layout matches qemu's layout of a small image") {
    CreateParams p;
    p.size = 1 << 20;
    auto l = plan_layout(p);
    REQUIRE(l);
    CHECK(l->reftable_offset == 0x10000);
    CHECK(l->refblocks_offset == 0x20000);
    CHECK(l->l1_offset == 0x30000);
    CHECK(l->file_size == 0x30008);  // qemu writes only the L1 entries
    p.size = 0;
    l = plan_layout(p);
    CHECK(l->l1_offset == 0);
    CHECK(l->file_size == 0x30000);
    p.size = 1000 / 512 * 512 + 512;
    p.prealloc = blk::Prealloc::Metadata;
    p.extended_l2 = true;
    l = plan_layout(p);
    CHECK(l->l2_offset(0) == 0x40000);
    CHECK(l->data_offset(0) == 0x50000);
    CHECK(l->file_size == 0x50800);  // rounded up to a 2 KiB subcluster
    CHECK(l->tail_zero_offset == 0x50400);
    CHECK(l->tail_zero_bytes == 0x400);
}

TEST_CASE("plan_layout refuses tables beyond qemu's limits with EFBIG") {
    CreateParams p;
    p.cluster_bits = 21;
    p.size = 1ull << 61;  // L1: 4 Mi entries = 32 MiB, the limit
    CHECK(plan_layout(p));
    p.size += 512;
    CHECK(plan_layout(p).error().code == EFBIG);
    p.cluster_bits = 9;
    p.size = 128ull << 30;
    CHECK(plan_layout(p));
    p.size = 1ull << 40;
    CHECK(plan_layout(p).error().code == EFBIG);
    p.size = 32ull << 30;  // metadata preallocation of 64 Mi clusters needs a 64 MiB refcount table
    p.refcount_order = 6;
    p.prealloc = blk::Prealloc::Metadata;
    CHECK(plan_layout(p).error().code == EFBIG);
}

TEST_CASE("a 16 TiB metadata-preallocated image is planned without touching memory per cluster") {
    CreateParams p;
    p.size = 16ull << 40;
    p.prealloc = blk::Prealloc::Metadata;
    auto l = plan_layout(p);
    REQUIRE(l);
    CHECK(l->data_clusters == (16ull << 40) >> 16);
    CHECK(l->l2_tables == l->data_clusters / 8192);
    CHECK(l->refblock_count == (l->total_clusters + 32767) / 32768);
    CHECK(l->interleaved);
}

TEST_CASE("qcow2 create options: qemu's checks, order and messages") {
    auto msg = [](const blk::Json& o) {
        auto r = parse_create_params(o);
        return r ? std::string("ok") : r.error().message;
    };
    CHECK(msg(typed({{"compat", "1.0"}})) == "Parameter 'version' does not accept value '1.0'");
    CHECK(msg(typed({{"compat", "1.0"}, {"preallocation", "x"}})) == "Parameter 'version' does not accept value '1.0'");
    CHECK(msg(typed({{"preallocation", "x"}, {"compression_type", "y"}})) == "Parameter 'preallocation' does not accept value 'x'");
    CHECK(msg(typed({{"compression_type", "lz4"}})) == "Parameter 'compression-type' does not accept value 'lz4'");
    CHECK(msg(typed({{"backing_fmt", "foo"}, {"backing_file", "b"}})) == "Parameter 'backing-fmt' does not accept value 'foo'");
    CHECK(msg(typed({{"backing_fmt", "vmdk"}})) == "Backing format cannot be used without backing file");
    CHECK(msg(typed({{"cluster_size", 3072}})) == "Cluster size must be a power of two between 512 and 2048k");
    CHECK(msg(typed({{"cluster_size", 1ull << 33}})) == "Cluster size must be a power of two between 512 and 2048k");
    CHECK(msg(typed({{"extended_l2", true}, {"cluster_size", 8192}})) ==
          "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
    CHECK(msg(typed({{"extended_l2", true}, {"cluster_size", 8192}, {"compat", "0.10"}})) ==
          "Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
    CHECK(msg(typed({{"refcount_bits", 3}})) == "Refcount width must be a power of two and may not exceed 64 bits");
    CHECK(msg(typed({{"refcount_bits", -1}})) == "Refcount width must be a power of two and may not exceed 64 bits");
    CHECK(msg(typed({{"refcount_bits", 128}})) == "Refcount width must be a power of two and may not exceed 64 bits");
    CHECK(msg(typed({{"refcount_bits", 8}, {"compat", "v2"}})) ==
          "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)");
    CHECK(msg(typed({{"refcount_bits", 16}, {"compat", "0.10"}})) == "ok");
    CHECK(msg(typed({{"lazy_refcounts", true}, {"compat", "0.10"}})) ==
          "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)");
    CHECK(msg(typed({{"data_file_raw", true}})) == "data-file-raw requires data-file");
    CHECK(msg(typed({{"data_file_raw", true}, {"data_file", "d"}, {"backing_file", "b"}})) ==
          "Backing file and data-file-raw cannot be used at the same time");
    CHECK(msg(typed({{"data_file", "d"}, {"compat", "0.10"}})) ==
          "External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
    CHECK(msg(typed({{"compression_type", "zstd"}, {"compat", "0.10"}})) ==
          "Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)");
    CHECK(msg(typed({{"backing_file", "b"}, {"preallocation", "full"}})) ==
          "Backing file and preallocation can only be used at the same time if extended_l2 is on");
    CHECK(msg(typed({{"backing_file", "b"}, {"preallocation", "full"}, {"extended_l2", true}})) == "ok");
    CHECK(msg(typed({{"encrypt.format", "luks"}})) == "Creating encrypted qcow2 images is not supported yet");
    CHECK(msg(typed({{"encryption", false}})) == "ok");
    auto raw = parse_create_params(typed({{"data_file_raw", true}, {"data_file", "file:d.raw"}, {"size", 1000}}));
    REQUIRE(raw);
    CHECK(raw->prealloc == blk::Prealloc::Metadata);  // data_file_raw needs the 1:1 mapping
    CHECK(raw->data_file == "d.raw");
    CHECK(raw->size == 1024);
}

TEST_CASE("created images are consistent for every cluster size, refcount width and preallocation") {
    // Each cluster size with a different refcount width, preallocation, size and L2 kind:
    // the pure layout test covers the whole matrix; this one checks written images.
    struct Case {
        uint32_t bits, order;
        const char* prealloc;
        uint64_t size;
        bool ext;
    };
    const Case cases[] = {
        {9, 0, "metadata", 5 << 20, false}, {9, 6, "off", 5 << 20, false},     {10, 1, "falloc", 1000, false},
        {11, 2, "metadata", 1000, false},   {12, 3, "off", 1000, false},       {13, 5, "metadata", 5 << 20, false},
        {14, 4, "metadata", 5 << 20, true}, {15, 6, "falloc", 5 << 20, true},  {16, 4, "off", 0, false},
        {16, 0, "metadata", 1000, true},    {16, 6, "full", 1000, false},      {17, 2, "metadata", 5 << 20, false},
        {18, 3, "off", 5 << 20, true},      {19, 5, "falloc", 1000, false},    {20, 1, "metadata", 1000, true},
        {21, 0, "metadata", 5 << 20, true}, {21, 6, "falloc", 5 << 20, false}, {9, 4, "metadata", 0, false},
    };
    TempDir dir;
    int n = 0;
    for (const Case& c : cases) {
        const std::string path = dir.path + "/img" + std::to_string(n++) + ".qcow2";
        blk::CreateRequest req;
        req.format = "qcow2";
        req.filename = path;
        req.options = typed({{"cluster_size", std::to_string(1u << c.bits)},
                             {"refcount_bits", std::to_string(1u << c.order)},
                             {"preallocation", c.prealloc},
                             {"extended_l2", c.ext ? "on" : "off"}});
        req.size = c.size;
        INFO(path << " cluster " << (1u << c.bits) << " refcount_bits " << (1u << c.order) << " " << c.prealloc << " size "
                  << c.size << " extended_l2 " << c.ext);
        auto st = blk::create_image(req);
        REQUIRE_MESSAGE(st, (st ? "" : st.error().message));
        auto params = parse_create_params(typed({{"cluster_size", 1u << c.bits},
                                                 {"refcount_bits", 1u << c.order},
                                                 {"preallocation", c.prealloc},
                                                 {"extended_l2", c.ext},
                                                 {"size", c.size}}));
        REQUIRE(params);
        check_image(path, *params);
    }
}

TEST_CASE("a failed create leaves no file behind and keeps an existing one it could not lock") {
    TempDir dir;
    blk::CreateRequest req;
    req.format = "qcow2";
    req.filename = dir.path + "/x.qcow2";
    req.options = typed({{"cluster_size", "2M"}});
    req.size = (1ull << 61) + 512;  // an L1 table beyond qemu's limit
    auto st = blk::create_image(req);
    REQUIRE_FALSE(st);
    CHECK(st.error().message == "The image size is too large for file format 'qcow2' (try using a larger cluster size)");
    CHECK(access(req.filename.c_str(), F_OK) != 0);
    req.size = 1 << 20;
    req.options = typed({{"data_file", dir.path + "/nodir/d.raw"}});
    st = blk::create_image(req);
    REQUIRE_FALSE(st);
    CHECK(access(req.filename.c_str(), F_OK) != 0);  // the image made before the data file failed is gone
}

TEST_CASE("a created image reports its facts typed: qcow2's format-specific facts, the file's, no snapshots") {
    TempDir dir;
    const std::string path = dir.path + "/facts.qcow2";
    blk::CreateRequest req;
    req.format = "qcow2";
    req.filename = path;
    req.options = typed({{"lazy_refcounts", "on"}, {"refcount_bits", "4"}, {"compression_type", "zstd"}});
    req.size = 1 << 20;
    REQUIRE(blk::create_image(req));
    auto g = blk::open_image(blk::ImageSpec{path, "qcow2", false}, blk::OpenFlags{});
    REQUIRE(g);
    const blk::FormatFacts facts = g->root->format_specific();
    const auto* q = std::get_if<blk::Qcow2Facts>(&facts);
    REQUIRE(q);
    CHECK(q->v3);
    CHECK(q->lazy_refcounts);
    CHECK(q->refcount_bits == 4);
    CHECK(q->compression_type == "zstd");
    CHECK_FALSE(q->corrupt);
    CHECK_FALSE(q->has_data_file);
    CHECK(q->bitmaps.empty());
    CHECK_FALSE(q->encrypt);
    CHECK(g->root->snapshots().empty());
    const blk::FormatFacts file_facts = blk::primary_child(*g->root)->format_specific();
    CHECK(std::holds_alternative<blk::FileFacts>(file_facts));
}
