// Graph edits: checked insert/remove/replace/attach/detach that leave the graph unchanged
// when they fail, real I/O through edited graphs, filters made without a child, and a
// qcow2 whose file edge is edited after open.
#include <doctest/doctest.h>

#include <mutex>

#include "blk/commit.h"
#include "blk/driver.h"
#include "mem_node.h"
#include "record_node.h"
#include "temp_files.h"

using namespace blk;
using namespace blktest;

namespace {

// A filter that logs every request it passes down (reads and block status too) and can
// refuse them all, to prove nothing goes around it.
class RecordFilter : public FilterNode {
public:
    RecordFilter() : FilterNode("record-filter", Json::object()) {}
    struct Op {
        char kind;  // r w z d f t s
        uint64_t off, len;
    };
    std::vector<Op> log() {
        std::lock_guard lk(mu_);
        return log_;
    }
    bool deny = false;
    size_t count(char k) {
        size_t n = 0;
        for (const Op& o : log()) n += o.kind == k;
        return n;
    }

protected:
    Status note(char k, uint64_t off, uint64_t len) {
        std::lock_guard lk(mu_);
        log_.push_back({k, off, len});
        if (deny) return make_error(EIO, "record-filter: denied");
        return {};
    }
    Status do_read(uint64_t off, std::span<std::byte> buf) override {
        BLK_TRY(note('r', off, buf.size()));
        return FilterNode::do_read(off, buf);
    }
    Status do_write(uint64_t off, std::span<const std::byte> buf) override {
        BLK_TRY(note('w', off, buf.size()));
        return FilterNode::do_write(off, buf);
    }
    Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) override {
        BLK_TRY(note('z', off, bytes));
        return FilterNode::do_write_zeroes(off, bytes, flags);
    }
    Status do_discard(uint64_t off, uint64_t bytes) override {
        BLK_TRY(note('d', off, bytes));
        return FilterNode::do_discard(off, bytes);
    }
    Status do_flush() override {
        BLK_TRY(note('f', 0, 0));
        return FilterNode::do_flush();
    }
    Status do_truncate(uint64_t size, Prealloc p) override {
        BLK_TRY(note('t', size, 0));
        return FilterNode::do_truncate(size, p);
    }
    Result<BlockStatus> do_block_status(uint64_t off, uint64_t bytes) override {
        BLK_TRY(note('s', off, bytes));
        return FilterNode::do_block_status(off, bytes);
    }

private:
    std::mutex mu_;
    std::vector<Op> log_;
};

// Everything an edit could change: the root, each node's edges, size and writability.
struct Snapshot {
    struct N {
        Node* node;
        std::vector<std::tuple<std::string, Node*, unsigned>> edges;
        uint64_t size;
        bool ro;
        bool operator==(const N&) const = default;
    };
    Node* root;
    std::vector<N> nodes;
    bool operator==(const Snapshot&) const = default;
};

Snapshot snap(const Graph& g, std::vector<Node*> extra = {}) {
    Snapshot s{g.root.get(), {}};
    std::vector<Node*> all = g.nodes();
    all.insert(all.end(), extra.begin(), extra.end());
    for (Node* n : all) {
        Snapshot::N e{n, {}, n->size(), n->read_only()};
        for (const Child& c : n->children()) e.edges.emplace_back(c.name, c.node.get(), c.roles);
        s.nodes.push_back(std::move(e));
    }
    return s;
}

std::vector<std::byte> pattern(size_t n, uint64_t seed) {
    std::vector<std::byte> b(n);
    fill_pattern(b, seed);
    return b;
}

// A writable "format" over memory with a file edge, to hang filters under.
struct Top : MemNode {
    Top() : MemNode(4096, true) {}
};

// A qcow2 base of `size` bytes and a qcow2 top over it (backing name relative, as stored).
void make_chain(const std::string& base, const std::string& top, uint64_t size) {
    CreateRequest req;
    req.format = "qcow2";
    req.filename = base;
    req.size = size;
    REQUIRE(create_image(req));
    req.filename = top;
    req.size.reset();
    req.backing_file = "base.qcow2";
    req.backing_format = "qcow2";
    REQUIRE(create_image(req));
}

}  // namespace

TEST_CASE("an inserted filter takes its child's size and writability and passes real I/O") {
    auto x = std::make_shared<MemNode>(8192);
    Graph g{x};
    auto f = std::make_shared<RecordFilter>();
    CHECK(f->size() == 0);
    REQUIRE(g.insert_filter_above(x, f));
    CHECK(g.root == f);
    CHECK(f->size() == 8192);
    CHECK_FALSE(f->read_only());
    auto w = pattern(4096, 1);
    REQUIRE(f->write(1024, w));
    std::vector<std::byte> r(4096);
    REQUIRE(f->read(1024, r));  // failed before: the filter had size 0
    CHECK(r == w);
    REQUIRE(f->write_zeroes(0, 512));
    auto st = f->block_status(0, 8192);
    REQUIRE(st);
    CHECK(f->count('w') == 1);
    CHECK(f->count('r') == 1);
    CHECK(f->count('z') == 1);
    CHECK(f->count('s') == 1);
}

TEST_CASE("inserted, stacked, removed and replaced filters carry read, write, zeroes and block status") {
    auto x = std::make_shared<MemNode>(65536);
    x->allocated_ = 65536;
    auto top = std::make_shared<MemNode>(65536, true);
    REQUIRE(top->attach_child("file", x, kRoleData | kRoleMetadata | kRolePrimary));
    Graph g{top};
    auto f1 = std::make_shared<RecordFilter>();
    auto f2 = std::make_shared<RecordFilter>();
    REQUIRE(g.insert_filter_above(x, f1));
    REQUIRE(g.insert_filter_above(f1, f2));  // top -> f2 -> f1 -> x
    CHECK(primary_child(*top) == f2.get());
    CHECK(filtered_child(*f2) == f1.get());
    CHECK(skip_filters(f2.get()) == x.get());
    Node& file = *primary_child(*top);
    auto w = pattern(8192, 7);
    REQUIRE(file.write(4096, w));
    REQUIRE(file.write_zeroes(16384, 4096));
    std::vector<std::byte> r(8192);
    REQUIRE(file.read(4096, r));
    CHECK(r == w);
    auto bs = file.block_status(0, 65536);
    REQUIRE(bs);
    CHECK((bs->flags & kStatusData));
    for (auto* f : {f1.get(), f2.get()}) {
        CHECK(f->count('w') == 1);
        CHECK(f->count('z') == 1);
        CHECK(f->count('r') == 1);
        CHECK(f->count('s') == 1);
    }
    CHECK(std::all_of(x->data().begin() + 16384, x->data().begin() + 20480, [](std::byte b) { return b == std::byte{0}; }));

    // Remove the lower filter: f2 now stands on x directly.
    REQUIRE(g.remove_filter(f1));
    CHECK(filtered_child(*f2) == x.get());
    REQUIRE(primary_child(*top)->read(4096, r));
    CHECK(r == w);
    CHECK(f1->count('r') == 1);
    CHECK(f2->count('r') == 2);

    // Replace x under everything by y: the filter takes y's size.
    auto y = std::make_shared<MemNode>(32768);
    REQUIRE(g.replace(x, y));
    CHECK(filtered_child(*f2) == y.get());
    CHECK(f2->size() == 32768);
    REQUIRE(primary_child(*top)->write(0, std::span(w).first(4096)));
    CHECK(std::equal(w.begin(), w.begin() + 4096, y->data().begin()));
    CHECK_FALSE(primary_child(*top)->read(32768, std::span(r).first(512)));  // beyond y
}

