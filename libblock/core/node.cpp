// Node: the checked request contract, child edges and their role invariants, filters.
#include "blk/node.h"

#include <algorithm>
#include <set>

namespace blk {

namespace {

Status check_range(const Node& n, uint64_t off, uint64_t len, const char* what) {
    if (off > n.size() || len > n.size() - off) {
        return make_error(EINVAL, std::string(what) + " beyond the end of node '" + n.driver_name() +
                                      "' (offset " + std::to_string(off) + ", length " +
                                      std::to_string(len) + ", size " + std::to_string(n.size()) + ")");
    }
    return {};
}

}  // namespace

Node::Node(std::string driver, Json options) : driver_(std::move(driver)), options_(std::move(options)) {
    if (options_.is_object() && options_.contains("node-name") && options_["node-name"].is_string()) {
        node_name_ = options_["node-name"].get<std::string>();
    }
}

Node::~Node() = default;

Status Node::read(uint64_t off, std::span<std::byte> buf) {
    BLK_TRY(check_range(*this, off, buf.size(), "read"));
    if (buf.empty()) return {};
    return do_read(off, buf);
}

Status Node::write(uint64_t off, std::span<const std::byte> buf) {
    if (read_only_) return make_error(EACCES, "node '" + driver_ + "' is read-only");
    BLK_TRY(check_range(*this, off, buf.size(), "write"));
    if (buf.empty()) return {};
    return do_write(off, buf);
}

Status Node::write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) {
    if (read_only_) return make_error(EACCES, "node '" + driver_ + "' is read-only");
    BLK_TRY(check_range(*this, off, bytes, "write zeroes"));
    if (bytes == 0) return {};
    return do_write_zeroes(off, bytes, flags);
}

Status Node::discard(uint64_t off, uint64_t bytes) {
    if (read_only_) return make_error(EACCES, "node '" + driver_ + "' is read-only");
    BLK_TRY(check_range(*this, off, bytes, "discard"));
    if (bytes == 0) return {};
    return do_discard(off, bytes);
}

Status Node::flush() {
    if (read_only_) return {};
    return do_flush();
}

Status Node::truncate(uint64_t size, Prealloc prealloc) {
    if (read_only_) return make_error(EACCES, "node '" + driver_ + "' is read-only");
    return do_truncate(size, prealloc);
}

Result<CompressedCluster> Node::compress_cluster(std::span<const std::byte>) const {
    return make_error(ENOTSUP, "Compression not supported for this file format");
}

Status Node::write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c) {
    if (read_only_) return make_error(EACCES, "node '" + driver_ + "' is read-only");
    BLK_TRY(check_range(*this, off, len, "compressed write"));
    if (!can_write_compressed()) return make_error(ENOTSUP, "Compression not supported for this file format");
    auto cs = cluster_size();
    if (!cs || off % *cs != 0 || len == 0 || len > *cs || (len < *cs && off + len != size_)) {
        return make_error(EINVAL, "compressed write at " + std::to_string(off) + " (" + std::to_string(len) +
                                      " bytes) is not one whole cluster");
    }
    if (!c.compressed && c.bytes.size() != len) {
        return make_error(EINVAL, "uncompressed cluster payload of " + std::to_string(c.bytes.size()) +
                                      " bytes for " + std::to_string(len) + " guest bytes");
    }
    return do_write_compressed(off, len, c);
}

Status Node::do_write(uint64_t, std::span<const std::byte>) {
    return make_error(ENOTSUP, "driver '" + driver_ + "' does not support writing");
}

Status Node::do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) {
    if (flags & kZeroNoFallback) return make_error(ENOTSUP, "driver '" + driver_ + "' cannot write zeroes efficiently");
    constexpr uint64_t kZeroChunk = 1 << 20;
    static const std::vector<std::byte> zeroes(kZeroChunk);
    while (bytes > 0) {
        uint64_t n = std::min(bytes, kZeroChunk);
        BLK_TRY(do_write(off, std::span(zeroes).first(n)));
        off += n;
        bytes -= n;
    }
    return {};
}

Status Node::do_discard(uint64_t, uint64_t) { return {}; }

Status Node::set_incomplete(bool) {
    return make_error(ENOTSUP, "driver '" + driver_ + "' cannot flag an image as incomplete");
}

Status Node::do_flush() { return {}; }

Status Node::do_truncate(uint64_t, Prealloc) {
    return make_error(ENOTSUP, "driver '" + driver_ + "' does not support resizing");
}

