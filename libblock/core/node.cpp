// Node: the checked request contract, child edges and their role invariants, filters.
#include "../jobs/zero_scan.h"
#include "blk/node.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

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
    if (detect_zeroes_ != DetectZeroes::Off && copy_detail::is_zero(buf))
        return do_write_zeroes(off, buf.size(), detect_zeroes_ == DetectZeroes::Unmap ? unsigned{kZeroMayUnmap} : 0u);
    return do_write(off, buf);
}

Status Node::write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) {
    if (read_only_) return make_error(EACCES, "node '" + driver_ + "' is read-only");
    BLK_TRY(check_range(*this, off, bytes, "write zeroes"));
    if (bytes == 0) return {};
    if (!zero_unmap_) flags &= ~kZeroMayUnmap;
    if ((flags & kZeroNoFallback) && !caps_.fast_zero)
        return make_error(ENOTSUP, "driver '" + driver_ + "' cannot write zeroes efficiently");
    return do_write_zeroes(off, bytes, flags);
}

Status Node::discard(uint64_t off, uint64_t bytes) {
    if (read_only_) return make_error(EACCES, "node '" + driver_ + "' is read-only");
    BLK_TRY(check_range(*this, off, bytes, "discard"));
    // A node without the capability (or set to discard=ignore) takes the advisory request
    // and does nothing, before it reaches the driver.
    if (bytes == 0 || !caps_.discard) return {};
    return do_discard(off, bytes);
}

Status Node::flush() {
    if (read_only_ || !caps_.flush) return {};
    return do_flush();
}

Status Node::truncate(uint64_t size, Prealloc prealloc) {
    if (read_only_) return make_error(EACCES, "node '" + driver_ + "' is read-only");
    if (!caps_.truncate) return make_error(ENOTSUP, "driver '" + driver_ + "' does not support resizing");
    return do_truncate(size, prealloc);
}

Result<CompressedCluster> Node::compress_cluster(std::span<const std::byte>) const {
    return make_error(ENOTSUP, "Compression not supported for this file format");
}

Status Node::write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c) {
    if (read_only_) return make_error(EACCES, "node '" + driver_ + "' is read-only");
    BLK_TRY(check_range(*this, off, len, "compressed write"));
    if (!caps_.write_compressed) return make_error(ENOTSUP, "Compression not supported for this file format");
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

Status Node::make_empty() {
    if (read_only_) return make_error(EACCES, "node is read-only");
    if (!caps_.make_empty) return make_error(ENOTSUP, "Image format does not support emptying");
    return do_make_empty();
}

Status Node::do_make_empty() { return make_error(ENOTSUP, "Image format does not support emptying"); }

Status Node::do_reopen(bool writable) {
    read_only_ = !writable;
    return {};
}

void Node::refresh_caps() {
    Capabilities c = own_caps();
    c.write = !read_only_;
    if (!c.write) c.flush = c.truncate = c.fast_zero = c.discard = c.make_empty = c.write_compressed = false;
    if (!discard_unmap_) c.discard = false;
    caps_ = c;
}

std::vector<std::string> Capabilities::names() const {
    std::vector<std::string> out;
    const std::pair<bool, const char*> all[] = {
        {write, "write"},           {flush, "flush"},         {truncate, "truncate"},
        {fast_zero, "fast-zero"},   {discard, "discard"},     {make_empty, "make-empty"},
        {write_compressed, "write-compressed"},               {zero_init, "zero-init"},
        {backing, "backing"},       {protocol, "protocol"},   {block_status, "block-status"},
    };
    for (const auto& [on, name] : all)
        if (on) out.emplace_back(name);
    return out;
}

Status Node::reopen(bool writable) {
    if (writable == !read_only_) return {};
    // Whatever happens, the capabilities follow the mode the node ends in (its children
    // refreshed theirs in their own reopen, before).
    struct Refresh {
        Node* n;
        ~Refresh() { n->refresh_caps(); }
    } refresh{this};
    // The edges that carry this node's bytes; the backing edge only reads.
    std::vector<Node*> below;
    for (const Child& c : children_)
        if (c.node && (c.roles & (kRoleData | kRoleMetadata | kRoleFiltered))) below.push_back(c.node.get());
    std::vector<Node*> changed;
    auto undo = [&] {
        // Best effort: a child that cannot go back keeps the mode it reached.
        for (Node* c : changed) (void)c->reopen(!writable);
    };
    if (writable) {
        // Children first: a writable node needs writable children.
        for (Node* c : below) {
            const bool was_ro = c->read_only();
            Status st = c->reopen(true);
            if (!st) {
                undo();
                return st;
            }
            if (was_ro) changed.push_back(c);
        }
        Status st = do_reopen(true);
        if (!st) {
            undo();
            return st;
        }
        return {};
    }
    // Read-only: the node writes its state back before its children stop taking writes.
    BLK_TRY(do_reopen(false));
    for (Node* c : below) BLK_TRY(c->reopen(false));
    return {};
}

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
    } else if (caps_.backing) {
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
    if (!p || !p->caps().protocol || filter_driver_ || options_.contains("backing")) return {};
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
    Node* raw = child.get();
    children_.push_back(Child{name, std::move(child), roles});
    update_slots(name, raw);
    return {};
}