TEST_CASE("an inserted filter over a read-only node is read-only") {
    auto x = std::make_shared<MemNode>(4096);
    x->make_read_only();
    Graph g{x};
    auto f = std::make_shared<RecordFilter>();
    REQUIRE(g.insert_filter_above(x, f));
    CHECK(f->read_only());
    std::vector<std::byte> b(512);
    CHECK_FALSE(f->write(0, b));
}

TEST_CASE("failed insert_filter_above leaves the graph unchanged") {
    auto x = std::make_shared<MemNode>(4096);
    auto top = std::make_shared<MemNode>(4096, true);
    REQUIRE(top->attach_child("file", x, kRoleData | kRolePrimary));
    Graph g{top};
    const Snapshot before = snap(g);

    SUBCASE("the node is not in the graph") {
        auto stranger = std::make_shared<MemNode>(4096);
        auto f = std::make_shared<RecordFilter>();
        auto st = g.insert_filter_above(stranger, f);
        REQUIRE_FALSE(st);
        CHECK(st.error().message.find("not in the graph") != std::string::npos);
        CHECK(f->children().empty());
    }
    SUBCASE("what is inserted is no filter") {
        auto notf = std::make_shared<MemNode>(4096);
        auto st = g.insert_filter_above(x, notf);
        REQUIRE_FALSE(st);
        CHECK(st.error().message.find("not a filter") != std::string::npos);
    }
    SUBCASE("the filter already has a child") {
        auto f = std::make_shared<PassFilter>();
        REQUIRE(f->take(std::make_shared<MemNode>(512)));
        CHECK_FALSE(g.insert_filter_above(x, f));
    }
    SUBCASE("the filter is already in the graph") {
        auto f = std::make_shared<RecordFilter>();
        REQUIRE(g.insert_filter_above(x, f));
        const Snapshot mid = snap(g);
        CHECK_FALSE(g.insert_filter_above(top, f));
        CHECK(snap(g) == mid);
        REQUIRE(g.remove_filter(f));
    }
    SUBCASE("no node") { CHECK_FALSE(g.insert_filter_above(x, nullptr)); }
    CHECK(snap(g) == before);
}

TEST_CASE("failed remove_filter leaves the graph unchanged") {
    auto x = std::make_shared<MemNode>(4096);
    auto top = std::make_shared<MemNode>(4096, true);
    REQUIRE(top->attach_child("file", x, kRoleData | kRolePrimary));
    Graph g{top};
    const Snapshot before = snap(g);
    SUBCASE("not a filter") { CHECK_FALSE(g.remove_filter(x)); }
    SUBCASE("a filter not in the graph") {
        auto f = std::make_shared<PassFilter>();
        REQUIRE(f->take(std::make_shared<MemNode>(4096)));
        auto st = g.remove_filter(f);
        REQUIRE_FALSE(st);
        CHECK(st.error().message.find("not in the graph") != std::string::npos);
    }
    CHECK(snap(g) == before);
}

TEST_CASE("failed replace leaves the graph unchanged: cycle, writability, strangers") {
    auto x = std::make_shared<MemNode>(4096);
    auto mid = std::make_shared<MemNode>(4096, true);
    auto top = std::make_shared<MemNode>(4096, true);
    REQUIRE(mid->attach_child("file", x, kRoleData | kRolePrimary));
    REQUIRE(top->attach_child("file", mid, kRoleData | kRolePrimary));
    Graph g{top};
    const Snapshot before = snap(g);

    SUBCASE("a cycle: x replaced by top makes mid point back up to top") {
        auto st = g.replace(x, top);
        REQUIRE_FALSE(st);
        CHECK(st.error().message.find("cycle") != std::string::npos);
    }
    SUBCASE("a writable parent cannot get a read-only data child") {
        auto ro = std::make_shared<MemNode>(4096);
        ro->make_read_only();
        auto st = g.replace(x, ro);
        REQUIRE_FALSE(st);
        CHECK(st.error().code == EACCES);
    }
    SUBCASE("the node to replace is not in the graph") {
        auto st = g.replace(std::make_shared<MemNode>(4096), std::make_shared<MemNode>(4096));
        REQUIRE_FALSE(st);
        CHECK(st.error().message.find("not in the graph") != std::string::npos);
    }
    SUBCASE("no node") { CHECK_FALSE(g.replace(x, nullptr)); }
    CHECK(snap(g) == before);
}

TEST_CASE("failed replace keeps a filter's size and writability") {
    auto x = std::make_shared<MemNode>(4096);
    auto f = std::make_shared<RecordFilter>();
    auto top = std::make_shared<MemNode>(4096, true);
    Graph g{top};
    REQUIRE(top->attach_child("file", x, kRoleData | kRolePrimary));
    REQUIRE(g.insert_filter_above(x, f));
    const Snapshot before = snap(g);
    auto ro = std::make_shared<MemNode>(512);
    ro->make_read_only();
    REQUIRE_FALSE(g.replace(x, ro));  // f would turn read-only under writable top
    CHECK(snap(g) == before);
    CHECK(f->size() == 4096);
    CHECK_FALSE(f->read_only());
}

