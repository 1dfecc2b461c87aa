// The `null-co` protocol: a node of a given size that discards writes and reads zeroes.
#include <cstring>

#include "blk/driver.h"

namespace blk {

namespace {

constexpr uint64_t kNullDefaultSize = 1ull << 30;

class NullNode final : public Node {
public:
    NullNode(Json opts, uint64_t size, bool read_zeroes, bool read_only)
        : Node("null-co", std::move(opts)), read_zeroes_(read_zeroes) {
        size_ = size;
        read_only_ = read_only;  // opened for writing, it takes writes (and drops them), as qemu's does
    }
    std::string exact_filename() const override {
        for (const char* k : {"size", "read-zeroes", "latency-ns"})
            if (options_.contains(k)) return {};
        return "null-co://";
    }
    std::optional<bool> dirty() const override { return std::nullopt; }
    Result<uint64_t> allocated_file_size() const override { return uint64_t{0}; }

protected:
    // Writes vanish: nothing to flush, resize, zero or free; its block status says what
    // it reads (zeroes with read-zeroes).
    Capabilities own_caps() const override {
        Capabilities c;
        c.protocol = true;
        c.block_status = true;
        return c;
    }
    Status do_read(uint64_t, std::span<std::byte> buf) override {
        // Without read-zeroes qemu leaves the buffer as it is; zeroes are the safe choice.
        std::memset(buf.data(), 0, buf.size());
        return {};
    }
    Status do_write(uint64_t, std::span<const std::byte>) override { return {}; }
    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override {
        BlockStatus st;
        st.bytes = bytes;
        st.offset = off;
        st.file = this;
        st.flags = kStatusOffsetValid | (read_zeroes_ ? kStatusZero : 0u);
        return st;
    }

private:
    bool read_zeroes_;
};

Result<std::shared_ptr<Node>> open_null(OpenContext& ctx, const Json& opts) {
    BLK_TRY_ASSIGN(auto size, opt_size(opts, "size"));
    BLK_TRY_ASSIGN(auto rz, opt_bool(opts, "read-zeroes"));
    auto n = std::make_shared<NullNode>(opts, size.value_or(kNullDefaultSize), rz.value_or(false), ctx.flags().read_only);
    return std::shared_ptr<Node>(n);
}

}  // namespace

DriverSpec null_co_driver() {
    DriverSpec d;
    d.name = "null-co";
    d.kind = DriverKind::Protocol;
    d.description = "a node that reads zeroes and discards writes";
    d.options = {
        {"size", OptType::Size, "size of the node", {}, "1G", true},
        {"read-zeroes", OptType::Bool, "report the node as reading zeroes", {}, "off", true},
        {"latency-ns", OptType::Int, "accepted for compatibility", {}, "0", true},
        {"filename", OptType::String, "ignored (null-co://)"},
    };
    d.open = open_null;
    return d;
}

}  // namespace blk
