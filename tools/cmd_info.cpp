// blkimg info: facts about an image and, with --backing-chain, each image below it
// (qemu-img info compatible; JSON adds qemu 8's "children").
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <ctime>

#include "common.h"
#include "qjson.h"

namespace blkimg {

namespace {

// The typed facts libblock reports, as qemu's QAPI objects (SnapshotInfo,
// ImageInfoSpecific); qemu_pretty_json puts the keys in qemu's order.
blk::Json snapshot_json(const blk::SnapshotFacts& s) {
    blk::Json j{{"id", s.id},
                {"name", s.name},
                {"vm-state-size", s.vm_state_size},
                {"date-sec", s.date_sec},
                {"date-nsec", s.date_nsec},
                {"vm-clock-sec", s.vm_clock_ns / 1000000000ull},
                {"vm-clock-nsec", s.vm_clock_ns % 1000000000ull}};
    if (s.icount) j["icount"] = *s.icount;
    return j;
}

blk::Json encrypt_json(const blk::EncryptFacts& e) {
    blk::Json j{{"format", e.format}};
    if (e.format != "luks") return j;
    j["cipher-alg"] = e.cipher_alg;
    j["cipher-mode"] = e.cipher_mode;
    j["ivgen-alg"] = e.ivgen_alg;
    if (e.ivgen_hash_alg) j["ivgen-hash-alg"] = *e.ivgen_hash_alg;
    j["hash-alg"] = e.hash_alg;
    j["payload-offset"] = e.payload_offset;
    j["master-key-iters"] = e.master_key_iters;
    j["uuid"] = e.uuid;
    j["slots"] = blk::Json::array();
    for (const blk::LuksSlotFacts& s : e.slots) {
        blk::Json slot{{"active", s.active}, {"key-offset", s.key_offset}};
        if (s.iters) slot["iters"] = *s.iters;
        if (s.stripes) slot["stripes"] = *s.stripes;
        j["slots"].push_back(std::move(slot));
    }
    return j;
}

blk::Json qcow2_json(const blk::Qcow2Facts& f) {
    blk::Json d = blk::Json::object();
    d["compat"] = f.v3 ? "1.1" : "0.10";
    d["compression-type"] = f.compression_type;
    d["refcount-bits"] = f.refcount_bits;
    if (f.v3) {
        if (f.data_file) d["data-file"] = *f.data_file;
        if (f.has_data_file) d["data-file-raw"] = f.data_file_raw;
        d["extended-l2"] = f.extended_l2;
        d["lazy-refcounts"] = f.lazy_refcounts;
        d["corrupt"] = f.corrupt;
        if (!f.bitmaps.empty()) {
            blk::Json bitmaps = blk::Json::array();
            for (const blk::BitmapFacts& b : f.bitmaps) {
                blk::Json flags = blk::Json::array();
                if (b.in_use) flags.push_back("in-use");
                if (b.auto_flag) flags.push_back("auto");
                bitmaps.push_back(blk::Json{{"flags", flags}, {"name", b.name}, {"granularity", b.granularity}});
            }
            d["bitmaps"] = bitmaps;
        }
    }
    if (f.encrypt) d["encrypt"] = encrypt_json(*f.encrypt);
    return d;
}

// {"type": ..., "data": {...}}, or null for a node with no format-specific facts.
blk::Json format_specific_json(const blk::FormatFacts& facts) {
    if (const auto* q = std::get_if<blk::Qcow2Facts>(&facts)) return blk::Json{{"type", "qcow2"}, {"data", qcow2_json(*q)}};
    if (std::holds_alternative<blk::FileFacts>(facts)) return blk::Json{{"type", "file"}, {"data", blk::Json::object()}};
    return nullptr;
}

// ImageInfo of one node, keys in qemu's QAPI field order (which breaks QDict ties).
blk::Json image_info(const blk::Node& n) {
    blk::Json info = blk::Json::object();
    info["filename"] = n.filename();
    info["format"] = n.driver_name();
    if (auto d = n.dirty()) info["dirty-flag"] = *d;
    if (auto a = n.allocated_file_size()) info["actual-size"] = *a;
    info["virtual-size"] = n.size();
    if (auto cs = n.cluster_size()) info["cluster-size"] = *cs;
    if (n.encrypted()) info["encrypted"] = true;
    const std::string backing = n.backing_file_name();
    if (!backing.empty()) {
        info["backing-filename"] = backing;
        if (auto full = blk::resolve_backing_name(blk::base_filename(n), backing)) info["full-backing-filename"] = *full;
        if (!n.backing_format().empty()) info["backing-filename-format"] = n.backing_format();
    }
    const std::vector<blk::SnapshotFacts> snaps = n.snapshots();
    if (!snaps.empty()) {
        info["snapshots"] = blk::Json::array();
        for (const blk::SnapshotFacts& s : snaps) info["snapshots"].push_back(snapshot_json(s));
    }
    blk::Json fs = format_specific_json(n.format_specific());
    if (!fs.is_null()) info["format-specific"] = fs;
    blk::Json children = blk::Json::array();
    // qemu lists a node's children newest first.
    // The backing file is a layer of its own (--backing-chain shows it next), not a child:
    // qemu-img opens each layer without it.
    const auto& ch = n.children();
    for (auto it = ch.rbegin(); it != ch.rend(); ++it) {
        if (it->roles & blk::kRoleCow) continue;
        children.push_back(blk::Json{{"name", it->name}, {"info", image_info(*it->node)}});
    }
    info["children"] = children;
    return info;
}

// One row of qemu's snapshot table; the date in local time, as qemu prints it.
std::string snapshot_line(const blk::Json& sn) {
    const uint64_t clock = sn["vm-clock-sec"].get<uint64_t>() * 1000000000ull + sn["vm-clock-nsec"].get<uint64_t>();
    const uint64_t secs = clock / 1000000000ull;
    char clock_buf[64];
    std::snprintf(clock_buf, sizeof clock_buf, "%02d:%02d:%02d.%03d", static_cast<int>(secs / 3600),
                  static_cast<int>((secs / 60) % 60), static_cast<int>(secs % 60),
                  static_cast<int>((clock / 1000000) % 1000));
    const time_t date = static_cast<time_t>(sn["date-sec"].get<uint64_t>());
    struct tm tm {};
    localtime_r(&date, &tm);
    char date_buf[64];
    std::strftime(date_buf, sizeof date_buf, "%Y-%m-%d %H:%M:%S", &tm);
    const std::string icount = sn.contains("icount") ? std::to_string(sn["icount"].get<uint64_t>()) : "";
    char line[512];
    std::snprintf(line, sizeof line, "%-9s %-16s %8s%20s%13s%11s\n", sn["id"].get<std::string>().c_str(),
                  sn["name"].get<std::string>().c_str(), size_to_str(sn["vm-state-size"].get<uint64_t>()).c_str(), date_buf,
                  clock_buf, icount.c_str());
    return line;
}

std::string human_info(const blk::Json& info, bool incomplete) {
    std::string out;
    char buf[512];
    const uint64_t vsize = info["virtual-size"].get<uint64_t>();
    const std::string dsize = info.contains("actual-size") ? size_to_str(info["actual-size"].get<uint64_t>()) : "unavailable";
    out += "image: " + info["filename"].get<std::string>() + "\n";
    out += "file format: " + info["format"].get<std::string>() + "\n";
    std::snprintf(buf, sizeof buf, "virtual size: %s (%" PRIu64 " bytes)\n", size_to_str(vsize).c_str(), vsize);
    out += buf;
    out += "disk size: " + dsize + "\n";
    if (info.value("encrypted", false)) out += "encrypted: yes\n";
    if (info.contains("cluster-size")) out += "cluster_size: " + std::to_string(info["cluster-size"].get<uint64_t>()) + "\n";
    if (info.contains("dirty-flag") && info["dirty-flag"].get<bool>()) out += "cleanly shut down: no\n";
    // blkimg's own line (the JSON keeps qemu-img's keys): a raw file an interrupted convert left.
    if (incomplete) out += "incomplete: yes (flagged user.blkimg.incomplete by an interrupted convert)\n";
    if (info.contains("backing-filename")) {
        const std::string b = info["backing-filename"].get<std::string>();
        out += "backing file: " + b;
        if (!info.contains("full-backing-filename")) out += " (cannot determine actual path)";
        else if (info["full-backing-filename"].get<std::string>() != b)
            out += " (actual path: " + info["full-backing-filename"].get<std::string>() + ")";
        out += "\n";
        if (info.contains("backing-filename-format"))
            out += "backing file format: " + info["backing-filename-format"].get<std::string>() + "\n";
    }
    if (info.contains("snapshots")) {
        out += "Snapshot list:\n";
        std::snprintf(buf, sizeof buf, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
        out += buf;
        for (const blk::Json& sn : info["snapshots"]) out += snapshot_line(sn);
    }
    if (info.contains("format-specific")) {
        out += "Format specific information:\n";
        out += qemu_human_dump(info["format-specific"]["data"], 1);
    }
    return out;
}

}  // namespace

int cmd_info(int argc, char** argv) {
    CLI::App app("Show facts about an image: format, virtual and allocated size, cluster size, backing file, "
                 "format-specific details; with --backing-chain, every image of the chain.",
                 prog_name() + " info");
    ImageArgs args;
    std::string output = "human";
    bool chain = false;
    add_image_flags(app, args);
    add_output_flag(app, output);
    app.add_flag("--backing-chain", chain, "also show every backing image, top to bottom");
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;
    if (int rc = check_one_filename(app); rc >= 0) return rc;
    if (!check_output(output)) return 1;

    // The whole chain is opened once, as one graph (metadata only: no guest data is read,
    // data files are not opened), and walked layer by layer by role: backing_chain_next
    // follows the cow edge and passes over filters, so a filter anywhere in the chain
    // neither stops the walk nor shows as a layer. The opener resolves each backing name
    // from its image's directory and refuses a loop. Without --backing-chain only the
    // image itself is opened, so a missing backing file does not stop info.
    auto g = open_image_args(args, chain, true, true);
    if (!g) {
        // qemu-img opens the layers one by one and names only the one that failed: the
        // opener's message for the deepest backing file, without the layers above it.
        std::string msg = g.error().message;
        const std::string via = "Could not open backing file '";
        if (const size_t at = msg.rfind(via); chain && at != std::string::npos) {
            if (const size_t end = msg.find("': ", at + via.size()); end != std::string::npos) msg = msg.substr(end + 3);
        }
        if (const size_t at = msg.rfind("Backing file '"); chain && g.error().code == ELOOP && at != std::string::npos)
            msg = msg.substr(at);
        print_error(msg);
        return 1;
    }
    std::vector<blk::Json> infos;
    std::vector<bool> incomplete;
    for (blk::Node* layer = g->root.get(); layer; layer = chain ? blk::backing_chain_next(layer) : nullptr) {
        blk::Json info = image_info(*layer);
        // qemu 7.2 has no format-specific facts for a protocol node (qemu 8 added an empty
        // "file" block, kept under "children"): at the top it prints neither the block nor
        // an empty "Format specific information:" header.
        if (info.contains("format-specific") && info["format-specific"].value("data", blk::Json::object()).empty())
            info.erase("format-specific");
        infos.push_back(info);
        incomplete.push_back(raw_flagged_incomplete(layer));
    }

    if (output == "json") {
        if (chain) {
            blk::Json arr = blk::Json::array();
            for (auto& i : infos) arr.push_back(i);
            std::printf("%s\n", qemu_pretty_json(arr).c_str());
        } else {
            std::printf("%s\n", qemu_pretty_json(infos[0]).c_str());
        }
    } else {
        for (size_t i = 0; i < infos.size(); ++i) {
            if (i) std::printf("\n");
            std::fputs(human_info(infos[i], incomplete[i]).c_str(), stdout);
        }
    }
    return 0;
}

}  // namespace blkimg