TEST_CASE("failed attach and detach leave the graph unchanged") {
    auto x = std::make_shared<MemNode>(4096);
    auto top = std::make_shared<MemNode>(4096, true);
    auto f = std::make_shared<PassFilter>();
    REQUIRE(top->attach_child("file", x, kRoleData | kRolePrimary));
    Graph g{top};
    REQUIRE(g.insert_filter_above(top, f));  // f -> top -> x
    auto base = std::make_shared<MemNode>(4096);
    REQUIRE(g.attach(top, "backing", base, kRoleCow));
    const Snapshot before = snap(g);

    SUBCASE("attach to a node not in the graph") {
        auto st = g.attach(std::make_shared<MemNode>(4096), "file", x, kRoleData);
        REQUIRE_FALSE(st);
        CHECK(st.error().message.find("not in the graph") != std::string::npos);
    }
    SUBCASE("attach making a cycle") {
        auto st = g.attach(x, "backing", top, kRoleCow);
        REQUIRE_FALSE(st);
        CHECK(st.error().message.find("cycle") != std::string::npos);
    }
    SUBCASE("attach breaking the roles: a second filtered child") {
        CHECK_FALSE(g.attach(f, "other", std::make_shared<MemNode>(4096), kRoleFiltered | kRolePrimary));
    }
    SUBCASE("attach breaking the roles: a second backing child") {
        CHECK_FALSE(g.attach(top, "backing2", std::make_shared<MemNode>(4096), kRoleCow));
    }
    SUBCASE("attach breaking the roles: a filter takes no data child") {
        CHECK_FALSE(g.attach(f, "data", std::make_shared<MemNode>(4096), kRoleData));
    }
    SUBCASE("attach a read-only data child to a writable node") {
        auto ro = std::make_shared<MemNode>(4096);
        ro->make_read_only();
        auto st = g.attach(top, "data-file", ro, kRoleData);
        REQUIRE_FALSE(st);
        CHECK(st.error().code == EACCES);
    }
    SUBCASE("attach under a name in use") { CHECK_FALSE(g.attach(top, "file", std::make_shared<MemNode>(4096), kRoleData)); }
    SUBCASE("detach a filter's filtered child") { CHECK_FALSE(g.detach(f, "file")); }
    SUBCASE("detach a primary child") { CHECK_FALSE(g.detach(top, "file")); }
    SUBCASE("detach an edge that does not exist") { CHECK_FALSE(g.detach(top, "nothing")); }
    SUBCASE("detach from a node not in the graph") { CHECK_FALSE(g.detach(std::make_shared<MemNode>(4096), "file")); }
    CHECK(snap(g) == before);

    // And the edits that are allowed work.
    REQUIRE(g.detach(top, "backing"));
    CHECK(cow_child(*top) == nullptr);
}

TEST_CASE("roles are checked after open: a filter without exactly one filtered child is refused") {
    auto f = std::make_shared<PassFilter>();
    CHECK_FALSE(f->check_roles());  // no child yet
    REQUIRE(f->take(std::make_shared<MemNode>(512)));
    CHECK(f->check_roles());
    auto m = std::make_shared<MemNode>(512);
    CHECK(m->check_roles());
    // A registration that disagrees with the node's class is a driver bug.
    CHECK_FALSE(m->set_driver_facts({}, true));
    CHECK_FALSE(f->set_driver_facts({}, false));
}

TEST_CASE("a filter is made from its options without a child and then inserted over a real file") {
    TempDir dir;
    const std::string path = dir / "f.raw";
    write_file(path, std::vector<std::byte>(1 << 20));
    auto pre = make_filter_node(Json{{"driver", "preallocate"}, {"prealloc-size", 4 << 20}});
    REQUIRE(pre);
    CHECK((*pre)->is_filter());
    CHECK((*pre)->children().empty());
    CHECK_FALSE(make_filter_node(Json{{"driver", "preallocate"}, {"file", {{"filename", path}}}}));  // no child here
    CHECK_FALSE(make_filter_node(Json{{"driver", "qcow2"}}));  // not a filter
    CHECK_FALSE(make_filter_node(Json{{"driver", "preallocate"}, {"prealloc-align", 3}}));  // bad option

    OpenFlags fl;
    fl.read_only = false;
    auto g = open_image(ImageSpec{path, "raw", false}, fl);
    REQUIRE(g);
    Node* file = primary_child(*g->root);
    REQUIRE(file);
    std::shared_ptr<Node> file_sp = g->root->children()[0].node;
    REQUIRE(g->insert_filter_above(file_sp, *pre));
    CHECK(primary_child(*g->root) == pre->get());
    CHECK((*pre)->size() == 1 << 20);
    // raw grows through the filter, which sets space aside in the file.
    REQUIRE(g->root->truncate(2 << 20));
    CHECK(g->root->size() == 2 << 20);
    CHECK(file->size() > 2 << 20);
    auto w = pattern(65536, 3);
    REQUIRE(g->root->write((2 << 20) - 65536, w));
    REQUIRE(g->root->write_zeroes(0, 4096));
    std::vector<std::byte> r(65536);
    REQUIRE(g->root->read((2 << 20) - 65536, r));
    CHECK(r == w);
    REQUIRE(g->root->block_status(0, 2 << 20));
    REQUIRE(g->root->flush());
    // Removed again, the filter is out of every request; closing it cuts the file back.
    REQUIRE(g->remove_filter(*pre));
    CHECK(primary_child(*g->root) == file);
    pre = Result<std::shared_ptr<Node>>(std::shared_ptr<Node>());
    CHECK(file->size() == 2 << 20);
}

