// Test nodes over memory, to build graphs without files.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "blk/driver.h"

namespace blktest {

using namespace blk;

// A node over memory. Ranges below `allocated_` are data in this layer; the rest is
// unallocated (or zero where `zero_from_` says so).
class MemNode : public Node {
public:
    explicit MemNode(uint64_t size, bool backing = false) : Node("mem", Json::object()), backing_(backing), data_(size) {
        size_ = size;
        read_only_ = false;
        refresh_caps();
    }
    std::vector<std::byte>& data() { return data_; }
    void make_read_only() {
        read_only_ = true;
        refresh_caps();
    }
    uint64_t allocated_ = 0;
    uint64_t zero_from_ = UINT64_MAX;

protected:
    Capabilities own_caps() const override {
        Capabilities c;
        c.backing = backing_;
        c.block_status = true;
        return c;
    }
    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        std::memcpy(buf.data(), data_.data() + off, buf.size());
        return {};
    }
    Status do_write(uint64_t off, std::span<const std::byte> buf) override {
        std::memcpy(data_.data() + off, buf.data(), buf.size());
        return {};
    }
    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override {
        BlockStatus st;
        if (off < allocated_) {
            st.bytes = std::min(bytes, allocated_ - off);
            st.flags = kStatusData;
        } else if (off >= zero_from_) {
            st.bytes = bytes;
            st.flags = kStatusZero;
        } else {
            st.bytes = std::min(bytes, zero_from_ - off);
        }
        return st;
    }

private:
    bool backing_;
    std::vector<std::byte> data_;
};

class PassFilter : public FilterNode {
public:
    PassFilter() : FilterNode("pass", Json::object()) {}
    Status take(std::shared_ptr<Node> c) { return attach_filtered("file", std::move(c)); }
};

}  // namespace blktest
