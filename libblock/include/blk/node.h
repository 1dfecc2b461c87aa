// Node (one driver instance), Child (a named edge with role bits) and the graph accessors.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "blk/facts.h"
#include "blk/options.h"
#include "blk/result.h"

namespace blk {

class Node;

// What a child is for. Stored on the edge, checked when the edge is made.
enum Role : unsigned {
    kRoleData = 1u << 0,      // guest data lives here
    kRoleMetadata = 1u << 1,  // format metadata lives here
    kRoleFiltered = 1u << 2,  // the node is a filter over this child
    kRoleCow = 1u << 3,       // backing: unallocated ranges read from here
    kRolePrimary = 1u << 4,   // the node's main child (the one that names it)
};

// Block status flags (one layer).
enum StatusFlag : unsigned {
    kStatusData = 1u << 0,         // reads return data from this layer or below
    kStatusZero = 1u << 1,         // reads return zeroes
    kStatusOffsetValid = 1u << 2,  // `offset` in `file` holds the bytes
    kStatusAllocated = 1u << 3,    // this layer determines the content (not the backing)
    kStatusCompressed = 1u << 4,   // stored compressed
    kStatusRaw = 1u << 5,          // driver hook only: "ask `file` at `offset`" (pass-through)
    kStatusRecurse = 1u << 6,      // driver hook only: ask `file` whether the data reads as zero
    kStatusEof = 1u << 7,          // the run reaches the end of the node
};

struct BlockStatus {
    uint64_t bytes = 0;     // length of the run starting at the queried offset (> 0)
    unsigned flags = 0;     // StatusFlag bits
    uint64_t offset = 0;    // host offset in `file`, if kStatusOffsetValid
    Node* file = nullptr;   // host node, if kStatusOffsetValid
};

struct Child {
    std::string name;  // "file", "backing", "data-file", "children.0", ...
    std::shared_ptr<Node> node;
    unsigned roles = 0;
};

// A driver's handle on one of its edges, by name: the node the edge points to now. The
// node that owns the slot keeps it current whenever the edge is made, redirected by a
// graph edit or removed, so a request through it costs one pointer load and an edit is
// never bypassed. Edits are not concurrent with I/O on the graph they change.
class EdgeSlot {
public:
    Node* get() const { return node_.load(std::memory_order_acquire); }
    Node* operator->() const { return get(); }
    Node& operator*() const { return *get(); }
    explicit operator bool() const { return get() != nullptr; }

private:
    friend class Node;
    std::atomic<Node*> node_{nullptr};
};

// Flags for write_zeroes.
enum ZeroFlag : unsigned {
    kZeroMayUnmap = 1u << 0,    // the range may be deallocated (a hole, a zero cluster without host space)
    kZeroNoFallback = 1u << 1,  // fail with ENOTSUP rather than write buffers of zeroes
};

// Preallocation for create and truncate (qemu's PreallocMode).
enum class Prealloc { Off, Metadata, Falloc, Full };
// "off", "metadata", "falloc", "full"; nullopt for anything else.
std::optional<Prealloc> parse_prealloc(std::string_view text);
const char* prealloc_name(Prealloc p);

// One cluster prepared for write_compressed(): the payload to store and whether it is
// compressed (a cluster that does not shrink is stored as plain data, as qemu does).
struct CompressedCluster {
    std::vector<std::byte> bytes;
    bool compressed = false;
};

// Limits a driver announces; requests are checked against them once, in the core.
struct NodeLimits {
    uint32_t request_alignment = 1;
    uint64_t max_transfer = 0;  // 0: unlimited
};

// What a node can do: one set of facts, fixed when the node is opened and recomputed by the
// core after every graph edit and every reopen (nbdkit's can_* set; qemu's per-driver
// callbacks and supports_backing/has_zero_init reduced to facts). Callers ask caps() before
// they ask for an operation instead of trying it and catching ENOTSUP, and the core refuses
// a request for an operation the node lacks (ENOTSUP) before it reaches the driver.
//
// Design:
// - A driver states its own capabilities in own_caps(); the core adds the node's mode (write
//   is !read_only(), and a node that does not take writes has none of the write-side
//   capabilities: flush, truncate, fast_zero, discard, make_empty, write_compressed).
// - A filter has its filtered child's capabilities (FilterNode::own_caps), except protocol
//   and backing, which name what a node is, not what it passes on. So a filter inserted
//   above a qcow2 node reports what qcow2 can do, and a filter over a read-only node takes
//   no writes.
// - Recomputed (Node::refresh_caps) children first: at the end of every OpenContext::open,
//   when a filter gets its child, after every Graph edit (for each node the edit changed
//   and, children first, everything above it) and after every reopen, also for the nodes above a
//   reopened node, whose derived facts may change with it. A node built outside the opener
//   (tests) calls refresh_caps() itself once it is complete.
// - Capabilities say the driver has the operation, not that every request succeeds: a
//   fixed-size raw window refuses sizes, qcow2 cannot zero part of a compressed cluster
//   without writing data, a host file system may lack fallocate (nbdkit's can_fast_zero
//   is the same promise).
// - Not capabilities: host_fd() (a resource the node lends, -1 when it has none),
//   cluster_size() and the other facts for info.
struct Capabilities {
    // Takes writes, zero writes and discards (the node is writable).
    bool write = false;
    // flush() reaches stable storage; without it flush succeeds and does nothing.
    bool flush = false;
    // The driver answers truncate() (it may still refuse a size: a fixed-size raw window,
    // a block device's other sizes); without it truncate fails with ENOTSUP.
    bool truncate = false;
    // write_zeroes with kZeroNoFallback reaches a zeroing path of the driver's own (it may
    // still fail with ENOTSUP for a range that path cannot zero); without it such a
    // request fails with ENOTSUP in the core. A plain write_zeroes is always accepted by a
    // writable node (it falls back to writing zeroes), so there is no separate `zero`.
    bool fast_zero = false;
    // discard() frees space; without it discard is accepted and does nothing (advisory).
    bool discard = false;
    // make_empty() works (qcow2); without it it fails with ENOTSUP.
    bool make_empty = false;
    // compress_cluster()/write_compressed() work; without them they fail with ENOTSUP.
    bool write_compressed = false;
    // Every byte read as zero right after the node was created, as opened (qemu's
    // has_zero_init): a copy to a new node can skip zero ranges.
    bool zero_init = false;
    // A format that can have a backing file (qemu's supports_backing): an unallocated
    // range reads from the backing child, or as zeroes without one.
    bool backing = false;
    // A protocol node (file, null-co): its exact_filename names it.
    bool protocol = false;
    // block_status() tells allocated ranges from holes and zeroes; without it the node
    // answers "data" everywhere.
    bool block_status = false;