TEST_CASE("a recording filter inserted under a qcow2 node's file after open sees every request") {
    TempDir dir;
    const std::string path = dir / "img.qcow2";
    CreateRequest req;
    req.format = "qcow2";
    req.filename = path;
    req.size = 4 << 20;
    REQUIRE(create_image(req));
    OpenFlags fl;
    fl.read_only = false;
    auto g = open_image(ImageSpec{path, "qcow2", false}, fl);
    REQUIRE(g);
    Node& q = *g->root;
    const Child* fe = q.find_child("file");
    REQUIRE(fe);
    std::shared_ptr<Node> file = fe->node;
    auto rec = std::make_shared<RecordFilter>();
    REQUIRE(g->insert_filter_above(file, rec));
    CHECK(primary_child(q) == rec.get());
    CHECK(filtered_child(*rec) == file.get());

    auto w = pattern(65536, 9);
    REQUIRE(q.write(1 << 20, w));  // allocates: refcounts, L2, data
    REQUIRE(q.flush());
    const size_t writes = rec->count('w');
    CHECK(writes >= 3);  // data, then L2 and refcount metadata at least
    bool data_seen = false, meta_seen = false;
    for (const auto& o : rec->log()) {
        if (o.kind == 'w' && o.len == 65536) data_seen = true;
        if (o.kind == 'w' && o.len != 65536) meta_seen = true;
    }
    CHECK(data_seen);
    CHECK(meta_seen);
    CHECK(rec->count('f') >= 1);
    std::vector<std::byte> r(65536);
    REQUIRE(q.read(1 << 20, r));
    CHECK(r == w);
    CHECK(rec->count('r') >= 1);  // the data read went through the filter
    auto bs = q.block_status(1 << 20, 65536);
    REQUIRE(bs);
    CHECK(bs->file == rec.get());  // the host node is the edge's node now

    // Nothing goes around the filter: with it refusing, every data request fails.
    rec->deny = true;
    CHECK_FALSE(q.read(1 << 20, r));
    CHECK_FALSE(q.write(2 << 20, w));
    rec->deny = false;

    // Removed again, the image is whole and the filter sees nothing more.
    REQUIRE(g->remove_filter(rec));
    const size_t before = rec->log().size();
    REQUIRE(q.read(1 << 20, r));
    CHECK(r == w);
    CHECK(rec->log().size() == before);
}

TEST_CASE("reopen_read_write makes a read-only backing file writable in place, and back") {
    TempDir dir;
    const std::string base = dir / "base.qcow2", top = dir / "top.qcow2";
    make_chain(base, top, 4 << 20);
    OpenFlags fl;
    fl.read_only = false;
    auto g = open_image(ImageSpec{top, "qcow2", false}, fl);
    REQUIRE(g);
    Node* b = backing_chain_next(g->root.get());
    REQUIRE(b);
    CHECK(b->read_only());
    auto w = pattern(65536, 5);
    CHECK_FALSE(b->write(0, w));  // a backing file opens read-only

    // A second opener wanting to write is refused while we hold the write locks.
    REQUIRE(g->reopen_read_write(*b));
    CHECK_FALSE(b->read_only());
    CHECK_FALSE(primary_child(*b)->read_only());
    {
        OpenFlags other;
        other.read_only = false;
        auto g2 = open_image(ImageSpec{base, "qcow2", false}, other);
        REQUIRE_FALSE(g2);
        CHECK(g2.error().code == EAGAIN);
    }
    REQUIRE(b->write(0, w));
    REQUIRE(g->reopen_read_only(*b));
    CHECK(b->read_only());
    CHECK_FALSE(b->write(0, w));
    {
        // Read-only again: a writer still cannot share it, but a reader opens it and sees
        // what was written (the caches went back to disk).
        auto g2 = open_image(ImageSpec{base, "qcow2", false}, OpenFlags{});
        REQUIRE(g2);
        std::vector<std::byte> r(65536);
        REQUIRE(g2->root->read(0, r));
        CHECK(r == w);
    }
    // Twice, to see that the write state is set up afresh.
    REQUIRE(g->reopen_read_write(*b));
    REQUIRE(b->write(65536, w));
    REQUIRE(b->flush());

    // A node of another graph is refused.
    CreateRequest lone;
    lone.format = "raw";
    lone.filename = dir / "lone.raw";
    lone.size = 1 << 20;
    REQUIRE(create_image(lone));
    auto other = open_image(ImageSpec{lone.filename, "raw", false}, OpenFlags{});
    REQUIRE(other);
    CHECK_FALSE(g->reopen_read_write(*other->root));
    CHECK(other->root->read_only());
}

TEST_CASE("reopen_read_write is refused while another process holds the image, and changes nothing") {
    TempDir dir;
    const std::string base = dir / "base.qcow2", top = dir / "top.qcow2";
    make_chain(base, top, 1 << 20);
    // Another open file description with a reader's locks, as a qemu that opened the
    // image read-only holds them ("write" not shared).
    auto holder = open_image(ImageSpec{base, "qcow2", false}, OpenFlags{});
    REQUIRE(holder);
    OpenFlags fl;
    fl.read_only = false;
    fl.force_share = false;
    auto g = open_image(ImageSpec{top, "qcow2", false}, fl);
    // The top's own open takes its backing file read-only, which a reader shares.
    REQUIRE(g);
    Node* b = backing_chain_next(g->root.get());
    auto st = g->reopen_read_write(*b);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == EAGAIN);
    CHECK(st.error().message.find("base.qcow2") != std::string::npos);
    CHECK(b->read_only());
    CHECK(primary_child(*b)->read_only());
    holder = Result<Graph>(Graph{});
    REQUIRE(g->reopen_read_write(*b));
}

