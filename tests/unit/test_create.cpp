// Unit tests for the create path: a format's create writes only through the protocol node it
// is handed (so it runs on memory as well as on a host file), and the core cleans up after a
// create that fails half-way.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "blk/driver.h"
#include "temp_files.h"

using namespace blk;
using namespace blktest;

namespace {

// A protocol node over memory that grows and shrinks like a host file (a fresh one reads
// as zeroes, as a new file does).
class GrowNode final : public Node {
public:
    GrowNode() : Node("grow-mem", Json::object()) {
        read_only_ = false;
        refresh_caps();
    }
    std::vector<std::byte>& data() { return data_; }
    int flushes = 0;

protected:
    Capabilities own_caps() const override {
        Capabilities c;
        c.flush = true;
        c.truncate = true;
        c.zero_init = true;
        c.protocol = true;
        return c;
    }
    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        std::copy_n(data_.begin() + static_cast<std::ptrdiff_t>(off), buf.size(), buf.begin());
        return {};
    }
    Status do_write(uint64_t off, std::span<const std::byte> buf) override {
        std::copy(buf.begin(), buf.end(), data_.begin() + static_cast<std::ptrdiff_t>(off));
        return {};
    }
    Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned) override {
        std::fill_n(data_.begin() + static_cast<std::ptrdiff_t>(off), bytes, std::byte{0});
        return {};
    }
    Status do_flush() override {
        ++flushes;
        return {};
    }
    Status do_truncate(uint64_t size, Prealloc) override {
        data_.resize(size);
        size_ = size;
        return {};
    }

private:
    std::vector<std::byte> data_;
};

// The builtin drivers plus a protocol `name` whose every open returns `node`.
Registry with_mem_protocol(const std::string& name, std::shared_ptr<Node> node, Registry reg = Registry::builtin()) {
    DriverSpec d;
    d.name = name;
    d.kind = DriverKind::Protocol;
    d.open = [node](OpenContext&, const Json&) -> Result<std::shared_ptr<Node>> { return node; };
    reg.add(std::move(d));
    return reg;
}

FormatCreateContext qcow2_context(Json options) {
    FormatCreateContext ctx;
    ctx.options = std::move(options);
    ctx.filename = "mem.qcow2";
    return ctx;
}

// The builtin drivers, with every host file the create path opens whose name ends in
// `suffix` put under an inject-error filter with `filter_opts` (its event, skip, ...): the
// core opens "file", which is this.
Registry failing_files(const Json& filter_opts, const std::string& suffix = "") {
    Registry reg = Registry::builtin();
    DriverSpec real = *reg.find("file");
    real.name = "real-file";
    DriverSpec wrapped = *reg.find("file");
    wrapped.kind = DriverKind::Filter;  // what its open returns; the core creates through it all the same
    wrapped.open = [filter_opts, suffix](OpenContext& ctx, const Json& opts) -> Result<std::shared_ptr<Node>> {
        const std::string name = opts.value("filename", "");
        if (name.size() < suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
            Json passed = opts;
            passed["driver"] = "real-file";
            Json f{{"driver", "inject-error"}, {"skip", 1000}, {"file", passed}};
            return ctx.open(f);  // a filter all the same, as the driver is registered as one
        }
        Json f = filter_opts;
        f["driver"] = "inject-error";
        f["file"] = opts;
        f["file"]["driver"] = "real-file";
        return ctx.open(f);
    };
    reg.add(std::move(real));
    reg.add(std::move(wrapped));
    return reg;
}

}  // namespace

TEST_CASE("qcow2 creates into an in-memory node with no host file, byte for byte as into a file, and the image opens") {
    const DriverSpec* qcow2 = Registry::builtin().find("qcow2");
    REQUIRE(qcow2);
    REQUIRE(qcow2->create);
    TempDir dir;
    for (const char* prealloc : {"off", "metadata", "full"}) {
        INFO(prealloc);
        const Json options{{"size", 3u << 20}, {"cluster_size", 65536u}, {"preallocation", prealloc}, {"lazy_refcounts", true}};
        auto mem = std::make_shared<GrowNode>();
        const FormatCreateContext ctx = qcow2_context(options);
        if (qcow2->check_create) REQUIRE(qcow2->check_create(ctx));
        auto st = qcow2->create(*mem, ctx);
        REQUIRE_MESSAGE(st, (st ? "" : st.error().message));
        CHECK(mem->flushes > 0);

        // The same image made by create_image into a host file has the same bytes.
        const std::string path = dir / (std::string("host-") + prealloc + ".qcow2");
        CreateRequest req;
        req.format = "qcow2";
        req.filename = path;
        req.options = options;
        REQUIRE(create_image(req));
        CHECK(read_file(path) == mem->data());

        // The image in memory opens, reads as zeroes and keeps what is written to it.
        const Registry reg = with_mem_protocol("grow-mem", mem);
        OpenFlags flags;
        flags.read_only = false;
        OpenContext open_ctx(reg, flags);
        auto img = open_ctx.open(Json{{"driver", "qcow2"}, {"file", {{"driver", "grow-mem"}}}});
        REQUIRE_MESSAGE(img, (img ? "" : img.error().message));
        CHECK((*img)->size() == 3u << 20);
        std::vector<std::byte> back(65536, std::byte{0xff});
        REQUIRE((*img)->read(1 << 20, back));
        CHECK(std::all_of(back.begin(), back.end(), [](std::byte b) { return b == std::byte{0}; }));
        const std::vector<std::byte> pattern(65536, std::byte{0x5a});
        REQUIRE((*img)->write(1 << 20, pattern));
        REQUIRE((*img)->flush());
        REQUIRE((*img)->read(1 << 20, back));
        CHECK(back == pattern);
    }
}