    bool operator==(const Capabilities&) const = default;
    // The names of the capabilities that are true, in the order above ("write", "flush",
    // "truncate", "fast-zero", "discard", "make-empty", "write-compressed", "zero-init",
    // "backing", "protocol", "block-status"), for `blkimg graph`.
    std::vector<std::string> names() const;
};

class Node {
public:
    virtual ~Node();
    Node(const Node&) = delete;
    Node& operator=(const Node&) = delete;

    const std::string& driver_name() const { return driver_; }
    const std::string& node_name() const { return node_name_; }
    void set_node_name(std::string n) { node_name_ = std::move(n); }
    // The node's detect-zeroes option (qemu's): a write whose buffer is all zeroes becomes
    // a zero write (kZeroMayUnmap with Unmap). Set by the opener.
    enum class DetectZeroes { Off, On, Unmap };
    void set_detect_zeroes(DetectZeroes d) { detect_zeroes_ = d; }
    DetectZeroes detect_zeroes() const { return detect_zeroes_; }
    // The node's discard option (qemu's "discard", its BDRV_O_UNMAP). On ("unmap"):
    // discard() reaches the driver. Off ("ignore"): discard() succeeds and does nothing,
    // and caps().discard is false. `zero_unmap` off drops kZeroMayUnmap from the node's
    // zero writes. qemu drops it only from zero writes a parent node sends to a child set
    // to ignore (bdrv_co_pwrite_zeroes), not from those of the top node's user (measured:
    // qemu-img convert -n into a qcow2 target opened with discard=ignore still frees the
    // target's clusters), so the opener gives a node below another one zero_unmap equal
    // to its discard mode and a top node zero_unmap on. Each node applies its own mode:
    // a file child on ignore keeps its host range allocated whatever the qcow2 node above
    // it asks. Children default to unmap, as qemu's. Nodes made outside the opener
    // (tests, filters made to be inserted) start with both on.
    void set_discard_unmap(bool on, bool zero_unmap) {
        discard_unmap_ = on;
        zero_unmap_ = zero_unmap;
    }
    bool discard_unmap() const { return discard_unmap_; }
    uint64_t size() const { return size_; }
    bool read_only() const { return read_only_; }
    const NodeLimits& limits() const { return limits_; }
    // What the node can do (see Capabilities): the one query.
    const Capabilities& caps() const { return caps_; }
    // Recomputes caps() from own_caps() and the node's mode. The core calls it (see
    // Capabilities); not while requests run.
    void refresh_caps();