TEST_CASE("commit_image finds the chain by role: a filter between the layers neither breaks nor stops it") {
    TempDir dir;
    const std::string base = dir / "base.qcow2", mid = dir / "mid.qcow2", top = dir / "top.qcow2";
    CreateRequest req;
    req.format = "qcow2";
    req.filename = base;
    req.size = 2 << 20;
    REQUIRE(create_image(req));
    req.size = 3 << 20;  // the base is smaller: it grows
    req.filename = mid;
    req.backing_file = "base.qcow2";
    req.backing_format = "qcow2";
    REQUIRE(create_image(req));
    req.filename = top;
    req.backing_file = "mid.qcow2";
    REQUIRE(create_image(req));
    auto a = pattern(65536, 1), b = pattern(65536, 2), c = pattern(65536, 3);
    {
        OpenFlags fl;
        fl.read_only = false;
        fl.open_backing = false;
        auto gb = open_image(ImageSpec{base, "qcow2", false}, fl);
        REQUIRE(gb);
        REQUIRE(gb->root->write(0, a));
        REQUIRE(gb->root->write(65536, a));
        REQUIRE(gb->root->flush());
        auto gm = open_image(ImageSpec{mid, "qcow2", false}, fl);
        REQUIRE(gm);
        REQUIRE(gm->root->write(65536, b));
        REQUIRE(gm->root->flush());
        auto gt = open_image(ImageSpec{top, "qcow2", false}, fl);
        REQUIRE(gt);
        REQUIRE(gt->root->write_zeroes(0, 65536));  // a zero cluster over the base's data
        REQUIRE(gt->root->write((2 << 20) + 65536, c));  // beyond the base's old end
        REQUIRE(gt->root->flush());
    }
    OpenFlags fl;
    fl.read_only = false;
    auto g = open_image(ImageSpec{top, "qcow2", false}, fl);
    REQUIRE(g);
    Node* m = backing_chain_next(g->root.get());
    Node* bn = backing_chain_next(m);
    REQUIRE(bn);
    // A recording filter over the base, under the middle image's backing edge.
    std::shared_ptr<Node> bsh;
    for (const Child& ch : m->children())
        if (ch.roles & kRoleCow) bsh = ch.node;
    auto rec = std::make_shared<RecordFilter>();
    REQUIRE(g->insert_filter_above(bsh, rec));
    CHECK(backing_chain_next(m) == bn);
    CHECK(find_backing_image(*g->root, "base.qcow2") == bn);
    CHECK(find_backing_image(*g->root, dir / "mid.qcow2") == m);
    CHECK(find_backing_image(*g->root, "nope.qcow2") == nullptr);

    CommitOptions o;
    o.top = g->root.get();
    o.base = bn;
    auto r = commit_image(*g, o);
    REQUIRE(r);
    CHECK(r->base_grown);
    CHECK(r->top_emptied);
    CHECK(bn->read_only());  // back to read-only
    CHECK(bn->size() == uint64_t{3} << 20);
    std::vector<std::byte> got(65536), zero(65536);
    REQUIRE(bn->read(0, got));
    CHECK(got == zero);
    REQUIRE(bn->read(65536, got));
    CHECK(got == b);  // the middle image was committed too
    REQUIRE(bn->read((2 << 20) + 65536, got));
    CHECK(got == c);
    auto st = g->root->block_status(0, 3 << 20);
    REQUIRE(st);
    CHECK((st->flags & kStatusAllocated) == 0u);  // the top is empty
    CHECK(st->bytes == uint64_t{3} << 20);

    // A base that is not below the top is refused, and nothing is touched.
    CommitOptions bad;
    bad.top = bn;
    auto r2 = commit_image(*g, bad);
    CHECK_FALSE(r2);
    CopyOptions co;
    co.sources = {m};
    co.target = g->root.get();
    co.base = g->root.get();
    CHECK_FALSE(copy_image(co));
}

TEST_CASE("open_image is the one open path: cache flags reach every node unless the spec names its own") {
    TempDir dir;
    const std::string path = dir / "f.raw";
    write_file(path, std::vector<std::byte>(65536));
    auto cache_of = [](const Node& n) { return n.options().value("cache", Json::object()); };
    OpenFlags fl;
    fl.cache_no_flush = true;
    auto g = open_image(ImageSpec{path, "raw", false}, fl);
    REQUIRE(g);
    for (Node* n : g->nodes()) CHECK(cache_of(*n).value("no-flush", "") == "on");
    CHECK_FALSE(cache_of(*g->root).contains("direct"));
    // An option the spec names itself wins over the flag.
    auto own = open_image(ImageSpec{"driver=raw,cache.no-flush=off,file.filename=" + path, "", true}, fl);
    REQUIRE(own);
    CHECK(cache_of(*own->root).value("no-flush", "") == "off");
    // A json: filename as `graph --output=json` prints it, facts ('@' keys) and all, opens.
    const Json facts{{"driver", "raw"}, {"@node-name", "#block001"}, {"@size", 65536},
                     {"file", {{"driver", "file"}, {"filename", path}, {"@size", 65536}}}};
    auto back = open_image(ImageSpec{"json:" + facts.dump(), "", false}, OpenFlags{});
    REQUIRE(back);
    CHECK(back->root->size() == 65536);
    CHECK_FALSE(open_image(ImageSpec{"driver=raw,@size=1,file.filename=" + path, "", true}, OpenFlags{}));
}

TEST_CASE("one writer, many readers: an edit giving a node a second writing parent fails and changes nothing") {
    auto x = std::make_shared<MemNode>(4096, true);
    auto y = std::make_shared<MemNode>(4096, true);
    auto a = std::make_shared<MemNode>(4096, true);
    auto top = std::make_shared<MemNode>(4096, true);
    REQUIRE(a->attach_child("file", x, kRoleData | kRolePrimary));
    REQUIRE(top->attach_child("file", a, kRoleData | kRolePrimary));
    REQUIRE(top->attach_child("data-file", y, kRoleData));
    Graph g{top};
    const Snapshot before = snap(g);

    SUBCASE("replace y by x: top and a would both write x") {
        auto st = g.replace(y, x);
        REQUIRE_FALSE(st);
        CHECK(st.error().code == EBUSY);
        CHECK(st.error().message.find("two writers") != std::string::npos);
    }
    SUBCASE("attach x as a second data child of top") {
        auto st = g.attach(top, "extra", x, kRoleData);
        REQUIRE_FALSE(st);
        CHECK(st.error().code == EBUSY);
    }
    SUBCASE("a filter inserted above x is x's one writer, and a still writes only the filter") {
        auto f = std::make_shared<PassFilter>();
        REQUIRE(g.insert_filter_above(x, f));
        CHECK(primary_child(*a) == f.get());
        REQUIRE(g.remove_filter(f));
    }
    CHECK(snap(g) == before);

    // A backing edge only reads: x may be a's file and top's backing file at once; and a
    // read-only parent claims nothing: a read-only node over y (which top writes) can be
    // a's backing file.
    REQUIRE(g.attach(top, "backing", x, kRoleCow));
    auto reader = std::make_shared<MemNode>(4096);
    REQUIRE(reader->attach_child("file", y, kRoleData | kRolePrimary));
    reader->make_read_only();
    REQUIRE(g.attach(a, "backing", reader, kRoleCow));
}

namespace {

// A protocol over memory that cannot be opened for writing (as a file without write
// permission), and counts the zero writes that reach it.
struct ZeroCountNode : MemNode {
    ZeroCountNode() : MemNode(65536) {}
    int zero_writes = 0;
    unsigned last_flags = 0;
    int discards = 0;

protected:
    Status do_write_zeroes(uint64_t off, uint64_t bytes, unsigned flags) override {
        ++zero_writes;
        last_flags = flags;
        return MemNode::do_write_zeroes(off, bytes, flags & ~kZeroNoFallback);
    }
    Status do_discard(uint64_t, uint64_t) override {
        ++discards;
        return {};
    }
    Capabilities own_caps() const override {
        Capabilities c = MemNode::own_caps();
        c.discard = true;
        return c;
    }
};

Registry test_registry() {
    Registry reg;
    DriverSpec d;
    d.name = "ro-mem";
    d.kind = DriverKind::Protocol;
    d.open = [](OpenContext& ctx, const Json&) -> Result<std::shared_ptr<Node>> {
        if (!ctx.flags().read_only) return make_error(EACCES, "ro-mem: Permission denied");
        auto n = std::make_shared<ZeroCountNode>();
        n->make_read_only();
        return std::shared_ptr<Node>(n);
    };
    reg.add(d);
    DriverSpec w;
    w.name = "zero-mem";
    w.kind = DriverKind::Protocol;
    w.open = [](OpenContext&, const Json&) -> Result<std::shared_ptr<Node>> {
        return std::shared_ptr<Node>(std::make_shared<ZeroCountNode>());
    };
    reg.add(w);
    DriverSpec p;
    p.name = "pass";
    p.kind = DriverKind::Filter;
    p.options = {{"file", OptType::Child, "the filtered child"}};
    p.make_filter = [](const Json&) -> Result<std::shared_ptr<Node>> { return std::shared_ptr<Node>(std::make_shared<PassFilter>()); };
    p.open = open_filter_with(p.make_filter);
    reg.add(p);
    return reg;
}

}  // namespace