std::shared_ptr<Node> Node::detach_child(const std::string& name) {
    auto it = std::find_if(children_.begin(), children_.end(), [&](const Child& c) { return c.name == name; });
    if (it == children_.end()) return nullptr;
    auto n = it->node;
    children_.erase(it);
    update_slots(name, nullptr);
    return n;
}

void Node::set_edge(size_t index, std::shared_ptr<Node> node) {
    Child& c = children_[index];
    c.node = std::move(node);
    update_slots(c.name, c.node.get());
}

void Node::update_slots(const std::string& name, Node* node) {
    for (auto& [n, slot] : slots_)
        if (n == name) slot->node_.store(node, std::memory_order_release);
}

void Node::bind_edge(std::string name, EdgeSlot& slot) {
    const Child* c = find_child(name);
    slot.node_.store(c ? c->node.get() : nullptr, std::memory_order_release);
    slots_.emplace_back(std::move(name), &slot);
}

Status Node::set_driver_facts(std::vector<std::string> strong_keys, bool filter_driver) {
    if (filter_driver != filter_driver_) {
        return make_error(EINVAL, "driver '" + driver_ + "' is " + (filter_driver ? "" : "not ") +
                                      "registered as a filter but its node " + (filter_driver_ ? "is" : "is not") +
                                      " one");
    }
    strong_keys_ = std::move(strong_keys);
    return {};
}

Status Node::check_roles() const {
    int filtered = 0, primary = 0, cow = 0;
    for (const Child& c : children_) {
        if (!c.node) return make_error(EINVAL, "node '" + driver_ + "': edge '" + c.name + "' points to no node");
        if (c.roles & kRoleFiltered) ++filtered;
        if (c.roles & kRolePrimary) ++primary;
        if (c.roles & kRoleCow) ++cow;
        if ((c.roles & kRoleFiltered) && (c.roles & (kRoleData | kRoleMetadata | kRoleCow)))
            return make_error(EINVAL, "node '" + driver_ + "': filtered child '" + c.name + "' cannot also be data, metadata or cow");
    }
    if (filtered > 1) return make_error(EINVAL, "node '" + driver_ + "' has " + std::to_string(filtered) + " filtered children");
    if (primary > 1) return make_error(EINVAL, "node '" + driver_ + "' has " + std::to_string(primary) + " primary children");
    if (cow > 1) return make_error(EINVAL, "node '" + driver_ + "' has " + std::to_string(cow) + " backing (cow) children");
    if (filtered == 1) {
        for (const Child& c : children_) {
            if ((c.roles & kRoleFiltered) && !(c.roles & kRolePrimary))
                return make_error(EINVAL, "node '" + driver_ + "': filtered child '" + c.name + "' must be primary");
            if (!(c.roles & kRoleFiltered) && (c.roles & (kRoleData | kRoleMetadata | kRoleCow)))
                return make_error(EINVAL, "node '" + driver_ + "' has a filtered child; it takes no data children");
        }
    }
    if (filter_driver_ && filtered != 1) {
        return make_error(EINVAL, "filter '" + driver_ + "' must have exactly one filtered child (it has " +
                                      std::to_string(filtered) + ")");
    }
    return {};
}