    // The options this node was opened with (driver, children inline), as given.
    const Json& options() const { return options_; }

    // --- I/O: checked here, then handed to the driver's hooks. Thread-safe. ---
    // Reads [off, off+buf.size()); the range must lie within size().
    Status read(uint64_t off, std::span<std::byte> buf);
    Status write(uint64_t off, std::span<const std::byte> buf);
    // Makes [off, off+bytes) read as zeroes (ZeroFlag bits). Without kZeroNoFallback a
    // driver with no better way writes buffers of zeroes.
    Status write_zeroes(uint64_t off, uint64_t bytes, unsigned flags = 0);
    // Tells the node the range's content is no longer needed (it may read as anything
    // afterwards, usually zeroes or the backing file). Advisory: drivers may ignore it.
    Status discard(uint64_t off, uint64_t bytes);
    // Writes back every cache and then asks the host to make the data durable.
    Status flush();
    // Changes the node's size; a grown tail is allocated as `prealloc` says.
    Status truncate(uint64_t size, Prealloc prealloc = Prealloc::Off);
    // Makes every cluster of this layer unallocated, so that the node reads its backing
    // file again (qemu's bdrv_make_empty; commit empties its top with it). ENOTSUP where
    // the format cannot (raw).
    Status make_empty();

    // Reopens the node in place read-write (`writable`) or read-only, as qemu's reopen:
    // its data, metadata and filtered children first (never the backing: a layer below is
    // reopened on its own), then the node itself, which takes what a writable open would
    // take (the file's write locks, the format's write state). A failure leaves the node
    // and its children as they were. Use Graph::reopen_read_write on a node in a graph.
    Status reopen(bool writable);

    // --- Compressed writes, split so compression runs on every worker while the writes
    // keep guest order. Only for nodes where caps().write_compressed is true. ---
    // Compresses one cluster's data (cluster_size() bytes, or less for the image's last
    // cluster). Thread-safe and does no I/O.
    virtual Result<CompressedCluster> compress_cluster(std::span<const std::byte> data) const;
    // Stores a cluster compress_cluster() prepared at cluster-aligned guest offset `off`;
    // `len` is the guest length the data covers (cluster_size(), or less at the end).
    Status write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c);

    // Flags the image as incomplete while a copy overwrites it in place (convert -n), so
    // nobody mistakes a half-written image for a whole one; false clears the flag once
    // the copy has finished and been flushed. qcow2 sets its "corrupt" header bit (qemu
    // refuses to use the image read-write and `info` shows "corrupt: true"); a host file
    // carries the extended attribute user.blkimg.incomplete. ENOTSUP where the node
    // cannot record it. Filters pass it to the node below.
    virtual Status set_incomplete(bool incomplete);
    // True if the node carries that flag (from an earlier, failed copy).
    virtual bool incomplete() const { return false; }

    // A host file descriptor holding exactly this node's bytes at the same offsets, or -1.
    // Lets the copy engine hand copies to the kernel (copy_file_range, convert -C). Only
    // the file protocol and raw without a window (which passes its file's) have one;
    // other filters keep -1 so nothing bypasses what they do.
    virtual int host_fd() const { return -1; }