TEST_CASE("auto-read-only opens read-only what cannot be opened for writing; without it the open fails") {
    const Registry reg = test_registry();
    OpenFlags fl;
    fl.read_only = false;
    OpenContext plain(reg, fl);
    auto refused = plain.open(Json{{"driver", "ro-mem"}});
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == EACCES);
    OpenContext with_auto(reg, fl);
    auto opened = with_auto.open(Json{{"driver", "ro-mem"}, {"auto-read-only", true}});
    REQUIRE(opened);
    CHECK((*opened)->read_only());
    // Only a permission problem falls back; the flag is not a way around bad options.
    CHECK_FALSE(with_auto.open(Json{{"driver", "ro-mem"}, {"auto-read-only", true}, {"bogus", 1}}));
}

TEST_CASE("detect-zeroes turns all-zero writes into zero writes; unmap needs discard=unmap") {
    const Registry reg = test_registry();
    OpenFlags fl;
    fl.read_only = false;
    OpenContext ctx(reg, fl);
    const std::vector<std::byte> zeroes(4096), data(4096, std::byte{1});
    for (const char* mode : {"off", "on", "unmap"}) {
        Json opts{{"driver", "zero-mem"}, {"detect-zeroes", mode}};
        if (std::string(mode) == "unmap") opts["discard"] = "unmap";
        auto n = ctx.open(opts);
        REQUIRE(n);
        auto& z = static_cast<ZeroCountNode&>(**n);
        REQUIRE((*n)->write(0, data));
        REQUIRE((*n)->write(4096, zeroes));
        INFO(mode);
        CHECK(z.zero_writes == (std::string(mode) == "off" ? 0 : 1));
        if (std::string(mode) == "unmap") CHECK((z.last_flags & kZeroMayUnmap) != 0);
        if (std::string(mode) == "on") CHECK((z.last_flags & kZeroMayUnmap) == 0);
        std::vector<std::byte> back(8192);
        REQUIRE((*n)->read(0, back));
        CHECK(std::equal(data.begin(), data.end(), back.begin()));
        CHECK(std::all_of(back.begin() + 4096, back.end(), [](std::byte b) { return b == std::byte{0}; }));
    }
    auto st = ctx.open(Json{{"driver", "zero-mem"}, {"detect-zeroes", "unmap"}});
    REQUIRE_FALSE(st);
    CHECK(st.error().message == "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap");
}

TEST_CASE("discard: the top node ignores by default and nodes below unmap; ignore drops discards and a parent's unmap") {
    const Registry reg = test_registry();
    OpenFlags fl;
    fl.read_only = false;
    auto open = [&](const Json& opts, OpenFlags f) {
        OpenContext ctx(reg, f);
        auto n = ctx.open(opts);
        REQUIRE_MESSAGE(n, (n ? "" : n.error().message));
        return *n;
    };
    auto mem_of = [](const std::shared_ptr<Node>& n) -> ZeroCountNode& {
        if (auto* z = dynamic_cast<ZeroCountNode*>(n.get())) return *z;
        return static_cast<ZeroCountNode&>(*n->find_child("file")->node);
    };
    SUBCASE("top node, default ignore: discard does nothing, the user's zero write may still unmap") {
        auto n = open(Json{{"driver", "zero-mem"}}, fl);
        CHECK_FALSE(n->caps().discard);
        CHECK(n->discard(0, 4096));
        CHECK(mem_of(n).discards == 0);
        REQUIRE(n->write_zeroes(0, 4096, kZeroMayUnmap));
        CHECK((mem_of(n).last_flags & kZeroMayUnmap) != 0);
    }
    SUBCASE("top node with discard=unmap, or an open whose default is unmap (convert targets)") {
        auto a = open(Json{{"driver", "zero-mem"}, {"discard", "unmap"}}, fl);
        OpenFlags unmap = fl;
        unmap.discard_unmap = true;
        auto b = open(Json{{"driver", "zero-mem"}}, unmap);
        for (auto& n : {a, b}) {
            CHECK(n->caps().discard);
            CHECK(n->discard(0, 4096));
            CHECK(mem_of(n).discards == 1);
        }
        auto off = open(Json{{"driver", "zero-mem"}, {"discard", "off"}}, unmap);  // the option wins
        CHECK(off->discard(0, 4096));
        CHECK(mem_of(off).discards == 0);
    }
    SUBCASE("a child defaults to unmap: the parent's discards and unmapping zero writes reach it") {
        auto n = open(Json{{"driver", "pass"}, {"discard", "unmap"}, {"file", {{"driver", "zero-mem"}}}}, fl);
        CHECK(n->find_child("file")->node->caps().discard);
        CHECK(n->discard(0, 4096));
        CHECK(mem_of(n).discards == 1);
        REQUIRE(n->write_zeroes(0, 4096, kZeroMayUnmap));
        CHECK((mem_of(n).last_flags & kZeroMayUnmap) != 0);
        // detect-zeroes=unmap is allowed on the child without naming discard (qemu-img too).
        CHECK(open(Json{{"driver", "pass"}, {"file", {{"driver", "zero-mem"}, {"detect-zeroes", "unmap"}}}}, fl));
    }
    SUBCASE("a child set to ignore: no discard reaches it, its parent's zero writes lose unmap") {
        auto n = open(Json{{"driver", "pass"}, {"discard", "unmap"}, {"file", {{"driver", "zero-mem"}, {"discard", "ignore"}}}}, fl);
        CHECK_FALSE(n->find_child("file")->node->caps().discard);
        CHECK_FALSE(n->caps().discard);  // a filter has its child's capabilities
        CHECK(n->discard(0, 4096));
        CHECK(mem_of(n).discards == 0);
        REQUIRE(n->write_zeroes(0, 4096, kZeroMayUnmap));
        CHECK(mem_of(n).zero_writes == 1);
        CHECK((mem_of(n).last_flags & kZeroMayUnmap) == 0);
        OpenContext ctx(reg, fl);
        auto bad = ctx.open(Json{{"driver", "pass"}, {"file", {{"driver", "zero-mem"}, {"discard", "ignore"}, {"detect-zeroes", "unmap"}}}});
        REQUIRE_FALSE(bad);
        CHECK(bad.error().message == "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap");
    }
}

