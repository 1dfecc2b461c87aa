// blkimg graph: the nodes and edges an image spec opens, as a tree, JSON that reopens it, or Graphviz.
#include <cinttypes>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "common.h"
#include "qjson.h"

namespace blkimg {

namespace {

constexpr const char* kMasked = "<masked>";

// A node reached through an edge: the edge (null at the root) and whether the parent's options
// name the child (else the image itself named it: a backing file or data file from its header).
struct Visit {
    const blk::Node* node;
    const blk::Child* edge;
    bool from_image;
};

// Stable node names: the given node-name, else "#block" and the node's position in depth-first
// order. qemu's generated names ("#block" + a counter + two random digits) change from run to
// run; these stay the same for the same spec and on a round trip through the JSON.
std::map<const blk::Node*, std::string> node_names(const blk::Node& root) {
    std::map<const blk::Node*, std::string> names;
    size_t index = 0;
    auto visit = [&](auto& self, const blk::Node& n) -> void {
        if (names.count(&n)) return;
        char buf[32];
        std::snprintf(buf, sizeof buf, "#block%03zu", index++);
        names[&n] = n.node_name().empty() ? std::string(buf) : n.node_name();
        for (const blk::Child& c : n.children()) self(self, *c.node);
    };
    visit(visit, root);
    return names;
}

std::vector<std::string> role_names(unsigned roles) {
    std::vector<std::string> out;
    if (roles & blk::kRoleData) out.emplace_back("data");
    if (roles & blk::kRoleMetadata) out.emplace_back("metadata");
    if (roles & blk::kRoleFiltered) out.emplace_back("filtered");
    if (roles & blk::kRoleCow) out.emplace_back("cow");
    if (roles & blk::kRolePrimary) out.emplace_back("primary");
    return out;
}

std::string join(const std::vector<std::string>& parts, const char* sep) {
    std::string out;
    for (const std::string& p : parts) out += (out.empty() ? "" : sep) + p;
    return out;
}

// Where an edge named `name` sits in its parent's options: "file" at key "file", "children.1"
// at index 1 of the array "children". Null if the options do not name that child.
const blk::Json* child_slot(const blk::Json& opts, const std::string& name) {
    if (!opts.is_object()) return nullptr;
    if (auto it = opts.find(name); it != opts.end()) return it->is_object() ? &*it : nullptr;
    const auto dot = name.rfind('.');
    if (dot == std::string::npos) return nullptr;
    auto list = opts.find(name.substr(0, dot));
    const std::string idx = name.substr(dot + 1);
    if (list == opts.end() || !list->is_array() || idx.empty() || idx.size() > 9 ||
        idx.find_first_not_of("0123456789") != std::string::npos)
        return nullptr;
    const size_t i = std::stoul(idx);
    return i < list->size() && (*list)[i].is_object() ? &(*list)[i] : nullptr;
}

// A secret's id names the key without being it, but ids are often the passphrase's own name
// ("sec-prod-root"), so this view shows nothing about secrets.
bool secret_key(const std::string& key) {
    for (const char* s : {"key-secret", "password-secret"}) {
        const std::string k = s;
        if (key == k || (key.size() > k.size() && key.compare(key.size() - k.size() - 1, std::string::npos, "." + k) == 0))
            return true;
    }
    return false;
}

blk::Json masked(const blk::Json& v) {
    if (v.is_object()) {
        blk::Json out = blk::Json::object();
        for (auto it = v.begin(); it != v.end(); ++it) out[it.key()] = secret_key(it.key()) ? blk::Json(kMasked) : masked(it.value());
        return out;
    }
    if (v.is_array()) {
        blk::Json out = blk::Json::array();
        for (const blk::Json& e : v) out.push_back(masked(e));
        return out;
    }
    return v;
}

// The children of `n` with whether each was named by the image rather than the options.
std::vector<Visit> children_of(const blk::Node& n) {
    std::vector<Visit> out;
    for (const blk::Child& c : n.children()) out.push_back({c.node.get(), &c, child_slot(n.options(), c.name) == nullptr});
    return out;
}

// The options of `n` that are not child subtrees, masked.
blk::Json own_options(const blk::Node& n) {
    blk::Json opts = masked(n.options());
    if (!opts.is_object()) return blk::Json::object();
    for (const blk::Child& c : n.children()) {
        if (!child_slot(n.options(), c.name)) continue;
        const auto dot = c.name.find('.');
        opts.erase(dot == std::string::npos ? c.name : c.name.substr(0, dot));
    }
    // The driver first, wherever the spec put it (a probed or implied driver comes last).
    blk::Json out = blk::Json::object();
    if (opts.contains("driver")) out["driver"] = opts["driver"];
    for (auto it = opts.begin(); it != opts.end(); ++it)
        if (it.key() != "driver") out[it.key()] = it.value();
    return out;
}

// --- JSON: the options tree with facts under '@' keys (stripped again when it is opened) ---

blk::Json node_json(const Visit& v, const std::map<const blk::Node*, std::string>& names) {
    const blk::Node& n = *v.node;
    blk::Json out = blk::Json::object();
    out["driver"] = n.driver_name();
    out["@node-name"] = names.at(&n);
    if (v.edge) {
        blk::Json edge = {{"name", v.edge->name}, {"roles", role_names(v.edge->roles)}};
        if (v.from_image) edge["from-image"] = true;
        out["@edge"] = std::move(edge);
    }
    out["@size"] = n.size();
    out["@read-only"] = n.read_only();
    out["@caps"] = n.caps().names();
    // The options in their given order, each child's subtree replaced by what it opened.
    blk::Json opts = masked(n.options());
    if (opts.is_object()) {
        for (const Visit& c : children_of(n)) {
            if (c.from_image) continue;
            const auto dot = c.edge->name.rfind('.');
            blk::Json rendered = node_json(c, names);
            if (opts.contains(c.edge->name) || dot == std::string::npos) {
                opts[c.edge->name] = std::move(rendered);
            } else {
                // "children.N": an element of the array the options hold (nested once).
                blk::Json* list = &opts[c.edge->name.substr(0, dot)];
                (*list)[std::stoul(c.edge->name.substr(dot + 1))] = std::move(rendered);
            }
        }
        for (auto it = opts.begin(); it != opts.end(); ++it)
            if (it.key() != "driver") out[it.key()] = it.value();
    }
    for (const Visit& c : children_of(n))
        if (c.from_image) out["@" + c.edge->name] = node_json(c, names);
    return out;
}

// --- human: an indented tree, options as --image-opts keys ---

void dotted(const blk::Json& v, const std::string& prefix, std::vector<std::string>& out) {
    if (v.is_object() && !v.empty()) {
        for (auto it = v.begin(); it != v.end(); ++it) dotted(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
        return;
    }
    if (v.is_array() && !v.empty()) {
        for (size_t i = 0; i < v.size(); ++i) dotted(v[i], prefix + "." + std::to_string(i), out);
        return;
    }
    std::string text = v.is_string() ? v.get<std::string>() : v.dump();
    // ",," is a literal comma in --image-opts.
    std::string esc;
    for (char ch : text) esc += ch == ',' ? std::string(",,") : std::string(1, ch);
    out.push_back(prefix + "=" + esc);
}

std::string node_summary(const blk::Node& n, const std::map<const blk::Node*, std::string>& names) {
    return names.at(&n) + ": " + n.driver_name() + ", " + size_to_str(n.size()) + " (" + std::to_string(n.size()) +
           " bytes), " + (n.read_only() ? "read-only" : "writable");
}

void human(const Visit& v, const std::map<const blk::Node*, std::string>& names, int depth, std::string& out) {
    const std::string pad(static_cast<size_t>(depth) * 4, ' ');
    out += pad;
    if (v.edge) {
        out += v.edge->name + " [" + join(role_names(v.edge->roles), ", ") + "]";
        if (v.from_image) out += " (named by the image)";
        out += " -> ";
    }
    out += node_summary(*v.node, names) + "\n";
    std::vector<std::string> opts;
    dotted(own_options(*v.node), "", opts);
    out += pad + "    options: " + join(opts, ",") + "\n";
    const auto caps = v.node->caps().names();
    out += pad + "    caps: " + (caps.empty() ? std::string("none") : join(caps, ", ")) + "\n";
    for (const Visit& c : children_of(*v.node)) human(c, names, depth + 1, out);
}

// --- dot ---

std::string dot_quote(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out + "\"";
}

void dot(const Visit& v, const std::map<const blk::Node*, std::string>& names, std::string& out) {
    const blk::Node& n = *v.node;
    std::string label = names.at(&n) + "\n" + n.driver_name() + "\n" + size_to_str(n.size());
    const blk::Json& o = n.options();
    if (o.is_object() && o.contains("filename") && o["filename"].is_string()) label += "\n" + o["filename"].get<std::string>();
    out += "    " + dot_quote(names.at(&n)) + " [label=" + dot_quote(label) + "];\n";
    for (const Visit& c : children_of(n)) {
        out += "    " + dot_quote(names.at(&n)) + " -> " + dot_quote(names.at(c.node)) +
               " [label=" + dot_quote(c.edge->name + "\n" + join(role_names(c.edge->roles), ", ")) + "" +
               (c.from_image ? ", style=dashed" : "") + "];\n";
        dot(c, names, out);
    }
}

}  // namespace

int cmd_graph(int argc, char** argv) {
    CLI::App app("Show the block graph an image spec opens, without reading guest data: every node (driver, "
                 "node name, size, read-only state, options with secrets masked) and every edge (name and roles). "
                 "The JSON opens the same graph when passed back as a json: filename; dot is for Graphviz.",
                 prog_name() + " graph");
    ImageArgs args;
    std::string output = "human";
    add_image_flags(app, args);
    app.add_option("--output", output, "output format: human (default), json or dot")->type_name("FMT");
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;
    if (int rc = check_one_filename(app); rc >= 0) return rc;
    if (output != "human" && output != "json" && output != "dot") {
        print_error("--output must be used with human, json or dot as argument.");
        return 1;
    }
    // Metadata only, as info opens: no guest data is read and an encrypted image needs no key.
    auto g = open_image_args(args, true, true);
    if (!g) {
        print_error(g.error().message);
        return 1;
    }
    const blk::Node& root = *g->root;
    const auto names = node_names(root);
    const Visit top{&root, nullptr, false};
    std::string out;
    if (output == "json") {
        // Invalid UTF-8 (a filename) becomes U+FFFD rather than an exception.
        out = node_json(top, names).dump(4, ' ', false, blk::Json::error_handler_t::replace) + "\n";
    } else if (output == "dot") {
        out = "digraph blkimg {\n    node [shape=box];\n";
        dot(top, names, out);
        out += "}\n";
    } else {
        human(top, names, 0, out);
    }
    std::fputs(out.c_str(), stdout);
    return 0;
}

}  // namespace blkimg