    // Block status of this layer at `off` for at most `bytes` (clipped to size()).
    // Applies the generic rules: pass-through (kStatusRaw) is followed, data/zero marks
    // the range allocated, an unallocated range of a format without backing reads as zero,
    // and kStatusRecurse asks the host node for holes. Requires off < size(), bytes > 0.
    Result<BlockStatus> block_status(uint64_t off, uint64_t bytes);

    // --- Children ---
    const std::vector<Child>& children() const { return children_; }
    // Adds an edge after checking the role invariants (one Filtered child, excluding
    // Data/Metadata/Cow; one Cow child; one Primary child; a filter's filtered child is
    // also Primary). For building a node being opened; a node already in a graph is
    // changed through Graph's checked edits.
    Status attach_child(std::string name, std::shared_ptr<Node> child, unsigned roles);
    // Removes the edge named `name`; returns the node it pointed to (or null).
    std::shared_ptr<Node> detach_child(const std::string& name);
    const Child* find_child(const std::string& name) const;
    // The role invariants of the node as it stands, above all that a filter has exactly
    // one Filtered|Primary child (checked after every open and every graph edit).
    Status check_roles() const;

    // --- Facts for info/map; drivers override what they know ---
    // True if the node's driver is a filter: registered as DriverKind::Filter, and so
    // derived from FilterNode. A node that merely passes its child's bytes through (raw
    // without a window, whose edge is Filtered) is no filter.
    bool is_filter() const { return filter_driver_; }
    // The node's filename as qemu prints it: exact_filename() where there is one,
    // otherwise a json:{...} pseudo-filename of full_options().
    std::string filename() const;
    // A plain filename that reopens this node as it is, or "" (qemu's exact_filename).
    // Default: the primary child's, if that is a protocol node and this node has no strong
    // options, is no filter driver and has no overridden backing file.
    virtual std::string exact_filename() const;
    // What reopens this node: "driver", its strong options, and every child's full options
    // (the backing child only where the user overrode it).
    Json full_options() const;

    // Set by the opener: the driver's strong option keys. `filter_driver` is the
    // registration's word, which must agree with the node's class (FilterNode): a
    // mismatch is a driver bug, refused.
    Status set_driver_facts(std::vector<std::string> strong_keys, bool filter_driver);
    // Backing file name recorded in the image ("" if none) and its format ("" if none).
    virtual std::string backing_file_name() const { return {}; }
    virtual std::string backing_format() const { return {}; }
    // Cluster size, if the format has one.
    virtual std::optional<uint64_t> cluster_size() const { return std::nullopt; }
    // The dirty flag; nullopt where the driver has no such notion (qemu prints none).
    virtual std::optional<bool> dirty() const { return false; }
    // Internal snapshots, oldest first (typed: the CLI makes qemu's JSON of them).
    virtual std::vector<SnapshotFacts> snapshots() const { return {}; }
    // Format-specific facts (qemu's "format-specific" block), or monostate.
    virtual FormatFacts format_specific() const { return {}; }
    // The guest data is encrypted (info's "encrypted: yes").
    virtual bool encrypted() const { return false; }
    // Bytes allocated on the host (qemu's actual-size); ENOTSUP if unknown.
    virtual Result<uint64_t> allocated_file_size() const;

protected:
    Node(std::string driver, Json options);

    // Driver hooks: requests reaching them are within bounds and aligned.
    virtual Status do_read(uint64_t off, std::span<std::byte> buf) = 0;
    virtual Status do_write(uint64_t off, std::span<const std::byte> buf);
    // What the driver can do (see Capabilities; write is the core's). Default: nothing.
    // Called by refresh_caps(), after the node's children are current.
    virtual Capabilities own_caps() const { return {}; }