TEST_CASE("qcow2's external data file comes from the context: made in memory too, sized as the guest") {
    const DriverSpec* qcow2 = Registry::builtin().find("qcow2");
    auto mem = std::make_shared<GrowNode>();
    auto data = std::make_shared<GrowNode>();
    FormatCreateContext ctx =
        qcow2_context(Json{{"size", 1u << 20}, {"data_file", "d.raw"}, {"preallocation", "metadata"}});
    std::vector<std::string> asked;
    ctx.create_extra_file = [&](const std::string& name) -> Result<std::shared_ptr<Node>> {
        asked.push_back(name);
        return std::shared_ptr<Node>(data);
    };
    auto st = qcow2->create(*mem, ctx);
    REQUIRE_MESSAGE(st, (st ? "" : st.error().message));
    CHECK(asked == std::vector<std::string>{"d.raw"});
    CHECK(data->size() == 1u << 20);

    Registry reg = with_mem_protocol("grow-mem", mem);
    reg = with_mem_protocol("grow-data", data, reg);
    OpenFlags flags;
    flags.read_only = false;
    OpenContext open_ctx(reg, flags);
    auto img = open_ctx.open(Json{{"driver", "qcow2"}, {"file", {{"driver", "grow-mem"}}}, {"data-file", {{"driver", "grow-data"}}}});
    REQUIRE_MESSAGE(img, (img ? "" : img.error().message));
    const std::vector<std::byte> pattern(4096, std::byte{0x33});
    REQUIRE((*img)->write(8192, pattern));
    REQUIRE((*img)->flush());
    // Preallocated metadata maps the data file 1:1: the guest bytes land at the same offset.
    CHECK(std::equal(pattern.begin(), pattern.end(), data->data().begin() + 8192));

    // Without a way to make extra files, the create says so rather than reaching for the host.
    FormatCreateContext bare = qcow2_context(Json{{"size", 1u << 20}, {"data_file", "d.raw"}});
    auto refused = qcow2->create(*std::make_shared<GrowNode>(), bare);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == ENOTSUP);
}

TEST_CASE("a write that fails in the protocol node fails create_image with that one error and leaves no file behind") {
    TempDir dir;
    const std::string path = dir / "x.qcow2";
    const std::string data_path = dir / "x.data";
    // First every request to the image file in turn, then every one to the data file.
    for (const char* suffix : {".qcow2", ".data"}) {
        int failures = 0;
        for (uint64_t skip = 0;; ++skip) {
            INFO(suffix << " skip " << skip);
            REQUIRE(skip < 64);  // a qcow2 create makes a handful of requests
            const Registry reg = failing_files(Json{{"event", "any"}, {"skip", skip}}, suffix);
            CreateRequest req;
            req.format = "qcow2";
            req.filename = path;
            req.options = Json{{"preallocation", "metadata"}, {"data_file", data_path}};
            req.size = 1 << 20;
            auto st = create_image(req, reg);
            if (st) {
                CHECK(::access(path.c_str(), F_OK) == 0);
                CHECK(::access(data_path.c_str(), F_OK) == 0);
                ::unlink(path.c_str());
                ::unlink(data_path.c_str());
                break;
            }
            ++failures;
            CHECK(st.error().code == EIO);
            CHECK(st.error().message.find("inject-error: ") != std::string::npos);
            CHECK(st.error().message.find('\n') == std::string::npos);  // one line: one error
            CHECK(::access(path.c_str(), F_OK) != 0);       // the image it made is gone
            CHECK(::access(data_path.c_str(), F_OK) != 0);  // and so is the data file
        }
        CHECK(failures >= 2);  // the truncate and the flush at least, in each file
    }
}

TEST_CASE("a create that fails into an existing file keeps that file (emptied, as qemu-img leaves it)") {
    TempDir dir;
    const std::string path = dir / "old.img";
    write_file(path, std::vector<std::byte>(4096, std::byte{7}));
    const Registry reg = failing_files(Json{{"event", "write"}});
    CreateRequest req;
    req.format = "qcow2";
    req.filename = path;
    req.size = 1 << 20;
    auto st = create_image(req, reg);
    REQUIRE_FALSE(st);
    CHECK(::access(path.c_str(), F_OK) == 0);

    // A failing option check touches nothing at all, as in qemu-img.
    write_file(path, std::vector<std::byte>(4096, std::byte{7}));
    req.options = Json{{"cluster_size", "3"}};
    st = create_image(req);
    REQUIRE_FALSE(st);
    CHECK(st.error().message == "Cluster size must be a power of two between 512 and 2048k");
    CHECK(read_file(path) == std::vector<std::byte>(4096, std::byte{7}));
}