namespace {

int g_count_mem_opens = 0;

// A format that takes any file (its prober always answers) and reads through it.
struct AnyFmtNode : Node {
    AnyFmtNode() : Node("any-fmt", Json::object()) {}
    Status take(std::shared_ptr<Node> f) {
        size_ = f->size();
        return attach_child("file", std::move(f), kRoleData | kRoleMetadata | kRolePrimary);
    }

protected:
    Status do_read(uint64_t off, std::span<std::byte> buf) override { return children().front().node->read(off, buf); }
};

Registry probe_registry() {
    Registry reg;
    DriverSpec m;
    m.name = "count-mem";
    m.kind = DriverKind::Protocol;
    m.open = [](OpenContext&, const Json&) -> Result<std::shared_ptr<Node>> {
        ++g_count_mem_opens;
        auto n = std::make_shared<MemNode>(65536);
        n->make_read_only();
        return std::shared_ptr<Node>(n);
    };
    reg.add(m);
    DriverSpec f;
    f.name = "any-fmt";
    f.kind = DriverKind::Format;
    f.options = {{"file", OptType::Child, "the file"}};
    f.probe = [](std::span<const std::byte>, const std::string&) { return 100; };
    f.open = [](OpenContext& ctx, const Json& opts) -> Result<std::shared_ptr<Node>> {
        BLK_TRY_ASSIGN(std::shared_ptr<Node> file, ctx.open_child_unattached(opts, "file", true));
        auto n = std::make_shared<AnyFmtNode>();
        BLK_TRY(n->take(std::move(file)));
        return std::shared_ptr<Node>(n);
    };
    reg.add(f);
    return reg;
}

}  // namespace

TEST_CASE("probing opens the file once: the probed node becomes the format's file child") {
    const Registry reg = probe_registry();
    g_count_mem_opens = 0;
    OpenContext ctx(reg, OpenFlags{});
    auto n = ctx.open(Json{{"file", {{"driver", "count-mem"}}}});
    REQUIRE_MESSAGE(n, (n ? "" : n.error().message));
    CHECK((*n)->driver_name() == "any-fmt");
    CHECK(g_count_mem_opens == 1);
    REQUIRE((*n)->find_child("file"));
    CHECK((*n)->find_child("file")->node->driver_name() == "mem");  // the MemNode count-mem made
    std::vector<std::byte> buf(512);
    CHECK((*n)->read(0, buf));
    // Named formats open their file once, as before.
    g_count_mem_opens = 0;
    CHECK(ctx.open(Json{{"driver", "any-fmt"}, {"file", {{"driver", "count-mem"}}}}));
    CHECK(g_count_mem_opens == 1);
    // A node whose own read-only or force-share changes the mode its child opens in does
    // not take the probe's node (opened before those options applied): the file is
    // opened again in the right mode.
    OpenFlags writable;
    writable.read_only = false;
    for (const char* key : {"read-only", "force-share"}) {
        CAPTURE(key);
        OpenContext w(reg, writable);
        g_count_mem_opens = 0;
        CHECK(w.open(Json{{"file", {{"driver", "count-mem"}}}, {key, true}}));
        CHECK(g_count_mem_opens == 2);
    }
}

TEST_CASE("node names follow qemu's rules: a letter first, then letters, digits, '-', '.', '_'; at most 31") {
    for (const char* ok : {"a", "A-b.c_9", "abcdefghijabcdefghijabcdefghij1"}) {
        CAPTURE(ok);
        CHECK(check_node_name(ok));
    }
    for (const char* bad : {"#x", "1a", "", "a b", "-a", "_a", "a/b", "#abcdefghijabcdefghijabcdefghij12345"}) {
        CAPTURE(bad);
        auto st = check_node_name(bad);
        REQUIRE_FALSE(st);
        CHECK(st.error().message == "Invalid node-name: '" + std::string(bad) + "'");
    }
    auto longer = check_node_name("abcdefghijabcdefghijabcdefghij12");
    REQUIRE_FALSE(longer);
    CHECK(longer.error().message == "Node name too long");
}

TEST_CASE("open refuses an invalid node name and two nodes with one name, in qemu's words") {
    TempDir dir;
    make_chain(dir / "base.qcow2", dir / "top.qcow2", 1 << 20);
    auto open_with = [&](const char* top_name, const char* file_name) {
        Json file = {{"driver", "file"}, {"filename", dir / "top.qcow2"}};
        if (file_name) file["node-name"] = file_name;
        Json o = {{"driver", "qcow2"}, {"file", file}};
        if (top_name) o["node-name"] = top_name;
        return open_image(ImageSpec{"json:" + o.dump(), "", false}, OpenFlags{});
    };
    auto dup = open_with("a", "a");
    REQUIRE_FALSE(dup);
    CHECK(dup.error().message == "Duplicate nodes with node-name='a'");
    auto bad = open_with("#x", "b");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().message == "Invalid node-name: '#x'");
    auto bad_child = open_with("a", "#y");  // the file is named before its format node
    REQUIRE_FALSE(bad_child);
    CHECK(bad_child.error().message == "Invalid node-name: '#y'");
    auto good = open_with("top", "top-file");
    REQUIRE(good);
    CHECK(good->find("top") == good->root.get());
    CHECK(good->find("top-file") == primary_child(*good->root));
    CHECK(good->find("base") == nullptr);
    CHECK(good->find("") == nullptr);
}