    // Default: ENOTSUP with kZeroNoFallback, else zero buffers through do_write.
    virtual Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags);
    // Default: nothing (discard is advisory).
    virtual Status do_discard(uint64_t off, uint64_t bytes);
    virtual Status do_flush();
    // Default: ENOTSUP.
    virtual Status do_truncate(uint64_t size, Prealloc prealloc);
    // Default: ENOTSUP.
    virtual Status do_make_empty();
    // The node's own part of reopen(), called once its children have been reopened.
    // Default: takes the new mode (a node with no state of its own for writing).
    virtual Status do_reopen(bool writable);
    // Default: ENOTSUP.
    virtual Status do_write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c);
    // One layer's answer, before the generic rules. Default: data at the same offset of
    // nothing (kStatusData) for the whole range.
    virtual Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes);

    // Keeps `slot` pointing at the node of the edge named `name` (null while there is
    // none), through every attach, detach and graph edit.
    void bind_edge(std::string name, EdgeSlot& slot);
    // Called after an edit changed where one of this node's edges points (and again if
    // the edit was undone): nodes that take facts from a child refresh them here.
    virtual void children_changed() {}

    std::string driver_;
    std::string node_name_;
    Json options_;
    // Atomic: a format that grows its file (qcow2 allocating) changes the file node's size
    // while other threads' requests are checked against it.
    std::atomic<uint64_t> size_{0};
    bool read_only_ = true;
    NodeLimits limits_;
    Capabilities caps_;
    DetectZeroes detect_zeroes_ = DetectZeroes::Off;
    bool discard_unmap_ = true;
    bool zero_unmap_ = true;

private:
    friend struct Graph;
    friend class FilterNode;
    // Points edge `index` at `node` and updates the slots bound to it.
    void set_edge(size_t index, std::shared_ptr<Node> node);
    void update_slots(const std::string& name, Node* node);

    std::vector<Child> children_;
    std::vector<std::pair<std::string, EdgeSlot*>> slots_;
    std::vector<std::string> strong_keys_;
    bool filter_driver_ = false;
};

// Base for filters: one child with kRoleFiltered|kRolePrimary, everything passes through.
// A filter is made without its child (DriverSpec::make_filter) and gets it either from the
// opener or from Graph::insert_filter_above; it takes its size and writability from it.
class FilterNode : public Node {
public:
    // The name of the filtered edge ("file" for most of qemu's filters).
    const std::string& filtered_edge_name() const { return edge_name_; }
    // Attaches `child` as the filtered child and takes its size and writability.
    Status attach_filtered(std::shared_ptr<Node> child);

protected:
    FilterNode(std::string driver, Json options, std::string edge_name = "file");
    // The same with another edge name (kept for drivers that name it at attach).
    Status attach_filtered(std::string name, std::shared_ptr<Node> child);
    Node& below() const { return *below_; }
    // Takes size and writability from the filtered child.
    void children_changed() override;

    Status do_read(uint64_t off, std::span<std::byte> buf) override;
    Status do_write(uint64_t off, std::span<const std::byte> buf) override;
    Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) override;
    Status do_discard(uint64_t off, uint64_t bytes) override;
    Status do_flush() override;
    Status do_truncate(uint64_t size, Prealloc prealloc) override;
    Status do_make_empty() override;
    Status do_write_compressed(uint64_t off, uint64_t len, const CompressedCluster& c) override;
    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override;
    // The filtered child's capabilities, less protocol and backing.
    Capabilities own_caps() const override;
    // Takes the reopened child's mode.
    Status do_reopen(bool writable) override;

public:
    // Facts of the node below (a subclass that maps its child differently has no filtered
    // child and gets the defaults).
    Result<CompressedCluster> compress_cluster(std::span<const std::byte> data) const override;
    std::optional<uint64_t> cluster_size() const override;
    Status set_incomplete(bool incomplete) override;
    bool incomplete() const override;

private:
    std::string edge_name_;
    EdgeSlot below_;
};

// --- Graph accessors: code asks for the role it means ---
Node* filtered_child(const Node& n);   // the Filtered child, or null
Node* cow_child(const Node& n);        // the Cow (backing) child, or null
Node* primary_child(const Node& n);    // the Primary child, or null
std::vector<Node*> data_children(const Node& n);  // children with kRoleData
Node* skip_filters(Node* n);           // descends Filtered children while n is a filter
// The next layer of the backing chain below n: skips filters above and below the cow edge.
Node* backing_chain_next(Node* n);
const Child* cow_edge(const Node& n);  // the Cow edge itself (name and node), or null
// The filename that relative names stored in n (backing and data files) resolve against,
// as qemu's bdrv_dirname: the plain filename of the node reached by following primary
// children down (through filters such as preallocate), else n.filename().
std::string base_filename(const Node& n);