const Child* Node::find_child(const std::string& name) const {
    for (const Child& c : children_)
        if (c.name == name) return &c;
    return nullptr;
}

// --- FilterNode ---

FilterNode::FilterNode(std::string driver, Json options, std::string edge_name)
    : Node(std::move(driver), std::move(options)), edge_name_(std::move(edge_name)) {
    filter_driver_ = true;
    bind_edge(edge_name_, below_);
}

Status FilterNode::attach_filtered(std::shared_ptr<Node> child) {
    BLK_TRY(attach_child(edge_name_, std::move(child), kRoleFiltered | kRolePrimary));
    children_changed();
    refresh_caps();
    return {};
}

Status FilterNode::attach_filtered(std::string name, std::shared_ptr<Node> child) {
    if (name != edge_name_) {
        if (!children().empty()) return make_error(EINVAL, "filter '" + driver_ + "' already has its child");
        edge_name_ = std::move(name);
        slots_.clear();
        bind_edge(edge_name_, below_);
    }
    return attach_filtered(std::move(child));
}

void FilterNode::children_changed() {
    if (Node* b = below_.get()) {
        size_ = b->size();
        read_only_ = b->read_only();
    }
}

Status FilterNode::do_read(uint64_t off, std::span<std::byte> buf) { return below().read(off, buf); }

Status FilterNode::do_write(uint64_t off, std::span<const std::byte> buf) { return below().write(off, buf); }

Status FilterNode::do_flush() { return below().flush(); }

Capabilities FilterNode::own_caps() const {
    const Node* b = filtered_child(*this);
    if (!b) return {};
    Capabilities c = b->caps();
    c.protocol = false;
    c.backing = false;
    return c;
}