Status Node::do_write_compressed(uint64_t, uint64_t, const CompressedCluster&) {
    return make_error(ENOTSUP, "Compression not supported for this file format");
}

std::optional<Prealloc> parse_prealloc(std::string_view text) {
    if (text == "off") return Prealloc::Off;
    if (text == "metadata") return Prealloc::Metadata;
    if (text == "falloc") return Prealloc::Falloc;
    if (text == "full") return Prealloc::Full;
    return std::nullopt;
}

const char* prealloc_name(Prealloc p) {
    switch (p) {
        case Prealloc::Off: return "off";
        case Prealloc::Metadata: return "metadata";
        case Prealloc::Falloc: return "falloc";
        case Prealloc::Full: return "full";
    }
    return "off";
}

Result<BlockStatus> Node::do_block_status(uint64_t, uint64_t bytes) {
    BlockStatus st;
    st.bytes = bytes;
    st.flags = kStatusData;
    return st;
}

Result<BlockStatus> Node::block_status(uint64_t off, uint64_t bytes) {
    if (off >= size_ || bytes == 0) {
        return make_error(EINVAL, "block status request outside node '" + driver_ + "' (offset " +
                                      std::to_string(off) + ", size " + std::to_string(size_) + ")");
    }
    bytes = std::min(bytes, size_ - off);
    BLK_TRY_ASSIGN(BlockStatus st, do_block_status(off, bytes));
    if (st.bytes == 0 || st.bytes > bytes) {
        return make_error(EIO, "driver '" + driver_ + "' returned a bad block status length");
    }
    if (off + st.bytes == size_) st.flags |= kStatusEof;

    if (st.flags & kStatusRaw) {
        // Pass-through: the answer is the host node's for the same bytes.
        if (!st.file) return make_error(EIO, "driver '" + driver_ + "' passed block status to no node");
        Node* host = st.file;
        if (st.offset >= host->size()) {
            BlockStatus z;
            z.bytes = st.bytes;
            z.flags = kStatusZero | kStatusAllocated | (st.flags & kStatusEof);
            return z;
        }
        uint64_t len = std::min(st.bytes, host->size() - st.offset);
        BLK_TRY_ASSIGN(BlockStatus inner, host->block_status(st.offset, len));
        if (off + inner.bytes != size_) inner.flags &= ~kStatusEof;
        else inner.flags |= kStatusEof;
        return inner;
    }

    if (st.flags & (kStatusData | kStatusZero)) {
        st.flags |= kStatusAllocated;
    } else if (supports_backing()) {
        Node* cow = cow_child(*this);
        if (!cow) {
            st.flags |= kStatusZero;
        } else if (off >= cow->size()) {
            st.flags |= kStatusZero;
        }
    }

    if ((st.flags & kStatusRecurse) && st.file && st.file != this && (st.flags & kStatusData) &&
        !(st.flags & kStatusZero) && (st.flags & kStatusOffsetValid)) {
        // Ask the host whether the bytes are a hole; errors only lose that extra fact.
        Node* host = st.file;
        if (st.offset >= host->size()) {
            st.flags |= kStatusZero;
        } else {
            uint64_t len = std::min(st.bytes, host->size() - st.offset);
            auto inner = host->block_status(st.offset, len);
            if (inner) {
                if ((inner->flags & kStatusEof) && (inner->flags & kStatusZero)) {
                    // Past the host file's end reads as zeroes.
                    st.flags |= kStatusZero;
                } else {
                    st.bytes = inner->bytes;
                    st.flags |= (inner->flags & kStatusZero);
                }
            }
        }
    }
    st.flags &= ~(kStatusRaw | kStatusRecurse);
    if (off + st.bytes != size_) st.flags &= ~kStatusEof;
    return st;
}

Result<uint64_t> Node::allocated_file_size() const {
    // qemu 7.2 reports the primary child's allocation (an external data file is not added).
    const Node* p = primary_child(*this);
    if (!p) return make_error(ENOTSUP, "allocated size unknown for '" + driver_ + "'");
    return p->allocated_file_size();
}

Json Node::full_options() const {
    Json out = Json::object();
    out["driver"] = driver_;
    for (const std::string& k : strong_keys_) {
        auto it = options_.find(k);
        if (it != options_.end()) out[k] = *it;
    }
    const bool backing_overridden = options_.contains("backing");
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
        if ((it->roles & kRoleCow) && !backing_overridden) continue;
        out[it->name] = it->node->full_options();
    }
    if (backing_overridden && !cow_child(*this)) out["backing"] = nullptr;
    return out;
}

