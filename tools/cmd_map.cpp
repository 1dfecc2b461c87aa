// blkimg map: where each range of an image's data lives (qemu-img map compatible).
#include <cinttypes>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "blk/map.h"
#include "common.h"
#include "staged_output.h"

namespace blkimg {

namespace {

void json_entry(StagedOutput& out, const blk::MapEntry& e, bool last) {
    out.printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %u, \"present\": %s, \"zero\": %s, \"data\": %s",
           e.start, e.length, e.depth, e.present ? "true" : "false", e.zero ? "true" : "false", e.data ? "true" : "false");
    if (e.has_offset) out.printf(", \"offset\": %" PRIu64, e.offset);
    out.append(last ? "}" : "},\n");
}

}  // namespace

int cmd_map(int argc, char** argv) {
    CLI::App app("Show where each range of an image's data lives: which layer of the backing chain holds it, "
                 "whether it reads as zeroes, and its offset in the host file.",
                 prog_name() + " map");
    ImageArgs args;
    std::string output = "human";
    std::string start_text, length_text;
    add_image_flags(app, args);
    add_output_flag(app, output);
    app.add_option("-s,--start-offset", start_text, "start at this guest offset (suffixes k, M, G, ...)")->type_name("OFFSET");
    app.add_option("-l,--max-length", length_text, "map at most this many bytes (suffixes k, M, G, ...)")->type_name("LENGTH");
    if (int rc = parse_cli(app, argc, argv); rc >= 0) return rc;

    auto offset_arg = [&](const std::string& text, const char* flag, const char* what, uint64_t& out) {
        return !app.get_option(flag)->count() || size_arg(text, what, out);
    };
    uint64_t start = 0;
    uint64_t max_length = UINT64_MAX;
    // qemu-img checks the offsets while it reads the options, then the file name and --output.
    if (!offset_arg(start_text, "--start-offset", "start offset", start) ||
        !offset_arg(length_text, "--max-length", "max length", max_length)) {
        return 1;
    }
    if (int rc = check_one_filename(app); rc >= 0) return rc;
    if (!check_output(output)) return 1;

    auto g = open_image_args(args, true);
    if (!g) {
        print_error(g.error().message);
        return 1;
    }
    blk::Node* top = g->root.get();
    uint64_t end = top->size();
    if (max_length != UINT64_MAX && start <= end && max_length < end - start) end = start + max_length;

    const bool json = output == "json";
    // The whole map is held back until it is complete: an error part way never leaves a
    // partial (or an empty "[]") map on stdout for a script that ignores the exit code.
    StagedOutput out;
    if (json) out.append('[');
    else out.printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");

    auto st = blk::map_image(top, start, end, [&](const blk::MapEntry& e, blk::MapEntry* next) -> blk::Status {
        if (json) {
            json_entry(out, e, next == nullptr);
            return {};
        }
        if (e.data && !e.has_offset) {
            return blk::make_error(ENOTSUP, "File contains external, encrypted or compressed clusters.");
        }
        if (e.data && !e.zero) {
            out.printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e.start, e.length,
                   e.has_offset ? e.offset : 0, e.has_offset ? e.filename.c_str() : "");
        }
        // Human output does not tell zero from unallocated: fold them so more ranges merge.
        if (next && (!next->data || next->zero)) {
            next->data = false;
            next->zero = true;
        }
        return {};
    });
    if (!st) {
        print_error(st.error().message);
        return 1;
    }
    if (json) out.append("]\n");
    if (!out.commit()) {
        print_error(std::string("Could not write the map: ") + std::strerror(errno));
        return 1;
    }
    return 0;
}

}  // namespace blkimg