// --- Graph edits ---
// A graph: the root node and, reachable from it, every other node. Edits find parents by
// walking from the root, so nodes need no parent pointers. Every edit is checked: the
// nodes it names are (or, for a new node, are not yet) in the graph, the role invariants
// hold, no cycle is made, a writable node keeps writable children on its data, metadata
// and filtered edges, no node gets two writing parents (one writer, many readers: a
// backing edge only reads), and filters take size and writability from their new child.
// A failed edit leaves the graph exactly as it was. Edits must not run during I/O. Every
// edit also keeps node names unique and recomputes the capabilities of the nodes it
// changed and of everything above them.
struct Graph {
    std::shared_ptr<Node> root;
    // Every node reachable from root, each once, parents before children.
    std::vector<Node*> nodes() const;
    bool contains(const Node* n) const;
    // The node named `node_name` (Node::node_name) in this graph, or null. A walk from the
    // root, not an index: a graph holds a handful of nodes, every edit, reopen and
    // set_node_name would each have to keep an index current, and a walk cannot go stale.
    Node* find(std::string_view node_name) const;
    // qemu's rule: no two nodes of one graph have the same node name ("Duplicate nodes
    // with node-name='X'", the first duplicate met children first, as qemu names its
    // nodes while it opens them). Checked at open (open_image) and by every edit.
    Status check_node_names() const;

    // The edits take their nodes by value: `g.insert_filter_above(g.root, f)` passes the
    // root itself, which the edit reassigns.
    // Puts `filter` (a filter with no child yet, not in the graph) above `x`: the filter
    // gets x as its filtered child and every edge that pointed to x (and the root) now
    // points to the filter.
    Status insert_filter_above(std::shared_ptr<Node> x, std::shared_ptr<Node> filter);
    // Removes filter f: its parents (and the root) now point to f's filtered child. f keeps
    // its edge to the child (it is no longer part of the graph).
    Status remove_filter(std::shared_ptr<Node> f);
    // Every edge pointing to x (and the root), except edges of y itself, now points to y.
    Status replace(std::shared_ptr<Node> x, std::shared_ptr<Node> y);
    // Gives `parent` a new edge `name` to `child` with `roles`.
    Status attach(const std::shared_ptr<Node>& parent, const std::string& name, const std::shared_ptr<Node>& child,
                  unsigned roles);
    // Removes `parent`'s edge `name`; a Filtered or Primary edge cannot be removed (the
    // node would have nothing to stand on).
    Status detach(const std::shared_ptr<Node>& parent, const std::string& name);
    // Makes node n of this graph writable in place (Node::reopen), e.g. the base of a
    // commit inside an otherwise read-only chain; refused (EAGAIN, one line naming the
    // file) when another process (a running QEMU) holds the image. Parents keep their mode.
    Status reopen_read_write(Node& n);
    // Makes n read-only again (its caches written back, its write locks dropped).
    Status reopen_read_only(Node& n);

private:
    struct Undo;
    // One writer, many readers: refuses a graph where two parents write the same node.
    Status check_claims(const char* what) const;
    Status finish_edit(Undo& undo, const std::vector<Node*>& changed, const char* what);
};

// qemu's rules for a node name (id_wellformed, then its length): a letter, then letters,
// digits, '-', '.' and '_' ("Invalid node-name: 'X'"), at most 31 characters ("Node name
// too long"). The opener checks every node-name it is given.
Status check_node_name(std::string_view name);

// The same edits as free functions (the names code used first).
Status insert_filter_above(Graph& g, const std::shared_ptr<Node>& x, const std::shared_ptr<Node>& filter);
Status replace_node(Graph& g, const std::shared_ptr<Node>& x, const std::shared_ptr<Node>& y);
Status remove_filter(Graph& g, const std::shared_ptr<Node>& f);

}  // namespace blk