std::string Node::exact_filename() const {
    const Node* p = primary_child(*this);
    if (!p || !p->is_protocol() || filter_driver_ || options_.contains("backing")) return {};
    for (const std::string& k : strong_keys_)
        if (options_.contains(k)) return {};
    return p->exact_filename();
}

std::string Node::filename() const {
    std::string exact = exact_filename();
    if (!exact.empty()) return exact;
    return to_json_filename(full_options());
}

Status Node::attach_child(std::string name, std::shared_ptr<Node> child, unsigned roles) {
    if (!child) return make_error(EINVAL, "no node to attach as '" + name + "'");
    if (child.get() == this) return make_error(EINVAL, "a node cannot be its own child");
    if (find_child(name)) return make_error(EINVAL, "child '" + name + "' already attached");
    if ((roles & kRoleFiltered) && (roles & (kRoleData | kRoleMetadata | kRoleCow))) {
        return make_error(EINVAL, "child '" + name + "': a filtered child cannot also be data, metadata or cow");
    }
    for (const Child& c : children_) {
        if ((roles & kRoleFiltered) && (c.roles & kRoleFiltered))
            return make_error(EINVAL, "node '" + driver_ + "' already has a filtered child");
        if ((roles & kRoleCow) && (c.roles & kRoleCow))
            return make_error(EINVAL, "node '" + driver_ + "' already has a backing (cow) child");
        if ((roles & kRolePrimary) && (c.roles & kRolePrimary))
            return make_error(EINVAL, "node '" + driver_ + "' already has a primary child");
        if ((roles & kRoleFiltered) && (c.roles & (kRoleData | kRoleMetadata | kRoleCow)))
            return make_error(EINVAL, "node '" + driver_ + "': a filtered child excludes other data children");
        if ((c.roles & kRoleFiltered) && (roles & (kRoleData | kRoleMetadata | kRoleCow)))
            return make_error(EINVAL, "node '" + driver_ + "' is a filter; it takes no data children");
    }
    if (is_filter() && (roles & kRoleFiltered) != 0 && (roles & kRolePrimary) == 0) {
        return make_error(EINVAL, "filter '" + driver_ + "': its filtered child must be primary");
    }
    children_.push_back(Child{std::move(name), std::move(child), roles});
    return {};
}

std::shared_ptr<Node> Node::detach_child(const std::string& name) {
    auto it = std::find_if(children_.begin(), children_.end(), [&](const Child& c) { return c.name == name; });
    if (it == children_.end()) return nullptr;
    auto n = it->node;
    children_.erase(it);
    return n;
}

Child* Node::find_child(const std::string& name) {
    for (Child& c : children_)
        if (c.name == name) return &c;
    return nullptr;
}

const Child* Node::find_child(const std::string& name) const {
    for (const Child& c : children_)
        if (c.name == name) return &c;
    return nullptr;
}

// --- FilterNode ---

Status FilterNode::attach_filtered(std::string name, std::shared_ptr<Node> child) {
    uint64_t sz = child ? child->size() : 0;
    bool ro = child ? child->read_only() : true;
    BLK_TRY(attach_child(std::move(name), std::move(child), kRoleFiltered | kRolePrimary));
    size_ = sz;
    read_only_ = ro;
    return {};
}

Node& FilterNode::below() const { return *filtered_child(*this); }

Status FilterNode::do_read(uint64_t off, std::span<std::byte> buf) { return below().read(off, buf); }

Status FilterNode::do_write(uint64_t off, std::span<const std::byte> buf) { return below().write(off, buf); }

Status FilterNode::do_flush() { return below().flush(); }

bool FilterNode::can_write_compressed() const {
    const Node* b = filtered_child(*this);
    return b && b->can_write_compressed();
}

Result<CompressedCluster> FilterNode::compress_cluster(std::span<const std::byte> data) const {
    const Node* b = filtered_child(*this);
    return b ? b->compress_cluster(data) : Node::compress_cluster(data);
}

bool FilterNode::has_zero_init() const {
    const Node* b = filtered_child(*this);
    return b && b->has_zero_init();
}

std::optional<uint64_t> FilterNode::cluster_size() const {
    const Node* b = filtered_child(*this);
    return b ? b->cluster_size() : std::nullopt;
}

Status FilterNode::set_incomplete(bool incomplete) {
    Node* b = filtered_child(*this);
    return b ? b->set_incomplete(incomplete) : Node::set_incomplete(incomplete);
}

bool FilterNode::incomplete() const {
    const Node* b = filtered_child(*this);
    return b && b->incomplete();
}

Status FilterNode::do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) {
    return below().write_zeroes(off, bytes, flags);
}

