// The `raw` format: the file's bytes as they are, optionally a window (offset/size) of them.
#include "blk/driver.h"

namespace blk {

namespace {

constexpr uint64_t kRawSizeAlignment = 512;

// Without a window raw is a pure filter over its file; with one it maps a byte range.
class RawNode final : public FilterNode {
public:
    RawNode(Json opts, uint64_t offset, bool window) : FilterNode("raw", std::move(opts)), offset_(offset), window_(window) {}

    bool is_filter() const override { return !window_; }
    int host_fd() const override {
        const Node* f = primary_child(*this);
        return window_ || !f ? -1 : f->host_fd();
    }

    Status attach(std::shared_ptr<Node> file, uint64_t size) {
        if (!window_) return attach_filtered("file", std::move(file));
        read_only_ = file->read_only();
        BLK_TRY(attach_child("file", std::move(file), kRoleData | kRolePrimary));
        size_ = size;
        return {};
    }

protected:
    Node& host() const { return *primary_child(*this); }

    Status do_read(uint64_t off, std::span<std::byte> buf) override { return host().read(offset_ + off, buf); }
    Status do_write(uint64_t off, std::span<const std::byte> buf) override { return host().write(offset_ + off, buf); }
    Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) override {
        return host().write_zeroes(offset_ + off, bytes, flags);
    }
    Status do_discard(uint64_t off, uint64_t bytes) override { return host().discard(offset_ + off, bytes); }
    Status do_flush() override { return host().flush(); }
    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override {
        BlockStatus st;
        st.bytes = bytes;
        st.flags = kStatusRaw | kStatusOffsetValid;
        st.offset = offset_ + off;
        st.file = &host();
        return st;
    }

private:
    uint64_t offset_;
    bool window_;
};

Result<std::shared_ptr<Node>> open_raw(OpenContext& ctx, const Json& opts) {
    BLK_TRY_ASSIGN(auto offset, opt_size(opts, "offset"));
    BLK_TRY_ASSIGN(auto size, opt_size(opts, "size"));
    bool window = offset.has_value() || size.has_value();
    auto node = std::make_shared<RawNode>(opts, offset.value_or(0), window);
    // Open the file first; attach with the right roles once the window is checked.
    BLK_TRY_ASSIGN(std::shared_ptr<Node> file, ctx.open_child_unattached(opts, "file", true));
    uint64_t fsize = file->size();
    uint64_t off = offset.value_or(0);
    if (off > fsize) {
        return make_error(EINVAL, "Offset (" + std::to_string(off) + ") cannot be greater than size of the containing file (" +
                                      std::to_string(fsize) + ")");
    }
    uint64_t sz = size.value_or(fsize - off);
    if (size && (*size > fsize - off)) {
        return make_error(EINVAL, "The sum of offset (" + std::to_string(off) + ") and size (" + std::to_string(*size) +
                                      ") has to be smaller or equal to the  actual size of the containing file (" +
                                      std::to_string(fsize) + ")");
    }
    if (size && (*size % kRawSizeAlignment) != 0) {
        return make_error(EINVAL, "Specified size is not multiple of " + std::to_string(kRawSizeAlignment));
    }
    BLK_TRY(node->attach(std::move(file), sz));
    return std::shared_ptr<Node>(node);
}

}  // namespace

DriverSpec raw_driver() {
    DriverSpec d;
    d.name = "raw";
    d.kind = DriverKind::Format;
    d.description = "the image file's bytes as they are";
    d.options = {
        {"file", OptType::Child, "the file holding the bytes"},
        {"offset", OptType::Size, "offset of the window into the file", {}, "0", true},
        {"size", OptType::Size, "size of the window (a multiple of 512)", {}, {}, true},
    };
    d.probe = [](std::span<const std::byte>, const std::string&) { return 1; };
    d.open = open_raw;
    d.create_options = {
        {"size", OptType::Size, "Virtual disk size"},
    };
    // A raw image is its host file: the file protocol creates it (size, preallocation, ...).
    d.create = [](const CreateRequest& req, const Registry& reg) {
        const DriverSpec* file = reg.find("file");
        return file->create(req, reg);
    };
    return d;
}

}  // namespace blk