TEST_CASE("every edit refuses a duplicate node name and changes nothing; find follows the edits") {
    auto x = std::make_shared<MemNode>(4096);
    x->set_node_name("x");
    auto top = std::make_shared<MemNode>(4096, true);
    top->set_node_name("top");
    REQUIRE(top->attach_child("file", x, kRoleData | kRolePrimary));
    Graph g{top};
    CHECK(g.find("x") == x.get());
    CHECK(g.find("top") == top.get());
    const Snapshot before = snap(g);
    auto expect_dup = [&](Status st, const std::string& what, const std::string& name) {
        REQUIRE_FALSE(st);
        CHECK(st.error().message == what + ": Duplicate nodes with node-name='" + name + "'");
        CHECK(snap(g) == before);
        CHECK(g.find("x") == x.get());
    };

    auto fx = std::make_shared<RecordFilter>();
    fx->set_node_name("x");
    expect_dup(g.insert_filter_above(x, fx), "inserting a filter", "x");
    CHECK(fx->children().empty());

    auto y = std::make_shared<MemNode>(4096);
    y->set_node_name("top");
    expect_dup(g.attach(top, "extra", y, kRoleData), "attaching a child", "top");
    CHECK(top->find_child("extra") == nullptr);
    expect_dup(g.replace(x, y), "replacing a node", "top");

    // With names of their own the same edits go through, and find sees them at once.
    auto f = std::make_shared<RecordFilter>();
    f->set_node_name("f");
    REQUIRE(g.insert_filter_above(x, f));
    CHECK(g.find("f") == f.get());
    REQUIRE(g.remove_filter(f));
    CHECK(g.find("f") == nullptr);
    y->set_node_name("y");
    REQUIRE(g.replace(x, y));
    CHECK(g.find("y") == y.get());
    CHECK(g.find("x") == nullptr);
}

TEST_CASE("capabilities: a filter takes its child's at every edit, and the core refuses what a node lacks") {
    auto x = std::make_shared<MemNode>(4096);  // no truncate, no zeroing path, no make_empty
    auto top = std::make_shared<MemNode>(4096, true);
    REQUIRE(top->attach_child("file", x, kRoleData | kRolePrimary));
    Graph g{top};
    CHECK(top->caps().backing);
    CHECK(top->caps().write);
    auto f = std::make_shared<RecordFilter>();
    REQUIRE(g.insert_filter_above(g.root, f));
    Capabilities want = top->caps();
    want.backing = false;  // a filter is no format
    CHECK(f->caps() == want);
    // Refused in the core, before the filter's hook sees them.
    auto t = f->truncate(8192);
    REQUIRE_FALSE(t);
    CHECK(t.error().code == ENOTSUP);
    auto z = f->write_zeroes(0, 512, kZeroNoFallback);
    REQUIRE_FALSE(z);
    CHECK(z.error().code == ENOTSUP);
    auto e = f->make_empty();
    REQUIRE_FALSE(e);
    CHECK(e.error().code == ENOTSUP);
    CHECK(f->count('t') == 0);
    CHECK(f->count('z') == 0);
    // Moved above a read-only node, it takes no writes and advertises none.
    auto ro = std::make_shared<MemNode>(4096);
    ro->make_read_only();
    CHECK_FALSE(ro->caps().write);
    REQUIRE(g.remove_filter(f));
    auto f2 = std::make_shared<RecordFilter>();
    Graph g2{ro};
    REQUIRE(g2.insert_filter_above(ro, f2));
    CHECK(f2->read_only());
    CHECK_FALSE(f2->caps().write);
    // A file reopened read-only loses write (and what writes), read-write gets it back.
    TempDir dir;
    make_chain(dir / "base.qcow2", dir / "top.qcow2", 1 << 20);
    OpenFlags fl;
    fl.read_only = false;
    auto q = open_image(ImageSpec{dir / "top.qcow2", "qcow2", false}, fl);
    REQUIRE(q);
    const Capabilities rw = q->root->caps();
    CHECK(rw.write);
    CHECK(rw.make_empty);
    CHECK(rw.write_compressed);
    CHECK(rw.backing);
    auto pf = make_filter_node(Json{{"driver", "preallocate"}});
    REQUIRE(pf);
    REQUIRE(q->insert_filter_above(q->root, *pf));
    REQUIRE(q->reopen_read_only(*q->root));
    CHECK_FALSE((*pf)->caps().write);
    CHECK_FALSE((*pf)->caps().make_empty);
    CHECK_FALSE(primary_child(**pf)->caps().write);
    REQUIRE(q->reopen_read_write(*q->root));
    Capabilities back = rw;
    back.backing = false;
    CHECK((*pf)->caps() == back);
}

TEST_CASE("on_backing_error: a missing backing file is handed back and its overlay opens without it") {
    TempDir dir;
    const std::string base = dir / "base.qcow2", top = dir / "top.qcow2";
    make_chain(base, top, 1 << 20);
    REQUIRE(std::remove(base.c_str()) == 0);
    CHECK_FALSE(open_image(ImageSpec{top, "qcow2", false}, OpenFlags{}));
    std::vector<BackingError> errors;
    OpenFlags fl;
    fl.on_backing_error = [&](const BackingError& e) { errors.push_back(e); };
    auto g = open_image(ImageSpec{top, "qcow2", false}, fl);
    REQUIRE(g);
    CHECK(backing_chain_next(g->root.get()) == nullptr);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].kind == BackingError::Kind::Open);
    CHECK(errors[0].overlay == g->root.get());
    CHECK(errors[0].name == base);
    CHECK(errors[0].format == "qcow2");
    CHECK(errors[0].error.code == ENOENT);
}

TEST_CASE("on_backing_error: a loop is handed back as a loop on the image that closes it") {
    TempDir dir;
    const std::string base = dir / "base.qcow2", top = dir / "top.qcow2";
    make_chain(base, top, 1 << 20);
    // base names top: a loop two images long.
    CreateRequest req;
    req.format = "qcow2";
    req.filename = base;
    req.size = 1 << 20;
    req.backing_file = "top.qcow2";
    req.backing_format = "qcow2";
    req.open_backing = false;
    REQUIRE(create_image(req));
    auto plain = open_image(ImageSpec{top, "qcow2", false}, OpenFlags{});
    REQUIRE_FALSE(plain);
    CHECK(plain.error().code == ELOOP);
    std::vector<BackingError> errors;
    OpenFlags fl;
    fl.on_backing_error = [&](const BackingError& e) { errors.push_back(e); };
    auto g = open_image(ImageSpec{top, "qcow2", false}, fl);
    REQUIRE(g);
    Node* b = backing_chain_next(g->root.get());
    REQUIRE(b);
    CHECK(backing_chain_next(b) == nullptr);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].kind == BackingError::Kind::Loop);
    CHECK(errors[0].overlay == b);
}
