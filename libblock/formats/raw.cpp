// The `raw` format: the file's bytes as they are, optionally a window (offset/size) of them.
#include <optional>

#include "blk/driver.h"

namespace blk {

namespace {

constexpr uint64_t kRawSizeAlignment = 512;

// raw is a format, never a filter: without a window its file edge is Filtered|Primary (the
// node shows the file's bytes unchanged, as qemu gives it), with one the edge is
// Data|Primary and the node maps a byte range of the file.
class RawNode final : public Node {
public:
    RawNode(Json opts, uint64_t offset, std::optional<uint64_t> window_size, bool window)
        : Node("raw", std::move(opts)), offset_(offset), fixed_size_(window_size), window_(window) {
        bind_edge("file", file_);
    }

    int host_fd() const override { return window_ || !file_ ? -1 : file_->host_fd(); }

    Status attach(std::shared_ptr<Node> file, uint64_t size) {
        read_only_ = file->read_only();
        BLK_TRY(attach_child("file", std::move(file), kRolePrimary | (window_ ? unsigned{kRoleData} : unsigned{kRoleFiltered})));
        size_ = size;
        return {};
    }

    // Without a window the file's facts are the node's (a copy to a fresh raw image skips
    // zeroes, the incomplete flag lands on the file); a window keeps the defaults.
    Status set_incomplete(bool incomplete) override {
        return window_ ? Node::set_incomplete(incomplete) : file_->set_incomplete(incomplete);
    }
    bool incomplete() const override { return !window_ && file_->incomplete(); }
    std::optional<uint64_t> cluster_size() const override {
        return window_ ? std::nullopt : file_->cluster_size();
    }
    Result<CompressedCluster> compress_cluster(std::span<const std::byte> data) const override {
        return window_ ? Node::compress_cluster(data) : file_->compress_cluster(data);
    }

protected:
    // Without a window the file's capabilities are the node's (a copy to a fresh raw image
    // skips zeroes, compressed writes reach a format below); a window passes the requests
    // on at an offset, so only those that keep their meaning there. A fixed-size window
    // answers resize requests itself (qemu's refusal).
    Capabilities own_caps() const override {
        if (!file_) return {};
        const Capabilities& f = file_->caps();
        Capabilities c;
        c.flush = f.flush;
        c.truncate = fixed_size_ ? true : f.truncate;
        c.fast_zero = f.fast_zero;
        c.discard = f.discard;
        c.block_status = f.block_status;
        if (!window_) {
            c.write_compressed = f.write_compressed;
            c.zero_init = f.zero_init;
        }
        return c;
    }

    Status do_write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c) override {
        return window_ ? Node::do_write_compressed(off, len, c) : file_->write_compressed(off, len, c);
    }

protected:
    Status do_read(uint64_t off, std::span<std::byte> buf) override { return file_->read(offset_ + off, buf); }
    Status do_write(uint64_t off, std::span<const std::byte> buf) override { return file_->write(offset_ + off, buf); }
    Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) override {
        return file_->write_zeroes(offset_ + off, bytes, flags);
    }
    Status do_discard(uint64_t off, uint64_t bytes) override { return file_->discard(offset_ + off, bytes); }
    Status do_flush() override { return file_->flush(); }
    Status do_truncate(uint64_t size, Prealloc prealloc) override {
        // A window with a size is fixed (qemu: "Cannot resize fixed-size raw disks"); a
        // format growing its file under one runs out of room, hence ENOSPC.
        if (fixed_size_) {
            return make_error(size > size_ ? ENOSPC : ENOTSUP, "Cannot resize fixed-size raw disks");
        }
        if (size > UINT64_MAX - offset_) return make_error(EINVAL, "Disk size too large for the chosen offset");
        BLK_TRY(file_->truncate(offset_ + size, prealloc));
        const uint64_t fsize = file_->size();
        size_ = fsize > offset_ ? fsize - offset_ : 0;
        return {};
    }
    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override {
        BlockStatus st;
        st.bytes = bytes;
        st.flags = kStatusRaw | kStatusOffsetValid;
        st.offset = offset_ + off;
        st.file = file_.get();
        return st;
    }

private:
    uint64_t offset_;
    std::optional<uint64_t> fixed_size_;
    bool window_;
    EdgeSlot file_;
};

Result<std::shared_ptr<Node>> open_raw(OpenContext& ctx, const Json& opts) {
    BLK_TRY_ASSIGN(auto offset, opt_size(opts, "offset"));
    BLK_TRY_ASSIGN(auto size, opt_size(opts, "size"));
    bool window = offset.has_value() || size.has_value();
    auto node = std::make_shared<RawNode>(opts, offset.value_or(0), size, window);
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
    // A raw image is its protocol file: the core creates it at the image size with the
    // protocol's preallocation, and there is nothing left to write.
    d.create_file_is_image = true;
    d.create = [](Node&, const FormatCreateContext&) { return Status{}; };
    return d;
}

}  // namespace blk