Result<CompressedCluster> FilterNode::compress_cluster(std::span<const std::byte> data) const {
    const Node* b = filtered_child(*this);
    return b ? b->compress_cluster(data) : Node::compress_cluster(data);
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

Status FilterNode::do_reopen(bool writable) {
    children_changed();
    // Going read-only the filter stops taking writes before its child does (its child is
    // still writable here, so taking the child's mode would leave the filter writable);
    // going writable the child already is.
    read_only_ = !writable;
    return {};
}

Status FilterNode::do_truncate(uint64_t size, Prealloc prealloc) {
    BLK_TRY(below().truncate(size, prealloc));
    size_ = below().size();
    return {};
}

Status FilterNode::do_make_empty() { return below().make_empty(); }

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

namespace {

// Every node reachable from `root`, each once, every node after all of its children: the
// order capabilities are recomputed in (a filter takes its child's) and node names are
// checked in (qemu names a node's children before the node).
std::vector<Node*> children_first(Node* root) {
    std::vector<Node*> out;
    std::set<const Node*> seen;
    std::vector<std::pair<Node*, size_t>> stack;
    if (!root) return out;
    stack.push_back({root, 0});
    seen.insert(root);
    while (!stack.empty()) {
        auto& [n, i] = stack.back();
        if (i == n->children().size()) {
            out.push_back(n);
            stack.pop_back();
            continue;
        }
        Node* c = n->children()[i++].node.get();
        if (c && seen.insert(c).second) stack.push_back({c, 0});
    }
    return out;
}

}  // namespace

Node* Graph::find(std::string_view node_name) const {
    if (node_name.empty()) return nullptr;
    for (Node* n : nodes())
        if (n->node_name() == node_name) return n;
    return nullptr;
}

Status Graph::check_node_names() const {
    std::set<std::string_view> seen;
    for (Node* n : children_first(root.get())) {
        if (n->node_name().empty()) continue;
        if (!seen.insert(n->node_name()).second)
            return make_error(EINVAL, "Duplicate nodes with node-name='" + n->node_name() + "'");
    }
    return {};
}

Status check_node_name(std::string_view name) {
    auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    bool ok = !name.empty() && letter(name[0]);
    for (char c : name)
        ok = ok && (letter(c) || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_');
    if (!ok) return make_error(EINVAL, "Invalid node-name: '" + std::string(name) + "'");
    if (name.size() > 31) return make_error(EINVAL, "Node name too long");
    return {};
}

bool Graph::contains(const Node* n) const {
    if (!n) return false;
    for (const Node* m : nodes())
        if (m == n) return true;
    return false;
}

// What an edit changed, to put back if its checks fail.
struct Graph::Undo {
    struct Edge {
        Node* parent;
        size_t index;
        std::shared_ptr<Node> old;
    };
    std::shared_ptr<Node> root;
    std::vector<Edge> edges;                                   // redirected, in order
    std::vector<std::pair<Node*, std::string>> attached;       // new edges
    std::vector<std::tuple<Node*, Child, size_t>> detached;    // removed edges and their index
};

namespace {

// True if some node reachable from `from` has an edge back to a node on its own path.
bool has_cycle(Node* from) {
    enum Mark : uint8_t { Open, Done };
    std::map<const Node*, Mark> mark;
    std::vector<std::pair<Node*, size_t>> stack;
    if (!from) return false;
    stack.push_back({from, 0});
    mark[from] = Open;
    while (!stack.empty()) {
        auto& [n, i] = stack.back();
        if (i == n->children().size()) {
            mark[n] = Done;
            stack.pop_back();
            continue;
        }
        Node* c = n->children()[i++].node.get();
        if (!c) continue;
        auto it = mark.find(c);
        if (it == mark.end()) {
            mark[c] = Open;
            stack.push_back({c, 0});
        } else if (it->second == Open) {
            return true;
        }
    }
    return false;
}

std::string label(const Node& n) {
    return n.node_name().empty() ? "'" + n.driver_name() + "'" : "'" + n.node_name() + "' (" + n.driver_name() + ")";
}

// Edges a writable node writes through.
constexpr unsigned kWriteRoles = kRoleData | kRoleMetadata | kRoleFiltered | kRolePrimary;

}  // namespace

// The claims a graph's edges make (QEMU's permissions, reduced to what an offline tool
// needs): a writable parent claims write on its data, metadata and filtered children, a
// backing edge claims reads only. One writer, many readers: two different parents writing
// the same node would each cache its metadata and overwrite the other's, so an edit that
// makes a second writer is refused. (One parent may reach a node by two edges, as a qcow2
// whose data file is its own file: it coordinates its own writes.)
Status Graph::check_claims(const char* what) const {
    std::vector<std::pair<Node*, Node*>> writers;  // (child, the parent writing it)
    for (Node* p : nodes()) {
        if (p->read_only()) continue;
        for (const Child& c : p->children()) {
            if (!(c.roles & kWriteRoles)) continue;
            for (const auto& [child, other] : writers) {
                if (child == c.node.get() && other != p) {
                    return make_error(EBUSY, std::string(what) + ": node " + label(*c.node) + " would have two writers, " +
                                                 label(*other) + " and " + label(*p));
                }
            }
            writers.emplace_back(c.node.get(), p);
        }
    }
    return {};
}

Status Graph::finish_edit(Undo& undo, const std::vector<Node*>& changed, const char* what) {
    // Children first, so a filter over a filter takes the refreshed facts.
    std::vector<Node*> order = nodes();
    auto refresh = [&] {
        for (auto it = order.rbegin(); it != order.rend(); ++it)
            if (std::find(changed.begin(), changed.end(), *it) != changed.end()) (*it)->children_changed();
        for (Node* n : changed)
            if (std::find(order.begin(), order.end(), n) == order.end()) n->children_changed();
        // Capabilities change with the children (a filter's are its child's) and with the
        // mode children_changed() took: every node of the graph, children first, and the
        // changed nodes the edit took out of it.
        std::vector<Node*> up = children_first(root.get());
        for (Node* n : up) n->refresh_caps();
        for (Node* n : changed)
            if (std::find(up.begin(), up.end(), n) == up.end()) n->refresh_caps();
    };
    Status st;
    if (has_cycle(root.get()) || std::any_of(changed.begin(), changed.end(), [](Node* n) { return has_cycle(n); })) {
        st = make_error(EINVAL, std::string(what) + ": the edit would make a cycle");
    }
    if (st) {
        refresh();
        for (Node* n : changed) {
            if (Status r = n->check_roles(); !r) {
                st = std::move(r).error().with_context(what);
                break;
            }
        }
    }
    if (st) {
        for (Node* p : nodes()) {
            if (p->read_only()) continue;
            for (const Child& c : p->children()) {
                if ((c.roles & kWriteRoles) && c.node->read_only()) {
                    st = make_error(EACCES, std::string(what) + ": node " + label(*p) + " is writable but its child '" +
                                                c.name + "' (" + c.node->driver_name() + ") is read-only");
                    break;
                }
            }
            if (!st) break;
        }
    }
    if (st) st = check_claims(what);
    if (st) {
        if (Status names = check_node_names(); !names) st = std::move(names).error().with_context(what);
    }
    if (st) return st;
    // Undo in reverse order, then let the nodes take their old facts back.
    for (auto it = undo.detached.rbegin(); it != undo.detached.rend(); ++it) {
        auto& [p, c, idx] = *it;
        p->children_.insert(p->children_.begin() + static_cast<std::ptrdiff_t>(idx), c);
        p->update_slots(c.name, c.node.get());
    }
    for (auto it = undo.attached.rbegin(); it != undo.attached.rend(); ++it) it->first->detach_child(it->second);
    for (auto it = undo.edges.rbegin(); it != undo.edges.rend(); ++it) it->parent->set_edge(it->index, it->old);
    root = undo.root;
    order = nodes();
    refresh();
    return st;
}

Status Graph::insert_filter_above(std::shared_ptr<Node> x, std::shared_ptr<Node> filter) {
    const char* what = "inserting a filter";
    if (!x || !filter) return make_error(EINVAL, std::string(what) + ": no node given");
    if (!filter->is_filter()) return make_error(EINVAL, std::string(what) + ": " + label(*filter) + " is not a filter");
    if (!filter->children().empty()) return make_error(EINVAL, std::string(what) + ": " + label(*filter) + " already has a child");
    std::vector<Node*> all = nodes();
    if (std::find(all.begin(), all.end(), x.get()) == all.end())
        return make_error(ENOENT, std::string(what) + ": " + label(*x) + " is not in the graph");
    if (std::find(all.begin(), all.end(), filter.get()) != all.end())
        return make_error(EINVAL, std::string(what) + ": " + label(*filter) + " is already in the graph");
    auto& f = static_cast<FilterNode&>(*filter);
    Undo undo{root, {}, {}, {}};
    std::vector<Node*> changed{filter.get()};
    for (Node* p : all) {
        for (size_t i = 0; i < p->children().size(); ++i) {
            if (p->children()[i].node != x) continue;
            undo.edges.push_back({p, i, x});
            p->set_edge(i, filter);
            changed.push_back(p);
        }
    }
    if (root == x) root = filter;
    if (Status a = f.attach_child(f.filtered_edge_name(), x, kRoleFiltered | kRolePrimary); !a) {
        Undo none{undo.root, std::move(undo.edges), {}, {}};
        for (auto it = none.edges.rbegin(); it != none.edges.rend(); ++it) it->parent->set_edge(it->index, it->old);
        root = none.root;
        return std::move(a).error().with_context(what);
    }
    undo.attached.push_back({filter.get(), f.filtered_edge_name()});
    return finish_edit(undo, changed, what);
}

Status Graph::remove_filter(std::shared_ptr<Node> f) {
    const char* what = "removing a filter";
    if (!f) return make_error(EINVAL, std::string(what) + ": no node given");
    if (!f->is_filter()) return make_error(EINVAL, std::string(what) + ": " + label(*f) + " is not a filter");
    std::vector<Node*> all = nodes();
    if (std::find(all.begin(), all.end(), f.get()) == all.end())
        return make_error(ENOENT, std::string(what) + ": " + label(*f) + " is not in the graph");
    std::shared_ptr<Node> below;
    for (const Child& c : f->children())
        if (c.roles & kRoleFiltered) below = c.node;
    if (!below) return make_error(EINVAL, std::string(what) + ": " + label(*f) + " has no filtered child");
    Undo undo{root, {}, {}, {}};
    std::vector<Node*> changed;
    for (Node* p : all) {
        if (p == f.get()) continue;
        for (size_t i = 0; i < p->children().size(); ++i) {
            if (p->children()[i].node != f) continue;
            undo.edges.push_back({p, i, f});
            p->set_edge(i, below);
            changed.push_back(p);
        }
    }
    if (root == f) root = below;
    return finish_edit(undo, changed, what);
}

Status Graph::replace(std::shared_ptr<Node> x, std::shared_ptr<Node> y) {
    const char* what = "replacing a node";
    if (!x || !y) return make_error(EINVAL, std::string(what) + ": no node given");
    if (x == y) return {};
    std::vector<Node*> all = nodes();
    if (std::find(all.begin(), all.end(), x.get()) == all.end())
        return make_error(ENOENT, std::string(what) + ": " + label(*x) + " is not in the graph");
    Undo undo{root, {}, {}, {}};
    std::vector<Node*> changed;
    for (Node* p : all) {
        if (p == y.get()) continue;
        for (size_t i = 0; i < p->children().size(); ++i) {
            if (p->children()[i].node != x) continue;
            undo.edges.push_back({p, i, x});
            p->set_edge(i, y);
            changed.push_back(p);
        }
    }
    if (root == x) root = y;
    changed.push_back(y.get());
    return finish_edit(undo, changed, what);
}

Status Graph::attach(const std::shared_ptr<Node>& parent, const std::string& name, const std::shared_ptr<Node>& child,
                     unsigned roles) {
    const char* what = "attaching a child";
    if (!parent || !child) return make_error(EINVAL, std::string(what) + ": no node given");
    if (!contains(parent.get())) return make_error(ENOENT, std::string(what) + ": " + label(*parent) + " is not in the graph");
    BLK_TRY(parent->attach_child(name, child, roles).context(what));
    Undo undo{root, {}, {{parent.get(), name}}, {}};
    return finish_edit(undo, {parent.get()}, what);
}

Status Graph::detach(const std::shared_ptr<Node>& parent, const std::string& name) {
    const char* what = "detaching a child";
    if (!parent) return make_error(EINVAL, std::string(what) + ": no node given");
    if (!contains(parent.get())) return make_error(ENOENT, std::string(what) + ": " + label(*parent) + " is not in the graph");
    const auto& ch = parent->children();
    auto it = std::find_if(ch.begin(), ch.end(), [&](const Child& c) { return c.name == name; });
    if (it == ch.end()) return make_error(ENOENT, std::string(what) + ": " + label(*parent) + " has no child '" + name + "'");
    if (it->roles & (kRoleFiltered | kRolePrimary)) {
        return make_error(EINVAL, std::string(what) + ": '" + name + "' is the " +
                                      ((it->roles & kRoleFiltered) ? "filtered" : "primary") + " child of " + label(*parent));
    }
    Undo undo{root, {}, {}, {}};
    undo.detached.emplace_back(parent.get(), *it, static_cast<size_t>(it - ch.begin()));
    parent->detach_child(name);
    return finish_edit(undo, {parent.get()}, what);
}

Status Graph::reopen_read_write(Node& n) {
    if (!contains(&n)) return make_error(EINVAL, "cannot reopen node '" + label(n) + "': it is not in the graph");
    Status st = n.reopen(true);
    // The nodes above n keep their mode, but what they take from n may have changed.
    for (Node* m : children_first(root.get())) m->refresh_caps();
    return st;
}

Status Graph::reopen_read_only(Node& n) {
    if (!contains(&n)) return make_error(EINVAL, "cannot reopen node '" + label(n) + "': it is not in the graph");
    Status st = n.reopen(false);
    for (Node* m : children_first(root.get())) m->refresh_caps();
    return st;
}

Status insert_filter_above(Graph& g, const std::shared_ptr<Node>& x, const std::shared_ptr<Node>& filter) {
    return g.insert_filter_above(x, filter);
}

Status replace_node(Graph& g, const std::shared_ptr<Node>& x, const std::shared_ptr<Node>& y) {
    return g.replace(x, y);
}

Status remove_filter(Graph& g, const std::shared_ptr<Node>& f) { return g.remove_filter(f); }

}  // namespace blk