Status FilterNode::do_discard(uint64_t off, uint64_t bytes) { return below().discard(off, bytes); }

Status FilterNode::do_truncate(uint64_t size, Prealloc prealloc) {
    BLK_TRY(below().truncate(size, prealloc));
    size_ = below().size();
    return {};
}

Status FilterNode::do_write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c) {
    return below().write_compressed(off, len, c);
}

Result<BlockStatus> FilterNode::do_block_status(uint64_t off, uint64_t bytes) {
    BlockStatus st;
    st.bytes = bytes;
    st.flags = kStatusRaw | kStatusOffsetValid;
    st.offset = off;
    st.file = &below();
    return st;
}

// --- Accessors ---

static Node* child_with(const Node& n, unsigned role) {
    for (const Child& c : n.children())
        if (c.roles & role) return c.node.get();
    return nullptr;
}

Node* filtered_child(const Node& n) { return child_with(n, kRoleFiltered); }
Node* cow_child(const Node& n) { return child_with(n, kRoleCow); }
Node* primary_child(const Node& n) { return child_with(n, kRolePrimary); }

std::string base_filename(const Node& n) {
    const Node* p = &n;
    while (const Node* c = primary_child(*p)) p = c;
    std::string exact = p->exact_filename();
    return exact.empty() ? n.filename() : exact;
}

const Child* cow_edge(const Node& n) {
    for (const Child& c : n.children())
        if (c.roles & kRoleCow) return &c;
    return nullptr;
}

std::vector<Node*> data_children(const Node& n) {
    std::vector<Node*> out;
    for (const Child& c : n.children())
        if (c.roles & kRoleData) out.push_back(c.node.get());
    return out;
}

Node* skip_filters(Node* n) {
    while (n && n->is_filter()) {
        Node* f = filtered_child(*n);
        if (!f) break;
        n = f;
    }
    return n;
}

Node* backing_chain_next(Node* n) {
    n = skip_filters(n);
    if (!n) return nullptr;
    return skip_filters(cow_child(*n));
}

// --- Graph edits ---

std::vector<Node*> Graph::nodes() const {
    std::vector<Node*> out;
    std::set<const Node*> seen;
    std::vector<Node*> stack;
    if (root) stack.push_back(root.get());
    while (!stack.empty()) {
        Node* n = stack.back();
        stack.pop_back();
        if (!seen.insert(n).second) continue;
        out.push_back(n);
        const auto& ch = n->children();
        for (auto it = ch.rbegin(); it != ch.rend(); ++it) stack.push_back(it->node.get());
    }
    return out;
}

static void redirect_edges(Graph& g, const Node* x, const std::shared_ptr<Node>& y, const Node* except) {
    for (Node* p : g.nodes()) {
        if (p == except || p == y.get()) continue;
        for (const Child& c : p->children()) {
            if (c.node.get() != x) continue;
            Child* edge = p->find_child(c.name);
            edge->node = y;
        }
    }
    if (g.root.get() == x) g.root = y;
}

Status insert_filter_above(Graph& g, const std::shared_ptr<Node>& x, const std::shared_ptr<Node>& filter) {
    if (!filter->is_filter()) return make_error(EINVAL, "'" + filter->driver_name() + "' is not a filter");
    if (!filter->children().empty()) return make_error(EINVAL, "the filter to insert already has children");
    // Collect parents before the filter takes x, so the filter's own edge stays.
    std::vector<Node*> parents = g.nodes();
    BLK_TRY(filter->attach_child("file", x, kRoleFiltered | kRolePrimary));
    for (Node* p : parents) {
        for (const Child& c : p->children()) {
            if (c.node != x) continue;
            p->find_child(c.name)->node = filter;
        }
    }
    if (g.root == x) g.root = filter;
    return {};
}

Status replace_node(Graph& g, const std::shared_ptr<Node>& x, const std::shared_ptr<Node>& y) {
    if (x == y) return {};
    redirect_edges(g, x.get(), y, y.get());
    return {};
}

Status remove_filter(Graph& g, const std::shared_ptr<Node>& f) {
    if (!f->is_filter()) return make_error(EINVAL, "'" + f->driver_name() + "' is not a filter");
    std::shared_ptr<Node> below;
    for (const Child& c : f->children())
        if (c.roles & kRoleFiltered) below = c.node;
    if (!below) return make_error(EINVAL, "filter '" + f->driver_name() + "' has no filtered child");
    redirect_edges(g, f.get(), below, f.get());
    return {};
}

}  // namespace blk
